"""Temperature scaling: the fit, the calibration error, ``flash.Trainer.calibrate``, and the
temperature in probabilities, checkpoints, ONNX exports and ``flash finetune --calibrate``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

import flash
from flash.core.model.calibration import (
    TEMPERATURE_RANGE,
    CalibrationReport,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from flash.core.model.conformal import (
    conformal_report,
    conformal_scores,
    fit_conformal_threshold,
    min_items,
    prediction_sets,
)
from flash.core.model.outputs import apply_output
from flash.core.model.regression import RegressionTask
from flash.core.training.calibration import held_out_logits
from toy import ToyClassifier, toy_data

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from servable_toy import ServableToy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def tempered_sample(temperature: float, items: int = 4000, classes: int = 5, seed: int = 0):
    """Logits ``z`` and classes drawn from ``softmax(z / temperature)``: the true temperature is known."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(items, classes, generator=generator)
    targets = torch.multinomial(torch.softmax(logits / temperature, dim=1), 1, generator=generator)
    return logits, targets.squeeze(1)


# -- the fit and the error --------------------------------------------------------------------------
@pytest.mark.parametrize("true_temperature", [2.5, 0.5])
def test_fit_temperature_recovers_the_temperature_the_classes_were_drawn_at(true_temperature):
    logits, targets = tempered_sample(true_temperature)
    fitted = fit_temperature(logits, targets)
    assert abs(fitted - true_temperature) / true_temperature < 0.1
    # the same from NumPy arrays, and from float64
    assert fit_temperature(logits.numpy(), targets.numpy()) == pytest.approx(fitted, rel=1e-6)
    assert fit_temperature(logits.double(), targets) == pytest.approx(fitted, rel=1e-6)


def test_fit_temperature_stays_in_its_range_and_keeps_one_for_logits_that_say_nothing():
    always_right = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # sharper is always better
    always_wrong = torch.tensor([[8.0, 0.0], [0.0, 8.0], [8.0, 0.0]])  # flatter is always better
    assert fit_temperature(always_right, [0, 1, 0]) == pytest.approx(TEMPERATURE_RANGE[0])
    assert fit_temperature(always_wrong, [1, 0, 1]) == pytest.approx(TEMPERATURE_RANGE[1])
    assert fit_temperature(torch.zeros(4, 3), [0, 1, 2, 0]) == pytest.approx(1.0)


def test_fit_temperature_takes_logits_made_under_inference_mode():
    logits, targets = tempered_sample(2.0, items=500)
    with torch.inference_mode():
        logits, targets = logits.clone(), targets.clone()
    assert 1.5 < fit_temperature(logits, targets) < 2.6


def test_expected_calibration_error_of_a_hand_worked_case():
    probabilities = [[0.85, 0.15], [0.85, 0.15], [0.28, 0.72], [0.36, 0.64]]
    targets = [0, 1, 1, 0]  # right, wrong, right, wrong
    # bins of 0.1: (0.8, 0.9] holds two items at 0.85 with accuracy 0.5; (0.7, 0.8] one at 0.72,
    # right; (0.6, 0.7] one at 0.64, wrong: 0.5 * 0.35 + 0.25 * 0.28 + 0.25 * 0.64
    assert expected_calibration_error(probabilities, targets, bins=10) == pytest.approx(0.405)
    # one bin: |accuracy - mean confidence| = |0.5 - 0.765|
    assert expected_calibration_error(probabilities, targets, bins=1) == pytest.approx(0.265)
    bins = reliability_bins(probabilities, targets, bins=10)
    assert bins.counts == [0, 0, 0, 0, 0, 0, 1, 1, 2, 0]
    assert bins.accuracy[8] == 0.5 and bins.confidence[8] == pytest.approx(0.85)
    assert len(bins.edges) == 11 and bins.edges[0] == 0 and bins.edges[-1] == 1
    # calibrated by construction: every item at 0.75, three in four right
    calibrated = [[0.75, 0.25]] * 4
    assert expected_calibration_error(calibrated, [0, 0, 0, 1]) == pytest.approx(0.0)


