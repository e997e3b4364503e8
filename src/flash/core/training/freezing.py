"""Freeze and unfreeze modules by toggling ``requires_grad`` and normalisation-layer mode.

Every parameter of a task sits in the optimizer from the start (see :mod:`flash.core.training.optimizers`),
so freezing never touches the optimizer: a frozen parameter simply has no gradient, which every
torch optimizer skips, and a frozen normalisation layer (with ``train_bn=False``) is kept in eval
mode so its running statistics stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_FROZEN_NORM_FLAG = "_flash_frozen_norm"

ModuleOrModules = nn.Module | Iterable[nn.Module]


def _as_modules(modules: ModuleOrModules) -> list[nn.Module]:
    if isinstance(modules, nn.Module):
        return [modules]
    return [m for m in modules]


def _all_submodules(modules: ModuleOrModules) -> list[nn.Module]:
    seen: dict[int, nn.Module] = {}
    for root in _as_modules(modules):
        for module in root.modules():
            seen.setdefault(id(module), module)
    return list(seen.values())


def is_norm_layer(module: nn.Module) -> bool:
    """True for BatchNorm layers: the layers whose running statistics ``train_bn`` controls."""
    return isinstance(module, _BatchNorm)


def freeze(modules: ModuleOrModules, train_bn: bool = True) -> None:
    """Stop training ``modules``.

    Args:
        modules: a module or an iterable of modules.
        train_bn: keep BatchNorm layers training (parameters and running statistics). With
            ``False`` they are frozen too and held in eval mode, so their statistics do not move.
    """
    for module in _all_submodules(modules):
        norm = is_norm_layer(module)
        for param in module.parameters(recurse=False):
            param.requires_grad = norm and train_bn
        if norm:
            setattr(module, _FROZEN_NORM_FLAG, not train_bn)
            if not train_bn:
                module.eval()


def unfreeze(modules: ModuleOrModules, train_bn: bool = True) -> None:
    """Make ``modules`` trainable again; with ``train_bn=False`` BatchNorm layers stay frozen."""
    for module in _all_submodules(modules):
        norm = is_norm_layer(module)
        trainable = train_bn or not norm
        for param in module.parameters(recurse=False):
            param.requires_grad = trainable
        if norm:
            setattr(module, _FROZEN_NORM_FLAG, not trainable)
            if trainable:
                module.train()


def hold_frozen_norms_in_eval(root: nn.Module) -> None:
    """Put every BatchNorm frozen with ``train_bn=False`` back in eval mode.

    Lightning switches the whole model to train mode at the start of each epoch and after each
    validation; this undoes that for the frozen normalisation layers only.
    """
    for module in root.modules():
        if getattr(module, _FROZEN_NORM_FLAG, False) and module.training:
            module.eval()


def trainable_state(root: nn.Module) -> tuple[bool, ...]:
    """A fingerprint of which parameters currently train, to detect when freezing changed."""
    return tuple(p.requires_grad for p in root.parameters())
