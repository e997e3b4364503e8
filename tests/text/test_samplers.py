"""LengthGroupedBatchSampler: similar lengths per batch, every item once, order fixed by (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from flash.core.data import EpochShuffleSampler
from flash.core.samplers import LengthGroupedBatchSampler


def lengths_of(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, 120, size=n)


def test_every_item_exactly_once_and_len_matches():
    lengths = lengths_of(1003)
    for drop_last in (False, True):
        sampler = LengthGroupedBatchSampler(
            batch_size=32, drop_last=drop_last, lengths=lengths, group_batches=5
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for b in batches for i in b]
        if drop_last:
            assert all(len(b) == 32 for b in batches) and len(flat) == 1003 // 32 * 32
            assert len(set(flat)) == len(flat)
        else:
            assert sorted(flat) == list(range(1003))


def test_batches_pad_far_less_than_random_batches():
    lengths = lengths_of()
    sampler = LengthGroupedBatchSampler(batch_size=32, lengths=lengths, group_batches=50)
    padded = sum(len(b) * lengths[b].max() for b in sampler)
    order = np.random.default_rng(1).permutation(len(lengths))
    random_padded = sum(32 * lengths[order[i : i + 32]].max() for i in range(0, len(order), 32))
    assert padded < 0.7 * random_padded
    assert padded <= 1.1 * lengths.sum()


def test_order_depends_only_on_seed_and_epoch():
    lengths = lengths_of()
    a = LengthGroupedBatchSampler(batch_size=16, lengths=lengths, seed=3, group_batches=4)
    b = LengthGroupedBatchSampler(batch_size=16, lengths=lengths, seed=3, group_batches=4)
    epoch0 = list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    b.set_epoch(1)
    assert list(b) == epoch1, "a fresh sampler at epoch 1 (a resumed run) must see the same batches"
    assert epoch0 != epoch1, "batches must change between epochs"
    a.set_epoch(0)
    assert list(a) == epoch0
    other = LengthGroupedBatchSampler(batch_size=16, lengths=lengths, seed=4, group_batches=4)
    assert list(other) != epoch0


def test_lightning_reaches_set_epoch_through_the_sampler_attribute():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    class Items(Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, i):
            return i

    inner = EpochShuffleSampler(100, seed=0)
    sampler = LengthGroupedBatchSampler(inner, batch_size=10, lengths=lengths_of(100))
    loader = DataLoader(Items(), batch_sampler=sampler)
    _set_sampler_epoch(loader, 5)
    assert inner.epoch == 5 and sampler.epoch == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lengths": []}, "non-empty"), ({"lengths": [1, 2], "group_batches": 0}, "group_batches")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LengthGroupedBatchSampler(batch_size=4, **kwargs)
