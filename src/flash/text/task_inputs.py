"""What every text task shares at its edges: texts in (strings, lists, files, data frames), tokens,
length-sorted prediction, JSON inputs, an example batch and the tokenizer for export."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from flash.core.data.tables import TABLE_SUFFIXES, read_lines, read_table
from flash.core.model.registry import Backbone
from flash.core.utils.validation import check_int
from flash.text.backbones import TEXT_BACKBONES
from flash.text.preprocessing import TextPreprocessing
from flash.text.tokenization import PadCollate, TokenizedTexts, pad_batch, tokenize

PREDICT_FILE_SUFFIXES = (*TABLE_SUFFIXES, ".txt")


def build_text_backbone(backbone: str, pretrained: bool, pooling: str, max_length: int) -> Backbone:
    """Backbone ``backbone`` pooled by ``pooling``, refusing a ``max_length`` beyond what it takes."""
    check_int(max_length, "max_length", 2)
    built = TEXT_BACKBONES.build(backbone, pretrained=pretrained, pooling=pooling)
    limit = built.preprocessing["model_max_length"]
    if max_length > limit:
        raise ValueError(
            f"max_length={max_length} exceeds what backbone {backbone!r} takes ({limit} tokens)."
        )
    return built


class TextTaskInputs:
    """Mixin for tasks whose input is one text (classification, embedding).

    It implements the task contract's input side (:meth:`predict_dataset`, :meth:`collate_fn`,
    length-sorted :meth:`predict_outputs`, :meth:`decode_serve_input`, :meth:`example_input`) and
    the tokenizer in :meth:`export_metadata`. A task calls :meth:`use_text_backbone` once its
    backbone is built.
    """

    tokenizer: Any
    max_length: int
    input_field: str | None
    backbone_name: str

    def use_text_backbone(
        self, built: Backbone, backbone: str, max_length: int, input_field: str | None
    ) -> None:
        """Keep the backbone's tokenizer, the token limit and the text column."""
        self.backbone_name = backbone
        self.max_length = max_length
        self.tokenizer = built.preprocessing["tokenizer"]
        self.preprocessing = TextPreprocessing(max_length, backbone)
        self.input_field = input_field

    def attach_input_field(self, input_field: str) -> None:
        """Remember the training data's text column (saved in checkpoints)."""
        self.input_field = input_field
        self.hparams["input_field"] = input_field

    # -- preprocessing ------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of ``texts``, cut to :attr:`max_length`."""
        return tokenize(texts, self.tokenizer, self.max_length)

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return PadCollate(self.tokenizer.pad_token_id)

    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        if isinstance(inputs, TokenizedTexts):
            return inputs, False
        texts, single = self.texts_of(inputs)
        return TokenizedTexts(self.tokenize(texts)), single

    def texts_of(self, inputs: Any, encoding: str = "utf-8") -> tuple[list[str], bool]:
        """The texts of ``inputs`` and whether it was a single text.

        Accepted: a string (a text, or the path of an existing ``.csv``, ``.tsv``, ``.json``,
        ``.jsonl``, ``.parquet`` or ``.txt`` file), a :class:`pathlib.Path`, a list of strings,
        a pandas Series, or a DataFrame (its :attr:`input_field` column). Text files are read with
        ``encoding``.
        """
        if isinstance(inputs, os.PathLike) or (isinstance(inputs, str) and _names_a_file(inputs)):
            return self._texts_of_file(Path(inputs), encoding), False
        if isinstance(inputs, str):
            return [_checked_text(inputs, "The text")], True
        if isinstance(inputs, pd.DataFrame):
            column = self._text_column(inputs, "data frame")
            return [
                _checked_text(t, f"Row {i} of the data frame") for i, t in enumerate(inputs[column])
            ], False
        if isinstance(inputs, pd.Series | np.ndarray):
            inputs = list(inputs)
        if isinstance(inputs, Sequence) and not isinstance(inputs, bytes):
            if len(inputs) == 0:
                raise ValueError("No texts to predict on: the list is empty.")
            return [_checked_text(t, f"Item {i} of the inputs") for i, t in enumerate(inputs)], False
        raise TypeError(
            f"{type(self).__name__} predicts on a string, a list of strings, a file (.csv, .tsv, .json, .jsonl, "
            f".parquet, .txt) or a data frame; got {type(inputs).__name__}."
        )

    def _texts_of_file(self, path: Path, encoding: str = "utf-8") -> list[str]:
        suffix = path.suffix.lower()
        if suffix not in PREDICT_FILE_SUFFIXES:
            raise ValueError(f"Cannot read texts from {path}: use a {', '.join(PREDICT_FILE_SUFFIXES)} file.")
        if suffix == ".txt":
            texts = read_lines(path, "predict", encoding)
        else:
            frame = read_table(path, "predict", encoding, text_field=self.input_field)
            column = self._text_column(frame, f"file {path.name}")
            texts = [_checked_text(t, f"Row {i} of {path.name}") for i, t in enumerate(frame[column])]
        if not texts:
            raise ValueError(f"The predict file {path} holds no texts.")
        return texts

    def _text_column(self, frame: pd.DataFrame, what: str) -> str:
        if self.input_field is not None and self.input_field in frame.columns:
            return self.input_field
        text_columns = [c for c in frame.columns if _holds_text(frame[c])]
        if self.input_field is None and len(text_columns) == 1:
            return str(text_columns[0])
        expected = f"column {self.input_field!r}" if self.input_field else "a single text column"
        raise ValueError(
            f"The {what} has no {expected}; its columns are: {', '.join(map(str, frame.columns))}. "
            "Rename the text column, or pass the texts as a list."
        )

    def predict_outputs(
        self, inputs: Any, kinds: Sequence[str], batch_size: int = 32, num_workers: int = 0
    ) -> tuple[list[dict[str, Any]], bool]:
        """As :meth:`flash.core.model.task.Task.predict_outputs`, with texts batched by length."""
        texts, single = self.texts_of(inputs)
        by_length = TokenizedTexts.sorted_by_length(self.tokenize(texts))
        rows, _ = super().predict_outputs(by_length, kinds, batch_size, num_workers)
        in_order: list[dict[str, Any]] = [{}] * len(texts)
        for position, source in enumerate(by_length.order):
            in_order[int(source)] = rows[position]
        return in_order, single

    # -- serving and export -------------------------------------------------------------------------
    def decode_serve_input(self, value: Any) -> str:
        """One JSON value of a serving request: a non-empty string."""
        if not isinstance(value, str):
            raise ValueError(f"Each text input must be a JSON string, got {type(value).__name__}.")
        if not value.strip():
            raise ValueError("A text input is empty; send a non-empty string.")
        return value

    input_description = "a string"
    input_schema = {"type": "string", "minLength": 1}

    def export_metadata(self) -> dict[str, Any]:
        """The token limit and the tokenizer (``tokenizer.json`` of a fast tokenizer), so that the
        exported file can be used on its own."""
        meta = super().export_metadata()
        meta["preprocessing"] = {
            "max_length": self.max_length,
            "tokenizer": {
                "name_or_path": str(getattr(self.tokenizer, "name_or_path", "")),
                "pad_token_id": self.tokenizer.pad_token_id,
            },
        }
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "to_str"):
            meta["tokenizer_json"] = backend.to_str()
        return meta

    def example_input(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        """A padded batch as :meth:`forward` receives it: ``{"input_ids", "attention_mask"}``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        samples = ["A short example.", "A somewhat longer example sentence, to show padding at work."]
        texts = [samples[i % len(samples)] for i in range(batch_size)]
        batch = pad_batch(self.tokenize(texts), self.tokenizer.pad_token_id)
        return {name: tensor.to(self.device) for name, tensor in batch.items()}


def _names_a_file(text: str) -> bool:
    if "\n" in text or len(text) > 4096 or Path(text).suffix.lower() not in PREDICT_FILE_SUFFIXES:
        return False
    try:
        return Path(text).expanduser().is_file()
    except OSError:
        return False


def _checked_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise ValueError(f"{what} has no text.")
        raise TypeError(f"{what} must be a string, got {type(value).__name__}.")
    if not value.strip():
        raise ValueError(f"{what} is empty; give each input some text.")
    return value


def _holds_text(column: pd.Series) -> bool:
    """A column of strings: object dtype (pandas 2) or the string dtype (pandas 3 reads text as it)."""
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)
