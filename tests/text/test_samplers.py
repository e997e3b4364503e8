"""LengthGroupedBatchSampler: similar lengths per batch, every item once, order fixed by (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from flash.core.data.datamodule import EpochShuffleSampler
from flash.core.data.samplers import LengthGroupedBatchSampler


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


# -- several ranks (DDP) -------------------------------------------------------------------------
def ranks(world: int, epoch: int = 0, **kwargs) -> list[list[list[int]]]:
    """Each rank's batches of one epoch, from samplers built independently per rank (as DDP does)."""
    samplers = [LengthGroupedBatchSampler(num_replicas=world, rank=r, **kwargs) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    assert len({len(s) for s in samplers}) == 1, "every rank must expect the same number of batches"
    batches = [list(s) for s in samplers]
    assert [len(b) for b in batches] == [len(s) for s in samplers]
    return batches


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("items", [960, 1003, 65, 97])  # 97 = 3 steps of 32 + 1 item (joins the step before)
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_disjoint_equal_shares_in_the_same_step_order(world, items, drop_last):
    lengths = lengths_of(items)
    kwargs = {"batch_size": 8, "lengths": lengths, "group_batches": 3, "seed": 5, "drop_last": drop_last}
    per_rank = ranks(world, **kwargs)
    flat = [i for batches in per_rank for batch in batches for i in batch]
    assert len(flat) == len(set(flat)), "no item in two batches, on one rank or across ranks"
    if drop_last:
        assert all(len(batch) == 8 for batches in per_rank for batch in batches)
        assert len(flat) == items // (8 * world) * 8 * world
    else:
        assert sorted(flat) == list(range(items)), "every item once per epoch"
        sizes = [len(batch) for batches in per_rank for batch in batches]
        assert min(sizes) >= 1 and max(sizes) <= 9
    # step k of every rank is a slice of the same length-sorted step: the ranks agree on the order
    steps = LengthGroupedBatchSampler(num_replicas=world, rank=0, **kwargs).steps()
    for k, step in enumerate(steps):
        together = [i for r in range(world) for i in per_rank[r][k]]
        assert together == step.tolist()
        assert list(lengths[together]) == sorted(lengths[together], reverse=True)


def test_ranks_batches_at_a_step_have_similar_lengths():
    """DDP waits for the slowest rank at every step: the ranks' widest texts should be close."""
    lengths, world = lengths_of(4000), 4
    per_rank = ranks(world, batch_size=16, lengths=lengths, seed=0)
    widths = np.array([[lengths[b].max() for b in step] for step in zip(*per_rank)])
    # ranks batching in orders of their own (different seeds) would give about 0.7 here
    assert np.mean(np.ptp(widths, axis=1) / widths.max(axis=1)) < 0.1


def test_ranks_order_changes_per_epoch_and_is_reproducible():
    kwargs = {"batch_size": 8, "lengths": lengths_of(500), "group_batches": 4, "seed": 1}
    epoch0, epoch1 = ranks(2, 0, **kwargs), ranks(2, 1, **kwargs)
    assert epoch0 != epoch1
    assert ranks(2, 1, **kwargs) == epoch1, "a fresh sampler at epoch 1 (a resumed run) sees the same batches"
    single = list(LengthGroupedBatchSampler(**kwargs))
    assert len(epoch0[0]) == len(epoch0[1]) == -(-500 // 16) and len(single) == -(-500 // 8)


def test_lightning_ddp_injection_keeps_one_global_order():
    """Lightning rebuilds the batch sampler around a DistributedSampler; the ranks must still share steps."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DistributedSampler

    class Items(Dataset):
        def __len__(self):
            return 203

        def __getitem__(self, i):
            return i

    lengths = lengths_of(203)
    loaders = []
    for rank in range(2):
        with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
            loader = DataLoader(
                Items(),
                batch_sampler=LengthGroupedBatchSampler(
                    EpochShuffleSampler(203, seed=7), 10, lengths=lengths, group_batches=3, seed=7
                ),
                collate_fn=list,
            )
        injected = DistributedSampler(Items(), num_replicas=2, rank=rank, shuffle=True, seed=0)
        loaders.append(_update_dataloader(loader, injected))
    by_epoch = []
    for epoch in (0, 1):
        for loader in loaders:
            _set_sampler_epoch(loader, epoch)
            assert loader.batch_sampler.num_replicas == 2 and loader.batch_sampler.epoch == epoch
        batches = [list(loader) for loader in loaders]
        assert len(batches[0]) == len(batches[1]) == len(loaders[0]) == len(loaders[1])
        flat = [i for rank in batches for batch in rank for i in batch]
        assert sorted(flat) == list(range(203))
        expected = LengthGroupedBatchSampler(
            batch_size=10, lengths=lengths, group_batches=3, seed=7, num_replicas=2, rank=0
        )
        expected.set_epoch(epoch)
        assert [a + b for a, b in zip(*batches)] == [s.tolist() for s in expected.steps()]
        by_epoch.append(batches)
    assert by_epoch[0] != by_epoch[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_replicas": 0}, "num_replicas"),
        ({"num_replicas": 2, "rank": 2}, "rank"),
        ({"num_replicas": 2, "rank": -1}, "rank"),
        ({"num_replicas": 5}, "cannot give each of 5 ranks"),
    ],
)
def test_bad_distributed_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LengthGroupedBatchSampler(batch_size=4, lengths=[3, 4, 5, 6], **kwargs)
