"""Batch samplers that group items of similar length, so padding costs little.

Padding every sequence of a batch to a fixed length wastes most of the compute on short texts
(SST-2 sentences average 13 tokens; padded to 128, nine tenths of every matrix product is
padding). Grouping items of similar length into the same batch and padding each batch only to
its longest item removes almost all of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

from flash.core.data.datamodule import EpochShuffleSampler
from flash.core.utils.validation import check_int


class LengthGroupedBatchSampler(BatchSampler):
    """Random batches whose items have similar lengths, for one process or several (DDP).

    Each epoch, the indices from ``sampler`` (a shuffle) are cut into groups of
    ``group_batches`` steps; each group is sorted by length and cut into steps, and the steps of
    all groups are shuffled. So every batch holds items of similar length while the batches'
    composition and order change from epoch to epoch.

    A step is one batch per rank: with ``num_replicas`` ranks, a step holds
    ``batch_size * num_replicas`` items of similar length and rank ``rank`` takes its slice. So
    every rank computes the same steps in the same order, the ranks' batches are disjoint (every
    item is used once per epoch, by one rank), every rank gets the same number of batches (DDP
    waits for the slowest rank at each step, and a rank with one batch more would hang), and the
    ranks' batches at a step have similar lengths (none waits long for another). Without
    ``drop_last`` the last step's items are spread evenly over the ranks (its batches may be
    smaller; a remainder smaller than ``num_replicas`` joins the step before, whose batches may
    then hold ``batch_size + 1`` items).

    The order depends only on ``(seed, epoch)``: :meth:`set_epoch` (which Lightning calls through
    :attr:`sampler`) fixes both the shuffle and the batch order, so a resumed run sees the same
    batches as an uninterrupted one.

    Under DDP Lightning rebuilds this sampler with a :class:`~torch.utils.data.DistributedSampler`
    as ``sampler``; its ``num_replicas``, ``rank``, ``epoch`` and ``shuffle`` are used, but not its
    per-rank shard: the whole dataset is shuffled here with ``seed`` (identically on every rank)
    and split into steps as above.

    Args:
        sampler: the shuffle of item indices (default: an :class:`EpochShuffleSampler`), or a
            ``DistributedSampler`` (see above).
        batch_size: items per batch (per rank).
        drop_last: drop the last step if it holds fewer than ``batch_size`` items per rank.
        lengths: the length of every item of the dataset (tokens, frames, ...).
        group_batches: how many steps' worth of items are sorted together. Larger groups pad
            less; smaller ones keep batches more random.
        seed: seed of the default shuffle and of the batch order (the same on every rank).
        num_replicas: number of ranks (default: the ``DistributedSampler``'s, else 1).
        rank: this process's rank, ``0 <= rank < num_replicas`` (default: the
            ``DistributedSampler``'s, else 0).
    """

    def __init__(
        self,
        sampler: Sampler[int] | None = None,
        batch_size: int = 32,
        drop_last: bool = False,
        *,
        lengths: Sequence[int],
        group_batches: int = 50,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or len(lengths) == 0:
            raise ValueError("lengths must give one length per item of a non-empty dataset.")
        check_int(group_batches, "group_batches", 1)
        distributed = isinstance(sampler, DistributedSampler)
        if num_replicas is None:
            num_replicas = int(sampler.num_replicas) if distributed else 1  # type: ignore[union-attr]
        if rank is None:
            rank = int(sampler.rank) if distributed else 0  # type: ignore[union-attr]
        check_int(num_replicas, "num_replicas", 1)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be a whole number in [0, {num_replicas}), got {rank!r}.")
        if len(lengths) < num_replicas:
            raise ValueError(
                f"{len(lengths)} items cannot give each of {num_replicas} ranks a batch: "
                "use fewer ranks or more data."
            )
        if sampler is None:
            sampler = EpochShuffleSampler(len(lengths), seed)
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.group_batches = group_batches
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        # a DistributedSampler yields one rank's shard; every rank needs the whole shuffle
        self._shuffle = EpochShuffleSampler(len(lengths), seed) if distributed else None

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Fix the order of ``epoch`` (forwarded to the shuffle)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def _indices(self) -> np.ndarray:
        if self._shuffle is None:
            return np.fromiter((int(i) for i in self.sampler), dtype=np.int64)
        if not getattr(self.sampler, "shuffle", True):
            return np.arange(len(self.lengths))
        self._shuffle.set_epoch(self.epoch)
        return np.fromiter(iter(self._shuffle), dtype=np.int64)

    def steps(self) -> list[np.ndarray]:
        """The items of every step of this epoch (all ranks' batches), in the order they are used."""
        indices = self._indices()
        step = self.batch_size * self.num_replicas
        group_size = step * self.group_batches
        steps: list[np.ndarray] = []
        for start in range(0, len(indices), group_size):
            group = indices[start : start + group_size]
            # stable: equal lengths keep their shuffled order, so ties are not biased by index
            group = group[np.argsort(-self.lengths[group], kind="stable")]
            steps.extend(group[first : first + step] for first in range(0, len(group), step))
        if steps and len(steps[-1]) < step:
            if self.drop_last:
                steps.pop()
            elif len(steps[-1]) < self.num_replicas and len(steps) > 1:
                tail = steps.pop()
                merged = np.concatenate([steps[-1], tail])
                steps[-1] = merged[np.argsort(-self.lengths[merged], kind="stable")]
        generator = torch.Generator()
        generator.manual_seed(self.seed * 100_019 + self.epoch)
        return [steps[position] for position in torch.randperm(len(steps), generator=generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        for items in self.steps():
            yield np.array_split(items, self.num_replicas)[self.rank].tolist()

    def __len__(self) -> int:
        items = len(self.lengths) if self._shuffle is not None else len(self.sampler)  # type: ignore[arg-type]
        step = self.batch_size * self.num_replicas
        if self.drop_last:
            return items // step
        full_groups, rest = divmod(items, step * self.group_batches)
        count = full_groups * self.group_batches + -(-rest // step)
        if 0 < rest % step < self.num_replicas and count > 1:
            count -= 1  # the remainder joined the step before
        return count
