"""Finetuning strategies: which parts of a task train in which epoch.

=====================  ==============================================================
strategy               behaviour (defaults in brackets)
=====================  ==============================================================
``no_freeze``          everything trains from the first epoch
``freeze``             the backbone never trains; only the head does
``freeze_unfreeze``    backbone frozen for epochs ``< unfreeze_epoch``, then all trains
                       [``unfreeze_epoch``: half of ``max_epochs``, at least 1]
``unfreeze_milestones`` ``((m1, m2), n)``: backbone frozen; its last ``n`` blocks train
                       from epoch ``m1``, all of it from ``m2``
                       [``m1, m2``: a third and two thirds of ``max_epochs``;
                       ``n``: half of the backbone's blocks, rounded up]
``contrastive``        few-shot classifiers: the backbone trains on pairs of examples
                       (supervised contrastive loss), the head is fitted as a logistic
                       regression on its features (:mod:`flash.core.training.contrastive`)
=====================  ==============================================================

Pass a name, a ``(name, argument)`` tuple (``("freeze_unfreeze", 2)``,
``("unfreeze_milestones", ((2, 4), 1))``), an instance of one of the classes here, or any
Lightning :class:`~lightning.pytorch.callbacks.BaseFinetuning`.

``train_bn=True`` keeps BatchNorm layers of a frozen part training. With ``train_bn=False`` they
are frozen too and held in eval mode, so their running statistics stay bit-identical. Left at
``None`` (the default) it is the task's ``default_train_bn``, and ``True`` for tasks without one.
Under ``no_freeze`` nothing else is frozen: there ``train_bn`` says whether the BatchNorm layers
train with the rest, and ``None`` means the task's ``no_freeze_train_bn`` (``True`` without one).

Every parameter is in the optimizer from the start, in stable named groups; freezing only toggles
``requires_grad`` and BatchNorm mode. So LR schedulers (OneCycle, cosine, ReduceLROnPlateau) cover
the backbone from the first step, checkpoints resume with the same param groups, and under DDP the
model is re-wrapped when the set of trained parameters changes so gradients stay synchronised.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterable, Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from flash.core.training.freezing import freeze, hold_frozen_norms_in_eval, trainable_state, unfreeze

__all__ = [
    "STRATEGIES",
    "Contrastive",
    "FlashBaseFinetuning",
    "Freeze",
    "FreezeUnfreeze",
    "NoFreeze",
    "StrategyArgumentError",
    "UnfreezeMilestones",
    "resolve_strategy",
]


class StrategyArgumentError(TypeError, ValueError):
    """A finetuning strategy got an argument of the wrong shape or type (a ``TypeError`` as in
    Lightning Flash, and a ``ValueError`` as before)."""


class FlashBaseFinetuning(BaseFinetuning):
    """Base class of every flash strategy, and of custom ones.

    Args:
        attr_names: the attribute name(s) of the task's module(s) to freeze before training.
        train_bn: keep BatchNorm layers of frozen modules training; ``None``: the task's
            ``default_train_bn`` (``True`` when it has none), settled when training starts.

    Subclasses override :meth:`finetune_function`, called at the start of every training epoch, in
    its Lightning Flash form ``(pl_module, current_epoch, optimizer, opt_idx)`` or Lightning's
    ``(pl_module, current_epoch, optimizer)``.
    """

    def __init__(self, attr_names: str | Sequence[str] = "backbone", train_bn: bool | None = None) -> None:
        super().__init__()
        if isinstance(attr_names, bool):
            raise StrategyArgumentError(
                f"{type(self).__name__}({attr_names}): the first argument is attr_names here (the module(s) "
                f"to freeze); Lightning Flash's {type(self).__name__}(train_bn) is written "
                f"{type(self).__name__}(train_bn={attr_names})."
            )
        if isinstance(attr_names, str):
            attr_names = [attr_names]
        if not attr_names or not all(isinstance(n, str) and n for n in attr_names):
            raise ValueError(
                f"attr_names must be a module attribute name or a list of them, got {attr_names!r}."
            )
        self.attr_names = list(attr_names)
        self.train_bn = None if train_bn is None else bool(train_bn)
        self._trainable_fingerprint: tuple[bool, ...] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _accept_unfreeze_epoch_alias(cls.__dict__["__init__"])

    # -- validation -------------------------------------------------------------------------
    def validate(self, pl_module: nn.Module, max_epochs: int | None = None) -> None:
        """Raise a clear error if the task lacks a module this strategy freezes."""
        if self._uses_hook(pl_module):
            return
        for name in self.attr_names:
            module = getattr(pl_module, name, None)
            if not isinstance(module, nn.Module):
                choices = ", ".join(n for n, _ in pl_module.named_children()) or "none"
                raise AttributeError(
                    f"{type(self).__name__} freezes `{name}`, but {type(pl_module).__name__} has no module "
                    f"of that name. Modules it has: {choices}. Pass attr_names= with one of them."
                )

    def _uses_hook(self, pl_module: nn.Module) -> bool:
        """Whether the modules to freeze come from the task's ``modules_to_freeze()`` (Lightning
        Flash's hook), used when ``attr_names`` is left at ``"backbone"``."""
        return self.attr_names == ["backbone"] and callable(getattr(pl_module, "modules_to_freeze", None))

    def _modules(self, pl_module: nn.Module) -> list[nn.Module]:
        self.validate(pl_module)
        return self._resolve_modules(pl_module)

    def _resolve_modules(self, pl_module: nn.Module) -> list[nn.Module]:
        if self._uses_hook(pl_module):
            modules = pl_module.modules_to_freeze()
            if modules is None:
                return []
            modules = _as_list(modules)
            if not all(isinstance(m, nn.Module) for m in modules):
                raise TypeError(
                    f"{type(pl_module).__name__}.modules_to_freeze() must return a module, a list of modules "
                    "or None."
                )
            return modules
        return [getattr(pl_module, name) for name in self.attr_names]

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.resolve_train_bn(pl_module)
        if stage == "fit":
            self.validate(pl_module, trainer.max_epochs)
            self.resolve_defaults(pl_module, trainer.max_epochs)
        super().setup(trainer, pl_module, stage)

    def resolve_defaults(self, pl_module: nn.Module, max_epochs: int | None) -> None:
        """Fill in the arguments left at ``None`` from the run's length and the task's blocks."""

    def resolve_train_bn(self, pl_module: nn.Module) -> None:
        """Settle ``train_bn=None`` to the task's ``default_train_bn`` (``True`` if it has none)."""
        if self.train_bn is None:
            self.train_bn = bool(getattr(pl_module, "default_train_bn", True))

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.resolve_train_bn(pl_module)
        freeze(self._modules(pl_module), train_bn=self.train_bn)

    def finetune_function(
        self, pl_module: LightningModule, current_epoch: int, optimizer: Optimizer, opt_idx: int | None = None
    ) -> None:
        """Called at the start of each training epoch: unfreeze what should start training now."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        takes_opt_idx = _accepts_opt_idx(self.finetune_function)
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            num_param_groups = len(optimizer.param_groups)
            if takes_opt_idx:
                self.finetune_function(pl_module, trainer.current_epoch, optimizer, opt_idx)
            else:
                self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, opt_idx, num_param_groups, optimizer.param_groups)
        hold_frozen_norms_in_eval(pl_module)
        fingerprint = trainable_state(pl_module)
        if self._trainable_fingerprint is not None and fingerprint != self._trainable_fingerprint:
            _rewrap_distributed(trainer)
        self._trainable_fingerprint = fingerprint

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            hold_frozen_norms_in_eval(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._trainable_fingerprint = trainable_state(pl_module)

    # -- helpers for subclasses ---------------------------------------------------------------
    def freeze_modules(self, modules: nn.Module | Iterable[nn.Module], train_bn: bool | None = None) -> None:
        freeze(modules, train_bn=bool(self.train_bn is not False) if train_bn is None else train_bn)

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: nn.Module | Iterable[nn.Module] | None = None,
        optimizer: Optimizer | None = None,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        module: nn.Module | Iterable[nn.Module] | None = None,
    ) -> None:
        """Unfreeze ``modules`` (also accepted as ``module=``, as Lightning Flash named it).

        Parameters already in the optimizer (all of a flash task's are) just start training in
        their own group; parameters the optimizer lacks get a new group at ``lr`` (default: the
        first group's rate divided by ``initial_denom_lr``), as Lightning does.
        """
        if module is not None:
            modules = module
        if modules is None or optimizer is None:
            raise TypeError("unfreeze_and_add_param_group needs the module(s) to unfreeze and the optimizer.")
        unfreeze(modules, train_bn=train_bn)
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [
            p for m in _as_list(modules) for p in m.parameters() if p.requires_grad and id(p) not in known
        ]
        if missing:
            base_lr = optimizer.param_groups[0]["lr"] if lr is None else float(lr)
            optimizer.add_param_group(
                {"params": missing, "lr": base_lr / (initial_denom_lr if lr is None else 1.0)}
            )

    def unfreeze_and_extend_param_group(
        self,
        modules: nn.Module | Iterable[nn.Module],
        optimizer: Optimizer,
        train_bn: bool = True,
    ) -> None:
        """Lightning Flash's helper: unfreeze ``modules``; parameters the optimizer lacks join its
        first group (at that group's rate) instead of a new one."""
        unfreeze(modules, train_bn=train_bn)
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [
            p for m in _as_list(modules) for p in m.parameters() if p.requires_grad and id(p) not in known
        ]
        if missing:
            optimizer.param_groups[0]["params"].extend(missing)


def _as_list(modules: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    return [modules] if isinstance(modules, nn.Module) else list(modules)


def _accepts_opt_idx(fn: Any) -> bool:
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(params) >= 4 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _accept_unfreeze_epoch_alias(init: Any) -> Any:
    """Let ``unfreeze_epoch=`` reach an ``__init__`` that names it ``unfreeze_at_epoch``.

    The finetuning page constructs its example callback with the one name and defines it with
    the other; accepting both keeps that example, and callbacks written from it, working.
    """
    names = inspect.signature(init).parameters
    if "unfreeze_at_epoch" not in names or "unfreeze_epoch" in names:
        return init

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if "unfreeze_epoch" in kwargs and "unfreeze_at_epoch" not in kwargs:
            kwargs["unfreeze_at_epoch"] = kwargs.pop("unfreeze_epoch")
        init(self, *args, **kwargs)

    return wrapper


def _rewrap_distributed(trainer: Trainer) -> None:
    """Rebuild the DDP wrapper so newly trainable parameters get their gradients all-reduced.

    DDP registers its gradient hooks only for the parameters that required a gradient when it
    was built; without this, ranks silently diverge after unfreezing.
    """
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    model = getattr(strategy, "model", None)
    if isinstance(model, DistributedDataParallel) and hasattr(strategy, "_setup_model"):
        strategy.model = strategy._setup_model(model.module)


def _check_epoch(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StrategyArgumentError(f"{name} must be a whole number of epochs >= 0, got {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be a whole number of epochs >= 0, got {value!r}.")
    return value


class NoFreeze(FlashBaseFinetuning):
    """Train everything from the first epoch.

    BatchNorm layers train too, unless ``train_bn`` is ``False``: then they keep their pretrained
    statistics and weights, held in eval mode, while every other weight trains (as the backbone
    trains after unfreezing in the other strategies). Left at ``None``, ``train_bn`` is the
    task's ``no_freeze_train_bn`` (``True`` for tasks without one), not its ``default_train_bn``,
    which is about frozen parts.
    """

    def resolve_train_bn(self, pl_module: nn.Module) -> None:
        if self.train_bn is None:
            self.train_bn = bool(getattr(pl_module, "no_freeze_train_bn", True))

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.resolve_train_bn(pl_module)
        unfreeze(self._modules(pl_module), train_bn=bool(self.train_bn))


class Freeze(FlashBaseFinetuning):
    """Freeze the backbone for the whole run: only the head trains."""


class FreezeUnfreeze(FlashBaseFinetuning):
    """Freeze the backbone until ``unfreeze_epoch``, then train everything.

    Args:
        unfreeze_epoch: first epoch in which the backbone trains (0-based). Default: half of the
            trainer's ``max_epochs``, at least 1. Lightning Flash's name ``strategy_metadata=``
            is accepted too.
    """

    def __init__(
        self,
        unfreeze_epoch: int | None = None,
        attr_names: str | Sequence[str] = "backbone",
        train_bn: bool | None = None,
        *,
        strategy_metadata: int | None = None,
    ) -> None:
        unfreeze_epoch = _with_legacy_metadata("unfreeze_epoch", unfreeze_epoch, strategy_metadata)
        super().__init__(attr_names, train_bn)
        self.unfreeze_epoch = (
            None if unfreeze_epoch is None else _check_epoch("unfreeze_epoch", unfreeze_epoch)
        )

    def resolve_defaults(self, pl_module: nn.Module, max_epochs: int | None) -> None:
        if self.unfreeze_epoch is None:
            self.unfreeze_epoch = max(1, _known_epochs(max_epochs) // 2)

    def finetune_function(
        self, pl_module: LightningModule, current_epoch: int, optimizer: Optimizer, opt_idx: int | None = None
    ) -> None:
        if self.unfreeze_epoch is not None and current_epoch >= self.unfreeze_epoch:
            self.unfreeze_and_add_param_group(self._modules(pl_module), optimizer, train_bn=self.train_bn)


class UnfreezeMilestones(FlashBaseFinetuning):
    """Unfreeze the backbone from the top down.

    Args:
        unfreeze_milestones: ``(m1, m2)``: the last ``num_layers`` blocks train from epoch ``m1``,
            the whole backbone from ``m2``. Default: a third and two thirds of ``max_epochs``.
            Lightning Flash's ``((m1, m2), num_layers)`` in this place (or as
            ``strategy_metadata=``) sets both.
        num_layers: how many of the backbone's blocks (stages of a CNN, layers of a
            transformer; ``task.backbone_blocks``) unfreeze at ``m1``. Default: half, rounded up.
    """

    def __init__(
        self,
        unfreeze_milestones: tuple[int, int] | tuple[tuple[int, int], int] | None = None,
        num_layers: int | None = None,
        attr_names: str | Sequence[str] = "backbone",
        train_bn: bool | None = None,
        *,
        strategy_metadata: tuple[tuple[int, int], int] | None = None,
    ) -> None:
        unfreeze_milestones = _with_legacy_metadata(
            "unfreeze_milestones", unfreeze_milestones, strategy_metadata
        )
        if (
            isinstance(unfreeze_milestones, Sequence)
            and len(unfreeze_milestones) == 2
            and isinstance(unfreeze_milestones[0], Sequence)
        ):
            unfreeze_milestones, metadata_layers = _milestones_metadata(unfreeze_milestones)
            if num_layers is not None and num_layers != metadata_layers:
                raise StrategyArgumentError(
                    f"num_layers={num_layers} differs from the {metadata_layers} in ((m1, m2), num_layers)."
                )
            num_layers = metadata_layers
        super().__init__(attr_names, train_bn)
        if unfreeze_milestones is not None:
            if not isinstance(unfreeze_milestones, Sequence) or len(unfreeze_milestones) != 2:
                raise StrategyArgumentError(
                    f"unfreeze_milestones must be a pair (m1, m2) of epochs, got {unfreeze_milestones!r}."
                )
            m1, m2 = (_check_epoch("unfreeze_milestones", m) for m in unfreeze_milestones)
            if m1 > m2:
                raise ValueError(
                    f"unfreeze_milestones must be in order (m1 <= m2): got ({m1}, {m2}). "
                    f"The last blocks unfreeze at m1, the rest at m2; did you mean ({m2}, {m1})?"
                )
            unfreeze_milestones = (m1, m2)
        if num_layers is not None and (
            isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1
        ):
            raise StrategyArgumentError(f"num_layers must be a whole number >= 1, got {num_layers!r}.")
        self.unfreeze_milestones = unfreeze_milestones
        self.num_layers = num_layers

    def validate(self, pl_module: nn.Module, max_epochs: int | None = None) -> None:
        super().validate(pl_module, max_epochs)
        blocks = self._blocks(pl_module)
        if blocks and self.num_layers is not None and self.num_layers > len(blocks):
            raise ValueError(
                f"num_layers={self.num_layers}, but {type(pl_module).__name__}'s backbone has only "
                f"{len(blocks)} blocks. Choose 1 to {len(blocks)}."
            )

    def resolve_defaults(self, pl_module: nn.Module, max_epochs: int | None) -> None:
        if self.unfreeze_milestones is None:
            epochs = _known_epochs(max_epochs)
            m1 = max(1, epochs // 3)
            self.unfreeze_milestones = (m1, max(m1, (2 * epochs) // 3))
        if self.num_layers is None:
            self.num_layers = max(1, math.ceil(len(self._blocks(pl_module)) / 2))

    def finetune_function(
        self, pl_module: LightningModule, current_epoch: int, optimizer: Optimizer, opt_idx: int | None = None
    ) -> None:
        assert self.unfreeze_milestones is not None and self.num_layers is not None
        m1, m2 = self.unfreeze_milestones
        if current_epoch >= m2:
            self.unfreeze_and_add_param_group(self._modules(pl_module), optimizer, train_bn=self.train_bn)
        elif current_epoch >= m1:
            blocks = self._blocks(pl_module)
            if blocks:
                self.unfreeze_and_add_param_group(
                    blocks[-self.num_layers :], optimizer, train_bn=self.train_bn
                )

    def _blocks(self, pl_module: nn.Module) -> list[nn.Module]:
        """The ordered blocks of the frozen module(s), input to output; none for modules without
        parameters (there is nothing to unfreeze)."""
        modules = self._resolve_modules(pl_module)
        if not any(True for m in modules for _ in m.parameters()):
            return []
        if self.attr_names == ["backbone"] and hasattr(pl_module, "backbone_blocks"):
            blocks = list(pl_module.backbone_blocks)
        else:
            blocks = [child for module in modules for child in (list(module.children()) or [module])]
        if not blocks:
            raise ValueError(
                f"{type(pl_module).__name__}'s {self.attr_names} has no blocks to unfreeze one by one."
            )
        return blocks


def _milestones_metadata(metadata: Any) -> tuple[tuple[int, int], int]:
    """Lightning Flash's ``((m1, m2), num_layers)``, checked."""
    milestones, num_layers = metadata
    if (
        len(milestones) != 2
        or isinstance(num_layers, bool)
        or not isinstance(num_layers, int)
        or not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)
    ):
        raise StrategyArgumentError(
            f"unfreeze_milestones takes ((m1, m2), num_layers) of whole numbers, e.g. ((5, 10), 2); got {metadata!r}."
        )
    return (milestones[0], milestones[1]), num_layers


_DEFAULT_EPOCHS_WHEN_UNBOUNDED = 10


def _known_epochs(max_epochs: int | None) -> int:
    if max_epochs is None or max_epochs < 0:
        return _DEFAULT_EPOCHS_WHEN_UNBOUNDED
    return max_epochs


from flash.core.training.contrastive import Contrastive  # noqa: E402  (built on the classes above)

STRATEGIES: dict[str, type[FlashBaseFinetuning]] = {
    "no_freeze": NoFreeze,
    "freeze": Freeze,
    "freeze_unfreeze": FreezeUnfreeze,
    "unfreeze_milestones": UnfreezeMilestones,
    "contrastive": Contrastive,
}


def resolve_strategy(strategy: Any, train_bn: bool | None = None) -> BaseFinetuning:
    """Turn a strategy name, ``(name, argument)`` tuple or callback into a finetuning callback.

    Raises:
        ValueError: for an unknown name or a tuple of the wrong shape, naming the valid choices.
    """
    if isinstance(strategy, BaseFinetuning):
        if isinstance(strategy, FlashBaseFinetuning) and strategy.train_bn is None and train_bn is not None:
            strategy.train_bn = bool(train_bn)
        return strategy
    choices = ", ".join(repr(n) for n in STRATEGIES)
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"Unknown finetuning strategy {strategy!r}. Choose one of {choices}, a (name, argument) "
                "tuple, or a BaseFinetuning callback."
            )
        return STRATEGIES[strategy](train_bn=train_bn)
    if isinstance(strategy, tuple):
        if len(strategy) != 2 or not isinstance(strategy[0], str):
            raise StrategyArgumentError(
                f"A strategy tuple is (name, argument), e.g. ('freeze_unfreeze', 2) or "
                f"('unfreeze_milestones', ((2, 4), 1)); got {strategy!r}."
            )
        name, argument = strategy
        if name == "freeze_unfreeze":
            return FreezeUnfreeze(unfreeze_epoch=argument, train_bn=train_bn)
        if name == "unfreeze_milestones":
            if not (
                isinstance(argument, tuple) and len(argument) == 2 and isinstance(argument[0], tuple | list)
            ):
                raise StrategyArgumentError(
                    "('unfreeze_milestones', argument) takes argument ((m1, m2), num_layers), "
                    f"e.g. ((2, 4), 1); got {argument!r}."
                )
            return UnfreezeMilestones(
                unfreeze_milestones=tuple(argument[0]), num_layers=argument[1], train_bn=train_bn
            )
        if name in STRATEGIES:
            raise StrategyArgumentError(
                f"Strategy {name!r} takes no argument; pass the bare string {name!r}."
            )
        raise ValueError(f"Unknown finetuning strategy {name!r}. Choose one of {choices}.")
    raise TypeError(
        f"strategy must be a name ({choices}), a (name, argument) tuple or a BaseFinetuning callback, "
        f"got {type(strategy).__name__}."
    )


def _with_legacy_metadata(name: str, value: Any, strategy_metadata: Any) -> Any:
    """``value``, or Lightning Flash's ``strategy_metadata`` standing in its place (not both)."""
    if strategy_metadata is None:
        return value
    if value is not None:
        raise StrategyArgumentError(f"Pass {name} or Lightning Flash's strategy_metadata, not both.")
    return strategy_metadata
