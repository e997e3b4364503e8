"""Object detection: ``ObjectDetectionData`` and ``ObjectDetector`` (torchvision's FCOS, RetinaNet and
Faster R-CNN over a feature pyramid on a flash image backbone)."""

from flash.image.detection.data import ObjectDetectionData
from flash.image.detection.model import ObjectDetector

__all__ = ["ObjectDetectionData", "ObjectDetector"]
