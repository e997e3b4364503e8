"""Text tasks: classification (``TextClassificationData``, ``TextClassifier``) and embedding
(``TextEmbedder``, trained on the same data)."""

from flash.text.backbones import DEFAULT_BACKBONE, TEXT_BACKBONES
from flash.text.data import TextClassificationData
from flash.text.embedder import TextEmbedder
from flash.text.model import TextClassifier

__all__ = ["DEFAULT_BACKBONE", "TEXT_BACKBONES", "TextClassificationData", "TextClassifier", "TextEmbedder"]
