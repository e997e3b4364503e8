"""``flash predict CHECKPOINT INPUT...``: predictions of a saved task as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flash.cli.domains import DOMAINS, Option, output_choices, positive_int
from flash.cli.finetune import add_option
from flash.cli.format import FORMATS, format_rows

ACCELERATORS = ("auto", "cpu", "gpu")

ACCELERATOR = Option(
    "--accelerator",
    "where the model runs: auto (a GPU when there is one), cpu or gpu",
    default="auto",
    choices=ACCELERATORS,
)
"""``--accelerator`` of the commands that run a saved model (``flash predict``, ``flash serve``)."""


def add_predict_parser(add_command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """``flash predict``'s parser, made by ``add_command(name, help, description)``."""
    inputs = "; ".join(
        f"{spec.predict_help} ({spec.name} tasks)" for spec in DOMAINS.values() if spec.predict_help
    )
    parser = add_command(
        "predict",
        "predict with a saved model",
        f"Predict with a checkpoint written by `flash finetune` (or any flash task). Inputs: {inputs}.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the model file (model.ckpt of a run)")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="what to predict on")
    parser.add_argument(
        "--output",
        choices=output_choices(),
        help="what to predict (default: the task's first output: labels for a classifier, values for a "
        "regressor); a kind the task lacks gives its default",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="how to print the predictions")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="inputs per forward pass"
    )
    for spec in DOMAINS.values():
        for option in spec.predict_options:
            if option.dest not in {action.dest for action in parser._actions}:
                parser.add_argument(
                    option.flag, *option.aliases, type=option.type, metavar=option.metavar, help=option.help
                )
    add_option(parser, ACCELERATOR)
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

    task = load_task(args.checkpoint, device=args.accelerator)
    spec = domain_of_task(task)
    if spec.predict_inputs is None:
        raise ValueError(f"The flash command cannot read inputs for {spec.name} tasks.")
    options = {option.dest: getattr(args, option.dest, None) for option in spec.predict_options}
    names, inputs = spec.predict_inputs(task, args.inputs, options)
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
    task: Any, names: Sequence[str], inputs: Any, output: str | None, batch_size: int, fmt: str
) -> list[dict[str, Any]]:
    """One row per input: ``input``, ``prediction`` (the task's default output) and, when another
    ``output`` is asked for, that too: a dict result (e.g. class probabilities) spread over one
    column per key, or kept whole in JSON."""
    default = task.outputs[0]
    kinds = (default,) if output in (None, default) or output not in task.outputs else (default, output)
    results, _ = task.predict_outputs(inputs, kinds, batch_size)
    rows = []
    for name, result in zip(names, results):
        row: dict[str, Any] = {"input": name, "prediction": task.output_to_json(result[default], default)}
        for kind in kinds[1:]:
            value = task.output_to_json(result[kind], kind)
            if isinstance(value, dict) and fmt != "json":
                row.update(value)
            else:
                row[task.output_fields.get(kind, kind)] = value
        rows.append(row)
    return rows
