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
from torch.utils.data import BatchSampler, Sampler

from flash.core.data import EpochShuffleSampler


class LengthGroupedBatchSampler(BatchSampler):
    """Random batches whose items have similar lengths.

    Each epoch, the indices from ``sampler`` (a shuffle) are cut into groups of
    ``group_batches * batch_size``; each group is sorted by length and cut into batches, and the
    batches of all groups are shuffled. So every batch holds items of similar length while the
    batches' composition and order change from epoch to epoch.

    The order depends only on ``(seed, epoch)``: :meth:`set_epoch` (which Lightning calls through
    :attr:`sampler`) fixes both the shuffle and the batch order, so a resumed run sees the same
    batches as an uninterrupted one. Under DDP, Lightning swaps ``sampler`` for a distributed
    one; each rank then groups its own shard.

    Args:
        sampler: the shuffle of item indices (default: an :class:`EpochShuffleSampler`).
        batch_size: items per batch.
        drop_last: drop batches smaller than ``batch_size``.
        lengths: the length of every item of the dataset (tokens, frames, ...).
        group_batches: how many batches' worth of items are sorted together. Larger groups pad
            less; smaller ones keep batches more random.
        seed: seed of the default shuffle and of the batch order.
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
    ) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or len(lengths) == 0:
            raise ValueError("lengths must give one length per item of a non-empty dataset.")
        if isinstance(group_batches, bool) or not isinstance(group_batches, int) or group_batches < 1:
            raise ValueError(f"group_batches must be a whole number >= 1, got {group_batches!r}.")
        if sampler is None:
            sampler = EpochShuffleSampler(len(lengths), seed)
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.group_batches = group_batches
        self.seed = seed

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Fix the order of ``epoch`` (forwarded to the shuffle)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        indices = np.fromiter((int(i) for i in self.sampler), dtype=np.int64)
        group_size = self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(indices), group_size):
            group = indices[start : start + group_size]
            # stable: equal lengths keep their shuffled order, so ties are not biased by index
            group = group[np.argsort(-self.lengths[group], kind="stable")]
            for first in range(0, len(group), self.batch_size):
                batch = group[first : first + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch.tolist())
        generator = torch.Generator()
        generator.manual_seed(self.seed * 100_019 + self.epoch)
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]

    def __len__(self) -> int:
        items = len(self.sampler)  # type: ignore[arg-type]
        if self.drop_last:
            return items // self.batch_size
        group_size = self.batch_size * self.group_batches
        full_groups, rest = divmod(items, group_size)
        return full_groups * self.group_batches + -(-rest // self.batch_size)
