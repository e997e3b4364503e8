"""Classification on top of :class:`~flash.core.model.task.Task`: losses, metrics, labels, outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from torch import nn

from flash.core.model.task import Task
from flash.core.utils.jsonable import to_json
from flash.core.utils.validation import check_int


def check_num_classes(num_classes: Any, labels: Sequence[str] | None, minimum: int = 1) -> int:
    """``num_classes`` checked against ``labels``; taken from ``labels`` when it is None."""
    if num_classes is None:
        if labels is None:
            raise ValueError("Pass num_classes (e.g. num_classes=data.num_classes) or labels=data.labels.")
        num_classes = len(labels)
    check_int(num_classes, "num_classes", minimum)
    if labels is not None and len(labels) != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but {len(labels)} labels were given ({', '.join(map(str, labels))})."
        )
    return num_classes


def take_data_labels(task: Any, labels: Sequence[Any]) -> None:
    """Check the data's class names against ``task.num_classes`` and ``task.labels``, then keep them.

    The names go into ``task.labels`` and the task's hyper-parameters, so they travel in checkpoints.
    """
    labels = list(labels)
    if len(labels) != task.num_classes:
        raise ValueError(
            f"The task was built with num_classes={task.num_classes}, but the data has {len(labels)} classes "
            f"({', '.join(map(str, labels[:20]))}). Build it with num_classes=data.num_classes."
        )
    if task.labels is not None and [str(x) for x in task.labels] != [str(x) for x in labels]:
        raise ValueError(f"The task's classes {task.labels} differ from the data's {labels}.")
    task.labels = labels
    task.hparams["labels"] = labels


def classification_metrics(num_classes: int, multi_label: bool) -> dict[str, nn.Module]:
    if multi_label:
        return {
            "accuracy": torchmetrics.classification.MultilabelAccuracy(num_labels=num_classes),
            "f1": torchmetrics.classification.MultilabelF1Score(num_labels=num_classes, average="macro"),
        }
    if num_classes == 1:
        raise ValueError("A single-label classifier needs num_classes >= 2.")
    return {
        "accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "f1": torchmetrics.classification.MulticlassF1Score(num_classes=num_classes, average="macro"),
    }


_CONFORMAL_BUFFERS = ("conformal_threshold", "conformal_coverage")
_MULTI_LABEL_SETS = (
    "Conformal prediction sets are for single-label classifiers; this task is multi-label, whose "
    "per-class probabilities already give a set (the classes above multi_label_threshold)."
)


class ClassificationTask(Task):
    """A task whose head outputs one logit per class.

    Args:
        num_classes: number of classes.
        labels: class names, index ``i`` naming class ``i``; filled from the data module at
            training time when not given, and saved in checkpoints.
        multi_label: each item can carry several classes (sigmoid outputs, BCE loss).
        multi_label_threshold: probability above which a class is predicted (multi-label).
        **kwargs: :class:`~flash.core.model.task.Task` arguments.
    """

    outputs = ("labels", "probabilities", "logits", "classes", "set")
    monitor = "val_accuracy"
    monitor_mode = "max"
    serve_outputs = ("labels", "probabilities")
    output_fields = {
        "labels": "label",
        "probabilities": "probabilities",
        "logits": "logits",
        "classes": "class",
        "set": "set",
    }

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        num_classes: int,
        labels: Sequence[str] | None = None,
        multi_label: bool = False,
        multi_label_threshold: float = 0.5,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes, labels)
        loss = nn.BCEWithLogitsLoss() if multi_label else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        super().__init__(
            backbone, head, loss_fn=loss, metrics=classification_metrics(num_classes, multi_label), **kwargs
        )
        self.num_classes = num_classes
        self.multi_label = bool(multi_label)
        self.multi_label_threshold = float(multi_label_threshold)
        self.labels = list(labels) if labels is not None else None
        self.register_buffer("temperature", torch.ones((), dtype=torch.float32), persistent=True)
        # 0 until fitted (not NaN: state dicts stay comparable with torch.equal)
        for name in _CONFORMAL_BUFFERS:
            self.register_buffer(name, torch.zeros((), dtype=torch.float32), persistent=True)

    temperature: torch.Tensor
    """The scalar the logits are divided by before the softmax (single-label tasks; 1 until
    :meth:`flash.Trainer.calibrate` fits it on held-out data). It is saved in checkpoints and used
    by :meth:`probabilities`, so by ``predict(output="probabilities")``, serving and the ONNX
    export's ``probabilities``; the predicted labels do not depend on it."""

    conformal_threshold: torch.Tensor
    """The conformal threshold ``q`` on ``1 - probability`` (single-label tasks; fitted by
    :meth:`flash.Trainer.calibrate` with ``coverage=``): ``predict(output="set")`` gives each item
    the classes whose calibrated probability is at least ``1 - q``. Saved in checkpoints."""

    conformal_coverage: torch.Tensor
    """The coverage the :attr:`conformal_threshold` was fitted for, in ``(0, 1)``; 0 while none is
    fitted (as in checkpoints saved before conformal sets existed)."""

    @property
    def has_conformal_sets(self) -> bool:
        """Whether a conformal threshold is fitted, so ``predict(output="set")`` works."""
        return float(self.conformal_coverage) > 0

    def set_conformal_threshold(self, threshold: float | None, coverage: float | None = None) -> None:
        """Keep a conformal threshold fitted for ``coverage`` on this task's calibrated probabilities
        (:func:`flash.core.model.conformal.fit_conformal_threshold`); ``None`` removes it.

        Raises:
            ValueError: a threshold outside ``[0, 1]``, a coverage outside ``(0, 1)``, or a
                multi-label task.
        """
        from flash.core.model.conformal import check_coverage
        from flash.core.utils.validation import check_number

        if threshold is None:
            self.conformal_threshold.zero_()
            self.conformal_coverage.zero_()
            return
        if self.multi_label:
            raise ValueError(_MULTI_LABEL_SETS)
        threshold = check_number(threshold, "threshold", "[0, 1]")
        coverage = check_coverage(coverage)
        self.conformal_threshold.fill_(threshold)
        self.conformal_coverage.fill_(coverage)

    def set_temperature(self, temperature: float) -> None:
        """Divide the logits by ``temperature`` before the softmax from now on (``1.0``: undo calibration).

        A conformal threshold fitted at another temperature no longer fits the probabilities, so
        changing the temperature removes it (``calibrate(..., coverage=)`` fits both together).

        Raises:
            ValueError: for a temperature that is not a positive finite number, or a multi-label
                task (its sigmoid outputs keep temperature 1).
        """
        if self.multi_label:
            raise ValueError(
                "Temperature scaling is for single-label classifiers; this task is multi-label, whose "
                "per-class sigmoid probabilities keep temperature 1."
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}.")
        if float(temperature) != float(self.temperature):
            self.set_conformal_threshold(None)
        self.temperature.fill_(float(temperature))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Checkpoints saved before tasks had a temperature are uncalibrated: they load with T = 1.
        if prefix + "temperature" not in state_dict:
            state_dict[prefix + "temperature"] = torch.ones((), dtype=torch.float32)
        # ... and checkpoints saved before conformal sets have none fitted.
        for name in _CONFORMAL_BUFFERS:
            if prefix + name not in state_dict:
                state_dict[prefix + name] = torch.zeros((), dtype=torch.float32)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def metric_input(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output) if self.multi_label else output

    def step_target(self, target: torch.Tensor) -> torch.Tensor:
        return target.float() if self.multi_label else target

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities: ``sigmoid(logits)`` (multi-label) or ``softmax(logits / temperature)``."""
        logits = logits.float()
        if self.multi_label:
            return torch.sigmoid(logits)
        return torch.softmax(logits / self.temperature.to(device=logits.device, dtype=logits.dtype), dim=-1)

    def class_name(self, index: int) -> Any:
        return self.labels[index] if self.labels is not None else index

    def check_output(self, output: str) -> None:
        """Refuse an unknown output, and ``"set"`` on a multi-label task or before a conformal
        threshold is fitted."""
        super().check_output(output)
        if output != "set":
            return
        if self.multi_label:
            raise ValueError(_MULTI_LABEL_SETS)
        if not self.has_conformal_sets:
            raise ValueError(
                'output="set" needs a conformal threshold, and this task has none: fit one on held-out '
                "data with flash.Trainer().calibrate(task, datamodule, coverage=0.9) (or flash finetune "
                "... --calibrate --coverage 0.9), then save the task."
            )

    def format_output(self, output: torch.Tensor, kind: str) -> list[Any]:
        if kind == "logits":
            return output.float().cpu().tolist()
        probs = self.probabilities(output).cpu()
        names = [self.class_name(i) for i in range(probs.shape[-1])]
        if kind == "probabilities":
            return [dict(zip(names, row)) for row in probs.tolist()]
        if kind == "set":
            from flash.core.model.conformal import prediction_sets

            return [
                [names[i] for i in row] for row in prediction_sets(probs, float(self.conformal_threshold))
            ]
        if self.multi_label:
            indices = [
                [i for i, p in enumerate(row) if p >= self.multi_label_threshold] for row in probs.tolist()
            ]
            return indices if kind == "classes" else [[names[i] for i in row] for row in indices]
        indices = probs.argmax(dim=-1).tolist()
        return indices if kind == "classes" else [names[i] for i in indices]

    def export_outputs(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        output = output.float()
        return {"logits": output, "probabilities": self.probabilities(output)}

    def export_output_descriptions(self) -> dict[str, str]:
        activation = "sigmoid" if self.multi_label else "softmax"
        return {
            "logits": "one logit per class, (batch, classes)",
            "probabilities": f"{activation} of the logits{'' if self.multi_label else ' / temperature'}, "
            "(batch, classes), class i named labels[i]",
        }

    def export_metadata(self) -> dict[str, Any]:
        return {
            **super().export_metadata(),
            "labels": to_json(self.labels),
            "multi_label": self.multi_label,
            "multi_label_threshold": self.multi_label_threshold,
            "temperature": float(self.temperature),
            # a class is in an item's set when its probability is >= 1 - conformal_threshold
            "conformal_threshold": float(self.conformal_threshold) if self.has_conformal_sets else None,
            "conformal_coverage": float(self.conformal_coverage) if self.has_conformal_sets else None,
        }

    def attach_labels(self, labels: Sequence[str] | None, multi_label: bool | None = None) -> None:
        """Check the data's classes against the task and keep their names (they travel in checkpoints)."""
        if labels is None:
            return
        if multi_label is not None and bool(multi_label) != self.multi_label:
            raise ValueError(
                f"The data is {'multi-label' if multi_label else 'single-label'} but the task was built with "
                f"multi_label={self.multi_label}. Pass multi_label=data.multi_label."
            )
        take_data_labels(self, labels)
