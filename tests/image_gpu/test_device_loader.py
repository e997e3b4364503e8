"""DeviceLoader: order, epochs, errors and early stops, inline and in its background thread."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import flash
from flash.core.data.datamodule import EpochShuffleSampler
from flash.core.data.device_loader import DeviceLoader, move_to_device
from toy import ToyClassifier


def numbers_loader(n: int = 10, batch_size: int = 3, sampler=None) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, sampler=sampler)


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "flash-device-loader"]


@pytest.mark.parametrize("background", [False, True])
def test_yields_every_batch_in_order_with_the_epoch(background):
    seen_epochs = []

    def transform(batch, epoch):
        seen_epochs.append(epoch)
        return {"x": batch[0] * 10}

    loader = DeviceLoader(numbers_loader(), transform, device="cpu", background=background)
    assert len(loader) == 4
    assert torch.cat([b["x"] for b in loader]).tolist() == [i * 10 for i in range(10)]
    loader.set_epoch(3)
    assert len(list(loader)) == 4
    assert seen_epochs == [0] * 4 + [3] * 4
    assert not loader_threads()


def test_set_epoch_reaches_the_wrapped_sampler_so_shuffles_follow_the_epoch():
    sampler = EpochShuffleSampler(10, seed=1)
    loader = DeviceLoader(numbers_loader(sampler=sampler), device="cpu")
    loader.sampler.set_epoch(2)  # what Lightning calls
    assert sampler.epoch == 2 and loader.epoch == 2
    order_2 = [int(v) for b in loader for v in b[0]]
    loader.set_epoch(5)
    order_5 = [int(v) for b in loader for v in b[0]]
    loader.set_epoch(2)
    assert [int(v) for b in loader for v in b[0]] == order_2 != order_5
    assert sorted(order_2) == list(range(10))


@pytest.mark.parametrize("background", [False, True])
def test_a_failing_transform_raises_its_own_error_after_the_good_batches(background):
    def transform(batch, epoch):
        if int(batch[0][0]) >= 6:
            raise ValueError("bad file: broken.jpg")
        return batch[0]

    loader = DeviceLoader(numbers_loader(), transform, device="cpu", background=background)
    got = []
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        for batch in loader:
            got.append(batch)
    assert len(got) == 2
    assert not loader_threads()


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("failing_stage", [None, 0, 1])
def test_stages_run_in_order_and_a_failure_in_any_stage_reaches_the_consumer(background, failing_stage):
    def stage(number):
        def run(batch, epoch):
            values = batch[0] if isinstance(batch, list) else batch  # the DataLoader's batch is a list
            if number == failing_stage and int(values[0]) >= 6 * 10**number:
                raise ValueError(f"stage {number} failed")
            return values * 10 + number

        return run

    loader = DeviceLoader(
        numbers_loader(batch_size=3), [stage(0), stage(1)], device="cpu", background=background
    )
    got = []
    if failing_stage is None:
        got = [b for batch in loader for b in batch.tolist()]
        assert got == [(i * 10) * 10 + 1 for i in range(10)]
    else:
        with pytest.raises(ValueError, match=f"stage {failing_stage} failed"):
            for batch in loader:
                got.append(batch)
        assert len(got) == 2
    assert not loader_threads()


def test_stopping_early_ends_the_background_thread():
    stages = [lambda b, e: b, lambda b, e: b]
    loader = DeviceLoader(
        numbers_loader(n=100, batch_size=1), stages, device="cpu", prefetch=1, background=True
    )
    iterator = iter(loader)
    next(iterator)
    assert len(loader_threads()) == 2
    iterator.close()
    assert not loader_threads()


def test_nothing_runs_before_the_first_batch_is_asked_for():
    calls = []
    loader = DeviceLoader(numbers_loader(), lambda b, e: calls.append(e), device="cpu", background=True)
    iterator = iter(loader)
    assert calls == [] and not loader_threads()
    next(iterator)
    iterator.close()


def test_move_to_device_keeps_the_structure():
    batch = {"input": torch.ones(2), "parts": [torch.zeros(1), ("name", torch.ones(1))], "n": 3}
    moved = move_to_device(batch, "cpu")
    assert moved["n"] == 3 and moved["parts"][1][0] == "name"
    assert torch.equal(moved["parts"][1][1], torch.ones(1))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="prefetch"):
        DeviceLoader(numbers_loader(), prefetch=0)
    with pytest.raises(TypeError, match="iterable"):
        DeviceLoader(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty list"):
        DeviceLoader(numbers_loader(), [])
    with pytest.raises(ValueError, match="epoch"):
        DeviceLoader(numbers_loader()).set_epoch(-1)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            DeviceLoader(numbers_loader(), device="cuda")


def test_lightning_trains_from_it_and_hands_it_every_epoch():
    """The wrapper is what a data module returns on CUDA; here it runs the same way on the CPU."""
    torch.manual_seed(0)
    features = torch.randn(32, 4)
    targets = (features[:, 0] > 0).long()
    data = DataLoader(TensorDataset(features, targets), batch_size=8, sampler=EpochShuffleSampler(32, seed=0))
    epochs = []

    def transform(batch, epoch):
        epochs.append(epoch)
        return {"input": batch[0], "target": batch[1]}

    loader = DeviceLoader(data, transform, device="cpu", background=True)
    trainer = flash.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ToyClassifier(), train_dataloaders=loader)
    assert sorted(set(epochs)) == [0, 1, 2]
    assert epochs.count(0) == epochs.count(2) == 4
    assert trainer.global_step == 12
