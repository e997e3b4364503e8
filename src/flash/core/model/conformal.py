"""Conformal prediction sets: a set of classes per item that holds the true one at a chosen rate.

Split conformal prediction (Vovk et al., 2005; Angelopoulos and Bates, 2021) with the "LAC"
score turns a classifier's calibrated probabilities into sets with a coverage guarantee. On
held-out items (never the training data) each item's nonconformity score is
``1 - probability of its true class``; the threshold ``q`` is the ``ceil((n + 1)(1 - alpha)) / n``
empirical quantile of the ``n`` scores. A new item's set is every class whose score is at most
``q``, i.e. whose probability is at least ``1 - q``. If the held-out items and the new ones are
exchangeable, the set holds the true class with probability at least ``1 - alpha`` (the
*coverage*), on average over items: the guarantee is *marginal*, and a hard class may be covered
less often than an easy one.

- :func:`fit_conformal_threshold`: ``q`` for held-out probabilities, their true classes and a coverage.
- :func:`prediction_sets`: the sets ``q`` gives, as class indices ordered by probability.
- :func:`conformal_report`: ``q`` on all the items, with an honest empirical coverage and set
  size measured on halves the threshold was not fitted on (:class:`ConformalReport`).

A set is never empty: where no class reaches ``1 - q`` (possible when ``q`` is small) the set is
the top class alone. That can only raise the coverage.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from flash.core.model.calibration import _check_probabilities
from flash.core.utils.validation import check_int, check_number

__all__ = [
    "DEFAULT_SPLITS",
    "ConformalReport",
    "check_coverage",
    "conformal_report",
    "conformal_scores",
    "fit_conformal_threshold",
    "min_items",
    "prediction_sets",
]

DEFAULT_SPLITS = 20
"""Random half splits :func:`conformal_report` measures the coverage on."""

_EPS = 1e-9  # (n + 1)(1 - alpha) computed in floating point: 10 * 0.9 must give 9, not 9.000000000000002
_ROUNDING = 1e-6  # a class whose probability is 1 - q but rounds below it (float32) stays in the set


def check_coverage(coverage: Any) -> float:
    """``coverage`` as a float when it is a number strictly between 0 and 1 (e.g. 0.9).

    Raises:
        ValueError: for anything else (a percentage like 90, 0, 1, a bool, NaN).
    """
    if not isinstance(coverage, bool) and isinstance(coverage, int | float) and 1 < coverage < 100:
        raise ValueError(
            f"coverage must be a fraction in (0, 1), got {coverage!r}; for {coverage} % pass {coverage / 100:g}."
        )
    return check_number(coverage, "coverage", "(0, 1)")


def _rank(items: int, coverage: float) -> int:
    """``ceil((items + 1) * coverage)``: the rank (from 1) of the score that is the threshold."""
    return math.ceil((items + 1) * coverage - _EPS)


def min_items(coverage: float) -> int:
    """The fewest held-out items that give a finite threshold at ``coverage``.

    With ``n`` items the threshold is the ``ceil((n + 1) * coverage)``-th smallest score, which
    exists only when that rank is at most ``n``: 9 items for 0.9, 19 for 0.95, 99 for 0.99.
    """
    coverage = check_coverage(coverage)
    items = max(1, math.floor(coverage / (1 - coverage)) - 1)
    while _rank(items, coverage) > items:
        items += 1
    return items


def conformal_scores(probabilities: Any, targets: Any) -> torch.Tensor:
    """The nonconformity score of each item: ``1 - probability of its true class`` (float64).

    Args:
        probabilities: ``(items, classes)`` calibrated class probabilities (rows summing to 1).
        targets: ``(items,)`` true class indices.
    """
    probabilities, targets = _check_probabilities(probabilities, targets)
    return 1 - probabilities.gather(1, targets[:, None]).squeeze(1)


def _threshold(scores: torch.Tensor, coverage: float) -> float:
    rank = _rank(len(scores), coverage)
    return float(torch.sort(scores).values[rank - 1])


def _check_enough(items: int, coverage: float, needed: int, why: str = "") -> None:
    if items < needed:
        raise ValueError(
            f"A coverage of {coverage:g} needs at least {needed} held-out items{why}, got {items}; "
            "hold out more data (a larger val_split, or out-of-fold logits of a cross-validation) or "
            "ask for a lower coverage."
        )


def fit_conformal_threshold(probabilities: Any, targets: Any, coverage: float) -> float:
    """The threshold ``q`` on the score ``1 - p(true class)`` that gives sets of ``coverage``.

    ``q`` is the ``ceil((n + 1) * coverage)``-th smallest of the ``n`` held-out scores; a class is
    in an item's set when its probability is at least ``1 - q``.

    Args:
        probabilities: ``(items, classes)`` calibrated probabilities of held-out items.
        targets: ``(items,)`` their true class indices.
        coverage: the share of sets that should hold the true class, in ``(0, 1)``, e.g. 0.9.

    Raises:
        ValueError: a coverage outside ``(0, 1)``; fewer items than :func:`min_items` (the
            message says how many are needed); probabilities or targets that do not fit.
    """
    coverage = check_coverage(coverage)
    scores = conformal_scores(probabilities, targets)
    _check_enough(len(scores), coverage, min_items(coverage))
    return _threshold(scores, coverage)


def _set_masks(probabilities: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(items, classes)`` booleans: the classes in each item's set (the top one at least)."""
    masks = probabilities >= (1 - threshold) - _ROUNDING
    top = probabilities.argmax(dim=1)
    masks[torch.arange(len(probabilities)), top] = True
    return masks