def test_the_report_measures_before_and_after_and_draws_the_reliability_diagram(tmp_path):
    logits, targets = tempered_sample(2.5, items=2000)
    report = calibration_report(logits, targets)
    assert report.items == 2000
    assert report.ece_after < report.ece_before / 3 and report.nll_after < report.nll_before
    assert report.ece_before == pytest.approx(
        expected_calibration_error(torch.softmax(logits, 1), targets), abs=1e-6
    )
    assert report.nll_after == pytest.approx(
        float(nn.functional.cross_entropy(logits.double() / report.temperature, targets)), rel=1e-9
    )
    assert sum(report.bins_after.counts) == 2000
    data = json.loads(json.dumps(report.to_dict()))
    assert data["temperature"] == report.temperature and len(data["bins_before"]["counts"]) == 15
    assert f"{report.ece_before:.4f} -> {report.ece_after:.4f}" in str(report)
    path = report.plot(tmp_path / "plots" / "reliability.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    figure = report.plot()
    assert len(figure.axes) == 2 and "ECE" in figure.axes[1].get_title()
    fixed = calibration_report(logits, targets, temperature=1.0)
    assert fixed.ece_after == fixed.ece_before and fixed.temperature == 1.0


@pytest.mark.parametrize(
    ("logits", "targets", "error", "message"),
    [
        (torch.randn(6), [0] * 6, ValueError, "must be 2-D"),
        (torch.randn(6, 1), [0] * 6, ValueError, "at least 2"),
        (torch.randn(6, 3), torch.zeros(6, 3, dtype=torch.long), ValueError, "must be 1-D"),
        (torch.randn(6, 3), [0.0] * 6, TypeError, "integer class indices"),
        (torch.randn(6, 3), [0] * 5, ValueError, "6 rows of scores but 5 targets"),
        (torch.randn(6, 3), [0, 1, 2, 3, 0, 1], ValueError, r"in 0\.\.2"),
        (torch.randn(6, 3), [0, -1, 2, 0, 0, 1], ValueError, r"in 0\.\.2"),
        (torch.randn(1, 3), [0], ValueError, "at least 2 items"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), [0, 1], ValueError, "NaN or infinite values in 1"),
        (torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), [0, 1], ValueError, "NaN or infinite"),
        ([["a", "b"], ["c", "d"]], [0, 1], TypeError, "nested lists of real numbers, got list"),
        ([[0.0, 1.0], [0.0]], [0, 1], TypeError, "real numbers"),
        (object(), [0, 1], TypeError, "must be a tensor"),
    ],
)
def test_fit_temperature_refuses_bad_input_naming_the_problem(logits, targets, error, message):
    with pytest.raises(error, match=message):
        fit_temperature(logits, targets)


