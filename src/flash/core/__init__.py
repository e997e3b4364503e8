"""Domain-independent machinery: trainer, finetuning strategies, task and data bases."""

from flash.core.data.datamodule import DataModule, Split
from flash.core.model.classification import ClassificationTask
from flash.core.model.regression import RegressionTask
from flash.core.model.task import Task
from flash.core.training.finetuning import (
    FlashBaseFinetuning,
    Freeze,
    FreezeUnfreeze,
    NoFreeze,
    UnfreezeMilestones,
)
from flash.core.training.trainer import Trainer

__all__ = [
    "ClassificationTask",
    "DataModule",
    "FlashBaseFinetuning",
    "Freeze",
    "FreezeUnfreeze",
    "NoFreeze",
    "RegressionTask",
    "Split",
    "Task",
    "Trainer",
    "UnfreezeMilestones",
]
