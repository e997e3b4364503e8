"""How a task family plugs into the ``flash`` command: :class:`DomainSpec` and its registry.

Each task family declares a :class:`DomainSpec` (its ``flash finetune`` options, how they become a
data module and a task, how ``flash predict`` reads inputs) in a ``cli.py`` module of its own
package, which calls :func:`register_domain`. Those modules import nothing heavy (torch is imported
only when a command runs), so ``flash --help`` stays fast. They are found three ways:

- ``flash/<package>/cli.py`` (or ``flash/<package>/<task>/cli.py``) inside flash, read by file
  path without importing the package;
- the ``flash.domains`` entry-point group of installed distributions (a module that registers);
- :func:`register_domain` called at run time (tests, notebooks).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Option:
    """One command-line option of a domain.

    ``kind`` says how the value is treated: ``"value"`` as parsed, ``"path"`` made absolute in the
    saved configuration, ``"fields"`` a comma-separated list of column names.
    """

    flag: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    kind: str = "value"
    choices: Sequence[Any] | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Command:
    """A ``flash`` subcommand a task family adds (e.g. ``flash demo``)."""

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    """Adds the command's arguments to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Runs it; returns the exit status."""


@dataclass(frozen=True)
class DomainSpec:
    """A domain as the ``flash`` command sees it."""

    name: str
    summary: str
    package: str
    default_backbone: str
    default_strategy: str
    options: tuple[Option, ...]
    build_data: Callable[[dict[str, Any]], Any]
    build_task: Callable[[dict[str, Any], Any], Any]
    example: str = ""
    extra_plots: Callable[[Any, Any, Path], dict[str, Path]] | None = None
    predict_inputs: Callable[[Any, Sequence[str], dict[str, Any]], tuple[list[str], Any]] | None = None
    required: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    outputs: tuple[str, ...] = ()
    """The ``flash predict --output`` kinds its tasks offer besides their default."""
    predict_options: tuple[Option, ...] = ()
    """Options of ``flash predict`` that its input reader takes (passed in its options dict)."""
    commands: tuple[Command, ...] = ()
    """Further ``flash`` subcommands of the family."""
    predict_help: str = ""
    """What ``flash predict`` takes as inputs for its tasks, in a few words."""
    order: int = 100
    """Where it is listed among the domains (lower first)."""

    def import_package(self) -> Any:
        return importlib.import_module(self.package)


def fields(text: str) -> list[str]:
    """``"a,b , c"`` -> ``["a", "b", "c"]``; an empty name is an error."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of column names.")
    return names


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}.") from None


def fraction(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1.")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1.")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0.")
    return value


VAL_SPLIT = Option(
    "--val-split",
    "hold out this fraction of the training data for validation when no validation data is given",
    fraction,
    metavar="FRACTION",
)


def data_kwargs(options: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The options named ``names`` that were given (``None`` means: the constructor's default)."""
    return {name: options[name] for name in names if options.get(name) is not None}


def loader_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return data_kwargs(options, ("batch_size", "num_workers", "val_split"))


def task_kwargs(options: dict[str, Any], **extra: Any) -> dict[str, Any]:
    kwargs = {"backbone": options["backbone"], **extra}
    for name in ("optimizer", "lr_scheduler"):
        if options.get(name) is not None:
            kwargs[name] = options[name]
    if isinstance(options.get("lr"), float):
        kwargs["learning_rate"] = options["lr"]
    return kwargs


def file_kind(path: str, what: str) -> str:
    suffix = Path(path).suffix.lower()
    kinds = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if suffix not in kinds:
        raise ValueError(f"{what} {path!r}: use a .csv, .json, .jsonl or .parquet file.")
    return kinds[suffix]


def one_or_many(names: list[str]) -> str | list[str]:
    """One column name as a string, several as a list (what the data constructors take)."""
    return names[0] if len(names) == 1 else names


