"""The ``flash`` command (also ``python -m flash``).

``flash finetune image|text|tabular``, ``flash predict``, ``flash backbones``, ``flash demo``,
``flash serve`` and ``flash export``; ``flash COMMAND --help`` shows every option and its default.
Heavy libraries are imported only when a command runs, so help and argument errors are quick.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flash.cli.domains import DOMAINS, positive_int
from flash.cli.finetune import add_finetune_parser, config_argv, run_finetune
from flash.cli.flash_zero import is_flash_zero, translate
from flash.cli.format import FORMATS, format_rows
from flash.cli.predict import ACCELERATORS, add_predict_parser, run_predict

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
    add_finetune_parser(commands, HelpFormatter)
    add_predict_parser(commands, HelpFormatter)
    _add_backbones_parser(commands)
    for spec in DOMAINS.values():
        for command in spec.commands:
            command.configure(
                commands.add_parser(
                    command.name,
                    help=command.help,
                    description=command.description,
                    formatter_class=HelpFormatter,
                )
            )
    if _module_exists("flash.core.deploy.serve"):
        _add_serve_parser(commands)
    if _module_exists("flash.core.deploy.export"):
        _add_export_parser(commands)
    return parser


# -- flash backbones ------------------------------------------------------------------------------
def _add_backbones_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "backbones",
        help="list the backbones of each task and which work offline",
        description="List the named backbones of a domain; 'offline' ones ship their weights in an installed package.",
        formatter_class=HelpFormatter,
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
SERVE_DEFAULTS = {
    "max_body_bytes": 16 * 1024 * 1024,
    "max_batch_size": 32,
    "max_wait_ms": 5.0,
    "max_inputs_per_request": 256,
    "max_image_pixels": 50_000_000,
    "max_request_pixels": 64_000_000,
    "header_timeout": 10.0,
    "body_timeout": 60.0,
}
"""flash.core.deploy.serve's defaults, mirrored so that `flash --help` need not import the web stack."""


def _add_serve_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a saved model over HTTP",
        description=(
            'Serve a checkpoint: GET /health, POST /predict with {"inputs": [...]}, the OpenAPI schema '
            "at /openapi.json and /docs. Concurrent requests are batched. Stop with Ctrl-C."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the model file (model.ckpt of a run)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=SERVE_DEFAULTS["max_body_bytes"],
        metavar="N",
        help="larger requests get 413",
    )
    parser.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=SERVE_DEFAULTS["max_batch_size"],
        metavar="N",
        help="inputs of concurrent requests run together up to this many",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=SERVE_DEFAULTS["max_wait_ms"],
        metavar="MS",
        help="how long a request waits for others to batch with",
    )
    parser.add_argument(
        "--max-inputs-per-request",
        type=positive_int,
        default=SERVE_DEFAULTS["max_inputs_per_request"],
        metavar="N",
        help="requests with more inputs get 422",
    )
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="where the model runs: auto (a GPU when there is one), cpu or gpu",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=SERVE_DEFAULTS["max_image_pixels"],
        metavar="N",
        help="larger images (size read from the file header) get 422 before they are decoded",
    )
    parser.add_argument(
        "--max-request-pixels",
        type=positive_int,
        default=SERVE_DEFAULTS["max_request_pixels"],
        metavar="N",
        help="requests whose images, resized for the model, hold more pixels get 422",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=SERVE_DEFAULTS["header_timeout"],
        metavar="S",
        help="seconds a request's headers may take to arrive; slower connections are closed",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=SERVE_DEFAULTS["body_timeout"],
        metavar="S",
        help="seconds a request's body may take to arrive; slower ones get 408",
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=None,
        metavar="N",
        help="open connections allowed (default: below the process's open-file limit)",
    )
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
        max_body_bytes=args.max_body_bytes,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_inputs_per_request=args.max_inputs_per_request,
        device=args.accelerator,
        max_image_pixels=args.max_image_pixels,
        max_request_pixels=args.max_request_pixels,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        log_level=args.log_level,
    )
    return 0


def _add_export_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "export",
        help="export a saved model to ONNX",
        description=(
            "Export a checkpoint's model to ONNX: the preprocessed batch in, logits and probabilities out, "
            "with a dynamic batch axis; checked against PyTorch with onnxruntime unless --no-check."
        ),
        formatter_class=HelpFormatter,
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
                return run_finetune(args, _subparser(parser, "finetune", args.domain))
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
