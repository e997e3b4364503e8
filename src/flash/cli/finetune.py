"""``flash finetune``: train a task on files, write a run folder, print a summary.

A run folder holds the checkpoint (``model.ckpt``), the run's configuration (``config.json``,
which ``flash finetune --config`` replays), the metrics per epoch (``metrics.csv``), a summary
of the results (``results.json``), the plots (``plots/*.png``) and, with ``--report``, the
whole run on one HTML page (``report.html``, see :mod:`flash.cli.report`). While the run trains, it also
holds ``checkpoints/last.ckpt`` (the state after the last finished epoch, from which
``flash finetune --resume DIR`` continues a run that was stopped or killed) and
``checkpoints/best.ckpt``; they are removed once the run has finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from flash.cli.domains import DOMAINS, DomainSpec, Option, fraction, positive_int
from flash.cli.format import table
from flash.cli.rails import (
    CHECKPOINTS,
    KEEP_CHOICES,
    LAST,
    LOGGERS,
    PRECISIONS,
    build_logger,
    check_logger,
    checkpoint_epoch,
    number_or_auto,
    parse_devices,
    run_callbacks,
)

STRATEGY_NAMES = ("no_freeze", "freeze", "freeze_unfreeze", "unfreeze_milestones", "contrastive", "auto")
OPTIMIZER_NAMES = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULER_NAMES = ("constant", "cosine", "onecycle", "linear_warmup", "reduce_on_plateau")
DEFAULT_EPOCHS = 10
DEFAULT_SEED = 42
DEFAULT_LR_FIND_STEPS = 100
DEFAULT_FOLDS = 5
TRAIN_BN_CHOICES = ("auto", "true", "false")

RUN_FILES = (
    "model.ckpt",
    "config.json",
    "results.json",
    "metrics.csv",
    "report.html",
    "plots",
    CHECKPOINTS,
    "lightning_logs",
    "cross_validation",
    "mlruns",
    "wandb",
)
"""What a run writes into its folder; an existing one is never replaced without ``--force``."""


# -- option parsing -------------------------------------------------------------------------------
def parse_strategy(text: str) -> str:
    """Check a ``--strategy`` value; the text is kept (it is what the config file records).

    Forms: ``no_freeze``, ``freeze``, ``freeze_unfreeze[:EPOCH]``, ``unfreeze_milestones[:M1,M2,N]``,
    ``contrastive``, ``auto``.
    """
    strategy_value(text)
    return text


def strategy_value(text: str) -> Any:
    """A ``--strategy`` text as :func:`flash.core.training.finetuning.resolve_strategy` takes it."""
    name, _, argument = text.partition(":")
    forms = "no_freeze, freeze, freeze_unfreeze[:EPOCH], unfreeze_milestones[:M1,M2,N], contrastive, auto"
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
    if name in ("no_freeze", "freeze", "contrastive", "auto"):
        raise argparse.ArgumentTypeError(f"strategy {name!r} takes no argument; write just {name}.")
    expected = "EPOCH (a whole number)" if name == "freeze_unfreeze" else "M1,M2,N (three whole numbers)"
    raise argparse.ArgumentTypeError(f"{text!r}: {name} takes {expected}, e.g. {_example(name)}.")


def _example(name: str) -> str:
    return "freeze_unfreeze:2" if name == "freeze_unfreeze" else "unfreeze_milestones:1,2,1"


parse_lr = number_or_auto(float, "a number", 0, inclusive=False)
"""``auto`` (run the learning-rate finder) or a positive number."""


COMMON_OPTIONS = (
    Option(
        "--backbone",
        "pretrained backbone (see `flash backbones`); default: the task's default",
        metavar="NAME",
    ),
    Option(
        "--strategy",
        "finetuning strategy: no_freeze, freeze, freeze_unfreeze[:EPOCH], unfreeze_milestones[:M1,M2,N], "
        "contrastive (few-shot classifiers), auto (chosen by cross-validation, see --folds, then trained)",
        parse_strategy,
        "no_freeze",
        metavar="NAME[:ARGS]",
    ),
    Option(
        "--folds",
        "cross-validation folds of --strategy auto (at least 2)",
        positive_int,
        DEFAULT_FOLDS,
        metavar="N",
    ),
    Option(
        "--train-bn",
        "BatchNorm layers of frozen parts keep training (true), stay frozen (false), or the task's "
        "choice (auto: image tasks freeze them, so frozen features are computed once); under "
        "no_freeze, whether they train with the rest (auto: the image classifier keeps them as pretrained)",
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
    Option("--devices", "how many devices to train on, or auto", parse_devices, "auto", metavar="N"),
    Option(
        "--precision",
        "numeric precision; auto: bf16-mixed on a GPU that supports it, 32 otherwise",
        default="auto",
        choices=PRECISIONS,
    ),
    Option(
        "--keep",
        "the epoch whose weights model.ckpt holds: best (by the task's monitored validation metric: "
        "val_accuracy for classifiers, val_loss otherwise; the last epoch without validation data) or last",
        default="best",
        choices=KEEP_CHOICES,
    ),
    Option(
        "--early-stopping",
        "stop once the monitored validation metric has not improved for PATIENCE epochs (default: off)",
        positive_int,
        metavar="PATIENCE",
    ),
    Option(
        "--calibrate",
        "after training, fit a softmax temperature on the validation data so the predicted probabilities "
        "match how often the model is right (single-label classifiers; needs validation data); "
        "model.ckpt keeps it and plots/reliability.png shows the effect",
        kind="flag",
    ),
    Option(
        "--coverage",
        "with --calibrate, also fit conformal prediction sets that hold the true class for this share of "
        "items (e.g. 0.9), on the same validation data; flash predict --output set gives them "
        "(default: off)",
        fraction,
        metavar="FRACTION",
    ),
    Option(
        "--report",
        "also write report.html: one self-contained page with the data, the search's leaderboard "
        "(--strategy auto), the metrics, the plots, and the command, seed and versions that reproduce the run",
        kind="flag",
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


def add_finetune_parser(add_command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """``flash finetune``'s parser, made by ``add_command(name, help, description)``."""
    parser = add_command(
        "finetune",
        "finetune a pretrained model on your data and save a run folder",
        "Finetune a task on your data. Writes into --out: model.ckpt, config.json (replay it with "
        "`flash finetune --config FILE`), metrics.csv, results.json and plots/*.png (and report.html "
        "with --report).",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="replay a run's config.json; options given on the command line override it",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue a stopped or killed run in its folder from its last finished epoch "
        "(--epochs N to train it further)",
    )
    domains = parser.add_subparsers(dest="domain", metavar="{" + ",".join(DOMAINS) + "}")
    for spec in DOMAINS.values():
        sub = domains.add_parser(
            spec.name,
            help=spec.summary,
            description=f"Finetune {spec.summary}.",
            epilog=f"example:\n  {spec.example}" if spec.example else None,
            formatter_class=parser.formatter_class,
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
        run_group.add_argument(
            "--logger",
            choices=tuple(LOGGERS),
            help="also log to Lightning's logger under the run folder (tensorboard, mlflow and wandb "
            "need their package); default: none (metrics.csv is always written)",
        )
    return parser


def saved_options(spec: DomainSpec) -> list[Option]:
    """The options a config file records for ``spec``, in order."""
    return [*spec.options, *COMMON_OPTIONS]


# -- config files ---------------------------------------------------------------------------------
def _take_option(argv: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` (or ``flag=VALUE``) from ``argv`` and return VALUE."""
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if token.startswith(flag + "="):
            del argv[i]
            return token.split("=", 1)[1]
    return None


def config_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any] | None]:
    """Turn ``finetune --config FILE [...]`` into ``finetune DOMAIN [...]`` and the saved options.

    The options become the parser's defaults, so anything given on the command line overrides them.
    ``finetune --resume DIR [...]`` replays ``DIR/config.json`` into ``--out DIR``; its options
    then hold ``resume`` (the folder) as well.
    """
    argv = list(argv)
    resume = _take_option(argv, "--resume")
    config_path = _take_option(argv, "--config")
    if resume is not None:
        if config_path is not None:
            raise ValueError("--resume continues a run with its own config.json; leave out --config.")
        out = _take_option(argv, "--out")
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ValueError(f"--resume {resume} continues the run in its own folder; leave out --out {out}.")
        if not (Path(resume) / "config.json").is_file():
            raise FileNotFoundError(
                f"{resume} is not the folder of a flash finetune run (it has no config.json)."
            )
        config_path = str(Path(resume) / "config.json")
        argv += ["--out", resume]
    if config_path is None:
        return argv, None
    config = read_config(config_path)
    if resume is not None:
        config["options"]["resume"] = resume
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
    if existing and not force and not (out / "results.json").exists() and (out / "config.json").exists():
        raise FileExistsError(
            f"{out} holds a run that did not finish. Continue it with `flash finetune --resume {out}`, "
            "or pass --force to replace it (or a new --out folder)."
        )
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
RESUMABLE = ("epochs", "accelerator", "devices", "precision", "calibrate", "coverage", "report")
"""Options that ``--resume`` may change; the others would make it another run."""


def run_finetune(
    args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> int:
    """Train, save and summarise a run from parsed ``flash finetune DOMAIN`` arguments.

    ``argv`` is the command's own arguments (after ``flash``), which ``--report`` quotes as the
    command that reproduces the run. The run folder is written once the data and the task are ready: ``config.json`` first, then
    ``checkpoints/last.ckpt`` after every epoch; a run that fails before training leaves an
    earlier run (``--force``) as it was. Ctrl-C stops after saying how to resume.
    """
    spec = DOMAINS[args.domain]
    options = {option.dest: getattr(args, option.dest) for option in saved_options(spec)}
    check_required(parser, spec, options)
    if options.get("coverage") is not None and not options.get("calibrate"):
        raise ValueError(
            "--coverage fits conformal prediction sets on the calibrated probabilities: pass it with "
            "--calibrate (e.g. --calibrate --coverage 0.9)."
        )
    options = absolute_paths(spec, options)
    out = Path(args.out) if args.out else default_run_dir(spec.name)
    resume = getattr(args, "resume", None)
    if resume is None:
        check_run_dir(out, args.force)
    else:
        _check_resumable(out, options)
    check_logger(args.logger)
    say = _Say(args.quiet)
    started = time.perf_counter()
    run = _train(spec, options, say, quiet=args.quiet, out=out, resume=resume is not None, logger=args.logger)
    run["wall_time_s"] = round(time.perf_counter() - started, 2)
    run["argv"] = list(argv) if argv is not None else None
    _write_run(spec, run, out)
    print(summary(run, out))
    return 0


def _check_resumable(out: Path, options: dict[str, Any]) -> None:
    """A resumed run keeps its options (other than :data:`RESUMABLE`) and has epochs left to train."""
    saved = read_config(out / "config.json")["options"]
    changed = [
        name for name in saved if name not in RESUMABLE and name in options and options[name] != saved[name]
    ]
    if changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise ValueError(
            f"--resume continues the run in {out} with its own options, and {flags} differ from them. "
            f"To change them, start a new run from its settings: flash finetune --config "
            f"{out / 'config.json'} --out NEW_DIR {flags.replace(',', '')} ..."
        )
    last = out / CHECKPOINTS / LAST
    if (out / "results.json").exists() and not last.exists():
        raise ValueError(
            f"The run in {out} has finished, and its training state was removed when it did; "
            f"start a new run from its settings with flash finetune --config {out / 'config.json'} --out NEW_DIR."
        )
    if last.exists() and checkpoint_epoch(last) >= options["epochs"]:
        raise ValueError(
            f"The run in {out} has already trained {checkpoint_epoch(last)} epoch(s); "
            "pass --epochs N with a larger N to train it further."
        )


class _Say:
    """Messages about the run's progress, on stderr (stdout carries the summary)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``flash finetune``; the message says what was kept and how to resume."""


def _train(
    spec: DomainSpec,
    options: dict[str, Any],
    say: _Say,
    *,
    quiet: bool,
    out: Path,
    resume: bool = False,
    logger: str | None = None,
) -> dict[str, Any]:
    import warnings

    import lightning.pytorch as pl

    import flash
    from flash.core.training.chatter import NoValidationDataWarning
    from flash.core.training.lr_finder import apply_learning_rate

    strategy = strategy_value(options["strategy"])
    if strategy == "auto":
        if options["lr"] == "auto":
            raise ValueError(
                "--strategy auto chooses the learning rate among multiples of the task's; drop --lr auto "
                "(or give --lr a number to scale)."
            )
        if resume:
            raise ValueError("--strategy auto runs cannot be resumed: start the run again.")
        if options["folds"] < 2:
            raise ValueError(f"--folds {options['folds']}: cross-validation needs at least 2 folds.")
        strategy = ("auto", {"verbose": not quiet, "folds": options["folds"]})
    pl.seed_everything(options["seed"], workers=True, verbose=False)
    say(f"Loading {spec.name} data ...")
    data = spec.build_data(options)
    say(f"  {data!r}")
    task = spec.build_task(options, data)
    record_defaults(spec, options, task, data)
    has_val = data.splits.get("val") is not None
    if not has_val and not quiet:
        say.warn(
            "no validation data was given, so the run reports training metrics only and keeps the last "
            "epoch; hold out part of the training data with --val-split 0.2 (or give validation data)."
        )
    if options.get("calibrate"):
        _check_calibration(task, has_val, data, options.get("coverage"))
    monitor = task.monitor if has_val else None
    callbacks, best = run_callbacks(
        out / CHECKPOINTS,
        monitor if options["keep"] == "best" or options["early_stopping"] else None,
        task.monitor_mode,
        options["early_stopping"],
    )
    if options["keep"] != "best":
        callbacks = [c for c in callbacks if c is not best]
        best = None
    trainer_options: dict[str, Any] = {}
    if options["precision"] != "auto":
        trainer_options["precision"] = options["precision"]
    trainer = flash.Trainer(
        max_epochs=options["epochs"],
        accelerator=options["accelerator"],
        devices=options["devices"],
        default_root_dir=str(out),
        logger=build_logger(logger, out),
        enable_model_summary=False,
        enable_progress_bar=not quiet,
        callbacks=callbacks,
        **trainer_options,
    )
    say(f"Task: {type(task).__name__}, backbone {options['backbone']}, {_parameters(task)}")
    run: dict[str, Any] = {
        "options": options,
        "task": task,
        "data": data,
        "trainer": trainer,
        "lr_finder": None,
        "monitor": monitor,
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
    last = out / CHECKPOINTS / LAST
    ckpt_path = str(last) if resume and last.exists() else None
    if resume:
        done = checkpoint_epoch(last) if ckpt_path else 0
        say(f"Resuming the run in {out} after epoch {done} of {options['epochs']} ...")
    else:
        _start_run_folder(spec, run, out)
    if getattr(task, "restore_best_weights", False):
        # The run keeps its best epoch itself (--keep), by the same monitored metric.
        task.restore_best_weights = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoValidationDataWarning)  # said above, in the command's words
        _fit(trainer, task, data, strategy, train_bn, ckpt_path, out)
    run["history"] = trainer.history
    if trainer.auto_result is not None:
        options["lr"] = float(task.learning_rate)
        run["auto"] = {
            "chosen": trainer.auto_result.chosen.label,
            "monitor": trainer.auto_result.monitor,
            "leaderboard": trainer.auto_result.leaderboard,
            "skipped": trainer.auto_result.skipped,
        }
    run["best"] = _keep_best(task, best, run["history"]) if best is not None else None
    if options.get("calibrate"):
        say("Calibrating the probabilities on the validation data ...")
        run["calibration"] = trainer.calibrate(task, data, coverage=options.get("coverage"))
        say(f"  {run['calibration']}")
    return run


def _check_calibration(task: Any, has_val: bool, data: Any, coverage: float | None) -> None:
    """Refuse ``--calibrate`` (and ``--coverage``), before training, where it cannot run."""
    from flash.core.model.conformal import min_items
    from flash.core.training.calibration import check_calibratable

    try:
        check_calibratable(task)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--calibrate: {error}") from None
    if not has_val:
        raise ValueError(
            "--calibrate fits the temperature on validation data, and this run has none: give validation "
            "data (--val-file/--val-folder) or --val-split FRACTION (calibrating on the training data would "
            "make the model more over-confident)."
        )
    if coverage is not None:
        needed, items = 2 * min_items(coverage), len(data.splits["val"])
        if items < needed:
            raise ValueError(
                f"--coverage {coverage:g} needs at least {needed} validation items (half fit the sets' "
                f"threshold, half measure their coverage) and this run has {items}: hold out more data "
                "(a larger --val-split) or ask for a lower --coverage."
            )


def _fit(
    trainer: Any, task: Any, data: Any, strategy: Any, train_bn: bool | None, ckpt_path: str | None, out: Path
) -> None:
    """``trainer.finetune``; Ctrl-C becomes :class:`RunInterrupted`, naming the checkpoint kept."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.finetune(task, data, strategy=strategy, train_bn=train_bn, ckpt_path=ckpt_path)
    except (KeyboardInterrupt, SystemExit) as error:
        if isinstance(error, SystemExit) and not trainer.interrupted:
            raise
        last = out / CHECKPOINTS / LAST
        kept = (
            f"the state after epoch {checkpoint_epoch(last)} is saved in {last}"
            if last.exists()
            else "no epoch had finished, so nothing was saved"
        )
        raise RunInterrupted(f"{kept}. Continue the run with: flash finetune --resume {out}") from None
    finally:
        if signal.getsignal(signal.SIGINT) != handler and handler is not None:
            signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C after the first one


def _start_run_folder(spec: DomainSpec, run: dict[str, Any], out: Path) -> None:
    """Clear an earlier run's files (``--force`` was checked) and write what the run starts with."""
    from flash.core.utils.plots import save_figure

    clear_run_dir(out)
    if run["lr_finder"] is not None:
        save_figure(run["lr_finder"].pop("figure"), out / "plots" / "lr_finder.png")
    write_config(out / "config.json", spec, run["options"])


def _keep_best(task: Any, best: Any, history: list[dict[str, float]]) -> dict[str, Any] | None:
    """Load the best epoch's weights (saved by ``best``, a ModelCheckpoint) into ``task``."""
    import torch

    path = Path(best.best_model_path) if best.best_model_path else None
    if path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    task.load_state_dict(state["state_dict"])
    epoch = int(state["epoch"])
    row = next((r for r in history if int(r["epoch"]) == epoch), {})
    return {"epoch": epoch + 1, "monitor": best.monitor, "metrics": _metrics(row)}


def _metrics(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != "epoch"}


def _write_run(spec: DomainSpec, run: dict[str, Any], out: Path) -> None:
    """Write the checkpoint, metrics, plots, config and results of a finished run into ``out``."""
    from flash.core.utils.plots import plot_training_curves

    task, data, history, plots = run["task"], run["data"], run["history"], out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if (plots / "lr_finder.png").is_file():
        files["learning-rate finder"] = plots / "lr_finder.png"
    files["checkpoint"] = out / "model.ckpt"
    run["trainer"].save_checkpoint(files["checkpoint"], weights_only=True)
    files["config"] = out / "config.json"
    if history:
        files["metrics"] = write_metrics(out / "metrics.csv", history)
        files["training curves"] = plot_training_curves(history, plots / "curves.png")
    files.update(_evaluation_plots(spec, task, data, plots))
    if run.get("calibration") is not None:
        files["reliability diagram"] = run["calibration"].plot(plots / "reliability.png")
    for logs in ("lightning_logs", "mlruns", "wandb"):
        if (out / logs).is_dir():
            files[f"{logs} (--logger)"] = out / logs
    if run["options"].get("report"):
        files["report"] = out / "report.html"
    run["files"] = files
    write_config(files["config"], spec, run["options"])
    results = _results(run)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # model.ckpt holds the weights kept
    if "report" in files:
        from flash.cli.report import write_report

        write_report(files["report"], run, results=results, argv=run.get("argv"), domain=spec.name)


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

    columns = metric_columns(history)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in history:
            values = {**row, "epoch": int(row["epoch"]) + 1}
            writer.writerow(["" if values.get(c) is None else values[c] for c in columns])
    return path


def metric_columns(history: list[dict[str, float]]) -> list[str]:
    """``epoch``, then every metric of ``history``: training, validation, test; losses first."""
    return ["epoch", *sorted({k for row in history for k in row if k != "epoch"}, key=_metric_order)]


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
        "auto": run.get("auto"),
        "epochs": len(history),
        "final": _metrics(history[-1]) if history else {},
        "kept": "best" if run.get("best") else "last",
        "monitor": run.get("monitor"),
        "best": run.get("best"),
        "calibration": _calibration_results(run.get("calibration")),
        "wall_time_s": run["wall_time_s"],
        "files": {name: str(path) for name, path in run["files"].items()},
    }


def _calibration_results(report: Any) -> dict[str, Any] | None:
    """The calibration's numbers for ``results.json`` (the bins are in the reliability diagram)."""
    if report is None:
        return None
    return {k: v for k, v in report.to_dict().items() if not k.startswith("bins_")}


def _kept_line(run: dict[str, Any], history: list[dict[str, float]]) -> str:
    """Which epoch model.ckpt holds, with the monitored metric of the best and the last epoch."""
    monitor, best, last = run.get("monitor"), run.get("best"), len(history)
    if monitor is None:
        return f"model.ckpt: the last epoch ({last}); no validation data, so no best epoch"
    last_value = history[-1].get(monitor)
    last_text = (
        f"last epoch {last}: {monitor} {last_value:.4g}" if last_value is not None else f"last epoch {last}"
    )
    if best is None:
        return f"model.ckpt: the last epoch (--keep last); {last_text}"
    value = best["metrics"].get(monitor)
    if best["epoch"] == last and value is not None:
        return f"model.ckpt: the best epoch, which is the last ({last}): {monitor} {value:.4g}"
    best_text = (
        f"best epoch {best['epoch']}: {monitor} {value:.4g}"
        if value is not None
        else f"best epoch {best['epoch']}"
    )
    return f"model.ckpt: the best epoch; {best_text}, {last_text}"


def summary(run: dict[str, Any], out: Path) -> str:
    """The table printed at the end of a run: metrics per epoch, then what was written where."""
    history = run.get("history") or []
    lines = []
    if history:
        columns = metric_columns(history)
        rows = [{**row, "epoch": int(row["epoch"]) + 1} for row in history]
        lines += [table(rows, columns), ""]
    options = run["options"]
    if history:
        lines.append(_kept_line(run, history))
    if run.get("calibration") is not None:
        report = run["calibration"]
        lines.append(
            f"calibrated: temperature {report.temperature:.3f}, ECE {report.ece_before:.4f} -> "
            f"{report.ece_after:.4f} on {report.items} validation items"
        )
        if report.conformal is not None:
            sets = report.conformal
            lines.append(
                f"prediction sets: coverage asked {sets.coverage:g}, empirical {sets.empirical_coverage:.3f} ± "
                f"{sets.empirical_coverage_sd:.3f} over {sets.splits} half splits, mean set size "
                f"{sets.mean_set_size:.2f} (flash predict --output set)"
            )
    lr_note = " (learning-rate finder)" if run.get("lr_finder") and run["lr_finder"]["suggestion"] else ""
    strategy = options["strategy"]
    if run.get("auto"):
        strategy = f"auto, chose {run['auto']['chosen']} by cross-validation"
    lines.append(
        f"{type(run['task']).__name__} on {options['backbone']}, strategy {strategy}, "
        f"learning rate {options['lr']:.3g}{lr_note}, {run['wall_time_s']:.1f} s"
    )
    lines.append(f"run folder: {out}")
    width = max(len(name) for name in run["files"]) if run["files"] else 0
    for name, path in run["files"].items():
        lines.append(f"  {name.ljust(width)}  {path}")
    return "\n".join(lines)
