"""A template task: a new task family added to flash without editing flash.

``SignalClassifier`` classifies 1-D signals (lists of numbers of any length). Everything a task
family needs is in this one file, in the order ``docs/architecture.md`` walks through it:

1. the data: :class:`SignalData`, a :class:`~flash.core.data.datamodule.DataModule` whose
   constructor reduces a CSV file to :class:`~flash.core.data.datamodule.Split` objects with the
   core label funnel (:class:`~flash.core.data.datamodule.LabelEncoder`, ``split_off_validation``);
2. the task: :class:`SignalClassifier`, a :class:`~flash.core.model.classification.ClassificationTask`
   with a backbone of blocks (so every finetuning strategy works) and the task contract: what
   its inputs are and how to decode them from JSON or uploaded files, what its outputs are
   (one new kind, ``"top2"``) and how they become JSON, and its example input for export;
3. its command-line part: :data:`SIGNAL`, a :class:`~flash.cli.domains.DomainSpec` registered
   with :func:`~flash.cli.domains.register_domain`, giving ``flash finetune signal`` and
   ``flash predict`` on files of signals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from flash.cli.domains import (
    BATCH_SIZE,
    VAL_SPLIT,
    DomainSpec,
    Option,
    data_kwargs,
    loader_kwargs,
    register_domain,
    task_kwargs,
)
from flash.core.data.datamodule import DataModule, LabelEncoder, Split, split_off_validation
from flash.core.model.classification import ClassificationTask

SIGNAL_LENGTH = 32
"""Every signal is resampled to this many points."""


def as_signal(values: Any, what: str = "The signal") -> np.ndarray:
    """A sequence of at least two finite numbers, resampled to :data:`SIGNAL_LENGTH` points."""
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise ValueError(f"{what} must be a list of numbers, got {type(values).__name__}.")
    if any(isinstance(v, bool) or not isinstance(v, int | float | np.number) for v in values):
        raise ValueError(f"{what} must hold only numbers.")
    signal = np.asarray(values, dtype=np.float64)
    if signal.ndim != 1 or len(signal) < 2:
        raise ValueError(f"{what} needs at least two numbers.")
    if not np.isfinite(signal).all():
        raise ValueError(f"{what} holds NaN or infinite values.")
    positions = np.linspace(0, len(signal) - 1, SIGNAL_LENGTH)
    return np.interp(positions, np.arange(len(signal)), signal).astype(np.float32)


def parse_signal(text: str, what: str) -> np.ndarray:
    """Numbers separated by spaces or commas."""
    try:
        numbers = [float(token) for token in re.split(r"[\s,]+", text.strip()) if token]
    except ValueError:
        raise ValueError(f"{what} holds something that is not a number.") from None
    return as_signal(numbers, what)


class SignalItems(Dataset):
    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input": torch.from_numpy(self.split.inputs[index]).unsqueeze(0)}
        if self.split.targets is not None:
            item["target"] = torch.as_tensor(self.split.targets[index])
        return item


# -- 1. the data -----------------------------------------------------------------------------------
class SignalData(DataModule):
    """Signals with class labels, from CSV files with a ``signal`` column (numbers separated by
    spaces) and a ``label`` column."""

    @classmethod
    def from_csv(
        cls,
        train_file: str | Path,
        val_file: str | Path | None = None,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> SignalData:
        train_signals, train_labels = cls._read(train_file)
        encoder = LabelEncoder.fit(train_labels, what="train")
        train = Split(train_signals, encoder.encode(train_labels, "train"))
        val = None
        if val_file is not None:
            val_signals, val_labels = cls._read(val_file)
            val = Split(val_signals, encoder.encode(val_labels, "val"))
        elif val_split is not None:
            train, val = split_off_validation(train, val_split, kwargs.get("seed", 42))
        return cls(train, val, labels=encoder.labels, **kwargs)

    @staticmethod
    def _read(path: str | Path) -> tuple[list[np.ndarray], list[Any]]:
        frame = pd.read_csv(path)
        missing = {"signal", "label"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(sorted(missing))}.")
        signals = [
            parse_signal(str(text), f"Row {row} of {path}") for row, text in enumerate(frame["signal"])
        ]
        return signals, list(frame["label"])

    def make_dataset(self, split: Split, stage: str) -> Dataset:
        return SignalItems(split)


# -- 2. the task -----------------------------------------------------------------------------------
class SignalBackbone(nn.Module):
    """Three 1-D convolution stages (the blocks the finetuning strategies count) and a pooling."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stages = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv1d(1 if i == 0 else width, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU()
                )
                for i in range(3)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).mean(dim=-1)


