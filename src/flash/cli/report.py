"""``flash finetune ... --report``: one self-contained HTML page about a finished run.

The page holds the data summary (items and classes per split, and the domain's own statistics
from :meth:`~flash.core.data.datamodule.DataModule.describe`), the ``--strategy auto`` leaderboard,
the final metrics and the metrics per epoch, every plot the run wrote (embedded, so the file can
be mailed or archived alone), the calibration, and what reproduces the run: the command, the seed
and the versions of the libraries. It needs no other file and no script.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import platform
import shlex
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from flash.cli.finetune import metric_columns

LIBRARIES = ("torch", "torchvision", "lightning", "transformers", "timm")
"""The packages whose versions the report records besides flash's own (distribution names)."""

STAGES = ("train", "val", "test")

CAPTIONS = {
    "curves": "Training curves: loss and metrics per epoch, training and validation.",
    "confusion_matrix": "Confusion matrix on the validation data (rows: true class, columns: predicted).",
    "worst_predictions": "Worst predictions: the validation items the model gets most wrong, "
    "with their true and predicted class.",
    "reliability": "Reliability diagram: accuracy against confidence, before and after calibration.",
    "lr_finder": "Learning-rate finder: the loss against the learning rate, and the suggested rate.",
    "train_batch": "A training batch as the model sees it (after augmentation).",
}
"""Captions of the plots ``flash finetune`` writes, by file name; others are captioned by their name."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #e6f4e6; font-weight: bold; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
code, pre { background: #f6f6f6; padding: 0.1em 0.3em; } pre { padding: 0.6em; white-space: pre-wrap; }
"""


