"""Text classification: ``TextClassificationData`` and ``TextClassifier``."""

from flash.text.backbones import DEFAULT_BACKBONE, TEXT_BACKBONES
from flash.text.data import TextClassificationData
from flash.text.model import TextClassifier

__all__ = ["DEFAULT_BACKBONE", "TEXT_BACKBONES", "TextClassificationData", "TextClassifier"]
