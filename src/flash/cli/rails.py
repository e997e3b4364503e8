"""Lightning's run machinery as ``flash finetune`` uses it: loggers, checkpoints, early stopping,
precision and devices.

A run folder gets ``checkpoints/last.ckpt`` after every epoch (the whole training state, written
atomically by Lightning: to a temporary file that is then moved into place), so a run that is
killed can continue with ``flash finetune --resume DIR``; ``checkpoints/best.ckpt`` holds the epoch
with the best value of the task's monitored metric. Both go when the run finishes: ``model.ckpt``
then holds the weights kept (``--keep``). Imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOGGERS = {
    "csv": (None, "CSVLogger"),
    "tensorboard": (("tensorboard", "tensorboardX"), "TensorBoardLogger"),
    "mlflow": (("mlflow",), "MLFlowLogger"),
    "wandb": (("wandb",), "WandbLogger"),
}
"""``--logger`` choices: the modules one of which must be installed, and Lightning's logger class."""

PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64")
"""``--precision`` choices; ``auto`` is ``flash.Trainer``'s default (bf16-mixed on a GPU that has it, else 32)."""

KEEP_CHOICES = ("best", "last")
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"


def number_or_auto(kind: type, noun: str, low: float, inclusive: bool) -> Callable[[str], Any]:
    """An argparse type for ``auto`` or a finite number of type ``kind`` (int or float) that is
    ``>= low`` (``inclusive``) or ``> low``; ``noun`` names the number in messages."""
    bound = f"{'>=' if inclusive else '>'} {low:g}"

    def parse(text: str) -> Any:
        if text == "auto":
            return text
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither {noun} nor 'auto'.") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text!r}: give {noun} {bound} (or 'auto').")
        return value

    return parse


parse_devices = number_or_auto(int, "a number of devices", 1, inclusive=True)
"""``auto`` or a number of devices (>= 1)."""


def check_logger(name: str | None) -> None:
    """Fail before any work when ``--logger NAME`` needs a package that is not installed."""
    if name is None:
        return
    if name not in LOGGERS:
        raise ValueError(f"Unknown logger {name!r}; choose one of {', '.join(LOGGERS)}.")
    modules, _ = LOGGERS[name]
    if modules is None or any(_installed(module) for module in modules):
        return
    raise ModuleNotFoundError(
        f"--logger {name} needs the {modules[0]} package, which is not installed: pip install {modules[0]} "
        f"(or choose another logger: {', '.join(n for n in LOGGERS if n != name)})."
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def build_logger(name: str | None, out: Path) -> Any:
    """Lightning's logger ``name`` writing under the run folder (``False`` for none)."""
    if name is None:
        return False
    check_logger(name)
    import lightning.pytorch.loggers as loggers

    cls = getattr(loggers, LOGGERS[name][1])
    if name in ("csv", "tensorboard"):
        return cls(save_dir=str(out), name="lightning_logs")
    if name == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (out.resolve() / "mlruns").as_uri()
        return cls(experiment_name="flash", run_name=out.name, tracking_uri=uri)
    return cls(project="flash", name=out.name, save_dir=str(out))


def run_callbacks(
    folder: Path, monitor: str | None, mode: str, early_stopping: int | None
) -> tuple[list[Any], Any]:
    """The checkpoint (and early-stopping) callbacks of a run, and the one that tracks the best epoch.

    ``monitor`` is ``None`` when the run has no validation data: only ``last.ckpt`` is written.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    common = {"dirpath": str(folder), "enable_version_counter": False, "save_on_train_epoch_end": True}
    callbacks: list[Any] = []
    best = None
    if monitor is not None:
        # Before the last-epoch callback, so last.ckpt records this epoch's best score too.
        best = _best_checkpoint_class()(
            tiebreak="val_loss" if monitor != "val_loss" else None,
            filename=Path(BEST).stem,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            **common,
        )
        callbacks.append(best)
    callbacks.append(ModelCheckpoint(filename=Path(LAST).stem, save_top_k=1, **common))
    if early_stopping is not None:
        if monitor is None:
            raise ValueError(
                "--early-stopping watches a validation metric, and this run has no validation data: "
                "give validation data (--val-file/--val-folder) or --val-split FRACTION."
            )
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=early_stopping))
    return callbacks, best


def checkpoint_epoch(path: Path) -> int:
    """The number of epochs a checkpoint had finished (Lightning's ``epoch`` counts from 0)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def _best_checkpoint_class() -> type:
    from lightning.pytorch.callbacks import ModelCheckpoint

    class BestCheckpoint(ModelCheckpoint):
        """Lightning's ModelCheckpoint keeping the best epoch by ``monitor``; epochs that tie on it
        (accuracy on a small validation set often does) are told apart by ``tiebreak`` (lower is
        better), instead of the first of them winning."""

        def __init__(self, *args: Any, tiebreak: str | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tiebreak = tiebreak
            self.best_tiebreak: float | None = None

        def check_monitor_top_k(self, trainer: Any, current: Any = None) -> bool:
            if (
                current is not None
                and self.tiebreak is not None
                and self.best_model_path in self.best_k_models
            ) and float(current) == float(self.best_k_models[self.best_model_path]):
                value = trainer.callback_metrics.get(self.tiebreak)
                return value is not None and (self.best_tiebreak is None or float(value) < self.best_tiebreak)
            return super().check_monitor_top_k(trainer, current)

        def _update_best_and_save(
            self, current: Any, trainer: Any, monitor_candidates: dict[str, Any]
        ) -> None:
            value = monitor_candidates.get(self.tiebreak) if self.tiebreak else None
            self.best_tiebreak = None if value is None else float(value)
            super()._update_best_and_save(current, trainer, monitor_candidates)

        def state_dict(self) -> dict[str, Any]:
            return {**super().state_dict(), "best_tiebreak": self.best_tiebreak}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            super().load_state_dict(state_dict)
            self.best_tiebreak = state_dict.get("best_tiebreak")

    return BestCheckpoint
