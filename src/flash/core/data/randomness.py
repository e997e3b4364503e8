"""Randomness that depends only on ``(seed, epoch, item index)``.

Augmentation drawn from a process's global random state depends on which process draws it: with
``num_workers=0`` every item of an epoch draws from one stream in the main process; with workers,
each worker has its own stream, seeded from the loader. The same seed then gives different
crops, and different results, for different worker counts. Drawing each item's numbers from a
pure function of ``(seed, epoch, index)`` instead makes them the same in every process, in any
order, for any batch size, and after resuming.

:class:`SampleIndex` carries ``seed`` and ``epoch`` from the sampler (which knows them: Lightning
calls ``set_epoch`` on it in the main process) to the dataset (which may live in a persistent
worker that never sees ``set_epoch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class SampleIndex(int):
    """An item index that also says which ``seed`` and ``epoch`` it was drawn for.

    It is an ``int`` everywhere an index is expected; datasets that augment read
    :attr:`seed` and :attr:`epoch` from it (see :func:`sample_key`).
    """

    seed: int
    epoch: int

    def __new__(cls, index: int, seed: int, epoch: int) -> SampleIndex:
        value = super().__new__(cls, index)
        value.seed = int(seed)
        value.epoch = int(epoch)
        return value

    def __getnewargs__(self) -> tuple[int, int, int]:  # type: ignore[override]
        return int(self), self.seed, self.epoch

    def __repr__(self) -> str:
        return f"SampleIndex({int(self)}, seed={self.seed}, epoch={self.epoch})"


def sample_key(index: Any) -> tuple[int, int, int] | None:
    """``(seed, epoch, index)`` of a :class:`SampleIndex`; ``None`` for a plain index."""
    if isinstance(index, SampleIndex):
        return index.seed, index.epoch, int(index)
    return None


_GAMMA, _MUL1, _MUL2 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on arrays (callers wrap it in ``np.errstate(over="ignore")``)."""
    z = values.astype(np.uint64) + _GAMMA
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return (z ^ (z >> _S31)) & _MASK64


def _item_keys(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(epoch % 2**64))
    return _splitmix64(key ^ np.asarray(indices, dtype=np.int64).astype(np.uint64))


def item_uniforms(seed: int, epoch: int, indices: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniform numbers in ``[0, 1)`` per item, a pure function of ``(seed, epoch, index)``."""
    with np.errstate(over="ignore"):
        items = _item_keys(seed, epoch, indices)[:, None]
        draws = _splitmix64(items ^ np.arange(count, dtype=np.uint64)[None, :])
    return (draws >> np.uint64(11)).astype(np.float64) * 2.0**-53


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of ``epoch`` (e.g. for ``torch.manual_seed``), independent of
    :func:`item_uniforms`' draws for the same item."""
    with np.errstate(over="ignore"):
        key = _item_keys(seed, epoch, np.array([index]))
        return int(_splitmix64(key ^ np.uint64(0xD1B54A32D192ED03))[0] >> np.uint64(1))
