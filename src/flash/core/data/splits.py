"""The one split-and-label funnel every domain's constructors end in.

Raw items and raw targets per stage go in (class names or numbers, lists of names for
multi-label, 0/1 matrices, or real values for regression); :func:`encode_splits` learns the
classes from the training targets (or takes them from ``labels=``), encodes every stage with
them, holds out a stratified ``val_split`` and returns one :class:`Split` per stage.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flash.core.data.tables import is_missing as _is_missing
from flash.core.utils.validation import check_fraction

LABELLED_STAGES = ("train", "val", "test")


@dataclass
class Split:
    """The raw items of one stage and their encoded targets (``None`` when unlabelled)."""

    inputs: list[Any]
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> Split:
        targets = None if self.targets is None else self.targets[np.asarray(indices, dtype=np.int64)]
        return Split([self.inputs[i] for i in indices], targets)


def _sort_key(label: Any) -> tuple[int, Any]:
    return (0, label) if isinstance(label, int | float | np.integer | np.floating) else (1, str(label))


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class LabelEncoder:
    """Maps class names to indices, learned from the training targets only.

    Single-label targets are one hashable per item. Multi-label targets are a list of names per
    item, or a 0/1 row per item with ``labels`` naming the columns.
    """

    def __init__(self, labels: Sequence[Any], multi_label: bool = False) -> None:
        self.labels = [_plain(x) for x in labels]
        self.multi_label = multi_label
        self._index = {self._key(x): i for i, x in enumerate(self.labels)}

    @staticmethod
    def _key(label: Any) -> Hashable:
        return str(_plain(label))

    @classmethod
    def fit(cls, targets: Sequence[Any], multi_label: bool = False, what: str = "train") -> LabelEncoder:
        seen: dict[Hashable, Any] = {}
        for row, target in enumerate(targets):
            values = target if multi_label else [target]
            if not multi_label and _is_missing(target):
                raise ValueError(
                    f"{what} target of item {row} is missing. Give every item a label, or drop it."
                )
            if multi_label and isinstance(target, str):
                values = [v for v in target.replace(";", ",").split(",") if v.strip()]
            for value in values:
                value = value.strip() if isinstance(value, str) else value
                if _is_missing(value):
                    continue
                seen.setdefault(cls._key(value), _plain(value))
        if not seen:
            raise ValueError(f"No labels found in the {what} targets.")
        return cls(sorted(seen.values(), key=_sort_key), multi_label)

    def encode(self, targets: Sequence[Any], what: str = "train") -> np.ndarray:
        if self.multi_label:
            out = np.zeros((len(targets), len(self.labels)), dtype=np.float32)
            for row, target in enumerate(targets):
                values = target
                if isinstance(target, str):
                    values = [v.strip() for v in target.replace(";", ",").split(",") if v.strip()]
                for value in values:
                    out[row, self._lookup(value, row, what)] = 1.0
            return out
        out = np.empty(len(targets), dtype=np.int64)
        for row, target in enumerate(targets):
            if _is_missing(target):
                raise ValueError(
                    f"{what} target of item {row} is missing. Give every item a label, or drop it."
                )
            out[row] = self._lookup(target, row, what)
        return out

    def _lookup(self, value: Any, row: int, what: str) -> int:
        key = self._key(value)
        if key not in self._index:
            shown = ", ".join(map(str, self.labels[:30]))
            raise ValueError(
                f"{what} item {row} has label {value!r}, which the training data never has. "
                f"Training labels: {shown}. Every class must appear in training."
            )
        return self._index[key]


def encode_multi_hot_columns(rows: np.ndarray, what: str) -> np.ndarray:
    """Check a 0/1 multi-label matrix (one column per class)."""
    values = np.asarray(rows, dtype=np.float32)
    if np.isnan(values).any():
        row = int(np.argwhere(np.isnan(values))[0][0])
        raise ValueError(f"{what} item {row} has a missing multi-label target.")
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{what} multi-label target columns must hold only 0 and 1.")
    return values


def split_off_validation(split: Split, val_split: float, seed: int) -> tuple[Split, Split]:
    """Hold out ``val_split`` of ``split`` for validation, stratified by class when single-label."""
    check_fraction(val_split, "val_split")
    n = len(split)
    n_val = round(n * val_split)
    if n_val < 1 or n_val >= n:
        raise ValueError(f"val_split={val_split} of {n} items leaves no items for training or validation.")
    rng = np.random.default_rng(seed)
    targets = split.targets
    if targets is not None and targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer):
        val_idx: list[int] = []
        for cls in np.unique(targets):
            members = np.flatnonzero(targets == cls)
            rng.shuffle(members)
            take = round(len(members) * val_split)
            val_idx.extend(members[:take].tolist())
        val_set = set(val_idx)
        train_idx = [i for i in range(n) if i not in val_set]
    else:
        order = rng.permutation(n)
        val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    return split.subset(train_idx), split.subset(sorted(val_idx))


def hold_out_validation(splits: dict[str, Split | None], val_split: float | None, seed: int) -> None:
    """Replace ``splits["train"]`` by its rest and ``splits["val"]`` by ``val_split`` of it, in place.

    Nothing happens when ``val_split`` is ``None``. Raises ``ValueError`` without training data or
    when validation data was given as well.
    """
    if val_split is None:
        return
    if splits.get("train") is None:
        raise ValueError("val_split holds out part of the training data, but no training data was given.")
    if splits.get("val") is not None:
        raise ValueError("Pass either validation data or val_split, not both.")
    splits["train"], splits["val"] = split_off_validation(splits["train"], val_split, seed)


def is_multi_label(targets: Sequence[Any]) -> bool:
    """Whether raw targets carry several classes per item (a list, tuple, set or array each)."""
    return any(isinstance(t, list | tuple | set | np.ndarray) for t in targets)


@dataclass
class EncodedSplits:
    """What :func:`encode_splits` returns.

    Attributes:
        splits: ``train``, ``val``, ``test`` and ``predict`` (``None`` where not given).
        labels: class names (``None`` for regression, or until a task names them).
        multi_label: items can carry several classes.
        pending: raw targets of stages that wait for a task's classes (no training data and no
            ``labels=``): ``{stage: (targets, what)}``, encoded by :meth:`encode_pending`.
    """

    splits: dict[str, Split | None]
    labels: list[Any] | None
    multi_label: bool
    pending: dict[str, tuple[list[Any], str]] = field(default_factory=dict)


def encode_splits(
    inputs: Mapping[str, Sequence[Any] | None],
    targets: Mapping[str, Any],
    *,
    labels: Sequence[Any] | None = None,
    multi_label: bool | None = None,
    val_split: float | None = None,
    seed: int = 42,
    regression: bool = False,
    whats: Mapping[str, str] | None = None,
    noun: str = "items",
) -> EncodedSplits:
    """Encode every stage's targets with the classes of the training data and hold out ``val_split``.

    Args:
        inputs: ``{stage: items}`` for ``train``, ``val``, ``test`` and ``predict`` (missing or
            ``None``: not given).
        targets: ``{stage: raw targets}`` for the labelled stages given: one class per item, a
            list of classes per item, a 0/1 matrix with one column per class (``labels`` names
            the columns), or numbers (``regression``).
        labels: the class names, when known beforehand (their order is kept).
        multi_label: ``None`` infers it from the targets (a list of classes per item).
        val_split: fraction of the training items held out for validation (stratified by class).
        seed: seed of that split.
        regression: targets are real values (one column per target), not classes.
        whats: how messages name each stage (default: the stage's name).
        noun: how messages name the items (``"images"``, ``"texts"``, ``"rows"``).

    Raises:
        ValueError: for a stage without targets, inputs and targets of different lengths, a
            missing label, a class that training lacks, or a bad ``val_split``.
    """
    whats = dict(whats or {})
    given = {stage: list(items) for stage, items in inputs.items() if items is not None}
    for stage in LABELLED_STAGES:
        if stage not in given:
            continue
        what = whats.setdefault(stage, stage)
        raw = targets.get(stage)
        if raw is None:
            raise ValueError(f"The {what} {noun} need targets (their classes or values).")
        if len(raw) != len(given[stage]):
            raise ValueError(f"{len(given[stage])} {what} {noun} but {len(raw)} {what} targets.")
    raw_targets = {stage: targets[stage] for stage in LABELLED_STAGES if stage in given}
    encoded: dict[str, np.ndarray] = {}
    pending: dict[str, tuple[list[Any], str]] = {}
    if regression:
        encoded = {s: np.asarray(t, dtype=np.float32) for s, t in raw_targets.items()}
        labels, multi = None, False
    else:
        matrix = any(isinstance(t, np.ndarray) and t.ndim == 2 for t in raw_targets.values())
        multi = bool(matrix or (is_multi_label([t for v in raw_targets.values() for t in v])
                                if multi_label is None else multi_label))  # fmt: skip
        encoder = LabelEncoder(labels, multi) if labels is not None else None
        if encoder is None and "train" in raw_targets:
            encoder = LabelEncoder.fit(_as_list(raw_targets["train"]), multi, what=whats["train"])
        for stage, raw in raw_targets.items():
            if isinstance(raw, np.ndarray) and raw.ndim == 2:
                encoded[stage] = _checked_matrix(raw, encoder, whats[stage])
            elif encoder is not None:
                encoded[stage] = encoder.encode(_as_list(raw), what=whats[stage])
            else:
                pending[stage] = (_as_list(raw), whats[stage])
        labels = encoder.labels if encoder is not None else None
    splits: dict[str, Split | None] = {
        stage: Split(given[stage], encoded.get(stage)) if stage in given else None
        for stage in (*LABELLED_STAGES, "predict")
    }
    if val_split is not None and "train" in pending:
        raise ValueError("val_split needs the training targets encoded: give labels= or training data.")
    hold_out_validation(splits, val_split, seed)
    return EncodedSplits(splits, labels, multi, pending)


def encode_pending(
    splits: Mapping[str, Split | None],
    pending: dict[str, tuple[list[Any], str]],
    labels: Sequence[Any],
    multi_label: bool,
) -> None:
    """Encode the targets :func:`encode_splits` left pending with ``labels`` (a task's classes), in place."""
    encoder = LabelEncoder(labels, multi_label)
    for stage, (targets, what) in pending.items():
        split = splits[stage]
        if split is not None:
            split.targets = encoder.encode(targets, what)
    pending.clear()


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _checked_matrix(matrix: np.ndarray, encoder: LabelEncoder | None, what: str) -> np.ndarray:
    values = encode_multi_hot_columns(matrix, what)
    if encoder is None or values.shape[1] != len(encoder.labels):
        raise ValueError(
            f"The {what} targets have {values.shape[1]} 0/1 columns; name one class per column with labels=."
        )
    return values
