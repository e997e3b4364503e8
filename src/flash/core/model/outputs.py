"""``Output`` objects: Lightning Flash 0.8's way of choosing what a prediction is.

Each one stands for an output kind of the task contract (``task.outputs``): ``LabelsOutput`` for
``"labels"``, ``ClassesOutput`` for ``"classes"``, ``ProbabilitiesOutput`` for
``"probabilities"``, ``LogitsOutput`` for ``"logits"``, ``PredsOutput`` for the model's
predictions (``"logits"`` of a classifier, ``"values"`` of a regressor) and ``Output`` itself for
the raw output tensor of each item. They are accepted, like the kind names, by
``trainer.predict(model, datamodule=..., output=...)`` and ``task.serve(output=...)``.

A subclass can post-process each item's result by overriding :meth:`Output.transform`
(used by ``trainer.predict``; a server sends the kind's JSON as is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

RAW = "raw"
"""The kind of the model's own output per item (a tensor), whatever the task's kinds are."""


class Output:
    """The model's raw output for each item (a tensor); base class of the other outputs.

    Subclasses set :attr:`kind` (an output kind of the task contract) and may override
    :meth:`transform`, which receives one item's result of that kind.
    """

    kind: str = RAW

    def kind_for(self, task: Any) -> str:
        """The output kind this object asks ``task`` for."""
        return self.kind

    def transform(self, result: Any) -> Any:
        """One item's result of :meth:`kind_for`, post-processed (unchanged by default)."""
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PredsOutput(Output):
    """The model's predictions: a classifier's logits, a regressor's values (the task's first kind
    when it has no ``"logits"``)."""

    kind = "preds"

    def kind_for(self, task: Any) -> str:
        outputs = tuple(getattr(task, "outputs", ()))
        if "logits" in outputs:
            return "logits"
        return outputs[0] if outputs else RAW


class LogitsOutput(PredsOutput):
    """One logit per class (a list of floats)."""

    kind = "logits"

    def kind_for(self, task: Any) -> str:
        return "logits"


class ProbabilitiesOutput(PredsOutput):
    """The probability of every class, as ``{class name: probability}`` in class order
    (``list(p.values())`` is Lightning Flash's list)."""

    kind = "probabilities"

    def kind_for(self, task: Any) -> str:
        return "probabilities"


class ClassesOutput(PredsOutput):
    """The predicted class index (a list of indices for a multi-label task).

    Args:
        multi_label: treat the outputs as multi-label (sigmoid, every class above ``threshold``);
            ``None``: as the task is.
        threshold: the probability a class needs in a multi-label prediction; ``None``: the task's.
    """

    kind = "classes"

    def __init__(self, multi_label: bool | None = None, threshold: float | None = None) -> None:
        if multi_label is not None and not isinstance(multi_label, bool):
            raise TypeError(f"multi_label must be True, False or None, got {multi_label!r}.")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1
        ):
            raise ValueError(f"threshold must be a probability between 0 and 1, got {threshold!r}.")
        self.multi_label = multi_label
        self.threshold = None if threshold is None else float(threshold)

    def kind_for(self, task: Any) -> str:
        return self.bind(task).kind

    def _customised(self, task: Any) -> bool:
        """Whether this object asks for something other than the task's own ``classes`` kind."""
        task_multi = bool(getattr(task, "multi_label", False))
        task_threshold = getattr(task, "multi_label_threshold", 0.5)
        return (self.multi_label is not None and self.multi_label != task_multi) or (
            self.threshold is not None and self.threshold != task_threshold
        )

    def bind(self, task: Any) -> _BoundClasses:
        """This output resolved against ``task``: its kind and how each item's result becomes classes."""
        if not self._customised(task):
            return _BoundClasses(self.kind, None, None)
        multi = bool(getattr(task, "multi_label", False)) if self.multi_label is None else self.multi_label
        threshold = getattr(task, "multi_label_threshold", 0.5) if self.threshold is None else self.threshold
        return _BoundClasses("probabilities", multi, threshold)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(multi_label={self.multi_label}, threshold={self.threshold})"


class _BoundClasses:
    """Classes computed from probabilities when an output's multi-label settings differ from the task's."""

    def __init__(self, kind: str, multi_label: bool | None, threshold: float | None) -> None:
        self.kind = kind
        self.multi_label = multi_label
        self.threshold = threshold

    def __call__(self, result: Any) -> Any:
        if self.multi_label is None:
            return result
        values = list(result.values()) if isinstance(result, Mapping) else list(result)
        if self.multi_label:
            return [i for i, p in enumerate(values) if p >= self.threshold]
        return max(range(len(values)), key=values.__getitem__)


