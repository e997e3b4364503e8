"""Optimizers and learning-rate schedulers chosen by name or callable.

Optimizers: ``adam``, ``adamw``, ``sgd``, ``rmsprop``, or any callable ``(params, lr=...) ->
Optimizer`` (an optimizer class works). Schedulers: ``cosine``, ``onecycle``, ``linear_warmup``
(linear warm-up over ``warmup_fraction`` of the steps, then linear decay to zero, as the Hugging
Face Trainer does), ``reduce_on_plateau`` (monitors ``val_loss`` each epoch), ``constant``/``None``,
or a callable ``(optimizer) -> LRScheduler`` or ``-> Lightning scheduler dict``.
Step-based schedulers step every optimizer step over ``trainer.estimated_stepping_batches``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

SCHEDULERS = ("constant", "cosine", "onecycle", "linear_warmup", "reduce_on_plateau")

OptimizerSpec = str | Callable[..., Optimizer]
SchedulerSpec = str | Callable[[Optimizer], Any] | None


def check_optimizer(optimizer: OptimizerSpec) -> None:
    """Raise early for an optimizer name that does not exist."""
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {optimizer!r}. Choose one of {', '.join(OPTIMIZERS)}, "
                "or pass a callable (params, lr=...) -> torch.optim.Optimizer."
            )
    elif not callable(optimizer):
        raise TypeError(f"optimizer must be a name or a callable, got {type(optimizer).__name__}.")


def check_scheduler(scheduler: SchedulerSpec) -> None:
    """Raise early for a scheduler name that does not exist."""
    if scheduler is None or callable(scheduler):
        return
    if not isinstance(scheduler, str) or scheduler.lower() not in SCHEDULERS:
        raise ValueError(
            f"Unknown lr_scheduler {scheduler!r}. Choose one of {', '.join(SCHEDULERS)}, None, "
            "or pass a callable (optimizer) -> LRScheduler."
        )


def build_optimizer(
    optimizer: OptimizerSpec, param_groups: list[dict[str, Any]], lr: float, kwargs: dict[str, Any] | None
) -> Optimizer:
    check_optimizer(optimizer)
    kwargs = dict(kwargs or {})
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "sgd":
            kwargs.setdefault("momentum", 0.9)
        return OPTIMIZERS[name](param_groups, lr=lr, **kwargs)
    return optimizer(param_groups, lr=lr, **kwargs)


def build_scheduler(
    scheduler: SchedulerSpec,
    optimizer: Optimizer,
    total_steps: int,
    kwargs: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` config for ``scheduler``, or None for a constant rate."""
    check_scheduler(scheduler)
    kwargs = dict(kwargs or {})
    if scheduler is None:
        return None
    if callable(scheduler):
        built = scheduler(optimizer, **kwargs)
        if isinstance(built, dict):
            return built
        return {"scheduler": built, "interval": "epoch"}
    name = scheduler.lower()
    total_steps = max(1, int(total_steps))
    if name == "constant":
        return None
    if name == "cosine":
        eta_min = kwargs.pop("eta_min", 0.0)
        return {
            "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, total_steps, eta_min, **kwargs
            ),
            "interval": "step",
        }
    if name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        pct_start = float(kwargs.setdefault("pct_start", 0.25))
        if pct_start > 0:  # OneCycleLR divides by zero when its warm-up has fewer than two steps
            total_steps = max(total_steps, math.ceil(2 / pct_start))
        return {
            "scheduler": torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=max_lr, total_steps=total_steps, **kwargs
            ),
            "interval": "step",
        }
    if name == "linear_warmup":
        warmup = max(1, int(kwargs.pop("warmup_fraction", 0.1) * total_steps))
        return {"scheduler": _linear_warmup_decay(optimizer, warmup, total_steps), "interval": "step"}
    # reduce_on_plateau
    kwargs.setdefault("factor", 0.5)
    kwargs.setdefault("patience", 1)
    monitor = kwargs.pop("monitor", "val_loss")
    return {
        "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs),
        "interval": "epoch",
        "monitor": monitor,
        "strict": False,
    }


def _linear_warmup_decay(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / remaining)

    return LambdaLR(optimizer, factor)


def layer_rates(num_blocks: int, lr: float, backbone_lr_factor: float, layer_lr_decay: float) -> list[float]:
    """Learning rates for the backbone blocks, input to output (discriminative rates).

    The block next to the head gets ``lr * backbone_lr_factor``; each block below it another
    factor ``layer_lr_decay``.
    """
    if not math.isfinite(backbone_lr_factor) or backbone_lr_factor < 0:
        raise ValueError(f"backbone_lr_factor must be a finite number >= 0, got {backbone_lr_factor!r}.")
    if not math.isfinite(layer_lr_decay) or not 0 < layer_lr_decay <= 1:
        raise ValueError(f"layer_lr_decay must be in (0, 1], got {layer_lr_decay!r}.")
    top = lr * backbone_lr_factor
    return [top * layer_lr_decay ** (num_blocks - 1 - i) for i in range(num_blocks)]
