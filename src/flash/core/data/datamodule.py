"""The data module base shared by every domain: splits, labels, samplers and loaders."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

STAGES = ("train", "val", "test", "predict")


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


def default_num_workers() -> int:
    """Loader processes that leave the model a core: none on 1-2 cores, up to 8 on big machines.

    On a small CPU, worker processes decoding images compete with the model's threads for the
    same cores (measured in ``benchmarks/``); decoded items are cached instead.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.cuda.is_available():
        return max(1, min(16, cpus - 1))
    return 0 if cpus <= 2 else min(8, cpus // 2)


class EpochShuffleSampler(Sampler[int]):
    """A shuffle that depends only on ``(seed, epoch)``, so a resumed run sees the same order.

    Lightning calls :meth:`set_epoch` before every training epoch. :attr:`generator` is also
    handed to the DataLoader, so creating its iterator draws nothing from the global RNG (which
    would shift dropout and augmentation depending on when the iterator was made).
    """

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed * 100_003 + epoch + 1)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(self.length, generator=generator).tolist()


def _sort_key(label: Any) -> tuple[int, Any]:
    return (0, label) if isinstance(label, int | float | np.integer | np.floating) else (1, str(label))


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


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
    if not 0 < val_split < 1:
        raise ValueError(f"val_split must be a fraction between 0 and 1, got {val_split!r}.")
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


class DataModule(LightningDataModule):
    """What every domain's ``*Data`` class shares.

    Domains build :class:`Split` objects in their ``from_*`` constructors and implement
    :meth:`make_dataset` (raw items to a dataset of ``{"input", "target"}`` dicts) and, where
    items need padding, :meth:`collate_fn`.

    Args:
        train, val, test, predict: the splits (any may be ``None``).
        labels: class names, index ``i`` naming class ``i`` (classification).
        multi_label: items can carry several classes.
        batch_size: items per batch.
        num_workers: loader processes; default :func:`default_num_workers`.
        seed: seed of the training shuffle and of ``val_split``.
    """

    default_batch_size = 32

    def __init__(
        self,
        train: Split | None = None,
        val: Split | None = None,
        test: Split | None = None,
        predict: Split | None = None,
        *,
        labels: Sequence[Any] | None = None,
        multi_label: bool = False,
        batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise ValueError(f"num_workers must be a whole number >= 0, got {num_workers!r}.")
        if all(s is None for s in (train, val, test, predict)):
            raise ValueError("No data given: pass at least one of the train, val, test or predict inputs.")
        for name, split in (("train", train), ("val", val), ("test", test)):
            if split is not None and len(split) == 0:
                raise ValueError(f"The {name} data is empty.")
        self.splits: dict[str, Split | None] = {"train": train, "val": val, "test": test, "predict": predict}
        self.labels = list(labels) if labels is not None else None
        self.multi_label = multi_label
        self.batch_size = batch_size or self.default_batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.seed = seed
        self._datasets: dict[str, Dataset] = {}
        self.task: Any = None

    # -- what the task needs ------------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """Number of classes in the training data (``None`` for regression)."""
        return None if self.labels is None else len(self.labels)

    def attach_task(self, task: Any) -> None:
        """Called by :class:`flash.Trainer` before running ``task`` on this data.

        Checks the task's classes against the data's and lets the domain take the task's
        preprocessing (image size and normalisation, tokenizer, ...). Datasets are rebuilt.
        """
        num_classes = getattr(task, "num_classes", None)
        if isinstance(num_classes, int) and self.labels is not None and num_classes > len(self.labels):
            self.widen_integer_labels(num_classes)
        if hasattr(task, "attach_labels"):
            task.attach_labels(self.labels, self.multi_label)
        self.task = task
        self._datasets.clear()

    def widen_integer_labels(self, num_classes: int) -> bool:
        """Make the classes ``0 .. num_classes - 1`` when every label is such an integer.

        Integer targets name class indices (as in Lightning Flash): data whose training split lacks
        some class (targets ``0, 1, 3`` for a 4-class task) is re-encoded so that target ``3`` stays
        class 3. Returns whether anything changed; labels that are not all integers in range are
        left alone (the task then reports the mismatch).
        """
        labels = self.labels
        if labels is None or len(labels) >= num_classes:
            return False
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < num_classes for x in labels):
            return False
        positions = np.asarray(labels, dtype=np.int64)
        for name, split in self.splits.items():
            if split is None or split.targets is None:
                continue
            targets = np.asarray(split.targets)
            if self.multi_label:
                widened = np.zeros((targets.shape[0], num_classes), dtype=targets.dtype)
                widened[:, positions] = targets
            else:
                widened = positions[targets]
            self.splits[name] = dataclasses.replace(split, targets=widened)
        self.labels = list(range(num_classes))
        self._datasets.clear()
        return True

    # -- domain hooks -------------------------------------------------------------------------
    def make_dataset(self, split: Split, stage: str) -> Dataset:
        raise NotImplementedError

    def collate_fn(self, stage: str) -> Callable[[list[Any]], Any] | None:
        return None

    def train_sampler(self, dataset: Dataset) -> Sampler[int] | None:
        return EpochShuffleSampler(len(dataset), self.seed)

    # -- datasets and loaders -----------------------------------------------------------------
    def dataset(self, stage: str) -> Dataset | None:
        """The dataset of ``stage`` (``train``, ``val``, ``test`` or ``predict``), built once."""
        split = self.splits.get(stage)
        if split is None:
            return None
        if stage not in self._datasets:
            self._datasets[stage] = self.make_dataset(split, stage)
        return self._datasets[stage]

    def _loader(self, stage: str) -> DataLoader:
        dataset = self.dataset(stage)
        if dataset is None:
            raise ValueError(f"This data module has no {stage} data; pass {stage} inputs to its constructor.")
        workers = self.num_workers
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "num_workers": workers,
            "collate_fn": self.collate_fn(stage),
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0,
        }
        if stage == "train":
            sampler = self.train_sampler(dataset)
            if isinstance(sampler, Sampler) and hasattr(sampler, "batch_size"):
                kwargs.pop("batch_size")
                return DataLoader(dataset, batch_sampler=sampler, **kwargs)
            kwargs["sampler"] = sampler
            if isinstance(sampler, EpochShuffleSampler):
                kwargs["generator"] = sampler.generator
        return DataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.splits["val"] is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items() if v is not None)
        return f"{type(self).__name__}({sizes}, num_classes={self.num_classes}, batch_size={self.batch_size})"
