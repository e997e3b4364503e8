"""Image tasks: classification (``ImageClassificationData``, ``ImageClassifier``; also ``flash.vision``)
and object detection (``ObjectDetectionData``, ``ObjectDetector``)."""

from flash.image.backbones import IMAGE_BACKBONES
from flash.image.data import ImageClassificationData
from flash.image.detection import ObjectDetectionData, ObjectDetector
from flash.image.model import ImageClassification, ImageClassifier

__all__ = [
    "IMAGE_BACKBONES",
    "ImageClassification",
    "ImageClassificationData",
    "ImageClassifier",
    "ObjectDetectionData",
    "ObjectDetector",
]
