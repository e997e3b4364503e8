"""``TextEmbedder``: a sentence encoder whose output is one L2-normalised vector per text."""

from __future__ import annotations

from typing_extensions import Unpack

from flash.core.model.embedding import EmbeddingTask, check_loss, embedder_arguments
from flash.core.model.task import Optimization
from flash.text.backbones import DEFAULT_BACKBONE, TEXT_BACKBONES
from flash.text.task_inputs import TextTaskInputs, build_text_backbone

DEFAULT_EMBEDDING_MAX_LENGTH = 256
"""Tokens kept per text by default: all-MiniLM-L6-v2's ``max_seq_length`` in sentence-transformers."""


class TextEmbedder(TextTaskInputs, EmbeddingTask):
    """Embed texts: a transformer encoder, mean-pooled over the attention mask, then L2-normalised.

    With the default backbone (all-MiniLM-L6-v2, shipped on PyPI, offline) and before any
    finetuning, the embeddings are the model's sentence-transformers embeddings (mean pooling,
    then normalisation); the projection on top starts as the identity.

    ``embed(texts)`` returns a ``float32`` NumPy array ``(n, 384)`` (``(384,)`` for one text);
    ``trainer.finetune(embedder, TextClassificationData..., strategy=...)`` trains it on labelled
    texts with a metric-learning loss (see :class:`~flash.core.model.embedding.EmbeddingTask`).

    Args:
        backbone: a name from :meth:`available_backbones`, any Hugging Face model id, or a local
            folder saved with ``save_pretrained``.
        max_length: tokens kept per text; longer texts are truncated.
        pretrained: load the backbone's pretrained weights (a checkpoint load builds it without).
        loss: ``"supervised_contrastive"`` or ``"multiple_negatives"``.
        temperature: similarities are divided by this in the loss (0.05: scale 20).
        **optimization: the :class:`~flash.core.model.task.Optimization` arguments; this task's
            defaults (:attr:`optimization_defaults`): ``learning_rate=1e-4`` for the projection,
            the backbone at the same rate, the ``linear_warmup`` schedule.
        input_field: the text column of table files given to :meth:`embed` (filled from the
            training data).
    """

    domain = "text"

    optimization_defaults = {
        **EmbeddingTask.optimization_defaults,
        **{"learning_rate": 1e-4, "lr_scheduler": "linear_warmup"},
    }

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        max_length: int = DEFAULT_EMBEDDING_MAX_LENGTH,
        pretrained: bool = True,
        loss: str = "supervised_contrastive",
        temperature: float = 0.05,
        input_field: str | None = None,
        **optimization: Unpack[Optimization],
    ) -> None:
        check_loss(loss, temperature)
        built = build_text_backbone(backbone, pretrained, "mean", max_length)
        super().__init__(**embedder_arguments(TextEmbedder, built, locals()), **optimization)
        self.save_hyperparameters(ignore=self.unsaved_hyperparameters())
        self.use_text_backbone(built, backbone, max_length, input_field)

    @classmethod
    def available_backbones(cls) -> list[str]:
        """Backbone names known by name; any Hugging Face model id or local folder works too."""
        return TEXT_BACKBONES.available()