def prediction_sets(probabilities: Any, threshold: float) -> list[list[int]]:
    """Each item's prediction set: the class indices whose probability is at least ``1 - threshold``
    (less 1e-6, so rounding to float32 drops no class that is on the threshold), ordered by
    probability (highest first); the top class alone where no class reaches it.

    Args:
        probabilities: ``(items, classes)`` calibrated probabilities, from the same model and
            temperature the threshold was fitted with.
        threshold: a threshold from :func:`fit_conformal_threshold`, in ``[0, 1]``.
    """
    threshold = check_number(threshold, "threshold", "[0, 1]")
    probabilities = torch.as_tensor(probabilities).detach().cpu()
    if probabilities.ndim != 2 or not probabilities.is_floating_point():
        raise ValueError(
            f"probabilities must be a 2-D float array, (items, classes), got shape {tuple(probabilities.shape)} "
            f"and dtype {probabilities.dtype}."
        )
    masks = _set_masks(probabilities, threshold)
    order = torch.argsort(probabilities, dim=1, descending=True, stable=True)
    return [[int(i) for i in row if mask[i]] for row, mask in zip(order.tolist(), masks.tolist())]


@dataclass
class ConformalReport:
    """Conformal prediction sets fitted on held-out items, and how they did on items they were not fitted on.

    The threshold is fitted on all the items. Coverage measured on those same items would be
    optimistic, so the empirical numbers come from ``splits`` random half splits: the threshold
    fitted on one half, measured on the other. They describe thresholds fitted on half as many
    items as the one kept, whose coverage varies less from one held-out set to another.

    Attributes:
        coverage: the coverage asked for.
        threshold: the threshold on ``1 - p(class)`` fitted on all the items (a class is in a set
            when its probability is at least ``1 - threshold``).
        items: how many held-out items.
        splits: how many random half splits the empirical numbers average over.
        empirical_coverage, empirical_coverage_sd: the mean and standard deviation over the splits
            of the share of measured items whose set holds their true class.
        mean_set_size, mean_set_size_sd: the same for the number of classes in a set.
        class_coverage: per class, the share of its measured items (pooled over the splits) whose
            set holds it; ``None`` for a class with no items. Coverage is guaranteed on average
            over items only, not per class.
        class_items: per class, how many of the held-out items belong to it.
    """

    coverage: float
    threshold: float
    items: int
    splits: int
    empirical_coverage: float
    empirical_coverage_sd: float
    mean_set_size: float
    mean_set_size_sd: float
    class_coverage: list[float | None]
    class_items: list[int]

    def __str__(self) -> str:
        return (
            f"conformal sets at coverage {self.coverage:g}: threshold {self.threshold:.4f} on {self.items} "
            f"items; on held-out halves ({self.splits} splits) coverage {self.empirical_coverage:.3f} ± "
            f"{self.empirical_coverage_sd:.3f}, mean set size {self.mean_set_size:.2f} ± {self.mean_set_size_sd:.2f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values."""
        return asdict(self)


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def conformal_report(
    probabilities: Any, targets: Any, coverage: float, splits: int = DEFAULT_SPLITS, seed: int = 0
) -> ConformalReport:
    """Fit the conformal threshold on held-out items and measure the sets it gives honestly.

    The threshold is :func:`fit_conformal_threshold` on all the items. The empirical coverage and
    set size are measured ``splits`` times on a random half of the items with a threshold fitted
    on the other half (the split drawn from a generator seeded with ``seed``; the global random
    state is not touched), and reported as mean and standard deviation, with the coverage per class.

    Args:
        probabilities: ``(items, classes)`` calibrated probabilities of held-out items.
        targets: ``(items,)`` their true class indices.
        coverage: the coverage asked for, in ``(0, 1)``.
        splits: how many random half splits to measure on.
        seed: the seed of the splits.

    Raises:
        ValueError: a coverage outside ``(0, 1)``; fewer than twice :func:`min_items` items (each
            half must give a threshold; the message says how many are needed); bad inputs.
    """
    coverage = check_coverage(coverage)
    check_int(splits, "splits", 1)
    check_int(seed, "seed", 0)
    probabilities, targets = _check_probabilities(probabilities, targets)
    items, classes = probabilities.shape
    _check_enough(
        items, coverage, 2 * min_items(coverage), " (half of them fit the threshold, half measure it)"
    )
    scores = conformal_scores(probabilities, targets)
    generator = torch.Generator().manual_seed(seed)
    half = items // 2
    covered_rates, sizes = [], []
    class_hits = torch.zeros(classes, dtype=torch.float64)
    class_seen = torch.zeros(classes, dtype=torch.float64)
    for _ in range(splits):
        order = torch.randperm(items, generator=generator)
        fit, measure = order[:half], order[half:]
        sets = _set_masks(probabilities[measure], _threshold(scores[fit], coverage))
        truth = targets[measure]
        hit = sets[torch.arange(len(measure)), truth].to(torch.float64)
        covered_rates.append(float(hit.mean()))
        sizes.append(float(sets.sum(dim=1).to(torch.float64).mean()))
        class_hits.index_add_(0, truth, hit)
        class_seen.index_add_(0, truth, torch.ones_like(hit))
    class_items = torch.bincount(targets, minlength=classes)
    return ConformalReport(
        coverage=coverage,
        threshold=_threshold(scores, coverage),
        items=int(items),
        splits=int(splits),
        empirical_coverage=float(np.mean(covered_rates)),
        empirical_coverage_sd=_sd(covered_rates),
        mean_set_size=float(np.mean(sizes)),
        mean_set_size_sd=_sd(sizes),
        class_coverage=[
            float(h / s) if s > 0 else None for h, s in zip(class_hits.tolist(), class_seen.tolist())
        ],
        class_items=[int(n) for n in class_items.tolist()],
    )
