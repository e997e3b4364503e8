"""``TextClassificationData``: texts and labels from files, data frames or lists, tokenized once."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset, Sampler

from flash.core.data.datamodule import DataModule, EpochShuffleSampler, Split
from flash.core.data.samplers import LengthGroupedBatchSampler
from flash.core.data.splits import encode_splits
from flash.core.data.tables import as_field_list, read_csv, read_json, read_parquet, require_columns
from flash.core.utils.validation import check_optional_int
from flash.text.backbones import DEFAULT_BACKBONE, load_tokenizer
from flash.text.readers import texts_of
from flash.text.tokenization import PadCollate, TokenizedTexts, tokenize

DEFAULT_MAX_LENGTH = 256
"""Tokens kept per text: the length all-MiniLM-L6-v2 was trained on."""

_STAGE_WORDS = {"train": "training", "val": "validation", "test": "test", "predict": "predict"}

Frames = dict[str, tuple[pd.DataFrame, str]]


def _file_constructor(kind: str, doc: str) -> Any:
    """A ``from_<kind>`` constructor: files of one format, read by the core table reader."""

    def constructor(
        cls: type[TextClassificationData],
        input_field: str,
        target_fields: str | Sequence[str] | None = None,
        train_file: str | Path | None = None,
        val_file: str | Path | None = None,
        test_file: str | Path | None = None,
        predict_file: str | Path | None = None,
        *,
        encoding: str = "utf-8",
        field: str | None = None,
        valid_file: str | Path | None = None,
        **options: Any,
    ) -> TextClassificationData:
        if field is not None and kind != "json":
            raise TypeError(f"field= names the key of the records in a JSON file; from_{kind} takes none.")
        read = {"csv": read_csv, "json": read_json, "parquet": read_parquet}[kind]
        extra = {
            "csv": {"encoding": encoding, "text_field": input_field},
            "json": {"encoding": encoding, "field": field},
        }
        files = _stage_files(train_file, val_file, test_file, predict_file, valid_file)
        frames = {
            stage: (read(path, _STAGE_WORDS[stage], **extra.get(kind, {})), _file_what(stage, path))
            for stage, path in files.items()
        }
        return cls._from_frames(frames, input_field, target_fields, **options)

    constructor.__name__ = constructor.__qualname__ = f"from_{kind}"
    constructor.__doc__ = doc
    return classmethod(constructor)


class TextClassificationData(DataModule):
    """Texts with one label each (or several: multi-label), for :class:`~flash.text.TextClassifier`.

    Build it with :meth:`from_csv`, :meth:`from_json`, :meth:`from_parquet`,
    :meth:`from_data_frame` or :meth:`from_lists`. Class names come from the training labels
    (sorted); a validation or test label that training never has is an error.

    Texts are tokenized once, with the tokenizer of the task the data is used with (taken when
    :class:`flash.Trainer` attaches the task; before that, ``backbone``'s). Each batch is padded
    only to its longest text; training batches group texts of similar length (shuffled every
    epoch, reproducibly), and validation and test batches are sorted by length.

    Args:
        *splits: the ``train``, ``val``, ``test`` and ``predict`` splits (texts as ``Split.inputs``),
            in that order or by name.
        input_field: the name of the text column (travels into the task, so it can read files).
        backbone: whose tokenizer to use before a task is attached (default: the default backbone).
        max_length: tokens kept per text before a task is attached (the task's own wins after).
        **options: ``labels``, ``multi_label``, ``batch_size``, ``num_workers``, ``seed``: see
            :class:`~flash.core.data.datamodule.DataModule`.
    """

    def __init__(
        self,
        *splits: Split | None,
        input_field: str = "text",
        backbone: str | None = None,
        max_length: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(*splits, **options)
        check_optional_int(max_length, "max_length", 2)
        if backbone is not None and (not isinstance(backbone, str) or not backbone):
            raise ValueError(f"backbone must be a backbone name, got {backbone!r}.")
        self.input_field = input_field
        self.backbone = backbone
        self.max_length = max_length
        self._tokenizer: Any = None
        self._tokenizer_name: str | None = None
        self._token_ids: dict[tuple[str, str, int], list[np.ndarray]] = {}

    # -- the task's tokenizer ---------------------------------------------------------------------
    def attach_task(self, task: Any) -> None:
        """Take the task's tokenizer and ``max_length``; check and share the classes.

        Training data also hands the task its text column name (saved in checkpoints).
        """
        super().attach_task(task)
        tokenizer = getattr(task, "tokenizer", None)
        if tokenizer is not None:
            name = str(getattr(task, "backbone_name", id(tokenizer)))
            if self.backbone is not None and self.backbone != name:
                warnings.warn(
                    f"The data was built with backbone={self.backbone!r} but the task uses {name!r}; "
                    "texts are tokenized with the task's tokenizer.",
                    stacklevel=2,
                )
            self._tokenizer, self._tokenizer_name = tokenizer, name
        if self.splits["train"] is not None and hasattr(task, "attach_input_field"):
            task.attach_input_field(self.input_field)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer in use: the attached task's, else ``backbone``'s (loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer_name = self.backbone or DEFAULT_BACKBONE
            self._tokenizer = load_tokenizer(self._tokenizer_name)
        return self._tokenizer

    @property
    def token_limit(self) -> int:
        """Tokens kept per text: the attached task's ``max_length``, else this data's."""
        task_limit = getattr(self.task, "max_length", None)
        return int(task_limit or self.max_length or DEFAULT_MAX_LENGTH)

    def token_ids(self, stage: str) -> list[np.ndarray]:
        """The token ids of every text of ``stage``, tokenized once per tokenizer and ``max_length``."""
        split = self.splits[stage]
        if split is None:
            raise ValueError(f"This data module has no {stage} data.")
        tokenizer = self.tokenizer
        key = (stage, str(self._tokenizer_name), self.token_limit)
        if key not in self._token_ids:
            self._token_ids[key] = tokenize(split.inputs, tokenizer, self.token_limit, _STAGE_WORDS[stage])
        return self._token_ids[key]

    def fold(self, train_indices: Sequence[int], val_indices: Sequence[int]) -> TextClassificationData:
        """A cross-validation fold (see :meth:`~flash.core.data.datamodule.DataModule.fold`); its
        texts are tokenized afresh (the token cache is keyed by stage)."""
        clone = super().fold(train_indices, val_indices)
        assert isinstance(clone, TextClassificationData)
        clone._token_ids = {}
        return clone

    # -- DataModule hooks ---------------------------------------------------------------------------
    def make_dataset(self, split: Split, stage: str) -> Dataset:
        ids = self.token_ids(stage)
        if stage in ("val", "test"):
            return TokenizedTexts.sorted_by_length(ids, split.targets)
        return TokenizedTexts(ids, split.targets)

    def collate_fn(self, stage: str) -> Callable[[list[Any]], Any]:
        return PadCollate(self.tokenizer.pad_token_id)

    def train_sampler(self, dataset: Dataset) -> Sampler[int]:
        assert isinstance(dataset, TokenizedTexts)
        return LengthGroupedBatchSampler(
            EpochShuffleSampler(len(dataset), self.seed),
            self.batch_size,
            lengths=dataset.lengths,
            seed=self.seed,
        )

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def from_data_frame(
        cls,
        input_field: str,
        target_fields: str | Sequence[str] | None = None,
        train_data_frame: pd.DataFrame | None = None,
        val_data_frame: pd.DataFrame | None = None,
        test_data_frame: pd.DataFrame | None = None,
        predict_data_frame: pd.DataFrame | None = None,
        **options: Any,
    ) -> TextClassificationData:
        """Texts in column ``input_field`` of data frames, labels in ``target_fields``.

        Args:
            input_field: the column holding the text.
            target_fields: the label column; several columns of 0/1 make the data multi-label,
                one per class (the column names are the class names).
            train_data_frame, val_data_frame, test_data_frame, predict_data_frame: the frames.
            **options: ``val_split``, ``multi_label``, ``drop_empty``, ``batch_size``,
                ``num_workers``, ``backbone``, ``max_length``, ``seed``: see :meth:`from_csv`.
        """
        frames: Frames = {}
        for stage, frame in (
            ("train", train_data_frame),
            ("val", val_data_frame),
            ("test", test_data_frame),
            ("predict", predict_data_frame),
        ):
            if frame is not None:
                if not isinstance(frame, pd.DataFrame):
                    raise TypeError(
                        f"{stage}_data_frame must be a pandas DataFrame, got {type(frame).__name__}."
                    )
                frames[stage] = (frame.reset_index(drop=True), f"{_STAGE_WORDS[stage]} data frame")
        return cls._from_frames(frames, input_field, target_fields, **options)

    from_csv = _file_constructor(
        "csv",
        """Texts and labels from CSV files (tab-separated for ``.tsv``).

        Args:
            input_field: the column holding the text.
            target_fields: the label column; several columns of 0/1 make the data multi-label.
            train_file, val_file, test_file, predict_file: the files (``valid_file`` is the same as
                ``val_file``). ``predict_file`` needs only the text column.
            encoding: the files' text encoding.
            val_split: hold out this fraction of the training rows for validation (stratified)
                when no validation file is given.
            multi_label: with one target column, read each label as a list ("a,b" or a list).
            drop_empty: drop rows without text instead of raising an error.
            batch_size: texts per batch (default 32).
            num_workers: loader processes (default: none on a small CPU).
            backbone, max_length: tokenizer and token limit before a task is attached.
            seed: seed of the training shuffle and of ``val_split``.
        """,
    )
    from_json = _file_constructor(
        "json",
        """Texts and labels from JSON files: a list of records, one record per line (JSON lines),
        or an object holding the list under the key ``field``. Other arguments as :meth:`from_csv`.
        """,
    )
    from_parquet = _file_constructor(
        "parquet",
        """Texts and labels from Parquet files (needs ``pyarrow``). Other arguments as :meth:`from_csv`.""",
    )

    @classmethod
    def from_lists(
        cls,
        train_data: Sequence[str] | None = None,
        train_targets: Sequence[Any] | None = None,
        val_data: Sequence[str] | None = None,
        val_targets: Sequence[Any] | None = None,
        test_data: Sequence[str] | None = None,
        test_targets: Sequence[Any] | None = None,
        predict_data: Sequence[str] | None = None,
        **options: Any,
    ) -> TextClassificationData:
        """Texts and labels from Python lists.

        A target that is a list or tuple of class names makes the data multi-label. Other
        arguments as :meth:`from_csv`.
        """
        frames: Frames = {}
        multi_label = options.get("multi_label")
        for stage, data, targets in (
            ("train", train_data, train_targets),
            ("val", val_data, val_targets),
            ("test", test_data, test_targets),
            ("predict", predict_data, None),
        ):
            if data is None:
                if targets is not None:
                    raise ValueError(f"{stage}_targets were given without {stage}_data.")
                continue
            what = f"{_STAGE_WORDS[stage]} data"
            if isinstance(data, str) or not isinstance(data, Sequence):
                raise TypeError(f"{stage}_data must be a list of texts, got {type(data).__name__}.")
            columns: dict[str, list[Any]] = {"text": list(data)}
            if stage != "predict":
                if targets is None:
                    raise ValueError(f"{stage}_data needs {stage}_targets: one label per text.")
                if isinstance(targets, str) or not isinstance(targets, Sequence):
                    raise TypeError(
                        f"{stage}_targets must be a list of labels, got {type(targets).__name__}."
                    )
                if len(targets) != len(data):
                    raise ValueError(
                        f"{stage}_data has {len(data)} texts but {stage}_targets has {len(targets)} labels."
                    )
                targets = list(targets)
                if multi_label is None and any(isinstance(t, list | tuple) for t in targets):
                    multi_label = True
                columns["target"] = targets
            frames[stage] = (pd.DataFrame(columns), what)
        options["multi_label"] = multi_label
        return cls._from_frames(frames, "text", "target", **options)

    @classmethod
    def _from_frames(
        cls,
        frames: Frames,
        input_field: str,
        target_fields: str | Sequence[str] | None,
        *,
        val_split: float | None = None,
        multi_label: bool | None = None,
        drop_empty: bool = False,
        seed: int = 42,
        **options: Any,
    ) -> TextClassificationData:
        if not isinstance(input_field, str) or not input_field:
            raise TypeError(f"input_field must be the name of the text column, got {input_field!r}.")
        if not frames:
            raise ValueError("No data given: pass at least one of the train, val, test or predict inputs.")
        targets = as_field_list(target_fields, "target_fields")
        labelled = [stage for stage in frames if stage != "predict"]
        if labelled and not targets:
            raise ValueError(
                f"target_fields is needed for the {', '.join(_STAGE_WORDS[s] for s in labelled)} data: "
                "name the label column(s)."
            )
        if targets is not None and input_field in targets:
            raise ValueError(f"input_field {input_field!r} is also a target field.")
        multi_columns = targets is not None and len(targets) > 1
        if multi_columns and multi_label is False:
            raise ValueError(f"Several target_fields ({', '.join(targets)}) make the data multi-label.")

        texts: dict[str, list[str]] = {}
        raw_targets: dict[str, Any] = {}
        whats: dict[str, str] = {}
        for stage, (frame, what) in frames.items():
            columns = [input_field] + (targets if stage != "predict" and targets else [])
            require_columns(frame, columns, what)
            texts[stage], kept = texts_of(frame, input_field, what, drop_empty)
            if len(kept) < len(frame):
                warnings.warn(
                    f"Dropped {len(frame) - len(kept)} rows without text from the {what}.", stacklevel=3
                )
                what = f"{what} (rows counted after dropping those without text)"
            whats[stage] = what
            if stage != "predict":
                assert targets is not None
                column = (
                    frame[targets].to_numpy()[kept] if multi_columns else frame[targets[0]].to_numpy()[kept]
                )
                raw_targets[stage] = column if multi_columns else column.tolist()
        encoded = encode_splits(
            texts,
            raw_targets,
            labels=targets if multi_columns else None,
            multi_label=multi_label if multi_label is not None else (True if multi_columns else None),
            val_split=val_split,
            seed=seed,
            whats=whats,
            noun="texts",
        )
        options.setdefault("input_field", input_field)
        return cls(
            **encoded.splits,
            labels=encoded.labels,
            multi_label=encoded.multi_label,
            seed=seed,
            pending_targets=encoded.pending,
            **options,
        )

    def describe(self) -> dict[str, Any]:
        """Text length in words (min, median, 95th percentile, max) over the training texts."""
        from flash.core.data.describe import number_summary

        train = self.splits.get("train")
        if train is None or len(train) == 0:
            return {}
        words = [len(str(text).split()) for text in train.inputs]
        return {"words per text": number_summary(words, (50, 95)), "texts": len(words)}


def _stage_files(train: Any, val: Any, test: Any, predict: Any, valid: Any) -> dict[str, str | Path]:
    if valid is not None:
        if val is not None:
            raise ValueError("Pass val_file or valid_file, not both: they are the same argument.")
        val = valid
    files = {
        s: p
        for s, p in (("train", train), ("val", val), ("test", test), ("predict", predict))
        if p is not None
    }
    if not files:
        raise ValueError(
            "No data given: pass at least one of train_file, val_file, test_file or predict_file."
        )
    return files


def _file_what(stage: str, path: str | Path) -> str:
    return f"{_STAGE_WORDS[stage]} file {Path(path).name}"