class LabelsOutput(ClassesOutput):
    """The predicted class name (a list of names for a multi-label task).

    Args:
        labels: names for the class indices; default: the task's (from its training data).
        multi_label, threshold: as :class:`ClassesOutput`.
    """

    kind = "labels"

    def __init__(
        self,
        labels: Sequence[Any] | None = None,
        multi_label: bool | None = None,
        threshold: float | None = None,
    ) -> None:
        super().__init__(multi_label=multi_label, threshold=threshold)
        if labels is not None and (isinstance(labels, str) or not isinstance(labels, Sequence)):
            raise TypeError(f"labels must be a list of class names, got {type(labels).__name__}.")
        self.labels = None if labels is None else list(labels)

    def bind(self, task: Any) -> Any:
        if self.labels is None and not self._customised(task):
            return _BoundClasses("labels", None, None)
        classes = ClassesOutput.bind(self, task)
        if classes.kind == self.kind:  # the task's own settings: read its class indices
            classes = _BoundClasses("classes", None, None)
        names = self.labels if self.labels is not None else getattr(task, "labels", None)
        return _BoundLabels(classes, names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(labels={self.labels}, multi_label={self.multi_label}, threshold={self.threshold})"


class _BoundLabels:
    def __init__(self, classes: _BoundClasses, names: Sequence[Any] | None) -> None:
        self.kind = classes.kind
        self._classes = classes
        self._names = names

    def __call__(self, result: Any) -> Any:
        found = self._classes(result)
        if self._names is None:
            return found
        try:
            if isinstance(found, list):
                return [self._names[i] for i in found]
            return self._names[found]
        except IndexError:
            raise ValueError(
                f"LabelsOutput has {len(self._names)} labels but the model predicted class {found}; "
                "pass one label per class."
            ) from None


OUTPUTS: dict[str, type[Output]] = {
    "raw": Output,
    "preds": PredsOutput,
    "logits": LogitsOutput,
    "probabilities": ProbabilitiesOutput,
    "classes": ClassesOutput,
    "labels": LabelsOutput,
}
"""Lightning Flash's output names and the classes they stand for."""

OutputSpec = str | Output | None


def resolve_output(task: Any, output: OutputSpec) -> tuple[str, Any]:
    """The contract kind ``output`` asks ``task`` for, and a per-item function applied after it.

    ``output`` is ``None`` (the task's default kind), one of the task's kinds, one of Lightning
    Flash's names (``"preds"``, ``"classes"``, ...; see :data:`OUTPUTS`) or an :class:`Output`.

    Raises:
        ValueError: for a name neither the task nor Lightning Flash knows, a kind the task lacks,
            or one it cannot give yet (the task's ``check_output``, e.g. ``"set"`` before a
            conformal threshold is fitted).
        TypeError: for anything else.
    """
    kind, post = _resolve(task, output)
    if kind != RAW and hasattr(task, "check_output"):
        task.check_output(kind)
    return kind, post


def _resolve(task: Any, output: OutputSpec) -> tuple[str, Any]:
    kinds = tuple(getattr(task, "outputs", ()))
    if output is None:
        return kinds[0], _identity
    if isinstance(output, str):
        if output in kinds:
            return output, _identity
        if output not in OUTPUTS:
            choices = ", ".join(dict.fromkeys([*kinds, *OUTPUTS]))
            raise ValueError(f"Unknown output {output!r}. Choose one of {choices}, or pass an Output object.")
        output = OUTPUTS[output]()
    if isinstance(output, type) and issubclass(output, Output):
        raise TypeError(f"Pass an instance, output={output.__name__}(), not the class itself.")
    if not isinstance(output, Output):
        raise TypeError(
            f"output must be an output name or an Output object (e.g. LabelsOutput()), got {type(output).__name__}."
        )
    if isinstance(output, ClassesOutput):
        bound = output.bind(task)
        passthrough = isinstance(bound, _BoundClasses) and bound.multi_label is None
        kind, post = bound.kind, (_identity if passthrough else bound)
    else:
        kind, post = output.kind_for(task), _identity
    if kind != RAW and kind not in kinds:
        raise ValueError(
            f"{type(task).__name__} has no {kind!r} output (asked for by {output!r}); "
            f"its outputs are {', '.join(kinds)}."
        )
    if type(output).transform is not Output.transform:
        transform = output.transform
        return kind, (lambda result: transform(post(result))) if post is not _identity else transform
    return kind, post


def apply_output(task: Any, output: torch.Tensor, spec: OutputSpec) -> list[Any]:
    """One result per item of a batch of model outputs, as ``spec`` (see :func:`resolve_output`) asks."""
    kind, post = resolve_output(task, spec)
    results = list(output.detach().cpu()) if kind == RAW else task.format_output(output, kind)
    return results if post is _identity else [post(r) for r in results]


def serve_kind(task: Any, output: OutputSpec) -> str:
    """The output kind a server sends for ``output`` (``serve(output=...)``).

    Raises:
        ValueError: for an output that post-processes results in Python (a customised
            ``ClassesOutput``/``LabelsOutput`` or an ``Output`` subclass with its own
            ``transform``), which a server cannot send as one of the task's kinds.
    """
    kind, post = resolve_output(task, output)
    if post is not _identity or kind == RAW:
        raise ValueError(
            f"serve(output={output!r}): a server sends one of the task's output kinds as JSON "
            f"({', '.join(getattr(task, 'outputs', ()))}); this output needs Python post-processing. "
            "Use trainer.predict(..., output=...) for it, or serve one of those kinds."
        )
    return kind


def _identity(result: Any) -> Any:
    return result