def test_the_calibration_error_refuses_what_are_not_probabilities():
    with pytest.raises(ValueError, match="look like logits"):
        expected_calibration_error([[2.0, -1.0], [0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error([[0.2, 0.2], [0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="no items"):
        expected_calibration_error(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="bins must be a whole number"):
        expected_calibration_error([[0.5, 0.5]], [0], bins=0)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        calibration_report(torch.randn(4, 2), [0, 1, 0, 1], temperature=-1.0)


# -- the task's temperature -------------------------------------------------------------------------
def test_a_task_starts_at_temperature_one_and_its_probabilities_use_the_temperature():
    task = ToyClassifier()
    assert task.temperature.item() == 1.0 and task.temperature.ndim == 0
    assert "temperature" in task.state_dict()
    logits = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    assert torch.equal(task.probabilities(logits), torch.softmax(logits, dim=1))
    task.set_temperature(2.0)
    assert torch.allclose(task.probabilities(logits), torch.softmax(logits / 2, dim=1))
    assert task.export_metadata()["temperature"] == 2.0
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="positive finite number"):
            task.set_temperature(bad)
    multi = ToyClassifier(multi_label=True)
    with pytest.raises(ValueError, match="multi-label"):
        multi.set_temperature(2.0)
    assert torch.equal(multi.probabilities(logits), torch.sigmoid(logits))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The toy trained once, calibrated on its validation data and saved (the slow part)."""
    pl.seed_everything(0)
    task, data = ToyClassifier(learning_rate=0.1), toy_data(n=128)
    folder = tmp_path_factory.mktemp("calibrated")
    trainer = flash.Trainer(max_epochs=5, default_root_dir=folder, enable_checkpointing=False, **QUIET)
    trainer.fit(task, data)
    uncalibrated = {k: v.clone() for k, v in task.state_dict().items()}
    task.train()
    report = trainer.calibrate(task, data)
    trainer.save_checkpoint(folder / "model.ckpt")
    return SimpleNamespace(
        task=task,
        data=data,
        trainer=trainer,
        report=report,
        uncalibrated=uncalibrated,
        path=folder / "model.ckpt",
    )


def _uncalibrated(trained) -> ToyClassifier:
    task = ToyClassifier()
    task.load_state_dict(trained.uncalibrated)
    return task.eval()


def test_calibrate_sets_the_temperature_changes_probabilities_not_labels_and_lowers_validation_nll(trained):
    task, report = trained.task, trained.report
    assert isinstance(report, CalibrationReport)
    assert report.temperature != 1.0 and task.temperature.item() == pytest.approx(report.temperature)
    assert task.training  # the mode it was in
    assert report.items == len(trained.data.splits["val"])
    logits, targets = held_out_logits(task, trained.data)
    before = _uncalibrated(trained).probabilities(logits)
    after = task.probabilities(logits)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.equal(before.argmax(dim=1), after.argmax(dim=1))
    nll = nn.functional.nll_loss
    assert nll(after.log(), targets) < nll(before.log(), targets)
    assert report.nll_after == pytest.approx(float(nll(after.double().log(), targets)), rel=1e-4)
    assert report.nll_before == pytest.approx(float(nll(before.double().log(), targets)), rel=1e-4)


def test_calibrate_takes_out_of_fold_logits_instead_of_a_data_module(trained):
    task = _uncalibrated(trained)
    logits, targets = tempered_sample(2.5, items=3000, classes=2)
    report = trained.trainer.calibrate(task, logits=logits, targets=targets)
    assert abs(report.temperature - 2.5) / 2.5 < 0.1
    assert task.temperature.item() == pytest.approx(report.temperature)


def test_calibrate_takes_the_out_of_fold_logits_of_a_cross_validation(tmp_path):
    trainer = flash.Trainer(default_root_dir=tmp_path, max_epochs=2, **QUIET)
    data = toy_data(n=40)
    result = trainer.cross_validate(ToyClassifier(), data, folds=2, strategy="freeze", verbose=False)
    task = ToyClassifier()
    report = trainer.calibrate(task, logits=result.outputs[0], targets=result.targets)
    assert report.items == 60  # every pooled item, once, from the fold that held it out
    assert task.temperature.item() == pytest.approx(report.temperature)
    with pytest.raises(ValueError, match="must be 2-D"):
        trainer.calibrate(task, logits=result.outputs, targets=result.targets)


def test_the_temperature_survives_a_checkpoint(trained):
    loaded = ToyClassifier.load_from_checkpoint(trained.path, device="cpu")
    assert loaded.temperature.item() == pytest.approx(trained.report.temperature)
    x = torch.randn(6, 4)
    task = trained.task.eval()
    assert torch.allclose(loaded.eval().probabilities(loaded(x)), task.probabilities(task(x)))


def test_a_checkpoint_saved_before_tasks_had_a_temperature_loads_at_temperature_one(trained, tmp_path):
    checkpoint = torch.load(trained.path, map_location="cpu", weights_only=False)
    del checkpoint["state_dict"]["temperature"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    loaded = ToyClassifier.load_from_checkpoint(old, device="cpu")  # strict loading: no missing key
    assert loaded.temperature.item() == 1.0
    x = torch.randn(6, 4)
    reference = _uncalibrated(trained)
    assert torch.allclose(loaded.eval()(x), reference(x))
    # loading it into a calibrated task resets the temperature: the old weights are uncalibrated
    task = ToyClassifier()
    task.set_temperature(3.0)
    task.load_state_dict(checkpoint["state_dict"])
    assert task.temperature.item() == 1.0


def test_calibrate_refuses_what_it_cannot_calibrate(trained):
    trainer, data = trained.trainer, trained.data
    regressor = RegressionTask(nn.Linear(4, 8), nn.Linear(8, 1))
    with pytest.raises(TypeError, match="regressor"):
        trainer.calibrate(regressor, data)
    with pytest.raises(TypeError, match="ClassificationTask"):
        trainer.calibrate(nn.Linear(4, 2), data)
    with pytest.raises(ValueError, match="multi-label"):
        trainer.calibrate(ToyClassifier(multi_label=True), data)
    no_val = toy_data(n=32)
    no_val.splits["val"] = None
    task = _uncalibrated(trained)
    with pytest.raises(ValueError, match="val_split=.*over-confident"):
        trainer.calibrate(task, no_val)
    logits, targets = torch.randn(8, 2), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="not both"):
        trainer.calibrate(task, data, logits=logits, targets=targets)
    with pytest.raises(ValueError, match="together"):
        trainer.calibrate(task, logits=logits)
    with pytest.raises(ValueError, match="needs held-out data"):
        trainer.calibrate(task)
    with pytest.raises(ValueError, match="3 columns but the model has 2 classes"):
        trainer.calibrate(task, logits=torch.randn(8, 3), targets=targets)
    assert task.temperature.item() == 1.0  # nothing was set by a refused call


# -- the exported graph -----------------------------------------------------------------------------
def test_the_onnx_export_gives_the_calibrated_probabilities_predict_gives(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from flash.core.deploy.export import export_onnx, read_onnx_metadata

    task = ServableToy()
    logits, targets = tempered_sample(3.0, items=2000, classes=2, seed=1)
    report = flash.Trainer(**QUIET).calibrate(task, logits=logits, targets=targets)
    assert report.temperature > 2
    rows = torch.randn(9, 4)
    predicted = task.predict(rows, output="probabilities")
    path = export_onnx(task, tmp_path / "toy.onnx", exporter="torchscript")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"input": rows.numpy()})
    expected = np.array([[row["neg"], row["pos"]] for row in predicted])
    np.testing.assert_allclose(probabilities, expected, atol=1e-4, rtol=0)
    uncalibrated = torch.softmax(task(rows), dim=1).detach().numpy()
    assert np.abs(probabilities - uncalibrated).max() > 1e-2  # the temperature is in the graph
    assert task.predict(rows, output="labels") == [
        "pos" if p > 0.5 else "neg" for p in uncalibrated[:, 1].tolist()
    ]
    assert read_onnx_metadata(path)["temperature"] == pytest.approx(report.temperature)


# -- the command line -------------------------------------------------------------------------------
@pytest.fixture
def toy_domain(monkeypatch):
    sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
    from toy_cli import TOY

    from flash.cli.domains import DOMAINS

    monkeypatch.setitem(DOMAINS, "toy", TOY)
    yield
    flash.core.utils.progress._QUIET = None


def test_flash_finetune_calibrate_saves_the_temperature_and_draws_the_diagram(toy_domain, tmp_path, capsys):
    from flash import cli

    argv = ["finetune", "toy", "--rows", "64", "--epochs", "2", "--lr", "0.1", "--quiet", "--calibrate"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    calibration = results["calibration"]
    assert f"ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}" in printed
    assert calibration["items"] == 32 and math.isfinite(calibration["temperature"])
    assert (tmp_path / "run" / "plots" / "reliability.png").read_bytes().startswith(PNG_MAGIC)
    state = torch.load(tmp_path / "run" / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state["temperature"].item() == pytest.approx(calibration["temperature"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["calibrate"] is True


def test_flash_finetune_refuses_calibrate_without_validation_data_before_training(
    toy_domain, tmp_path, capsys
):
    from flash import cli

    argv = ["finetune", "toy", "--rows", "32", "--epochs", "1", "--no-val", "--calibrate", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 1
    assert "--calibrate fits the temperature on validation data" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- conformal prediction sets ----------------------------------------------------------------------
def _two_class(scores: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[1 - s, s]`` with true class 0: the scores are ``s`` exactly."""
    scores = torch.tensor(scores, dtype=torch.float64)
    return torch.stack([1 - scores, scores], dim=1), torch.zeros(len(scores), dtype=torch.long)


def test_the_conformal_threshold_of_a_hand_worked_case():
    probabilities, targets = _two_class([0.9, 0.0, 0.3, 0.5, 0.1, 0.7, 0.2, 0.6, 0.4, 0.8])
    assert conformal_scores(probabilities, targets).tolist() == pytest.approx(
        [0.9, 0.0, 0.3, 0.5, 0.1, 0.7, 0.2, 0.6, 0.4, 0.8]
    )
    # n = 10: coverage 0.7 takes the ceil(11 * 0.7) = 8th smallest score, 0.9 the 10th, 0.5 the 6th
    assert fit_conformal_threshold(probabilities, targets, 0.7) == pytest.approx(0.7)
    assert fit_conformal_threshold(probabilities, targets, 0.9) == pytest.approx(0.9)
    assert fit_conformal_threshold(probabilities, targets, 0.5) == pytest.approx(0.5)
    # ceil(11 * 0.95) = 11 > 10: no finite threshold; 19 items are the fewest that give one
    assert [min_items(c) for c in (0.5, 0.8, 0.9, 0.95, 0.99)] == [1, 4, 9, 19, 99]
    with pytest.raises(ValueError, match="needs at least 19 held-out items.*got 10"):
        fit_conformal_threshold(probabilities, targets, 0.95)


def test_prediction_sets_hold_the_classes_above_one_minus_the_threshold_by_probability_and_are_never_empty():
    probabilities = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.25, 0.35, 0.4], [0.3, 0.3, 0.4]])
    assert prediction_sets(probabilities, 0.7) == [[0, 1], [1], [2, 1], [2, 0, 1]]
    # at threshold 0.1 no class reaches 0.9: each set is the top class alone
    assert prediction_sets(probabilities, 0.1) == [[0], [1], [2], [2]]
    assert prediction_sets(probabilities, 1.0) == [[0, 1, 2], [1, 0, 2], [2, 1, 0], [2, 0, 1]]
    generator = torch.Generator().manual_seed(0)
    random = torch.softmax(3 * torch.randn(200, 6, generator=generator), dim=1)
    for threshold in (0.0, 0.05, 0.5):
        sets = prediction_sets(random, threshold)
        assert all(sets) and [row[0] for row in sets] == random.argmax(dim=1).tolist()


def test_the_reported_coverage_of_well_specified_probabilities_is_the_coverage_asked():
    # classes drawn from softmax(logits): those probabilities are calibrated by construction
    logits, targets = tempered_sample(1.0, items=4000, classes=5)
    probabilities = torch.softmax(logits, dim=1)
    state = torch.get_rng_state()
    report = conformal_report(probabilities, targets, 0.9)
    assert torch.equal(torch.get_rng_state(), state)  # its splits use their own generator
    assert report.items == 4000 and report.splits == 20 and report.coverage == 0.9
    assert abs(report.empirical_coverage - 0.9) <= 0.02
    assert 0 < report.empirical_coverage_sd < 0.02
    assert report.threshold == pytest.approx(fit_conformal_threshold(probabilities, targets, 0.9))
    # the threshold holds on new items from the same distribution too
    new_logits, new_targets = tempered_sample(1.0, items=4000, classes=5, seed=1)
    sets = prediction_sets(torch.softmax(new_logits, dim=1), report.threshold)
    covered = np.mean([t in row for t, row in zip(new_targets.tolist(), sets)])
    assert abs(covered - 0.9) <= 0.02
    assert np.mean([len(row) for row in sets]) == pytest.approx(report.mean_set_size, abs=0.1)
    assert 1 < report.mean_set_size < 5
    assert len(report.class_coverage) == 5 and all(0.5 < c <= 1 for c in report.class_coverage)
    assert report.class_items == torch.bincount(targets, minlength=5).tolist()
    assert report.to_dict()["empirical_coverage"] == report.empirical_coverage


def test_the_reported_coverage_is_measured_on_the_half_the_threshold_was_not_fitted_on():
    logits, targets = tempered_sample(1.0, items=101, classes=3, seed=2)
    probabilities = torch.softmax(logits, dim=1)
    report = conformal_report(probabilities, targets, 0.8, splits=1, seed=7)
    order = torch.randperm(101, generator=torch.Generator().manual_seed(7))
    fit, measure = order[:50], order[50:]
    threshold = fit_conformal_threshold(probabilities[fit], targets[fit], 0.8)
    sets = prediction_sets(probabilities[measure], threshold)
    hits = [t in row for t, row in zip(targets[measure].tolist(), sets)]
    assert report.empirical_coverage == pytest.approx(np.mean(hits))
    assert report.mean_set_size == pytest.approx(np.mean([len(row) for row in sets]))
    assert report.empirical_coverage_sd == 0.0  # one split
    # a class with no items has no coverage to report
    only_two = conformal_report(torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]] * 10), [0, 1] * 10, 0.8)
    assert only_two.class_coverage[2] is None and only_two.class_items == [10, 10, 0]
    assert (
        conformal_report(probabilities, targets, 0.8).to_dict()
        == conformal_report(probabilities, targets, 0.8).to_dict()
    )  # seeded