def read_table(path: str) -> Any:
    """A CSV, JSON (lines) or Parquet file as a pandas data frame."""
    from flash.core.data.tables import read_table as read

    file_kind(path, "Input file")
    if not Path(path).is_file():
        raise FileNotFoundError(f"No file at {path}.")
    return read(path, "input")


BATCH_SIZE = Option(
    "--batch-size", "items per batch (default: the data module's, 32)", positive_int, metavar="N"
)
NUM_WORKERS = Option(
    "--num-workers",
    "data loader processes (default: none on 1-2 CPU cores, more on bigger machines)",
    non_negative_int,
    metavar="N",
)

LOADING = (VAL_SPLIT, BATCH_SIZE, NUM_WORKERS)
"""The loader options most families end their option list with."""


def split_options(
    name: str, train: str, val: str, test: str, *, metavar: str = "DIR", val_aliases: tuple[str, ...] = ()
) -> tuple[Option, Option, Option]:
    """The path options ``--train-<name>``, ``--val-<name>`` and ``--test-<name>`` with their help texts."""
    return (
        Option(f"--train-{name}", train, kind="path", metavar=metavar),
        Option(f"--val-{name}", val, kind="path", aliases=val_aliases, metavar=metavar),
        Option(f"--test-{name}", test, kind="path", metavar=metavar),
    )


def fields_option(flag: str, help: str, aliases: tuple[str, ...] = ()) -> Option:
    """An option naming columns, comma-separated (``--target-fields a,b``)."""
    return Option(flag, help, fields, kind="fields", aliases=aliases, metavar="COLUMNS")


def target_fields_option(help: str) -> Option:
    """``--target-fields`` (alias ``--target-field``): the label or target column(s)."""
    return fields_option("--target-fields", help, aliases=("--target-field",))


DOMAINS: dict[str, DomainSpec] = {}
"""Every registered domain by name, in listing order."""


def register_domain(spec: DomainSpec) -> DomainSpec:
    """Make ``spec`` a ``flash finetune``/``flash predict`` domain (a name registered twice warns, the later wins)."""
    if not isinstance(spec, DomainSpec):
        raise TypeError(f"register_domain takes a DomainSpec, got {type(spec).__name__}.")
    if spec.name in DOMAINS and DOMAINS[spec.name] is not spec:
        warnings.warn(
            f"The flash domain {spec.name!r} is registered twice; the later one is used.", stacklevel=2
        )
    DOMAINS[spec.name] = spec
    ordered = sorted(DOMAINS.values(), key=lambda s: s.order)
    DOMAINS.clear()
    DOMAINS.update((s.name, s) for s in ordered)
    return spec


def _load_builtin_domains() -> None:
    """Run every ``flash/<package>/cli.py`` by file path, so the packages (and torch) stay unimported."""
    root = Path(__file__).resolve().parents[1]
    for path in sorted([*root.glob("*/cli.py"), *root.glob("*/*/cli.py")]):
        name = ".".join(("flash", *path.parent.relative_to(root).parts, "cli"))
        if name in sys.modules:
            continue
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            continue
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)


def _load_installed_domains() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group="flash.domains"):
        try:
            entry.load()
        except Exception as error:  # a broken plug-in must not break the flash command
            warnings.warn(f"The flash domain plug-in {entry.name!r} failed to load: {error}", stacklevel=2)


def output_choices() -> list[str]:
    """Every ``flash predict --output`` kind some registered domain offers."""
    return sorted({kind for spec in DOMAINS.values() for kind in spec.outputs})


def domain_of_task(task: Any) -> DomainSpec:
    """The spec of a loaded task's domain (``task.domain``)."""
    name = getattr(task, "domain", None)
    if name not in DOMAINS:
        raise ValueError(f"{type(task).__name__} has domain {name!r}, which the flash command does not know.")
    return DOMAINS[name]


_load_builtin_domains()
_load_installed_domains()
