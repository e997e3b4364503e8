"""Optimizers and learning-rate schedulers chosen by name or callable.

Optimizers: ``adam``, ``adamw``, ``sgd``, ``rmsprop``, or any callable ``(params, lr=...) ->
Optimizer`` (an optimizer class works). Schedulers: ``cosine``, ``onecycle``, ``linear_warmup``
(linear warm-up over ``warmup_fraction`` of the steps, then linear decay to zero, as the Hugging
Face Trainer does), ``reduce_on_plateau`` (monitors ``val_loss`` each epoch), ``constant``/``None``,
or a callable ``(optimizer) -> LRScheduler`` or ``-> Lightning scheduler dict``.
Step-based schedulers step every optimizer step over ``trainer.estimated_stepping_batches``.

As in Lightning Flash, any ``torch.optim`` optimizer or ``torch.optim.lr_scheduler`` scheduler is
also accepted by its class name in any case (``"Adagrad"``, ``"StepLR"``, ``"steplr"``), and a
tuple adds keyword arguments: ``("Adam", {"weight_decay": 1e-4})``, ``("StepLR", {"step_size": 10})``;
a scheduler tuple may carry a third item, the Lightning scheduler configuration
(``("ReduceLROnPlateau", {"mode": "max"}, {"monitor": "val_accuracy"})``). torch schedulers named
this way step once per epoch unless the configuration says ``"interval": "step"``.
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

OptimizerSpec = str | Callable[..., Optimizer] | tuple
SchedulerSpec = str | Callable[[Optimizer], Any] | tuple | None


def _torch_classes(module: Any, base: type) -> dict[str, type]:
    return {
        name.lower(): value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, base)
        and value is not base
        and not name.startswith("_")
    }


def torch_optimizers() -> dict[str, type[Optimizer]]:
    """Every ``torch.optim`` optimizer by lower-case class name."""
    return _torch_classes(torch.optim, Optimizer)


def torch_schedulers() -> dict[str, type]:
    """Every ``torch.optim.lr_scheduler`` scheduler by lower-case class name."""
    classes = _torch_classes(torch.optim.lr_scheduler, LRScheduler)
    classes["reducelronplateau"] = torch.optim.lr_scheduler.ReduceLROnPlateau
    return classes


def _split(spec: Any, what: str, max_items: int) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """``spec`` without its tuple: the name or callable, its keyword arguments, and (schedulers) the
    Lightning configuration."""
    if not isinstance(spec, tuple):
        return spec, {}, None
    shapes = "(name, kwargs)" + (" or (name, kwargs, lightning_config)" if max_items == 3 else "")
    if not 2 <= len(spec) <= max_items or not all(isinstance(part, dict) for part in spec[1:]):
        raise TypeError(
            f"A {what} tuple is {shapes} with dicts after the name, e.g. "
            + ('("Adam", {"weight_decay": 1e-4})' if what == "optimizer" else '("StepLR", {"step_size": 10})')
            + f"; got {spec!r}."
        )
    return spec[0], dict(spec[1]), (dict(spec[2]) if len(spec) == 3 else None)


def check_optimizer(optimizer: OptimizerSpec) -> None:
    """Raise early for an optimizer name that does not exist."""
    optimizer, _, _ = _split(optimizer, "optimizer", 2)
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS and optimizer.lower() not in torch_optimizers():
            raise ValueError(
                f"Unknown optimizer {optimizer!r}. Choose one of {', '.join(OPTIMIZERS)} (or any torch.optim "
                "class name, e.g. 'Adagrad'), or pass a callable (params, lr=...) -> torch.optim.Optimizer."
            )
    elif not callable(optimizer):
        raise TypeError(f"optimizer must be a name or a callable, got {type(optimizer).__name__}.")


def check_scheduler(scheduler: SchedulerSpec) -> None:
    """Raise early for a scheduler name that does not exist."""
    scheduler, _, _ = _split(scheduler, "lr_scheduler", 3)
    if scheduler is None or callable(scheduler):
        return
    if not isinstance(scheduler, str) or (
        scheduler.lower() not in SCHEDULERS and scheduler.lower() not in torch_schedulers()
    ):
        raise ValueError(
            f"Unknown lr_scheduler {scheduler!r}. Choose one of {', '.join(SCHEDULERS)}, None (or any "
            "torch.optim.lr_scheduler class name, e.g. 'StepLR'), or pass a callable (optimizer) -> LRScheduler."
        )


def build_optimizer(
    optimizer: OptimizerSpec, param_groups: list[dict[str, Any]], lr: float, kwargs: dict[str, Any] | None
) -> Optimizer:
    check_optimizer(optimizer)
    optimizer, extra, _ = _split(optimizer, "optimizer", 2)
    kwargs = {**(kwargs or {}), **extra}
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "sgd":
            kwargs.setdefault("momentum", 0.9)
        cls = OPTIMIZERS.get(name) or torch_optimizers()[name]
        return cls(param_groups, lr=lr, **kwargs)
    return optimizer(param_groups, lr=lr, **kwargs)


def build_scheduler(
    scheduler: SchedulerSpec,
    optimizer: Optimizer,
    total_steps: int,
    kwargs: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` config for ``scheduler``, or None for a constant rate."""
    check_scheduler(scheduler)
    scheduler, extra, config = _split(scheduler, "lr_scheduler", 3)
    kwargs = {**(kwargs or {}), **extra}
    if config is not None and "scheduler" in config:
        raise ValueError('The Lightning configuration of an lr_scheduler tuple must not hold "scheduler".')
    built = _build_scheduler(scheduler, optimizer, total_steps, kwargs)
    if built is not None and config:
        built = {**built, **config}
    return built


def _build_scheduler(
    scheduler: Any, optimizer: Optimizer, total_steps: int, kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    if scheduler is None:
        return None
    if callable(scheduler):
        built = scheduler(optimizer, **kwargs)
        if isinstance(built, dict):
            return built
        return {"scheduler": built, "interval": "epoch"}
    if scheduler.lower() not in SCHEDULERS:
        cls = torch_schedulers()[scheduler.lower()]
        config: dict[str, Any] = {"scheduler": cls(optimizer, **kwargs), "interval": "epoch"}
        if cls is torch.optim.lr_scheduler.ReduceLROnPlateau:
            config.update(monitor="val_loss", strict=False)
        return config
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
