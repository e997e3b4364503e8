"""``strategy="auto"``: choose the finetuning strategy and learning rate by cross-validation.

Candidates run cheapest first, each cross-validated on the same folds (so their per-fold scores
are paired). The best mean wins unless a cheaper candidate is within one standard error of it
(the one-standard-error rule): on small data, differences that size are noise, and the cheaper
setting (fewer trained weights) is the safer bet. The winner is then trained on the data as
:meth:`~flash.Trainer.finetune` would.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
from torch import nn

from flash.core.data.folds import make_folds
from flash.core.training.cross_validation import CrossValidationResult, untrained_copy
from flash.core.utils.validation import check_int

AUTO_OPTIONS = ("candidates", "folds", "repeats", "time_limit", "seed", "groups", "verbose")
"""What ``strategy=("auto", {...})`` takes."""

DEFAULT_FOLDS = 5
"""Folds of the search when ``folds`` is not given."""


@dataclass(frozen=True)
class Candidate:
    """One setting ``auto`` tries: a finetuning strategy and a learning-rate multiple.

    Attributes:
        strategy: a strategy name or ``(name, argument)`` tuple, as :meth:`finetune` takes.
        lr_factor: the task's learning rate is multiplied by this.
        name: how the leaderboard shows it (default: the strategy and factors).
        backbone_lr_factor: the backbone's rate as a multiple of the head's (the task's
            ``backbone_lr_factor``); ``None`` keeps the task's.
    """

    strategy: Any
    lr_factor: float = 1.0
    name: str = ""
    backbone_lr_factor: float | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        rate = "" if self.lr_factor == 1 else f", lr x{self.lr_factor:.3g}"
        if self.backbone_lr_factor is not None:
            rate += f", backbone at x{self.backbone_lr_factor:.3g} the head's rate"
        return f"{self.strategy}{rate}"

    def apply(self, task: Any, base_rate: float) -> None:
        """Give ``task`` this candidate's learning rates (``base_rate``: the task's own rate)."""
        task.learning_rate = base_rate * self.lr_factor
        task.hparams["learning_rate"] = task.learning_rate
        if self.backbone_lr_factor is not None:
            task.backbone_lr_factor = self.backbone_lr_factor
            task.hparams["backbone_lr_factor"] = self.backbone_lr_factor


DEFAULT_CANDIDATES = (
    Candidate("freeze", name="linear probe (freeze)"),
    Candidate("freeze_unfreeze"),
    Candidate("no_freeze"),
)
"""What ``auto`` tries on a task with a pretrained backbone, cheapest first: a linear probe on the
frozen backbone (the head alone trains), ``freeze_unfreeze`` and ``no_freeze``, with the task's
learning rates. A task adds or replaces candidates with an ``auto_candidates()`` method."""


@dataclass
class AutoResult:
    """What ``strategy="auto"`` found, and the setting it then trained.

    Attributes:
        leaderboard: one row per candidate that ran, in the order they ran: ``candidate``,
            ``mean`` and ``std`` of the task's monitored metric over the folds, ``standard_error``,
            ``difference`` and ``difference_std`` (mean and sd of the per-fold difference from the
            best candidate, paired on the same folds), ``seconds``, ``chosen``.
        chosen: the candidate trained on all the data.
        monitor: the metric compared (the task's ``monitor``) and ``mode`` (``"max"``/``"min"``).
        results: each candidate's :class:`CrossValidationResult`, by label.
        skipped: candidates left out for lack of time.
    """

    leaderboard: list[dict[str, Any]]
    chosen: Candidate
    monitor: str
    mode: str
    results: dict[str, CrossValidationResult] = field(repr=False)
    skipped: list[str] = field(default_factory=list)

    def to_frame(self) -> Any:
        """The leaderboard as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.leaderboard)

    def __str__(self) -> str:
        width = max(len(row["candidate"]) for row in self.leaderboard)
        lines = [
            f"{'candidate':<{width}}  {self.monitor} (mean ± sd)   vs best (paired)   seconds",
        ]
        for row in self.leaderboard:
            mark = "  <- chosen" if row["chosen"] else ""
            lines.append(
                f"{row['candidate']:<{width}}  {row['mean']:.4f} ± {row['std']:.4f}"
                f"       {row['difference']:+.4f} ± {row['difference_std']:.4f}   {row['seconds']:7.1f}{mark}"
            )
        if self.skipped:
            lines.append(f"not run (time_limit): {', '.join(self.skipped)}")
        return "\n".join(lines)


