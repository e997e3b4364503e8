"""Temperature scaling: calibrated class probabilities from held-out logits.

A classifier finetuned on a small data set is usually over-confident: among the items it gives
90 %, fewer than 90 % are right. Temperature scaling (Guo et al., 2017) divides the logits by one
number ``T`` before the softmax, chosen to minimise the cross-entropy on data the model did not
train on (the validation split, or out-of-fold logits from cross-validation). The predicted class
(the arg-max) does not change; only how sure the probabilities say the model is.

- :func:`fit_temperature`: the ``T`` for a set of logits and their true classes.
- :func:`expected_calibration_error`: how far the top probability is from the accuracy, on average.
- :func:`calibration_report`: both, before and after, with the data of a reliability diagram
  (:class:`CalibrationReport`, whose :meth:`~CalibrationReport.plot` draws it).

Fit the temperature on held-out data only: on the training data the model is already right and
sure, so the fitted ``T`` would make it more over-confident, not less.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from flash.core.utils.validation import check_int

if TYPE_CHECKING:
    from flash.core.model.conformal import ConformalReport

__all__ = [
    "DEFAULT_BINS",
    "TEMPERATURE_RANGE",
    "CalibrationReport",
    "ReliabilityBins",
    "calibration_report",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
]

TEMPERATURE_RANGE = (0.05, 20.0)
"""The temperatures :func:`fit_temperature` chooses from; a fit outside it is clamped to it."""

DEFAULT_BINS = 15
"""Equal-width confidence bins of :func:`expected_calibration_error` (the usual 15)."""

_GRID_POINTS = 25  # log-spaced starting points over TEMPERATURE_RANGE
_PROBABILITY_TOLERANCE = 1e-3  # how far a row of probabilities may sum from 1


# -- input checks ---------------------------------------------------------------------------------
def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()  # a plain tensor, even when made under inference_mode
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        array = np.asarray(value, dtype=object)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a tensor, a NumPy array or nested lists of real numbers, got "
            f"{type(value).__name__} holding {array.dtype} values."
        )
    return torch.as_tensor(array)


def _check_scores(value: Any, name: str, what: str) -> torch.Tensor:
    """A ``(items, classes)`` float tensor (float64) with finite values."""
    scores = _as_tensor(value, name)
    if scores.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D, (items, classes), got shape {tuple(scores.shape)}; "
            f"pass one row of {what} per item."
        )
    if scores.dtype == torch.bool or scores.is_complex():
        raise TypeError(f"{name} must hold real numbers ({what}), got dtype {scores.dtype}.")
    if scores.shape[1] < 2:
        raise ValueError(
            f"{name} has {scores.shape[1]} column(s); calibration needs one column per class, at least 2 "
            "(a single-label classifier's outputs)."
        )
    scores = scores.to(torch.float64)
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).any(dim=1).sum())
        raise ValueError(
            f"{name} holds NaN or infinite values in {bad} row(s); the model diverged or the data holds "
            "NaNs. Fix the model or drop those items before calibrating."
        )
    return scores


def _check_targets(value: Any, items: int, classes: int, name: str = "targets") -> torch.Tensor:
    """A 1-D int64 tensor of class indices in ``0..classes-1``, one per item."""
    targets = _as_tensor(value, name)
    if targets.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, one class index per item, got shape {tuple(targets.shape)}; "
            "calibration is for single-label classifiers (multi-label targets are refused)."
        )
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.is_complex():
        raise TypeError(f"{name} must be integer class indices, got dtype {targets.dtype}.")
    if len(targets) != items:
        raise ValueError(f"There are {items} rows of scores but {len(targets)} {name}; pass one per item.")
    targets = targets.to(torch.int64)
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(
            f"{name} must be class indices in 0..{classes - 1} (one per column), got values from "
            f"{int(targets.min())} to {int(targets.max())}."
        )
    return targets


def _check_logits_and_targets(logits: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _check_scores(logits, "logits", "logits")
    targets = _check_targets(targets, logits.shape[0], logits.shape[1])
    if logits.shape[0] < 2:
        raise ValueError(
            f"Fitting a temperature needs at least 2 items, got {logits.shape[0]}; calibrate on the "
            "whole validation set (or all out-of-fold predictions)."
        )
    return logits, targets


def _check_probabilities(probabilities: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    probabilities = _check_scores(probabilities, "probabilities", "class probabilities")
    targets = _check_targets(targets, probabilities.shape[0], probabilities.shape[1])
    if probabilities.shape[0] == 0:
        raise ValueError("There are no items: the calibration error needs at least one.")
    if float(probabilities.min()) < 0 or float(probabilities.max()) > 1:
        raise ValueError(
            "probabilities must lie in [0, 1]; these look like logits: pass softmax(logits) instead."
        )
    sums = probabilities.sum(dim=1)
    if float((sums - 1).abs().max()) > _PROBABILITY_TOLERANCE:
        raise ValueError(
            "Each row of probabilities must sum to 1 (softmax outputs of a single-label classifier); "
            f"a row sums to {float(sums[(sums - 1).abs().argmax()]):.4g}."
        )
    return probabilities, targets


# -- fitting --------------------------------------------------------------------------------------
def _nll(logits: torch.Tensor, targets: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits * torch.exp(-log_t), targets)


def fit_temperature(logits: Any, targets: Any) -> float:
    """The temperature ``T > 0`` that minimises the mean cross-entropy of ``softmax(logits / T)``.

    The search runs in float64 over ``log T``: the best of a coarse log-spaced grid over
    :data:`TEMPERATURE_RANGE` starts an L-BFGS refinement, and the result is clamped to that range
    (0.05 to 20). ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens timid ones.

    Args:
        logits: ``(items, classes)`` logits of a single-label classifier on held-out data (the
            validation split, or out-of-fold predictions), never its training data.
        targets: ``(items,)`` true class indices.

    Returns:
        The temperature, a float in :data:`TEMPERATURE_RANGE`.

    Raises:
        ValueError, TypeError: for logits that are not 2-D real numbers, targets that are not one
            class index per row, fewer than 2 items, or NaN/infinite values.
    """
    logits, targets = _check_logits_and_targets(logits, targets)
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    with torch.no_grad():
        grid = torch.linspace(low, high, _GRID_POINTS, dtype=torch.float64)
        losses = torch.stack([_nll(logits, targets, log_t) for log_t in grid])
        best_loss = float(losses.min())
        # among equally good points (flat logits), the one nearest T = 1
        ties = torch.nonzero(losses <= best_loss * (1 + 1e-12)).flatten()
        start = grid[ties[int(torch.argmin(grid[ties].abs()))]]
    log_t = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _nll(logits, targets, log_t)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    refined = float(log_t.detach().clamp(low, high))
    with torch.no_grad():
        refined_loss = float(_nll(logits, targets, torch.tensor(refined, dtype=torch.float64)))
    chosen = refined if math.isfinite(refined_loss) and refined_loss <= best_loss else float(start)
    return float(min(max(math.exp(chosen), TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1]))


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class ReliabilityBins:
    """The data of a reliability diagram: items binned by their top probability.

    Attributes:
        edges: the ``bins + 1`` bin edges, from 0 to 1 (bin ``i`` is ``(edges[i], edges[i+1]]``,
            the first one also holding 0).
        counts: items per bin.
        confidence: the mean top probability of each bin's items (0 for an empty bin).
        accuracy: the share of each bin's items whose top class is right (0 for an empty bin).
    """

    edges: list[float]
    counts: list[int]
    confidence: list[float]
    accuracy: list[float]

    @property
    def error(self) -> float:
        """The expected calibration error these bins give."""
        total = sum(self.counts)
        if not total:
            return 0.0
        return float(
            sum(n * abs(a - c) for n, a, c in zip(self.counts, self.accuracy, self.confidence)) / total
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reliability_bins(probabilities: Any, targets: Any, bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Bin items by their top probability into ``bins`` equal-width bins over ``[0, 1]``.

    Args:
        probabilities: ``(items, classes)`` class probabilities (rows summing to 1).
        targets: ``(items,)`` true class indices.
        bins: the number of bins.
    """
    check_int(bins, "bins", 1)
    probabilities, targets = _check_probabilities(probabilities, targets)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).to(torch.float64)
    index = (torch.ceil(confidence * bins).to(torch.int64) - 1).clamp(0, bins - 1)
    counts = torch.bincount(index, minlength=bins).to(torch.float64)
    confidence_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    safe = counts.clamp(min=1)
    return ReliabilityBins(
        edges=[i / bins for i in range(bins + 1)],
        counts=[int(n) for n in counts.tolist()],
        confidence=(confidence_sum / safe).tolist(),
        accuracy=(correct_sum / safe).tolist(),
    )


