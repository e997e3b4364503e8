"""``flash predict CHECKPOINT INPUT...``: predictions of a saved task as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash.cli.domains import positive_int
from flash.cli.format import FORMATS, format_rows

OUTPUTS = ("labels", "probabilities")


def add_predict_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict with a saved model",
        description=(
            "Predict with a checkpoint written by `flash finetune` (or any flash task). Inputs: image "
            "files or folders (image tasks); texts, .txt files (one text a line) or tables (text tasks); "
            "CSV or Parquet tables (tabular tasks)."
        ),
        formatter_class=formatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the model file (model.ckpt of a run)")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="what to predict on")
    parser.add_argument(
        "--output",
        choices=OUTPUTS,
        default="labels",
        help="class labels or the probability of every class (regression always gives values)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="how to print the predictions")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="inputs per forward pass"
    )
    parser.add_argument(
        "--input-field",
        metavar="COLUMN",
        help="the text column of table inputs (text tasks; default: the only text column)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write the predictions to FILE instead of printing them"
    )
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_predict(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it, or another --out.")
    from flash.cli.domains import domain_of_task
    from flash.core.deploy.checkpoint import load_task

    task = load_task(args.checkpoint)
    spec = domain_of_task(task)
    if spec.predict_inputs is None:
        raise ValueError(f"The flash command cannot read inputs for {spec.name} tasks.")
    names, inputs = spec.predict_inputs(task, args.inputs, {"input_field": args.input_field})
    if not names:
        raise ValueError("No inputs to predict on.")
    rows = prediction_rows(task, names, inputs, args.output, args.batch_size, args.format)
    text = format_rows(rows, args.format)
    if out is None:
        print(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        print(f"{len(rows)} predictions written to {out}", file=sys.stderr)
    return 0


def prediction_rows(
    task: Any, names: Sequence[str], inputs: Any, output: str, batch_size: int, fmt: str
) -> list[dict[str, Any]]:
    """One row per input: ``input`` and ``prediction`` (and per-class probabilities)."""
    if "labels" not in task.outputs:  # regression
        values = _as_list(task.predict(inputs, output=task.outputs[0], batch_size=batch_size))
        return [{"input": name, "prediction": value} for name, value in zip(names, values)]
    if output == "labels":
        labels = _as_list(task.predict(inputs, output="labels", batch_size=batch_size))
        return [{"input": name, "prediction": label} for name, label in zip(names, labels)]
    probabilities = _as_list(task.predict(inputs, output="probabilities", batch_size=batch_size))
    rows = []
    for name, probs in zip(names, probabilities):
        row: dict[str, Any] = {"input": name}
        if not getattr(task, "multi_label", False):
            row["prediction"] = max(probs, key=probs.get)
        if fmt == "json":
            row["probabilities"] = {str(k): float(v) for k, v in probs.items()}
        else:
            row.update({str(k): float(v) for k, v in probs.items()})
        rows.append(row)
    return rows


def _as_list(result: Any) -> list[Any]:
    return result if isinstance(result, list) else [result]
