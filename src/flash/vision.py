"""The finetuning page's name for :mod:`flash.image`: ``from flash.vision import ImageClassifier``."""

from flash.image import IMAGE_BACKBONES, ImageClassification, ImageClassificationData, ImageClassifier

__all__ = ["IMAGE_BACKBONES", "ImageClassification", "ImageClassificationData", "ImageClassifier"]
