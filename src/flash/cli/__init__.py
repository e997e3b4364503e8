"""The ``flash`` command (also ``python -m flash``).

``flash finetune image|text|tabular``, ``flash predict``, ``flash backbones``, ``flash demo``,
``flash serve`` and ``flash export``; ``flash COMMAND --help`` shows every option and its default.
Heavy libraries are imported only when a command runs, so help and argument errors are quick.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flash.cli.domains import DOMAINS, Option, positive_int
from flash.cli.finetune import add_finetune_parser, add_option, config_argv, run_finetune
from flash.cli.flash_zero import is_flash_zero, translate
from flash.cli.format import FORMATS, format_rows
from flash.cli.predict import ACCELERATOR, add_predict_parser, run_predict

USER_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError, ImportError)
"""Errors that flash raises about the user's input: shown as one line, no traceback."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless it has none or the help already names it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
            and (action.option_strings or action.nargs in ("?", "*"))
        ):
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """Errors as two short lines (the problem, then where the options are), not the full usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")


def _module_exists(name: str) -> bool:
    """Whether module ``name`` is installed, without importing it or (for flash's own modules,
    whose packages import torch) its parent packages: help and argument errors stay quick."""
    package, _, rest = name.partition(".")
    if package == "flash" and rest:
        base = Path(__file__).parents[1].joinpath(*rest.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The ``flash`` argument parser with every subcommand."""
    from flash import __version__

    parser = ArgumentParser(
        prog="flash",
        description="Finetune pretrained models on small data sets, predict, serve and export them.",
        formatter_class=HelpFormatter,
        epilog="Run `flash COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"flash {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_finetune_parser(functools.partial(_add_command, commands))
    add_predict_parser(functools.partial(_add_command, commands))
    _add_backbones_parser(commands)
    for spec in DOMAINS.values():
        for command in spec.commands:
            command.configure(_add_command(commands, command.name, command.help, command.description))
    if _module_exists("flash.core.deploy.serve"):
        _add_serve_parser(commands)
    if _module_exists("flash.core.deploy.export"):
        _add_export_parser(commands)
    return parser


def _add_command(commands: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A ``flash`` subcommand's parser, showing each option's default in its help."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=description, formatter_class=HelpFormatter
    )
    return parser


# -- flash backbones ------------------------------------------------------------------------------
def _add_backbones_parser(commands: Any) -> None:
    parser = _add_command(
        commands,
        "backbones",
        "list the backbones of each task and which work offline",
        "List the named backbones of a domain; 'offline' ones ship their weights in an installed package.",
    )
    parser.add_argument("domain", nargs="?", choices=list(DOMAINS), help="only this domain (default: all)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="how to print the list")


def backbone_rows(domain: str) -> list[dict[str, Any]]:
    """The registered backbones of ``domain``: name, offline, description."""
    from flash.core.model.registry import BackboneRegistry

    spec = DOMAINS[domain]
    modules = [spec.import_package()]
    if _module_exists(f"{spec.package}.backbones"):
        modules.insert(0, importlib.import_module(f"{spec.package}.backbones"))
    registries: list[BackboneRegistry] = []
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, BackboneRegistry) and all(value is not r for r in registries):
                registries.append(value)
    rows: list[dict[str, Any]] = []
    for registry in registries:
        for entry in registry.describe():
            if all(entry["name"] != row["backbone"] for row in rows):
                rows.append(
                    {
                        "domain": domain,
                        "backbone": entry["name"],
                        "offline": "yes" if entry["offline"] else "no (downloads weights)",
                        "default": "default" if entry["name"] == spec.default_backbone else "",
                        "description": entry["description"],
                    }
                )
    return rows


def run_backbones(args: argparse.Namespace) -> int:
    domains = [args.domain] if args.domain else list(DOMAINS)
    rows: list[dict[str, Any]] = []
    failures = []
    for domain in domains:
        try:
            rows.extend(backbone_rows(domain))
        except ImportError as error:
            failures.append(f"{domain}: not available ({error})")
    if args.format != "table":
        for row in rows:
            row["offline"] = row["offline"] == "yes"
            row["default"] = row["default"] == "default"
    print(format_rows(rows, args.format, ["domain", "backbone", "offline", "default", "description"]))
    for failure in failures:
        print(failure, file=sys.stderr)
    if args.format == "table":
        print(
            "\nOther names work too: timm and torchvision model names (image), Hugging Face model ids or "
            "local model folders (text); their weights download when a network is there."
        )
    return 1 if failures and not rows else 0


# -- flash serve / flash export -------------------------------------------------------------------
SERVE_OPTIONS = (
    Option("--max-body-bytes", "larger requests get 413", positive_int, 16 * 1024 * 1024, metavar="N"),
    Option(
        "--max-batch-size",
        "inputs of concurrent requests run together up to this many",
        positive_int,
        32,
        metavar="N",
    ),
    Option("--max-wait-ms", "how long a request waits for others to batch with", float, 5.0, metavar="MS"),
    Option(
        "--max-queue-size", "requests waiting for the model; more get 503", positive_int, 1024, metavar="N"
    ),
    Option("--max-inputs-per-request", "requests with more inputs get 422", positive_int, 256, metavar="N"),
    Option(
        "--max-image-pixels",
        "larger images (size read from the file header) get 422 before they are decoded",
        positive_int,
        50_000_000,
        metavar="N",
    ),
    Option(
        "--max-request-pixels",
        "requests whose images, resized for the model, hold more pixels get 422",
        positive_int,
        64_000_000,
        metavar="N",
    ),
    Option(
        "--body-timeout",
        "seconds a request's body may take to arrive; slower ones get 408",
        float,
        60.0,
        metavar="S",
    ),
    Option(
        "--header-timeout",
        "seconds a request's headers may take to arrive; slower connections are closed",
        float,
        10.0,
        metavar="S",
    ),
    Option(
        "--max-connections",
        "open connections allowed (default: below the process's open-file limit)",
        positive_int,
        metavar="N",
    ),
)
"""The limits of ``flash serve``: one option per field of flash.core.deploy.serve_options.ServeOptions,
with its default mirrored so that `flash --help` need not import the web stack (a test keeps them equal)."""


def _add_serve_parser(commands: Any) -> None:
    parser = _add_command(
        commands,
        "serve",
        "serve a saved model over HTTP",
        (
            'Serve a checkpoint: GET /health, POST /predict with {"inputs": [...]} (or {"instances": [...]}), '
            "the OpenAPI schema at /openapi.json and /docs. Concurrent requests are batched. Prints the "
            "address it listens on; Ctrl-C stops it."
        ),
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the model file (model.ckpt of a run)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    add_option(parser, ACCELERATOR)
    for option in SERVE_OPTIONS:
        add_option(parser, option)
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="server log level",
    )


def run_serve(args: argparse.Namespace) -> int:
    from flash.core.utils.extras import require_extra

    require_extra("serve", "flash serve")
    from flash.core.deploy.serve import serve

    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"No checkpoint at {args.checkpoint}.")
    serve(
        args.checkpoint,
        host=args.host,
        port=args.port,
        device=args.accelerator,
        log_level=args.log_level,
        **{option.dest: getattr(args, option.dest) for option in SERVE_OPTIONS},
    )
    return 0


def _add_export_parser(commands: Any) -> None:
    parser = _add_command(
        commands,
        "export",
        "export a saved model to ONNX",
        (
            "Export a checkpoint's model to ONNX: the preprocessed batch in, logits and probabilities out, "
            "with a dynamic batch axis; checked against PyTorch with onnxruntime unless --no-check."
        ),
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the model file (model.ckpt of a run)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    parser.add_argument(
        "--out", metavar="PATH", help="output file (default: the checkpoint's path with .onnx)"
    )
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="torch's ONNX exporter: auto tries dynamo, then torchscript",
    )
    parser.add_argument(
        "--opset", type=positive_int, metavar="N", help="ONNX opset (default: the exporter's)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")


def run_export(args: argparse.Namespace) -> int:
    from flash.core.utils.extras import require_extra

    require_extra("export", "flash export")
    from flash.core.deploy.export import export_onnx

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"No checkpoint at {checkpoint}.")
    out = Path(args.out) if args.out else checkpoint.with_suffix(".onnx")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it, or another --out.")
    written = export_onnx(
        checkpoint, out, exporter=args.exporter, opset_version=args.opset, check=not args.no_check
    )
    checked = "" if args.no_check else " (checked against PyTorch with onnxruntime)"
    print(f"ONNX model written to {written}{checked}")
    return 0