@pytest.mark.parametrize("coverage", [0, 1, 1.5, -0.1, float("nan"), True, "0.9"])
def test_conformal_refuses_a_coverage_outside_zero_one(coverage):
    probabilities, targets = _two_class([0.1] * 40)
    refused = pytest.raises(ValueError, match=r"coverage must be a (number|fraction) in \(0, 1\)")
    with refused:
        fit_conformal_threshold(probabilities, targets, coverage)
    with refused:
        conformal_report(probabilities, targets, coverage)
    task = ServableToy()
    with refused:  # before the model runs: nothing is set
        flash.Trainer(**QUIET).calibrate(task, logits=torch.randn(40, 2), targets=targets, coverage=coverage)
    assert task.temperature.item() == 1.0 and not task.has_conformal_sets


def test_conformal_refuses_a_percentage_and_too_few_items_saying_how_many():
    probabilities, targets = _two_class([0.1] * 17)
    with pytest.raises(ValueError, match="pass 0.9"):
        fit_conformal_threshold(probabilities, targets, 90)
    with pytest.raises(ValueError, match=r"at least 18 held-out items \(half of them fit"):
        conformal_report(probabilities, targets, 0.9)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        prediction_sets(probabilities, 1.5)


def test_predict_gives_conformal_sets_after_calibrate_with_a_coverage():
    task = ServableToy()
    rows = torch.randn(12, 4, generator=torch.Generator().manual_seed(3))
    assert not task.has_conformal_sets
    with pytest.raises(
        ValueError, match=r"needs a conformal threshold.*calibrate\(task, datamodule, coverage=0.9\)"
    ):
        task.predict(rows, output="set")
    with pytest.raises(ValueError, match="needs a conformal threshold"):  # Trainer.predict's path
        apply_output(task, task(rows), "set")
    assert task.export_metadata()["conformal_threshold"] is None
    logits, targets = tempered_sample(2.0, items=2000, classes=2, seed=4)
    report = flash.Trainer(**QUIET).calibrate(task, logits=logits, targets=targets, coverage=0.9)
    sets_report = report.conformal
    assert sets_report is not None and task.has_conformal_sets
    assert task.conformal_threshold.item() == pytest.approx(sets_report.threshold, abs=1e-6)
    assert task.conformal_coverage.item() == pytest.approx(0.9)
    # the threshold is fitted on the calibrated probabilities: softmax(logits / T)
    calibrated = torch.softmax(logits.double() / report.temperature, dim=1)
    assert sets_report.threshold == pytest.approx(fit_conformal_threshold(calibrated, targets, 0.9))
    assert abs(sets_report.empirical_coverage - 0.9) <= 0.03
    assert "conformal sets at coverage 0.9" in str(report)
    assert report.to_dict()["conformal"]["mean_set_size"] == sets_report.mean_set_size
    sets = task.predict(rows, output="set")
    probabilities = task.predict(rows, output="probabilities")
    labels = task.predict(rows, output="labels")
    for row, probs, label in zip(sets, probabilities, labels):
        expected_set = sorted(
            (n for n, p in probs.items() if p >= 1 - sets_report.threshold), key=lambda n: -probs[n]
        )
        assert row == (expected_set or [label]) and row[0] == label
    assert any(len(row) == 2 for row in sets) and any(len(row) == 1 for row in sets)
    assert task.predict(rows[0], output="set") == sets[0]  # one item, one set
    assert apply_output(task, task(rows), "set") == sets
    metadata = task.export_metadata()
    assert metadata["conformal_threshold"] == pytest.approx(sets_report.threshold, abs=1e-6)
    assert metadata["conformal_coverage"] == pytest.approx(0.9)
    json.dumps(metadata)
    # a new temperature makes the threshold stale: it is removed
    task.set_temperature(report.temperature * 2)
    assert not task.has_conformal_sets
    with pytest.raises(ValueError, match="needs a conformal threshold"):
        task.predict(rows, output="set")