class SignalClassifier(ClassificationTask):
    """Classify 1-D signals; ``predict`` takes a list of numbers or a list of such lists."""

    domain = "signal"
    outputs = ("labels", "probabilities", "logits", "top2")
    serve_outputs = ("labels", "top2")
    output_fields = {**ClassificationTask.output_fields, "top2": "top2"}
    input_description = "a list of at least two numbers (a signal of any length)"
    input_schema = {"type": "array", "items": {"type": "number"}, "minItems": 2}

    def __init__(
        self,
        num_classes: int,
        labels: Sequence[Any] | None = None,
        backbone: str = "conv",
        width: int = 16,
        **kwargs: Any,
    ) -> None:
        if backbone != "conv":
            raise ValueError(f"Unknown signal backbone {backbone!r}. Choose conv.")
        self.save_hyperparameters()
        body = SignalBackbone(width)
        super().__init__(
            body,
            nn.Linear(width, num_classes),
            num_classes=num_classes,
            labels=labels,
            backbone_blocks=list(body.stages),
            **kwargs,
        )

    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        single = (
            isinstance(inputs, Sequence | np.ndarray)
            and len(inputs) > 0
            and not isinstance(inputs[0], Sequence | np.ndarray)
        )
        rows = [inputs] if single else list(inputs)
        if not rows:
            raise ValueError("Nothing to predict: the list of signals is empty.")
        signals = [as_signal(row, f"Signal {i}") for i, row in enumerate(rows)]
        return SignalItems(Split(signals)), single

    def format_output(self, output: torch.Tensor, kind: str) -> list[Any]:
        if kind != "top2":
            return super().format_output(output, kind)
        scores, indices = self.probabilities(output).topk(min(2, self.num_classes), dim=-1)
        return [
            [{"label": self.class_name(i), "score": s} for i, s in zip(row_indices, row_scores)]
            for row_indices, row_scores in zip(indices.tolist(), scores.tolist())
        ]

    def decode_serve_input(self, value: Any) -> np.ndarray:
        return as_signal(value)

    def decode_serve_file(self, data: bytes, filename: str = "") -> np.ndarray:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("A signal file must be UTF-8 text of numbers.") from None
        return parse_signal(text, f"The file {filename or 'uploaded'}")

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 1, SIGNAL_LENGTH, generator=generator, device=self.device)


# -- 3. its command-line part ------------------------------------------------------------------------
def _signal_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    """Each input is a text file with one signal a line."""
    names: list[str] = []
    signals: list[list[float]] = []
    for item in inputs:
        lines = [line for line in Path(item).read_text(encoding="utf-8").splitlines() if line.strip()]
        for row, line in enumerate(lines):
            names.append(f"{item}:{row}")
            signals.append(parse_signal(line, f"Line {row + 1} of {item}").tolist())
    return names, signals


SIGNAL = register_domain(
    DomainSpec(
        name="signal",
        summary="signal classification from a CSV file of signals and labels",
        package="template_task",
        default_backbone="conv",
        default_strategy="freeze_unfreeze",
        options=(
            Option("--train-file", "CSV file with signal and label columns", kind="path", metavar="FILE"),
            Option("--val-file", "validation CSV file, same columns", kind="path", metavar="FILE"),
            VAL_SPLIT,
            BATCH_SIZE,
        ),
        build_data=lambda options: SignalData.from_csv(
            **data_kwargs(options, ("train_file", "val_file")), **loader_kwargs(options)
        ),
        build_task=lambda options, data: SignalClassifier(
            num_classes=data.num_classes, labels=data.labels, **task_kwargs(options)
        ),
        predict_inputs=_signal_inputs,
        predict_help="text files of signals, one a line",
        outputs=("labels", "probabilities", "top2"),
        required=(("train_file",),),
        example="flash finetune signal --train-file signals.csv --val-split 0.25",
    )
)


def make_signals(n: int, seed: int) -> tuple[list[list[float]], list[str]]:
    """Rising and falling ramps of random lengths with noise: easy to tell apart."""
    rng = np.random.default_rng(seed)
    signals, labels = [], []
    for i in range(n):
        length = int(rng.integers(12, 48))
        ramp = np.linspace(-1, 1, length) * (1 if i % 2 == 0 else -1)
        signals.append((ramp + rng.normal(scale=0.2, size=length)).round(4).tolist())
        labels.append("rising" if i % 2 == 0 else "falling")
    return signals, labels


def write_signals_csv(path: Path, n: int, seed: int) -> Path:
    signals, labels = make_signals(n, seed)
    pd.DataFrame({"signal": [" ".join(map(str, s)) for s in signals], "label": labels}).to_csv(
        path, index=False
    )
    return path
