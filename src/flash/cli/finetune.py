"""``flash finetune``: train a task on files, write a run folder, print a summary.

A run folder holds the checkpoint (``model.ckpt``), the run's configuration (``config.json``,
which ``flash finetune --config`` replays), the metrics per epoch (``metrics.csv``), a summary
of the results (``results.json``) and the plots (``plots/*.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from flash.cli.domains import DOMAINS, DomainSpec, Option, positive_int
from flash.cli.format import table

STRATEGY_NAMES = ("no_freeze", "freeze", "freeze_unfreeze", "unfreeze_milestones")
OPTIMIZER_NAMES = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULER_NAMES = ("constant", "cosine", "onecycle", "linear_warmup", "reduce_on_plateau")
DEFAULT_EPOCHS = 10
DEFAULT_SEED = 42
DEFAULT_LR_FIND_STEPS = 100
TRAIN_BN_CHOICES = ("auto", "true", "false")

RUN_FILES = ("model.ckpt", "config.json", "results.json", "metrics.csv", "plots")
"""What a run writes into its folder; an existing one is never replaced without ``--force``."""


# -- option parsing -------------------------------------------------------------------------------
def parse_strategy(text: str) -> str:
    """Check a ``--strategy`` value; the text is kept (it is what the config file records).

    Forms: ``no_freeze``, ``freeze``, ``freeze_unfreeze[:EPOCH]``, ``unfreeze_milestones[:M1,M2,N]``.
    """
    strategy_value(text)
    return text


def strategy_value(text: str) -> Any:
    """A ``--strategy`` text as :func:`flash.core.training.finetuning.resolve_strategy` takes it."""
    name, _, argument = text.partition(":")
    forms = "no_freeze, freeze, freeze_unfreeze[:EPOCH], unfreeze_milestones[:M1,M2,N]"
    if name not in STRATEGY_NAMES:
        raise argparse.ArgumentTypeError(f"unknown strategy {name!r}; choose one of {forms}.")
    if not argument:
        if ":" in text:
            raise argparse.ArgumentTypeError(f"{text!r}: nothing after ':'; the forms are {forms}.")
        return name
    try:
        numbers = [int(part) for part in argument.split(",")]
    except ValueError:
        numbers = []
    if name == "freeze_unfreeze" and len(numbers) == 1 and numbers[0] >= 0:
        return (name, numbers[0])
    if name == "unfreeze_milestones" and len(numbers) == 3 and min(numbers) >= 0:
        m1, m2, layers = numbers
        if m1 > m2:
            raise argparse.ArgumentTypeError(
                f"{text!r}: the first milestone ({m1}) comes after the second ({m2}); use M1 <= M2."
            )
        return (name, ((m1, m2), layers))
    if name in ("no_freeze", "freeze"):
        raise argparse.ArgumentTypeError(f"strategy {name!r} takes no argument; write just {name}.")
    expected = "EPOCH (a whole number)" if name == "freeze_unfreeze" else "M1,M2,N (three whole numbers)"
    raise argparse.ArgumentTypeError(f"{text!r}: {name} takes {expected}, e.g. {_example(name)}.")


def _example(name: str) -> str:
    return "freeze_unfreeze:2" if name == "freeze_unfreeze" else "unfreeze_milestones:1,2,1"


def parse_lr(text: str) -> float | str:
    """``auto`` (run the learning-rate finder) or a positive number."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'.") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the learning rate must be a positive number.")
    return value