def write_report(
    path: str | Path,
    run: Mapping[str, Any],
    *,
    results: Mapping[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    domain: str | None = None,
) -> Path:
    """Write the HTML report of a finished ``flash finetune`` run to ``path`` and return the path.

    Args:
        path: the file to write (``.html``); its folder must exist.
        run: the finished run as ``flash finetune`` holds it: ``options``, ``task``, ``data``,
            ``history``, ``files`` (the plots among them are embedded), ``wall_time_s`` and, where
            the run had them, ``auto`` (the leaderboard) and ``calibration``.
        results: the run's ``results.json`` content (final metrics, the epoch kept).
        argv: the command's arguments after ``flash``, quoted as the command that reproduces the run.
        domain: the run's domain (``image``, ...), shown in the header.
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"The report is an HTML file; name it *.html, not {path.name!r}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"No folder {path.parent} to write the report into; create it first.")
    missing = [key for key in ("options", "task", "data") if key not in run]
    if missing:
        raise ValueError(
            f"run lacks {', '.join(missing)}: pass the run dict of a finished flash finetune run."
        )
    results = dict(results or {})
    sections = [
        _header(run, domain),
        _data_section(run["data"]),
        _auto_section(run.get("auto")),
        _metrics_section(run.get("history") or [], results),
        _calibration_section(results.get("calibration")),
        _plots_section(run.get("files") or {}, path.parent),
        _reproduce_section(run, argv, path.parent),
    ]
    title = f"flash finetune: {type(run['task']).__name__} on {run['options'].get('backbone')}"
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body>\n</html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path


# -- sections -------------------------------------------------------------------------------------
def _header(run: Mapping[str, Any], domain: str | None) -> str:
    options = run["options"]
    strategy = str(options.get("strategy"))
    auto = run.get("auto")
    if auto:
        strategy = f"auto: chose {auto['chosen']} by cross-validation ({options.get('folds')} folds)"
    rows = [
        ("task", type(run["task"]).__name__ + (f" ({domain})" if domain else "")),
        ("backbone", options.get("backbone")),
        ("strategy", strategy),
        ("learning rate", _number(options.get("lr"))),
        ("epochs", options.get("epochs")),
        ("wall time", f"{run['wall_time_s']:.1f} s" if run.get("wall_time_s") is not None else "unknown"),
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    return "<h1>" + _e(f"flash finetune: {type(run['task']).__name__}") + "</h1>\n" + _pairs(rows)


def _data_section(data: Any) -> str:
    labels = list(data.labels) if getattr(data, "labels", None) is not None else None
    splits = getattr(data, "splits", {}) or {}
    counts = {stage: _class_counts(splits.get(stage), labels, data) for stage in STAGES}
    stages = [stage for stage in STAGES if splits.get(stage) is not None]
    parts = ["<h2>Data</h2>"]
    header = ["", *stages]
    rows = [["items", *(len(splits[stage]) for stage in stages)]]
    if labels is not None and any(counts[stage] is not None for stage in stages):
        for i, label in enumerate(labels):
            rows.append([f"class {label}", *("" if counts[s] is None else int(counts[s][i]) for s in stages)])
    parts.append(_table(header, rows, first_is_header=True))
    if labels is not None and getattr(data, "multi_label", False):
        parts.append("<p>Multi-label: an item counts once for each of its classes.</p>")
    describe = getattr(data, "describe", None)
    statistics = describe() if callable(describe) else {}
    if statistics:
        parts.append(f"<h3>{_e(type(data).__name__)}</h3>")
        parts.append(_pairs(list(statistics.items())))
    return "\n".join(parts)


def _class_counts(split: Any, labels: list[Any] | None, data: Any) -> np.ndarray | None:
    """Items per class of ``split``, or ``None`` where its targets are not class indices."""
    if split is None or labels is None or getattr(split, "targets", None) is None:
        return None
    targets = np.asarray(split.targets)
    if targets.ndim == 2 and targets.shape[1] == len(labels) and getattr(data, "multi_label", False):
        return targets.astype(np.float64).sum(axis=0)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        return None
    if targets.size and (targets.min() < 0 or targets.max() >= len(labels)):
        return None
    return np.bincount(targets, minlength=len(labels))


def _auto_section(auto: Mapping[str, Any] | None) -> str:
    if not auto or not auto.get("leaderboard"):
        return ""
    monitor = auto.get("monitor", "metric")
    header = [
        "candidate",
        f"{monitor} mean",
        "sd",
        "standard error",
        "vs best (paired mean)",
        "vs best (paired sd)",
        "seconds",
        "chosen",
    ]
    rows, chosen = [], []
    for row in auto["leaderboard"]:
        rows.append(
            [
                row["candidate"],
                _number(row["mean"]),
                _number(row["std"]),
                _number(row["standard_error"]),
                _signed(row["difference"]),
                _number(row["difference_std"]),
                f"{row['seconds']:.1f}",
                "chosen" if row["chosen"] else "",
            ]
        )
        chosen.append(bool(row["chosen"]))
    parts = [
        "<h2>Strategy search (--strategy auto)</h2>",
        f"<p>Each candidate was cross-validated on the training data; {_e(monitor)} per candidate "
        f"(mean and sd over the folds). The chosen candidate, <b>{_e(auto.get('chosen'))}</b>, "
        "was then trained on all of it.</p>",
        _table(header, rows, marked=chosen),
    ]
    if auto.get("skipped"):
        parts.append(f"<p>Not run (time limit): {_e(', '.join(auto['skipped']))}</p>")
    return "\n".join(parts)


def _metrics_section(history: list[dict[str, float]], results: Mapping[str, Any]) -> str:
    parts = ["<h2>Metrics</h2>"]
    best = results.get("best")
    if best:
        parts.append(
            f"<p>model.ckpt holds the best epoch, {best['epoch']}, by {_e(best.get('monitor'))}.</p>"
        )
    elif history:
        parts.append(f"<p>model.ckpt holds the last epoch, {len(history)}.</p>")
    final = results.get("final")
    if final:
        parts.append("<h3>Last epoch</h3>")
        parts.append(_metric_pairs(final))
    if best and best.get("metrics"):
        parts.append("<h3>Epoch kept</h3>")
        parts.append(_metric_pairs(best["metrics"]))
    if history:
        columns = metric_columns(history)
        rows = [[int(row["epoch"]) + 1, *(_number(row.get(c)) for c in columns[1:])] for row in history]
        parts.append("<h3>Per epoch</h3>")
        parts.append(_table(columns, rows))
    return "\n".join(parts) if len(parts) > 1 else ""


def _metric_pairs(metrics: Mapping[str, Any]) -> str:
    names = metric_columns([{"epoch": 0, **metrics}])[1:]
    return _pairs([(name, _number(metrics[name])) for name in names])


def _calibration_section(calibration: Mapping[str, Any] | None) -> str:
    if not calibration:
        return ""
    rows = [
        ("temperature", _number(calibration.get("temperature"))),
        ("validation items", calibration.get("items")),
        (
            "ECE before / after",
            f"{_number(calibration.get('ece_before'))} / {_number(calibration.get('ece_after'))}",
        ),
        (
            "NLL before / after",
            f"{_number(calibration.get('nll_before'))} / {_number(calibration.get('nll_after'))}",
        ),
    ]
    sets = calibration.get("conformal")
    if sets:
        rows += [
            ("prediction sets: coverage asked", _number(sets.get("coverage"))),
            (
                f"empirical coverage (held-out halves, {sets.get('splits')} splits)",
                f"{_number(sets.get('empirical_coverage'))} ± {_number(sets.get('empirical_coverage_sd'))}",
            ),
            ("mean set size", _number(sets.get("mean_set_size"))),
        ]
    return "<h2>Calibration</h2>\n" + _pairs(rows)


def _plots_section(files: Mapping[str, Any], folder: Path) -> str:
    figures = []
    for name, file in files.items():
        file = Path(file)
        if file.suffix.lower() != ".png" or not file.is_file():
            continue
        caption = CAPTIONS.get(file.stem, name[:1].upper() + name[1:] + ".")
        encoded = base64.b64encode(file.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{_e(name)}">'
            f"<figcaption>{_e(caption)} <code>{_e(_relative(file, folder))}</code></figcaption></figure>"
        )
    return "<h2>Plots</h2>\n" + "\n".join(figures) if figures else ""


def _reproduce_section(run: Mapping[str, Any], argv: Sequence[str] | None, folder: Path) -> str:
    options = run["options"]
    parts = ["<h2>Reproduce</h2>"]
    if argv is not None:
        parts.append("<p>The command that ran:</p>")
        parts.append(f"<pre>{_e(shlex.join(['flash', *argv]))}</pre>")
    config = Path(run["files"]["config"]) if "config" in (run.get("files") or {}) else None
    if config is not None:
        replay = shlex.join(["flash", "finetune", "--config", str(config), "--out", "NEW_DIR"])
        parts.append(
            "<p>Every option, with the defaults the task chose filled in, is in "
            f"<code>{_e(str(config))}</code>; replay the run with:</p><pre>{_e(replay)}</pre>"
        )
    import flash

    versions = [("flash", flash.__version__), *((name, _version(name)) for name in LIBRARIES)]
    rows = [
        ("seed", options.get("seed")),
        *versions,
        ("python", platform.python_version()),
        ("platform", platform.platform()),
    ]
    parts.append(_pairs(rows))
    return "\n".join(parts)


# -- helpers --------------------------------------------------------------------------------------
def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _relative(file: Path, folder: Path) -> str:
    try:
        return str(file.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(file)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    return str(value) if not math.isfinite(value) else f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{float(value):+.4f}"


def _cell(value: Any) -> str:
    if isinstance(value, Mapping):
        return _pairs(list(value.items()))
    if isinstance(value, list | tuple):
        return _e(", ".join(str(v) for v in value)) if value else "none"
    if isinstance(value, float | np.floating):
        return _e(_number(value))
    return _e("" if value is None else value)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | np.integer | np.floating):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return bool(str(value))


def _pairs(rows: Sequence[tuple[Any, Any]]) -> str:
    """A two-column table: a name, then its value (a mapping becomes a nested table)."""
    body = "".join(f"<tr><th>{_e(name)}</th><td>{_cell(value)}</td></tr>" for name, value in rows)
    return f"<table>{body}</table>"


def _table(
    header: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    *,
    marked: Sequence[bool] | None = None,
    first_is_header: bool = False,
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            if first_is_header and j == 0:
                cells.append(f"<th>{_e(value)}</th>")
            else:
                number = ' class="number"' if _is_number(value) else ""
                cells.append(f"<td{number}>{_cell(value)}</td>")
        mark = ' class="chosen"' if marked is not None and marked[i] else ""
        body.append(f"<tr{mark}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


__all__ = ["write_report"]
