"""The toy domain of the ``flash`` command tests, and a ``flash`` that has it (``python toy_cli.py ARGS``).

With ``TOY_HANG_AT_EPOCH=N`` and ``TOY_MARKER=FILE``, the run writes FILE when epoch N (counted
from 0) starts and then waits there, so a test can stop or kill it at a known point.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flash.cli.domains import DomainSpec, Option, positive_int
from toy import ToyClassifier, toy_data


class HangingToyClassifier(ToyClassifier):
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        hang_at = os.environ.get("TOY_HANG_AT_EPOCH")
        if hang_at is not None and self.current_epoch == int(hang_at):
            Path(os.environ["TOY_MARKER"]).write_text(str(self.current_epoch))
            time.sleep(600)


def _toy_data(options):
    data = toy_data(n=options["rows"], batch_size=options.get("batch_size") or 16)
    if options.get("no_val"):
        data.splits["val"] = None
    return data


def _toy_task(options, data):
    kwargs = {"learning_rate": options["lr"]} if isinstance(options.get("lr"), float) else {}
    return HangingToyClassifier(num_classes=data.num_classes, **kwargs)


TOY = DomainSpec(
    name="toy",
    summary="a tiny generated data set",
    package="toy",
    default_backbone="toy",
    default_strategy="no_freeze",
    options=(
        Option("--rows", "training rows", positive_int, metavar="N"),
        Option("--batch-size", "items per batch", positive_int, metavar="N"),
        Option("--no-val", "no validation data", kind="flag"),
    ),
    build_data=_toy_data,
    build_task=_toy_task,
    required=(("rows",),),
    example="flash finetune toy --rows 64",
)

if __name__ == "__main__":
    from flash import cli
    from flash.cli.domains import register_domain

    register_domain(TOY)
    sys.exit(cli.main(sys.argv[1:]))
