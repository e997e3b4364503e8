"""The ``flash`` command's domain-independent behaviour, on a toy domain run in-process.

The toy domain goes through the same code as image, text and tabular runs: options, the run
folder, the config file and its replay, metrics, plots and the summary.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

import flash
import flash.core.utils.progress
from flash import cli
from flash.cli.domains import DOMAINS, DomainSpec, Option, positive_int
from flash.cli.finetune import strategy_value
from toy import ToyClassifier, toy_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _toy_data(options):
    return toy_data(n=options["rows"], batch_size=options.get("batch_size") or 16)


def _toy_task(options, data):
    kwargs = {"learning_rate": options["lr"]} if isinstance(options.get("lr"), float) else {}
    return ToyClassifier(num_classes=data.num_classes, **kwargs)


TOY = DomainSpec(
    name="toy",
    summary="a tiny generated data set",
    package="toy",
    default_backbone="toy",
    default_strategy="no_freeze",
    options=(
        Option("--rows", "training rows", positive_int, metavar="N"),
        Option("--batch-size", "items per batch", positive_int, metavar="N"),
    ),
    build_data=_toy_data,
    build_task=_toy_task,
    required=(("rows",),),
    example="flash finetune toy --rows 64",
)


@pytest.fixture(autouse=True)
def toy_domain(monkeypatch):
    monkeypatch.setitem(DOMAINS, "toy", TOY)
    yield
    flash.core.utils.progress._QUIET = None


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """``flash finetune toy`` once; several tests read what it wrote."""
    root = tmp_path_factory.mktemp("cli")
    saved = dict(DOMAINS)
    DOMAINS["toy"] = TOY
    try:
        out = root / "run1"
        argv = ["finetune", "toy", "--rows", "48", "--epochs", "2", "--strategy", "freeze_unfreeze:1"]
        code = cli.main([*argv, "--out", str(out), "--quiet"])
    finally:
        DOMAINS.clear()
        DOMAINS.update(saved)
        flash.core.utils.progress._QUIET = None
    return {"root": root, "out": out, "code": code}


def read_metrics(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_finetune_writes_a_complete_run_folder(first_run):
    out = first_run["out"]
    assert first_run["code"] == 0
    for name in ("model.ckpt", "config.json", "results.json", "metrics.csv"):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(rows[0])
    for plot in ("curves.png", "confusion_matrix.png"):
        data = (out / "plots" / plot).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, plot
    config = json.loads((out / "config.json").read_text())
    assert config["domain"] == "toy" and config["command"] == "finetune"
    assert config["options"]["epochs"] == 2
    assert config["options"]["strategy"] == "freeze_unfreeze:1"
    assert isinstance(config["options"]["lr"], float)  # the rate actually used, not "default"
    assert "out" not in config["options"] and "quiet" not in config["options"]
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 2
    assert results["final"]["val_accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]))


def test_summary_table_is_printed(tmp_path, capsys):
    code = cli.main(["finetune", "toy", "--rows", "32", "--epochs", "1", "--out", "run", "--quiet"])
    assert code == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert lines[0].split()[:3] == ["epoch", "train_loss", "train_accuracy"]
    assert lines[2].split()[0] == "1"
    assert "run folder: run" in printed.out
    assert "checkpoint" in printed.out and "model.ckpt" in printed.out
    assert printed.err == ""  # quiet: no progress bars, no log lines


def test_replaying_the_config_gives_the_same_run(first_run):
    out2 = first_run["root"] / "replay"
    code = cli.main(
        ["finetune", "--config", str(first_run["out"] / "config.json"), "--out", str(out2), "--quiet"]
    )
    assert code == 0
    first = json.loads((first_run["out"] / "config.json").read_text())
    second = json.loads((out2 / "config.json").read_text())
    assert first["options"] == second["options"]
    assert read_metrics(first_run["out"] / "metrics.csv") == read_metrics(out2 / "metrics.csv")


def test_command_line_options_override_the_config(first_run, tmp_path):
    config = first_run["out"] / "config.json"
    assert cli.main(["finetune", "--config", str(config), "--epochs", "1", "--out", "short", "--quiet"]) == 0
    assert len(read_metrics(tmp_path / "short" / "metrics.csv")) == 1
    assert json.loads((tmp_path / "short" / "config.json").read_text())["options"]["epochs"] == 1
    assert (
        cli.main(["finetune", "toy", "--config", str(config), "--epochs", "1", "--out", "s2", "--quiet"]) == 0
    )


def test_an_existing_run_is_never_replaced_without_force(first_run, capsys):
    out = first_run["out"]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "1", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_force_replaces_the_run(tmp_path):
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "2", "--out", "r", "--quiet"]
    assert cli.main(argv) == 0
    (tmp_path / "r" / "plots" / "stale.png").write_bytes(b"old")
    (tmp_path / "r" / "notes.txt").write_text("mine")
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "1", "--out", "r", "--quiet", "--force"]
    assert cli.main(argv) == 0
    assert len(read_metrics(tmp_path / "r" / "metrics.csv")) == 1
    assert not (tmp_path / "r" / "plots" / "stale.png").exists()
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_a_failed_run_writes_nothing_and_keeps_the_run_it_would_replace(tmp_path, capsys):
    assert cli.main(["finetune", "toy", "--rows", "32", "--epochs", "1", "--out", "r", "--quiet"]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert cli.main(["finetune", "toy", "--rows", "1", "--out", "r", "--force", "--quiet"]) == 1
    assert "data is empty" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == before
    assert cli.main(["finetune", "toy", "--rows", "1", "--quiet"]) == 1
    assert not (tmp_path / "runs").exists()


def test_default_run_folders_are_numbered(tmp_path):
    from flash.cli.finetune import default_run_dir

    assert cli.main(["finetune", "toy", "--rows", "32", "--epochs", "1", "--quiet"]) == 0
    assert (tmp_path / "runs" / "toy-1" / "model.ckpt").is_file()
    assert default_run_dir("toy") == tmp_path.joinpath("runs", "toy-2").relative_to(tmp_path)


def test_lr_auto_runs_the_finder_and_records_the_rate(tmp_path):
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "1", "--lr", "auto", "--lr-find-steps", "12"]
    assert cli.main([*argv, "--out", "auto", "--quiet"]) == 0
    plot = tmp_path / "auto" / "plots" / "lr_finder.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC
    results = json.loads((tmp_path / "auto" / "results.json").read_text())
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert results["lr_finder"]["steps"] == 12
    assert config["options"]["lr"] == pytest.approx(results["lr_finder"]["suggestion"])
    assert results["learning_rate"] == config["options"]["lr"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["finetune", "toy", "--rows", "32", "--epochs", "0"], "--epochs: '0' is not a whole number >= 1"),
        (
            ["finetune", "toy", "--rows", "32", "--strategy", "thaw"],
            "unknown strategy 'thaw'; choose one of no_freeze",
        ),
        (
            ["finetune", "toy", "--rows", "32", "--strategy", "unfreeze_milestones:3,1,1"],
            "first milestone (3)",
        ),
        (["finetune", "toy", "--rows", "32", "--strategy", "freeze:2"], "takes no argument"),
        (["finetune", "toy", "--rows", "32", "--lr", "fast"], "'fast' is neither a number nor 'auto'"),
        (["finetune", "toy", "--rows", "32", "--optimizer", "lion"], "invalid choice: 'lion' (choose from"),
        (["finetune", "toy"], "flash finetune toy needs --rows"),
        (["finetune", "pictures"], "invalid choice: 'pictures'"),
        (["finetune"], "name a domain"),
        (["finetune", "--config", "missing.json"], "No config file at missing.json"),
        (["predict", "model.ckpt", "a.jpg", "--format", "xml"], "invalid choice: 'xml' (choose from"),
        (["backbones", "audio"], "invalid choice: 'audio'"),
        (["train"], "invalid choice: 'train'"),
        (["predict", "model.ckpt", "a.jpg", "--output", "logits"], "invalid choice: 'logits'"),
        (["finetune", "toy", "--rows", "32", "--accelerator", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_exit_non_zero_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if "invalid choice" in message and "--optimizer" in argv:
        assert "adam" in err and "rmsprop" in err  # the valid choices are named
    if "invalid choice" in message and "--format" in argv:
        assert "table" in err and "json" in err and "csv" in err
    valid = {
        "pictures": ("'image'", "'text'", "'tabular'"),
        "audio": ("'image'", "'text'", "'tabular'"),
        "train": ("'finetune'", "'predict'", "'backbones'", "'demo'"),
        "logits": ("'labels'", "'probabilities'"),
        "tpu": ("'auto'", "'cpu'", "'gpu'"),
    }
    for wrong, choices in valid.items():
        if f"invalid choice: '{wrong}'" in message:
            assert all(choice in err for choice in choices), err  # the valid choices are named


def test_a_bad_config_file_names_the_problem(first_run, tmp_path, capsys):
    config = json.loads((first_run["out"] / "config.json").read_text())
    config["options"]["epoch"] = 3
    (tmp_path / "typo.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["finetune", "--config", "typo.json"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown option(s) epoch" in err and "epochs" in err

    config["options"].pop("epoch")
    config["options"]["strategy"] = "frozen"
    (tmp_path / "bad.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--config", "bad.json"])
    assert "unknown strategy 'frozen'" in capsys.readouterr().err

    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--config", "junk.json"])
    assert "not valid JSON" in capsys.readouterr().err


def test_errors_during_a_run_are_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert cli.main(["finetune", "toy", "--rows", "32", "--out", "afile", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flash finetune: error: --out afile is a file") and "Traceback" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"flash {flash.__version__}"


def _parsers(parser, path=("flash",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_help_of_every_command_shows_every_default():
    parsers = list(_parsers(cli.build_parser()))
    names = {" ".join(path) for path, _ in parsers}
    assert {"flash finetune image", "flash finetune text", "flash finetune tabular", "flash predict"} <= names
    for path, parser in parsers:
        text = parser.format_help()
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            if action.help == argparse.SUPPRESS:
                continue
            shown = f"(default: {action.default})"
            assert "".join(shown.split()) in "".join(text.split()), (
                f"{' '.join(path)} {action.option_strings[0]}: no {shown}"
            )


def test_serve_help_lists_every_option_serve_takes():
    import dataclasses
    import inspect

    from flash.core.deploy.serve import serve
    from flash.core.deploy.serve_options import ServeOptions

    text = _subparser_help("serve")
    names = [field.name for field in dataclasses.fields(ServeOptions)]
    names += [n for n, p in inspect.signature(serve).parameters.items() if p.kind is p.KEYWORD_ONLY]
    names += ["host", "port"]
    flags = {"device": "--accelerator", "output": None}
    for name in names:
        flag = flags.get(name, "--" + name.replace("_", "-"))
        if flag is not None:
            assert flag in text, f"flash serve --help does not show {flag}"
    flat = " ".join(text.split())
    assert "--max-queue-size N requests waiting for the model; more get 503 (default: 1024)" in flat


def _subparser_help(name: str) -> str:
    for path, parser in _parsers(cli.build_parser()):
        if path == ("flash", name):
            return parser.format_help()
    raise AssertionError(f"no flash {name}")


def test_strategy_texts_become_the_tuples_resolve_strategy_takes():
    from flash.core.training.finetuning import resolve_strategy

    assert strategy_value("no_freeze") == "no_freeze"
    assert strategy_value("freeze_unfreeze:2") == ("freeze_unfreeze", 2)
    assert strategy_value("unfreeze_milestones:1,2,1") == ("unfreeze_milestones", ((1, 2), 1))
    for text in ("no_freeze", "freeze", "freeze_unfreeze", "freeze_unfreeze:2", "unfreeze_milestones:1,2,1"):
        resolve_strategy(strategy_value(text))


def test_names_the_command_mirrors_match_the_library():
    from flash.cli.finetune import DEFAULT_EPOCHS, OPTIMIZER_NAMES, SCHEDULER_NAMES, STRATEGY_NAMES
    from flash.core.training.finetuning import STRATEGIES
    from flash.core.training.optimizers import OPTIMIZERS, SCHEDULERS
    from flash.core.training.trainer import DEFAULT_MAX_EPOCHS

    assert (*STRATEGIES, "auto") == STRATEGY_NAMES  # auto: a search over the named ones
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
    assert tuple(SCHEDULERS) == SCHEDULER_NAMES
    assert DEFAULT_EPOCHS == DEFAULT_MAX_EPOCHS


def _backbone_linear_weights(state):
    return {k: v for k, v in state.items() if k.startswith("backbone.") and k.endswith(".0.weight")}


@pytest.mark.parametrize(
    ("strategy", "epochs", "backbone_trains"),
    [
        ("freeze", 2, False),
        ("freeze_unfreeze:2", 2, False),  # epochs 0 and 1 frozen; the run ends before epoch 2
        ("freeze_unfreeze:2", 3, True),
        ("no_freeze", 1, True),
    ],
)
def test_the_strategy_and_its_argument_decide_when_the_backbone_trains(strategy, epochs, backbone_trains):
    import lightning.pytorch as pl
    import torch

    pl.seed_everything(42)  # the run's default --seed, set before it builds the task
    initial = _backbone_linear_weights(ToyClassifier().state_dict())
    argv = [
        "finetune",
        "toy",
        "--rows",
        "32",
        "--epochs",
        str(epochs),
        "--strategy",
        strategy,
        "--keep",
        "last",
    ]
    assert cli.main([*argv, "--out", "run", "--quiet"]) == 0
    state = torch.load("run/model.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    final = _backbone_linear_weights(state)
    assert initial and initial.keys() == final.keys()
    changed = [k for k in initial if not torch.equal(initial[k], final[k])]
    assert bool(changed) == backbone_trains, changed
    head = [k for k in state if k.startswith("head.") and k.endswith("weight")]
    assert head  # the head always trains; the comparison above is about the backbone only


def test_without_quiet_stderr_shows_the_progress_bar_with_epoch_loss_and_metrics(capsys):
    assert cli.main(["finetune", "toy", "--rows", "32", "--epochs", "2", "--out", "run"]) == 0
    printed = capsys.readouterr()
    assert "Loading toy data" in printed.err
    for shown in ("Epoch 1", "train_loss=", "val_loss=", "val_accuracy="):
        assert shown in printed.err, shown
    assert "Epoch" not in printed.out  # stdout holds the summary only
    assert printed.out.splitlines()[0].split()[0] == "epoch"


def test_flash_is_a_console_command_and_python_dash_m_flash_is_the_same(tmp_path):
    import shutil
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == "flash"]
    assert entry.load() is cli.main
    commands = [[sys.executable, "-m", "flash"]]
    script = shutil.which("flash", path=str(Path(sys.executable).parent))
    if script is not None:  # installed into the environment running the tests
        commands.append([script])
    for command in commands:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == f"flash {flash.__version__}", command
        done = subprocess.run([*command, "frobnicate"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr, command


def test_help_version_and_argument_errors_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from flash import cli\n"
        "for argv in (['--version'], ['--help'], ['finetune', 'image', '--help'], ['predict', '--help'],\n"
        "             ['backbones', '--help'], ['demo', '--help'], ['finetune', 'pictures'],\n"
        "             ['finetune', 'text', '--strategy', 'thaw']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('torch', 'lightning', 'torchmetrics', 'timm', 'transformers', 'flash.core')\n"
        "print('imported:', ','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "imported: "  # a quick command, even on a slow machine
    assert "flash 0" in done.stdout and "--train-folder" in done.stdout
    assert "invalid choice: 'pictures'" in done.stderr and "unknown strategy 'thaw'" in done.stderr