def test_calibrate_without_a_coverage_fits_no_sets_and_a_refused_coverage_sets_nothing(trained):
    assert trained.report.conformal is None and "conformal" not in trained.report.to_dict()
    assert not trained.task.has_conformal_sets
    task = _uncalibrated(trained)
    logits, targets = torch.randn(10, 2), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match="needs at least 18 held-out items"):
        trained.trainer.calibrate(task, logits=logits, targets=targets, coverage=0.9)
    assert task.temperature.item() == 1.0 and not task.has_conformal_sets


def test_conformal_sets_refuse_multi_label_and_regression_tasks():
    multi = ToyClassifier(multi_label=True)
    with pytest.raises(ValueError, match="single-label classifiers; this task is multi-label"):
        multi.check_output("set")
    with pytest.raises(ValueError, match="multi-label"):
        multi.set_conformal_threshold(0.5, 0.9)
    with pytest.raises(ValueError, match="multi-label"):
        flash.Trainer(**QUIET).calibrate(multi, logits=torch.randn(40, 2), targets=[0, 1] * 20, coverage=0.9)
    regressor = RegressionTask(nn.Linear(4, 8), nn.Linear(8, 1))
    with pytest.raises(ValueError, match="Unknown output 'set'"):
        regressor.check_output("set")


