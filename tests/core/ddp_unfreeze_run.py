"""Run freeze_unfreeze under DDP with 2 CPU processes (gloo); each rank saves its backbone.

Usage: python ddp_unfreeze_run.py OUT_DIR [--no-rewrap]
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flash
from flash.core import finetuning
from toy import ToyClassifier, toy_data


class SaveBackbone(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        torch.save(pl_module.backbone.state_dict(), self.out / f"initial{trainer.global_rank}.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(pl_module.backbone.state_dict(), self.out / f"rank{trainer.global_rank}.pt")


class DisableRewrap(Callback):
    """Control run: turn off the DDP re-wrap inside each spawned process."""

    def setup(self, trainer, pl_module, stage) -> None:
        finetuning._rewrap_distributed = lambda trainer: None


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(3)
    model, data = ToyClassifier(), toy_data(n=128, batch_size=8)
    trainer = flash.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[SaveBackbone(out)] + ([DisableRewrap()] if "--no-rewrap" in sys.argv else []),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.finetune(model, data, strategy=("freeze_unfreeze", 1), train_bn=False)


if __name__ == "__main__":
    main()