def auto_options(argument: Any) -> dict[str, Any]:
    """The options of ``("auto", {...})``, checked."""
    if argument is None:
        return {}
    if not isinstance(argument, Mapping):
        raise TypeError(f'strategy=("auto", options) takes a dict of options, got {type(argument).__name__}.')
    unknown = sorted(set(argument) - set(AUTO_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown auto option(s) {', '.join(unknown)}; it takes {', '.join(AUTO_OPTIONS)}.")
    return dict(argument)


def run_auto(
    trainer: Any,
    model: pl.LightningModule,
    datamodule: Any,
    *,
    train_bn: bool | None = None,
    candidates: Sequence[Candidate | str] | None = None,
    folds: int = DEFAULT_FOLDS,
    repeats: int = 1,
    time_limit: float | None = None,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    verbose: bool = True,
) -> AutoResult:
    """Cross-validate each candidate on ``datamodule``'s training items (its validation items stay
    out of the search), choose one, and train it on the data as :meth:`finetune` does.

    Args:
        candidates: what to try, cheapest first (:class:`Candidate` or strategy names); default:
            the task's ``auto_candidates`` or :data:`DEFAULT_CANDIDATES`.
        folds: folds per candidate (the same folds for all).
        repeats: how many times the folds are drawn afresh (more scores per candidate, for a
            choice less at the mercy of one split; each repeat costs another ``folds`` runs).
        time_limit: seconds for the search (the final training is not counted): a candidate whose
            expected time (that of the one before) would pass it is not started. The first
            candidate always runs.
        seed: seed of the folds and runs.
        groups: one group per training item (see :meth:`~flash.Trainer.cross_validate`).
        verbose: print each fold, and the leaderboard.

    Raises:
        ValueError, TypeError: a task without a backbone, bad options, or data the folds cannot split.
    """
    from flash.core.data.datamodule import DataModule
    from flash.core.training.finetuning import FlashBaseFinetuning, resolve_strategy

    if not isinstance(getattr(model, "backbone", None), nn.Module):
        raise TypeError(
            f'strategy="auto" chooses how to finetune a backbone, and {type(model).__name__} has none: '
            "train it with a named strategy."
        )
    check_int(folds, "folds", 2)
    check_int(repeats, "repeats", 1)
    if time_limit is not None and (not isinstance(time_limit, int | float) or time_limit <= 0):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}.")
    listed = list(candidates) if candidates is not None else list(_task_candidates(model))
    if not listed:
        raise ValueError("auto needs at least one candidate.")
    chosen_from: list[Candidate] = []
    seen: set[tuple[str, float, float]] = set()
    for entry in listed:
        candidate = entry if isinstance(entry, Candidate) else Candidate(entry)
        backbone_factor = candidate.backbone_lr_factor
        if backbone_factor is None:
            backbone_factor = getattr(model, "backbone_lr_factor", 1.0)
        settings = (repr(candidate.strategy), float(candidate.lr_factor), float(backbone_factor))
        if settings not in seen:  # e.g. the backbone at the head's rate, where that is the task's default
            seen.add(settings)
            chosen_from.append(candidate)
    for candidate in chosen_from:
        callback = resolve_strategy(candidate.strategy, train_bn=train_bn)
        if isinstance(callback, FlashBaseFinetuning):
            callback.validate(model, trainer.max_epochs)
        factors = [
            candidate.lr_factor,
            1.0 if candidate.backbone_lr_factor is None else candidate.backbone_lr_factor,
        ]
        if not all(isinstance(f, int | float) and math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(
                f"Candidate {candidate.label}: lr_factor and backbone_lr_factor must be positive."
            )
    if not isinstance(datamodule, DataModule):
        raise TypeError(f'strategy="auto" needs a flash data module, got {type(datamodule).__name__}.')
    searched = datamodule.without_validation() if datamodule.splits.get("val") is not None else datamodule
    make_folds(searched.pooled_training().targets, folds, seed, groups)  # impossible folds fail here
    monitor = str(getattr(model, "monitor", None) or "val_loss")
    mode = str(getattr(model, "monitor_mode", "min"))
    results: dict[str, CrossValidationResult] = {}
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    start = time.perf_counter()
    for candidate in chosen_from:
        elapsed = time.perf_counter() - start
        if results and time_limit is not None and elapsed + max(seconds.values()) > time_limit:
            skipped.append(candidate.label)
            continue
        if verbose:
            print(f"auto: cross-validating {candidate.label}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        results[candidate.label] = trainer.cross_validate(
            _with_learning_rates(model, candidate),
            searched,
            folds=folds,
            repeats=repeats,
            seed=seed,
            groups=groups,
            strategy=candidate.strategy,
            train_bn=train_bn,
            verbose=verbose,
        )
        seconds[candidate.label] = time.perf_counter() - began
    if time_limit is not None and len(results) == 1 and seconds[chosen_from[0].label] > time_limit:
        warnings.warn(
            f"time_limit={time_limit:g} s is too small for one candidate: {chosen_from[0].label} took "
            f"{seconds[chosen_from[0].label]:.0f} s; it is the one trained.",
            UserWarning,
            stacklevel=3,
        )
    elif skipped:
        warnings.warn(
            f"time_limit={time_limit:g} s left out {', '.join(skipped)}.", UserWarning, stacklevel=3
        )
    ran = [c for c in chosen_from if c.label in results]
    result = _leaderboard(ran, results, seconds, monitor, mode, skipped)
    if verbose:
        print(str(result), file=sys.stderr, flush=True)
    winner = result.chosen
    winner.apply(model, model.learning_rate)
    trainer.finetune(model, datamodule, strategy=winner.strategy, train_bn=train_bn)
    return result


def choose(means: Sequence[float], standard_errors: Sequence[float], mode: str) -> int:
    """The index of the first (cheapest) candidate within one standard error of the best mean."""
    sign = 1.0 if mode == "max" else -1.0
    scores = [sign * m for m in means]
    best = max(range(len(scores)), key=lambda i: scores[i])
    bar = scores[best] - standard_errors[best]
    return next(i for i, score in enumerate(scores) if score >= bar)


def _leaderboard(
    ran: list[Candidate],
    results: dict[str, CrossValidationResult],
    seconds: dict[str, float],
    monitor: str,
    mode: str,
    skipped: list[str],
) -> AutoResult:
    values = {c.label: results[c.label].values(monitor) for c in ran}
    means = [statistics.fmean(values[c.label]) for c in ran]
    errors = [results[c.label].standard_error(monitor) for c in ran]
    chosen = choose(means, errors, mode)
    best = max(range(len(ran)), key=lambda i: means[i] if mode == "max" else -means[i])
    reference = values[ran[best].label]
    rows = []
    for i, candidate in enumerate(ran):
        differences = [a - b for a, b in zip(values[candidate.label], reference)]
        rows.append(
            {
                "candidate": candidate.label,
                "mean": means[i],
                "std": results[candidate.label].std(monitor),
                "standard_error": errors[i],
                "difference": statistics.fmean(differences),
                "difference_std": statistics.stdev(differences) if len(differences) > 1 else 0.0,
                "seconds": seconds[candidate.label],
                "chosen": i == chosen,
            }
        )
    return AutoResult(rows, ran[chosen], monitor, mode, results, skipped)


def _task_candidates(model: Any) -> Sequence[Candidate]:
    own = getattr(model, "auto_candidates", None)
    return own() if callable(own) else DEFAULT_CANDIDATES


def _with_learning_rates(model: pl.LightningModule, candidate: Candidate) -> pl.LightningModule:
    """A copy of ``model`` (as it is, untrained by the search) with ``candidate``'s learning rates."""
    copied = untrained_copy(model)
    candidate.apply(copied, model.learning_rate)
    return copied