COMMON_OPTIONS = (
    Option(
        "--backbone",
        "pretrained backbone (see `flash backbones`); default: the task's default",
        metavar="NAME",
    ),
    Option(
        "--strategy",
        "finetuning strategy: no_freeze, freeze, freeze_unfreeze[:EPOCH], unfreeze_milestones[:M1,M2,N]",
        parse_strategy,
        "no_freeze",
        metavar="NAME[:ARGS]",
    ),
    Option(
        "--train-bn",
        "BatchNorm layers of frozen parts keep training (true), stay frozen (false), or the task's "
        "choice (auto: image tasks freeze them, so frozen features are computed once)",
        default="auto",
        choices=TRAIN_BN_CHOICES,
    ),
    Option("--epochs", "training epochs", positive_int, DEFAULT_EPOCHS, metavar="N"),
    Option(
        "--lr",
        "learning rate of the head, or 'auto' to run the learning-rate finder first (default: the task's)",
        parse_lr,
        metavar="RATE",
    ),
    Option(
        "--lr-find-steps",
        "steps of the learning-rate finder (--lr auto)",
        positive_int,
        DEFAULT_LR_FIND_STEPS,
        metavar="N",
    ),
    Option("--optimizer", "optimizer (default: the task's)", choices=OPTIMIZER_NAMES),
    Option("--lr-scheduler", "learning-rate schedule (default: the task's)", choices=SCHEDULER_NAMES),
    Option(
        "--seed", "random seed (the same seed and options give the same run)", int, DEFAULT_SEED, metavar="N"
    ),
    Option(
        "--accelerator",
        "cpu, gpu, mps or auto",
        default="auto",
        choices=("auto", "cpu", "gpu", "cuda", "mps"),
    ),
)


def add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    if option.kind == "flag":
        parser.add_argument(
            option.flag, *option.aliases, dest=option.dest, action="store_true", help=option.help
        )
        return
    metavar = option.metavar or (option.dest.upper() if option.choices is None else None)
    parser.add_argument(
        option.flag,
        *option.aliases,
        dest=option.dest,
        type=option.type,
        default=option.default,
        choices=option.choices,
        metavar=metavar,
        help=option.help,
    )


def add_finetune_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune",
        help="finetune a pretrained model on your data and save a run folder",
        description=(
            "Finetune a task on your data. Writes into --out: model.ckpt, config.json (replay it with "
            "`flash finetune --config FILE`), metrics.csv, results.json and plots/*.png."
        ),
        formatter_class=formatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="replay a run's config.json; options given on the command line override it",
    )
    domains = parser.add_subparsers(dest="domain", metavar="{" + ",".join(DOMAINS) + "}")
    for spec in DOMAINS.values():
        sub = domains.add_parser(
            spec.name,
            help=spec.summary,
            description=f"Finetune {spec.summary}.",
            epilog=f"example:\n  {spec.example}" if spec.example else None,
            formatter_class=formatter,
        )
        data_group = sub.add_argument_group("data")
        for option in spec.options:
            add_option(data_group, option)
        train_group = sub.add_argument_group("training")
        for option in COMMON_OPTIONS:
            if option.dest == "backbone":
                option = replace(
                    option,
                    help=f"backbone (see `flash backbones {spec.name}`)",
                    default=spec.default_backbone,
                )
            elif option.dest == "strategy":
                option = replace(option, default=spec.default_strategy)
            add_option(train_group, option)
        run_group = sub.add_argument_group("run folder")
        run_group.add_argument("--out", metavar="DIR", help=f"run folder (default: a new runs/{spec.name}-N)")
        run_group.add_argument("--force", action="store_true", help="replace the run already in --out")
        run_group.add_argument(
            "--quiet", action="store_true", help="no progress bars or log messages; print the summary only"
        )
    return parser


def saved_options(spec: DomainSpec) -> list[Option]:
    """The options a config file records for ``spec``, in order."""
    return [*spec.options, *COMMON_OPTIONS]


