"""Data: the :class:`DataModule` base, splits and labels, samplers, loaders and ``download_data``."""

from flash.core.data.datamodule import (
    DataModule,
    EpochShuffleSampler,
    LabelEncoder,
    Split,
    default_num_workers,
    split_off_validation,
)

__all__ = [
    "DataModule",
    "EpochShuffleSampler",
    "LabelEncoder",
    "Split",
    "default_num_workers",
    "split_off_validation",
]
