"""Image tasks: classification (``ImageClassificationData``, ``ImageClassifier``; also ``flash.vision``)
and semantic segmentation (``SemanticSegmentationData``, ``SemanticSegmentation``)."""

from flash.image.backbones import IMAGE_BACKBONES
from flash.image.data import ImageClassificationData
from flash.image.model import ImageClassification, ImageClassifier
from flash.image.segmentation import SemanticSegmentation, SemanticSegmentationData

__all__ = [
    "IMAGE_BACKBONES",
    "ImageClassification",
    "ImageClassificationData",
    "ImageClassifier",
    "SemanticSegmentation",
    "SemanticSegmentationData",
]
