"""The data module base shared by every domain: splits, labels, samplers and loaders."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from flash.core.data.randomness import SampleIndex
from flash.core.data.splits import (  # noqa: F401  (re-exported: the data module's vocabulary)
    LabelEncoder,
    Split,
    encode_multi_hot_columns,
    encode_pending,
    split_off_validation,
)
from flash.core.utils.validation import check_optional_int

STAGES = ("train", "val", "test", "predict")


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

    It yields :class:`~flash.core.data.randomness.SampleIndex` values: plain ``int`` indices that
    also carry ``seed`` and ``epoch``, so a dataset can key each item's augmentation on
    ``(seed, epoch, index)`` in whichever worker process reads it.
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
        for index in torch.randperm(self.length, generator=generator).tolist():
            yield SampleIndex(index, self.seed, self.epoch)


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
        pending_targets: raw targets waiting for a task's classes (see
            :func:`flash.core.data.splits.encode_splits`); encoded when a task is attached.

    The task is attached in Lightning's :meth:`setup` hook, so ``lightning.Trainer().fit(task,
    datamodule=data)`` and :class:`flash.Trainer` train alike: the data checks its classes
    against the task's and takes the task's preprocessing. The data reads the task; the task
    never reaches into the data.
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
        pending_targets: dict[str, tuple[list[Any], str]] | None = None,
    ) -> None:
        super().__init__()
        check_optional_int(batch_size, "batch_size", 1)
        check_optional_int(num_workers, "num_workers", 0)
        check_optional_int(seed, "seed", 0)
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
        self._pending_targets = dict(pending_targets or {})
        self.task: Any = None

    # -- what the task needs ------------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """Number of classes in the training data (``None`` for regression)."""
        return None if self.labels is None else len(self.labels)

    def setup(self, stage: str) -> None:
        """Lightning's hook before every ``fit``, ``validate``, ``test`` and ``predict``: attach the
        trainer's task (see :meth:`attach_task`)."""
        trainer = self.trainer
        task = getattr(trainer, "lightning_module", None) if trainer is not None else None
        if task is not None:
            self.attach_task(task)

    def attach_task(self, task: Any) -> None:
        """Take what the data needs from ``task``; called by :meth:`setup` (it may be called directly too).

        Encodes targets that waited for the task's classes, checks the task's classes against
        the data's, and lets the domain take the task's preprocessing (image size and
        normalisation, tokenizer, fitted columns, ...). Datasets are rebuilt.
        """
        if self.labels is None and self._pending_targets and getattr(task, "labels", None) is not None:
            multi_label = bool(getattr(task, "multi_label", False))
            encode_pending(self.splits, self._pending_targets, task.labels, multi_label)
            self.labels, self.multi_label = list(task.labels), multi_label
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

    # -- cross-validation -------------------------------------------------------------------------
    fold_needs_fresh_task: bool = False
    """Whether each cross-validation fold needs a task built from that fold's data (data whose
    preprocessing is fitted on the training items, which a fold changes)."""

    fold_task_example: str = "lambda data: MyTask.from_data(data)"
    """How such data's users build a task per fold, quoted by the error that asks for a factory."""

    def pooled_training(self) -> Split:
        """The labelled items cross-validation folds are drawn from: the training items, then the
        validation items (when given)."""
        train, val = self.splits.get("train"), self.splits.get("val")
        if train is None or train.targets is None or "train" in self._pending_targets:
            raise ValueError("Cross-validation needs training data with labels.")
        if val is None:
            return train
        if val.targets is None or "val" in self._pending_targets:
            raise ValueError("The validation data has no labels; cross-validation pools it with training.")
        targets = np.concatenate([np.asarray(train.targets), np.asarray(val.targets)])
        return Split([*train.inputs, *val.inputs], targets)

    def without_validation(self) -> DataModule:
        """A copy of this data without its validation split: what ``strategy="auto"`` searches on,
        so the validation items stay unseen until the chosen setting trains."""
        clone = copy.copy(self)
        clone.splits = {**self.splits, "val": None}
        clone._datasets = {}
        clone.task = None
        clone.trainer = None
        return clone

    def fold(self, train_indices: Sequence[int], val_indices: Sequence[int]) -> DataModule:
        """A copy of this data whose training and validation items are the given positions of
        :meth:`pooled_training`; test data is kept, prediction inputs are dropped.

        Domains with state tied to their splits (caches keyed by stage, fitted preprocessing)
        extend this.
        """
        pooled = self.pooled_training()
        clone = copy.copy(self)
        clone.splits = {
            "train": pooled.subset(train_indices),
            "val": pooled.subset(val_indices),
            "test": self.splits.get("test"),
            "predict": None,
        }
        clone._datasets = {}
        clone._pending_targets = {}
        clone.task = None
        clone.trainer = None
        return clone

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
        if stage in self._pending_targets:
            raise ValueError(
                f"The {stage} data has no encoded labels yet: the data has no training labels to learn "
                "the classes from. Use it with a task that knows its classes (a trained or loaded task), "
                "or give training data."
            )
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

    def describe(self) -> dict[str, Any]:
        """The data's own statistics for a run report (``flash finetune ... --report``): image
        sizes, text lengths, columns ... as plain values, by name. Cheap: it reads headers and
        samples, never decodes a whole data set. Empty here; domains override it.
        """
        return {}
