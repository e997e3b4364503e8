"""Image tasks: classification (``ImageClassificationData``, ``ImageClassifier``; also ``flash.vision``)
and the image tasks built on the same backbones: semantic segmentation (``SemanticSegmentationData``,
``SemanticSegmentation``), object detection (``ObjectDetectionData``, ``ObjectDetector``) and
embedding (``ImageEmbedder``, trained on ``ImageClassificationData``)."""

from flash.image.backbones import IMAGE_BACKBONES
from flash.image.data import ImageClassificationData
from flash.image.detection import ObjectDetectionData, ObjectDetector
from flash.image.embedder import ImageEmbedder
from flash.image.model import ImageClassification, ImageClassifier
from flash.image.segmentation import SemanticSegmentation, SemanticSegmentationData

__all__ = [
    "IMAGE_BACKBONES",
    "ImageClassification",
    "ImageClassificationData",
    "ImageClassifier",
    "ImageEmbedder",
    "ObjectDetectionData",
    "ObjectDetector",
    "SemanticSegmentation",
    "SemanticSegmentationData",
]
