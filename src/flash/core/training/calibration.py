"""``flash.Trainer.calibrate``: fit a classifier's temperature on held-out logits.

The model runs once, in eval mode, over the data module's validation loader; the temperature
that minimises the cross-entropy of ``softmax(logits / T)`` on those items
(:func:`flash.core.model.calibration.fit_temperature`) becomes the task's ``temperature``, which
its probabilities use from then on (predict, serving, ONNX export, checkpoints). Labels do not
change. Logits from elsewhere (out-of-fold predictions of a cross-validation) can be given instead.
With ``coverage=``, a conformal threshold is then fitted on the same items with the calibrated
probabilities (:mod:`flash.core.model.conformal`), for ``predict(output="set")``.
"""

from __future__ import annotations

from typing import Any

import torch

from flash.core.model.calibration import DEFAULT_BINS, CalibrationReport, calibration_report
from flash.core.model.conformal import check_coverage, conformal_report
from flash.core.model.evaluation import outputs_over

__all__ = ["calibrate", "check_calibratable", "held_out_logits"]


def check_calibratable(model: Any) -> None:
    """Raise unless ``model`` is a single-label classifier (what temperature scaling applies to).

    Raises:
        TypeError: ``model`` is not a :class:`~flash.core.model.classification.ClassificationTask`.
        ValueError: it is a multi-label classifier.
    """
    from flash.core.model.classification import ClassificationTask
    from flash.core.model.regression import RegressionTask

    if isinstance(model, RegressionTask):
        raise TypeError(
            f"{type(model).__name__} is a regressor; temperature scaling calibrates class probabilities, "
            "so only single-label classifiers can be calibrated."
        )
    if not isinstance(model, ClassificationTask):
        raise TypeError(
            f"calibrate needs a single-label classifier (a flash ClassificationTask), got {type(model).__name__}."
        )
    if model.multi_label:
        raise ValueError(
            f"{type(model).__name__} is multi-label: its per-class sigmoid probabilities are not "
            "calibrated by one softmax temperature. Calibrate single-label classifiers only."
        )


def held_out_logits(model: Any, datamodule: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits (its ``forward`` output, as ``predict`` gets it) and the true classes over
    ``datamodule``'s validation data, in eval mode, each batch passed through the task's
    batch-transfer hooks first (as in training).

    Raises:
        ValueError: the data module has no validation data.
    """
    splits = getattr(datamodule, "splits", None)
    if not hasattr(datamodule, "val_dataloader") or (isinstance(splits, dict) and splits.get("val") is None):
        raise ValueError(
            "calibrate needs validation data, and this data module has none: build it with val_split= "
            "(e.g. val_split=0.2) or give validation data. Calibrating on the training data would make "
            "the model more over-confident, not less."
        )
    if getattr(datamodule, "task", None) is not model and hasattr(datamodule, "attach_task"):
        datamodule.attach_task(model)
    try:
        logits, targets = outputs_over(
            model, datamodule.val_dataloader(), desc="Calibrating on the validation set"
        )
    except ValueError:
        raise ValueError(
            "The validation loader gave no batches; calibrate needs validation items (val_split= or val data)."
        ) from None
    if targets is None:
        raise ValueError("The validation batches carry no targets; calibrate needs labelled validation data.")
    return logits.cpu(), targets.cpu()


def calibrate(
    trainer: Any,
    model: Any,
    datamodule: Any = None,
    *,
    logits: Any = None,
    targets: Any = None,
    bins: int = DEFAULT_BINS,
    coverage: float | None = None,
) -> CalibrationReport:
    """Fit ``model``'s temperature on held-out data, set it, and report what it changed; with
    ``coverage``, also fit conformal prediction sets on the same data.

    This is :meth:`flash.Trainer.calibrate`. With a data module, the model runs once in eval mode
    over its validation data (one pass, no training); with ``logits=`` and ``targets=`` (e.g.
    out-of-fold logits from a cross-validation), those are used instead. Either way the data must
    be held out: never the data the model trained on.

    Args:
        model: a trained single-label classifier (a ``ClassificationTask``).
        datamodule: its data module, with validation data (``val_split=`` or validation files).
        logits: ``(items, classes)`` held-out logits, instead of a data module.
        targets: ``(items,)`` their true class indices (with ``logits``).
        bins: confidence bins of the calibration error and the reliability diagram.
        coverage: the share of prediction sets that should hold the true class, in ``(0, 1)``
            (e.g. 0.9): after the temperature, the conformal threshold is fitted on the same items
            with the calibrated probabilities and kept in the task (``predict(output="set")``).
            ``None`` (the default): temperature only, and any earlier threshold is removed when
            the temperature changes.

    Returns:
        A :class:`~flash.core.model.calibration.CalibrationReport`: the temperature, the expected
        calibration error and the NLL before and after, and ``plot()`` for the reliability diagram;
        with ``coverage``, its ``conformal`` holds the threshold and the coverage and set size
        measured on random halves of the items
        (:class:`~flash.core.model.conformal.ConformalReport`).

    Raises:
        TypeError: ``model`` is not a classifier (or is a regressor).
        ValueError: ``model`` is multi-label; the data module has no validation data; both or
            neither of a data module and ``logits``/``targets`` are given; bad logits or targets;
            a coverage outside ``(0, 1)``, or too few held-out items for it (the message says
            how many it needs). Nothing is set on the model when it raises.
    """
    check_calibratable(model)
    if coverage is not None:
        coverage = check_coverage(coverage)
    given = logits is not None or targets is not None
    if datamodule is not None and given:
        raise ValueError(
            "Pass either a data module (calibrate on its validation data) or logits= and targets=, not both."
        )
    if given and (logits is None or targets is None):
        raise ValueError("Pass logits= and targets= together: held-out logits and their true classes.")
    if datamodule is None and not given:
        raise ValueError(
            "calibrate needs held-out data: a data module with validation data, or logits= and targets= "
            "(e.g. out-of-fold logits from a cross-validation)."
        )
    if datamodule is not None:
        logits, targets = held_out_logits(model, datamodule)
    shape = tuple(getattr(logits, "shape", ()))
    if len(shape) == 2 and shape[1] != model.num_classes:
        raise ValueError(
            f"The logits have {shape[1]} columns but the model has {model.num_classes} classes; "
            "pass the logits of this model."
        )
    report = calibration_report(logits, targets, bins=bins)
    if coverage is not None:
        calibrated = torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / report.temperature, dim=1)
        report.conformal = conformal_report(calibrated, targets, coverage)
    model.set_temperature(report.temperature)
    if report.conformal is not None:
        model.set_conformal_threshold(report.conformal.threshold, coverage)
    return report