# -- config files ---------------------------------------------------------------------------------
def config_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any] | None]:
    """Turn ``finetune --config FILE [...]`` into ``finetune DOMAIN [...]`` and the saved options.

    The options become the parser's defaults, so anything given on the command line overrides them.
    """
    argv = list(argv)
    config_path = None
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            config_path = argv[i + 1]
            del argv[i : i + 2]
            break
        if token.startswith("--config="):
            config_path = token.split("=", 1)[1]
            del argv[i]
            break
    if config_path is None:
        return argv, None
    config = read_config(config_path)
    domain = config["domain"]
    rest = argv[1:]
    if rest and not rest[0].startswith("-"):
        if rest[0] != domain:
            raise ValueError(f"{config_path} is a {domain} run, but the command names {rest[0]!r}.")
        rest = rest[1:]
    return [argv[0], domain, *rest], config["options"]


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and check a run's ``config.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No config file at {path}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from None
    if not isinstance(config, dict) or config.get("command") != "finetune":
        raise ValueError(
            f"{path} is not a flash finetune config (written as config.json by `flash finetune`)."
        )
    domain = config.get("domain")
    if domain not in DOMAINS:
        raise ValueError(f"{path} names domain {domain!r}; the domains are {', '.join(DOMAINS)}.")
    options = config.get("options")
    if not isinstance(options, dict):
        raise ValueError(f"{path} has no 'options' object.")
    known = {option.dest: option for option in saved_options(DOMAINS[domain])}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{path}: unknown option(s) {', '.join(unknown)} for a {domain} run; "
            f"the options are {', '.join(known)}."
        )
    for name, value in options.items():
        options[name] = _config_value(known[name], value, path)
    return {"domain": domain, "options": options}


def _config_value(option: Option, value: Any, path: Path) -> Any:
    """Check a config value the way the command line would."""
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"{path}: {option.dest} must be true or false, got {value!r}.")
        return value
    if value is None:
        return value
    if option.kind == "fields":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{path}: {option.dest} must be a list of column names, got {value!r}.")
        return value
    try:
        parsed = option.type(str(value))
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise ValueError(f"{path}: {option.dest}: {error}") from None
    if option.choices is not None and parsed not in option.choices:
        raise ValueError(f"{path}: {option.dest} is {value!r}; choose one of {', '.join(option.choices)}.")
    return parsed


def write_config(path: Path, spec: DomainSpec, options: dict[str, Any]) -> None:
    import flash

    config = {
        "command": "finetune",
        "domain": spec.name,
        "flash_version": flash.__version__,
        "options": {option.dest: options.get(option.dest) for option in saved_options(spec)},
    }
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# -- the run folder -------------------------------------------------------------------------------
def default_run_dir(domain: str, root: Path = Path("runs")) -> Path:
    """``runs/<domain>-N`` with the first N whose folder does not exist yet."""
    n = 1
    while (root / f"{domain}-{n}").exists():
        n += 1
    return root / f"{domain}-{n}"


def check_run_dir(out: Path, force: bool) -> None:
    """Refuse, before any work, to replace an earlier run's files unless ``force``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder.")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not force:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(existing)}). Pass a new --out folder, "
            "or --force to replace that run."
        )


def clear_run_dir(out: Path) -> None:
    """Remove an earlier run's own files from ``out`` (other files stay) and make ``out/plots``."""
    for name in RUN_FILES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (out / "plots").mkdir(parents=True, exist_ok=True)


def check_required(parser: argparse.ArgumentParser, spec: DomainSpec, options: dict[str, Any]) -> None:
    missing = [names for names in spec.required if all(options.get(n) is None for n in names)]
    if missing:
        flags = [" or ".join("--" + n.replace("_", "-") for n in names) for names in missing]
        parser.error(f"flash finetune {spec.name} needs {', '.join(flags)}")


def absolute_paths(spec: DomainSpec, options: dict[str, Any]) -> dict[str, Any]:
    """Path options made absolute, so the saved config replays from any folder."""
    options = dict(options)
    for option in spec.options:
        if option.kind == "path" and options.get(option.dest) is not None:
            options[option.dest] = str(Path(options[option.dest]).expanduser().resolve())
    return options


