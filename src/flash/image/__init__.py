"""Image classification: ``ImageClassificationData`` and ``ImageClassifier`` (also ``flash.vision``)."""

from flash.image.backbones import IMAGE_BACKBONES
from flash.image.data import ImageClassificationData
from flash.image.model import ImageClassification, ImageClassifier

__all__ = ["IMAGE_BACKBONES", "ImageClassification", "ImageClassificationData", "ImageClassifier"]