# -- entry point ----------------------------------------------------------------------------------
RUNNERS = {
    "predict": lambda args, parser: run_predict(args),
    "backbones": lambda args, parser: run_backbones(args),
    "serve": lambda args, parser: run_serve(args),
    "export": lambda args, parser: run_export(args),
}


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flash`` command; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    debug = "--debug" in argv or os.environ.get("FLASH_DEBUG", "") not in ("", "0")
    if is_flash_zero(argv):
        try:
            argv = translate(argv)
        except ValueError as error:
            parser.exit(2, f"flash: error: {error}\n")
        print(f"Lightning Flash Zero command; running: flash {' '.join(argv)}", file=sys.stderr)
    command = list(argv)  # as given (Flash Zero's translated): the command that reproduces the run
    command_at = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    try:
        if command_at is not None and argv[command_at] == "finetune":
            head, rest = argv[:command_at], argv[command_at:]
            rest, config = config_argv(rest)
            if config is not None:
                _subparser(parser, "finetune", rest[1]).set_defaults(**config)
            argv = head + rest
    except USER_ERRORS as error:
        parser.exit(2, f"flash finetune: error: {error}\n")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "finetune" and args.domain is None:
        finetune = _subparser(parser, "finetune")
        finetune.error(f"name a domain ({', '.join(DOMAINS)}) or pass --config FILE")
    try:
        with command_messages(quiet=bool(getattr(args, "quiet", False))):
            if args.command == "finetune":
                return run_finetune(args, _subparser(parser, "finetune", args.domain), command)
            if args.command in RUNNERS:
                return RUNNERS[args.command](args, parser)
            return next(c for s in DOMAINS.values() for c in s.commands if c.name == args.command).run(args)
    except BrokenPipeError:  # e.g. `flash predict ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"flash {args.command}: error: {_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        detail = f": {error}" if str(error) else ""
        print(f"flash {args.command}: interrupted{detail}", file=sys.stderr)
        return 130


@contextlib.contextmanager
def command_messages(quiet: bool) -> Iterator[None]:
    """What a command shows on stderr: flash's own lines and warnings, not library chatter.

    Lightning's informational log lines and the libraries' deprecation notices (nothing a
    command's user can act on) are hidden; other warnings print as one ``warning: ...`` line. ``quiet`` hides warnings
    and progress bars too. Everything is put back afterwards.
    """
    from flash.core.utils.progress import is_quiet
    from flash.core.utils.progress import quiet as quiet_mode

    quiet = quiet or is_quiet()
    with warnings.catch_warnings(), quiet_mode(quiet):
        loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        if quiet:
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _message(error: BaseException) -> str:
    from flash.core.utils.extras import MissingExtraError

    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = text.strip() or type(error).__name__
    return (
        text
        if isinstance(error, ValueError | FileNotFoundError | FileExistsError | MissingExtraError)
        else f"{type(error).__name__}: {text}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