# -- running --------------------------------------------------------------------------------------
def run_finetune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train, save and summarise a run from parsed ``flash finetune DOMAIN`` arguments.

    Nothing is written into the run folder until training has finished, so a failed or
    interrupted run leaves an earlier run (``--force``) as it was.
    """
    spec = DOMAINS[args.domain]
    options = {option.dest: getattr(args, option.dest) for option in saved_options(spec)}
    check_required(parser, spec, options)
    options = absolute_paths(spec, options)
    out = Path(args.out) if args.out else default_run_dir(spec.name)
    check_run_dir(out, args.force)
    say = _Say(args.quiet)
    started = time.perf_counter()
    run = _train(spec, options, say, quiet=args.quiet)
    run["wall_time_s"] = round(time.perf_counter() - started, 2)
    clear_run_dir(out)
    _write_run(spec, run, out)
    print(summary(run, out))
    return 0


class _Say:
    """Messages about the run's progress, on stderr (stdout carries the summary)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _train(spec: DomainSpec, options: dict[str, Any], say: _Say, quiet: bool) -> dict[str, Any]:
    import tempfile

    import lightning.pytorch as pl

    import flash
    from flash.core.training.lr_finder import apply_learning_rate
    from flash.core.utils.progress import FlashProgressBar

    strategy = strategy_value(options["strategy"])
    pl.seed_everything(options["seed"], workers=True, verbose=False)
    say(f"Loading {spec.name} data ...")
    data = spec.build_data(options)
    say(f"  {data!r}")
    task = spec.build_task(options, data)
    record_defaults(spec, options, task, data)
    trainer = flash.Trainer(
        max_epochs=options["epochs"],
        accelerator=options["accelerator"],
        default_root_dir=tempfile.gettempdir(),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not quiet,
        callbacks=[] if quiet else [FlashProgressBar()],
    )
    say(f"Task: {type(task).__name__}, backbone {options['backbone']}, {_parameters(task)}")
    run: dict[str, Any] = {
        "options": options,
        "task": task,
        "data": data,
        "trainer": trainer,
        "lr_finder": None,
    }
    train_bn = {"auto": None, "true": True, "false": False}[options["train_bn"]]
    if options["lr"] == "auto":
        say(f"Finding a learning rate ({options['lr_find_steps']} steps) ...")
        found = trainer.lr_find(
            task, data, strategy=strategy, train_bn=train_bn, num_training=options["lr_find_steps"]
        )
        run["lr_finder"] = {"suggestion": found.suggestion, "steps": len(found.lrs), "figure": found.plot}
        if found.suggestion is None:
            say.warn(
                f"the learning-rate finder could not suggest a rate from {len(found.lrs)} steps; "
                f"keeping the task's {task.learning_rate:g}. Raise --lr-find-steps or give --lr."
            )
        else:
            apply_learning_rate(task, found.suggestion)
            say(f"  suggested learning rate {found.suggestion:.3g}")
    options["lr"] = float(task.learning_rate)
    trainer.finetune(task, data, strategy=strategy, train_bn=train_bn)
    run["history"] = trainer.history
    return run


def _write_run(spec: DomainSpec, run: dict[str, Any], out: Path) -> None:
    """Write the checkpoint, metrics, plots, config and results of a finished run into ``out``."""
    from flash.core.utils.plots import plot_training_curves, save_figure

    task, data, history, plots = run["task"], run["data"], run["history"], out / "plots"
    files: dict[str, Path] = {}
    if run["lr_finder"] is not None:
        files["learning-rate finder"] = save_figure(run["lr_finder"].pop("figure"), plots / "lr_finder.png")
    files["checkpoint"] = out / "model.ckpt"
    run["trainer"].save_checkpoint(files["checkpoint"], weights_only=True)
    files["config"] = out / "config.json"
    if history:
        files["metrics"] = write_metrics(out / "metrics.csv", history)
        files["training curves"] = plot_training_curves(history, plots / "curves.png")
    files.update(_evaluation_plots(spec, task, data, plots))
    run["files"] = files
    write_config(files["config"], spec, run["options"])
    (out / "results.json").write_text(json.dumps(_results(run), indent=2) + "\n", encoding="utf-8")