def test_conformal_sets_survive_a_checkpoint_and_an_older_checkpoint_loads_without_them(trained, tmp_path):
    task = ToyClassifier.load_from_checkpoint(trained.path, device="cpu")
    assert not task.has_conformal_sets  # calibrated without a coverage
    report = trained.trainer.calibrate(task, trained.data, coverage=0.8)
    assert report.conformal.items == len(trained.data.splits["val"])
    checkpoint = torch.load(trained.path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = task.state_dict()
    torch.save(checkpoint, tmp_path / "sets.ckpt")
    loaded = ToyClassifier.load_from_checkpoint(tmp_path / "sets.ckpt", device="cpu")
    assert loaded.has_conformal_sets
    assert loaded.conformal_threshold.item() == pytest.approx(report.conformal.threshold, abs=1e-6)
    assert loaded.conformal_coverage.item() == pytest.approx(0.8)
    assert loaded.temperature.item() == pytest.approx(report.temperature)
    # a checkpoint from before conformal sets: strict loading, no threshold
    for name in ("conformal_threshold", "conformal_coverage"):
        del checkpoint["state_dict"][name]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = ToyClassifier.load_from_checkpoint(tmp_path / "old.ckpt", device="cpu")
    assert not old.has_conformal_sets and old.conformal_coverage.item() == 0
    assert old.temperature.item() == pytest.approx(report.temperature)
    loaded.load_state_dict(checkpoint["state_dict"])  # into a task with sets: they are removed
    assert not loaded.has_conformal_sets


def test_serving_and_flash_predict_give_sets_only_once_fitted():
    pytest.importorskip("fastapi")
    from flash.cli.domains import output_choices
    from flash.cli.predict import prediction_rows
    from flash.core.deploy.serve import build_app

    task = ServableToy()
    with pytest.raises(ValueError, match="needs a conformal threshold"):
        build_app(task, output="set")
    logits, targets = tempered_sample(2.0, items=400, classes=2, seed=5)
    flash.Trainer(**QUIET).calibrate(task, logits=logits, targets=targets, coverage=0.9)
    build_app(task, output="set")
    rows = [[1.0, 0.5, 0.0, 0.0], [0.05, -0.05, 0.0, 0.0]]
    served = task.serve_predictions([torch.tensor(r) for r in rows], 8, ("set",))
    assert [row["set"] for row in served] == task.predict(torch.tensor(rows), output="set")
    assert "set" in output_choices()
    table_rows = prediction_rows(task, ["a", "b"], torch.tensor(rows), "set", 8, "table")
    assert [row["set"] for row in table_rows] == [row["set"] for row in served]
    assert table_rows[0]["prediction"] == "pos"


def test_flash_finetune_coverage_fits_sets_and_reports_their_coverage(toy_domain, tmp_path, capsys):
    from flash import cli

    argv = ["finetune", "toy", "--rows", "64", "--epochs", "2", "--lr", "0.1", "--quiet"]
    assert cli.main([*argv, "--calibrate", "--coverage", "0.9", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    sets = json.loads((tmp_path / "run" / "results.json").read_text())["calibration"]["conformal"]
    assert sets["coverage"] == 0.9 and sets["items"] == 32
    assert 0 < sets["empirical_coverage"] <= 1 and 1 <= sets["mean_set_size"] <= 2
    assert f"prediction sets: coverage asked 0.9, empirical {sets['empirical_coverage']:.3f}" in printed
    state = torch.load(tmp_path / "run" / "model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state["conformal_threshold"].item() == pytest.approx(sets["threshold"], abs=1e-6)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["coverage"] == 0.9


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--coverage", "0.9"],
            "--coverage fits conformal prediction sets on the calibrated probabilities: pass it with",
        ),
        (["--calibrate", "--coverage", "0.99"], "--coverage 0.99 needs at least 198 validation items"),
    ],
)
def test_flash_finetune_refuses_a_coverage_it_cannot_fit_before_training(
    toy_domain, tmp_path, capsys, extra, message
):
    from flash import cli

    argv = ["finetune", "toy", "--rows", "64", "--epochs", "1", "--quiet", *extra]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