def expected_calibration_error(probabilities: Any, targets: Any, bins: int = DEFAULT_BINS) -> float:
    """The expected calibration error (ECE) of single-label ``probabilities``.

    Items are put into ``bins`` equal-width bins by their top probability (the confidence); the
    ECE is the sum over bins of ``|accuracy - mean confidence|`` weighted by the bin's share of
    the items. 0 is perfectly calibrated.

    Args:
        probabilities: ``(items, classes)`` class probabilities (rows summing to 1).
        targets: ``(items,)`` true class indices.
        bins: the number of equal-width bins over ``[0, 1]`` (default 15).

    Raises:
        ValueError, TypeError: for probabilities that are not rows summing to 1, targets that are
            not one class index per row, no items, or a bad ``bins``.
    """
    return reliability_bins(probabilities, targets, bins).error


# -- the report -----------------------------------------------------------------------------------
@dataclass
class CalibrationReport:
    """What temperature scaling did on the held-out data it was fitted on.

    Attributes:
        temperature: the fitted temperature (logits are divided by it before the softmax).
        ece_before, ece_after: the expected calibration error at temperature 1 and at ``temperature``.
        nll_before, nll_after: the mean cross-entropy (negative log-likelihood) before and after.
        items: how many held-out items the fit used.
        bins_before, bins_after: the reliability-diagram data before and after.
        conformal: the conformal prediction sets fitted on the same items with the calibrated
            probabilities, when a coverage was asked for (``calibrate(..., coverage=0.9)``).
    """

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    items: int
    bins_before: ReliabilityBins = field(repr=False)
    bins_after: ReliabilityBins = field(repr=False)
    conformal: ConformalReport | None = field(default=None, repr=False)

    def __str__(self) -> str:
        text = (
            f"temperature {self.temperature:.3f} on {self.items} held-out items: "
            f"ECE {self.ece_before:.4f} -> {self.ece_after:.4f}, "
            f"NLL {self.nll_before:.4f} -> {self.nll_after:.4f}"
        )
        return text if self.conformal is None else f"{text}; {self.conformal}"

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (``conformal`` only when sets were fitted)."""
        values = {
            "temperature": self.temperature,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
            "items": self.items,
            "bins_before": self.bins_before.to_dict(),
            "bins_after": self.bins_after.to_dict(),
        }
        if self.conformal is not None:
            values["conformal"] = self.conformal.to_dict()
        return values

    def plot(self, path: str | os.PathLike | None = None) -> Any:
        """The reliability diagram before and after, side by side.

        Each bar is a confidence bin: its height the accuracy of the bin's items, the diagonal
        where a calibrated model's bars end. Returns the matplotlib figure, or writes a PNG to
        ``path`` and returns the path (as the plots of :mod:`flash.core.utils.plots` do).
        """
        from flash.core.utils.plots import new_figure, save_figure

        figure = new_figure(9.6, 4.4)
        axes = figure.subplots(1, 2, sharey=True)
        panels = (
            (axes[0], self.bins_before, f"before (T = 1): ECE {self.ece_before:.3f}"),
            (axes[1], self.bins_after, f"after (T = {self.temperature:.2f}): ECE {self.ece_after:.3f}"),
        )
        for ax, bins, title in panels:
            _draw_reliability(ax, bins)
            ax.set_title(title)
        axes[0].set_ylabel("accuracy")
        axes[1].legend(loc="upper left")
        figure.suptitle(f"reliability on {self.items} held-out items")
        return figure if path is None else save_figure(figure, Path(path))


def _draw_reliability(ax: Any, bins: ReliabilityBins) -> None:
    edges = np.asarray(bins.edges)
    width = np.diff(edges)
    filled = np.asarray(bins.counts) > 0
    left = edges[:-1][filled]
    accuracy = np.asarray(bins.accuracy)[filled]
    confidence = np.asarray(bins.confidence)[filled]
    ax.bar(left, accuracy, width=width[filled], align="edge", edgecolor="black", label="accuracy")
    ax.bar(
        left,
        np.abs(confidence - accuracy),
        bottom=np.minimum(accuracy, confidence),
        width=width[filled],
        align="edge",
        facecolor=(1.0, 0.0, 0.0, 0.15),
        edgecolor="red",
        hatch="//",
        label="gap to the mean confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.grid(alpha=0.3)


def calibration_report(
    logits: Any, targets: Any, temperature: float | None = None, bins: int = DEFAULT_BINS
) -> CalibrationReport:
    """Fit a temperature on held-out ``logits`` (unless ``temperature`` is given) and measure it.

    Args:
        logits: ``(items, classes)`` held-out logits of a single-label classifier.
        targets: ``(items,)`` true class indices.
        temperature: a temperature to measure instead of fitting one.
        bins: the confidence bins of the calibration error and the diagram.
    """
    check_int(bins, "bins", 1)
    logits, targets = _check_logits_and_targets(logits, targets)
    if temperature is None:
        temperature = fit_temperature(logits, targets)
    elif (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    before = torch.softmax(logits, dim=1)
    after = torch.softmax(logits / temperature, dim=1)
    bins_before = reliability_bins(before, targets, bins)
    bins_after = reliability_bins(after, targets, bins)
    return CalibrationReport(
        temperature=float(temperature),
        ece_before=bins_before.error,
        ece_after=bins_after.error,
        nll_before=float(F.cross_entropy(logits, targets)),
        nll_after=float(F.cross_entropy(logits / temperature, targets)),
        items=int(logits.shape[0]),
        bins_before=bins_before,
        bins_after=bins_after,
    )