def _evaluation_plots(spec: DomainSpec, task: Any, data: Any, folder: Path) -> dict[str, Path]:
    from flash.core.model.classification import ClassificationTask
    from flash.core.utils.plots import plot_confusion_matrix

    plots: dict[str, Path] = {}
    classifier = isinstance(task, ClassificationTask) and not task.multi_label
    if classifier and data.splits.get("val") is not None:
        plots["confusion matrix"] = plot_confusion_matrix(task, data, folder / "confusion_matrix.png")
    if spec.extra_plots is not None and (classifier or not isinstance(task, ClassificationTask)):
        plots.update(spec.extra_plots(task, data, folder))
    return plots


def record_defaults(spec: DomainSpec, options: dict[str, Any], task: Any, data: Any) -> None:
    """Write the values the task and data chose by default into ``options``, so the saved config
    still replays the same run if a later version changes a default."""
    options["backbone"] = task.hparams.get("backbone", options["backbone"])
    for name in ("optimizer", "lr_scheduler"):
        if options.get(name) is None:
            value = getattr(task, name, None)
            if isinstance(value, str):
                options[name] = value.lower()
            elif value is None and name == "lr_scheduler":
                options[name] = "constant"
    given = {option.dest for option in spec.options}
    for name, owners in (("batch_size", (data,)), ("max_length", (task, data)), ("image_size", (task, data))):
        if name in given and options.get(name) is None:
            value = next((getattr(o, name) for o in owners if isinstance(getattr(o, name, None), int)), None)
            if value is not None:
                options[name] = value


def write_metrics(path: Path, history: list[dict[str, float]]) -> Path:
    """The per-epoch metrics as CSV, one row per epoch (``epoch`` counts from 1)."""
    import csv

    columns = ["epoch", *sorted({k for row in history for k in row if k != "epoch"}, key=_metric_order)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in history:
            values = {**row, "epoch": int(row["epoch"]) + 1}
            writer.writerow(["" if values.get(c) is None else values[c] for c in columns])
    return path


def _metric_order(name: str) -> tuple[int, str]:
    stage, _, base = name.partition("_")
    return ({"train": 0, "val": 1, "test": 2}.get(stage, 3), base != "loss", base)


def _parameters(task: Any) -> str:
    total = sum(p.numel() for p in task.parameters())
    return f"{total / 1e6:.2f}M parameters"


def _results(run: dict[str, Any]) -> dict[str, Any]:
    history = run.get("history") or []
    return {
        "task": type(run["task"]).__name__,
        "backbone": run["options"]["backbone"],
        "learning_rate": run["options"]["lr"],
        "lr_finder": run["lr_finder"],
        "epochs": len(history),
        "final": {k: v for k, v in (history[-1] if history else {}).items() if k != "epoch"},
        "wall_time_s": run["wall_time_s"],
        "files": {name: str(path) for name, path in run["files"].items()},
    }


def summary(run: dict[str, Any], out: Path) -> str:
    """The table printed at the end of a run: metrics per epoch, then what was written where."""
    history = run.get("history") or []
    lines = []
    if history:
        columns = ["epoch", *sorted({k for row in history for k in row if k != "epoch"}, key=_metric_order)]
        rows = [{**row, "epoch": int(row["epoch"]) + 1} for row in history]
        lines += [table(rows, columns), ""]
    options = run["options"]
    lr_note = " (learning-rate finder)" if run.get("lr_finder") and run["lr_finder"]["suggestion"] else ""
    lines.append(
        f"{type(run['task']).__name__} on {options['backbone']}, strategy {options['strategy']}, "
        f"learning rate {options['lr']:.3g}{lr_note}, {run['wall_time_s']:.1f} s"
    )
    lines.append(f"run folder: {out}")
    width = max(len(name) for name in run["files"]) if run["files"] else 0
    for name, path in run["files"].items():
        lines.append(f"  {name.ljust(width)}  {path}")
    return "\n".join(lines)
