"""Domain-independent machinery: trainer, finetuning strategies, task and data bases."""

from flash.core.classification import ClassificationTask
from flash.core.data import DataModule, Split
from flash.core.finetuning import FlashBaseFinetuning, Freeze, FreezeUnfreeze, NoFreeze, UnfreezeMilestones
from flash.core.regression import RegressionTask
from flash.core.task import Task
from flash.core.trainer import Trainer

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
