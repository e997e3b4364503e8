"""``TabularClassificationData`` and ``TabularRegressionData``: tables in, preprocessed row vectors out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from flash.core.data.datamodule import DataModule, Split
from flash.core.data.download import local_path
from flash.core.data.splits import LabelEncoder, encode_splits
from flash.core.data.tables import as_field_list, read_table, require_columns, shown
from flash.tabular.frames import announce, infer_fields, model_columns_hint, require_fields
from flash.tabular.preprocessing import TabularPreprocessor
from flash.tabular.targets import check_target_present, target_numbers


def suggested_batch_size(rows: int) -> int:
    """About a 32nd of the training rows, as a power of two from 32 to 256.

    Small tables get enough optimisation steps per epoch (measured in
    ``benchmarks/tabular_cpu.py``: batches of 32 beat 64 and 128 on Titanic); large ones do
    not crawl through tiny batches.
    """
    return int(min(256, max(32, 2 ** round(math.log2(max(rows, 1) / 32)))))


class TabularDataset(Dataset):
    """Preprocessed rows as ``{"input": float vector, "target": ...}`` items."""

    def __init__(self, features: np.ndarray, targets: np.ndarray | None = None) -> None:
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.targets = None if targets is None else torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input": self.features[index]}
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item


def _table_constructor(kind: str, doc: str) -> Any:
    """A ``from_*`` constructor whose four tables are ``train_<kind>``, ``val_<kind>``, ... ."""

    def constructor(
        cls: type[TabularData],
        categorical_fields: str | list[str] | None = None,
        numerical_fields: str | list[str] | None = None,
        target_fields: str | list[str] | None = None,
        *tables: Any,
        **options: Any,
    ) -> TabularData:
        stages = ("train", "val", "test", "predict")
        if len(tables) > len(stages):
            raise TypeError(
                f"from_{kind} takes at most four tables: {', '.join(f'{s}_{kind}' for s in stages)}."
            )
        sources = dict(zip(stages, [*tables, *[None] * (len(stages) - len(tables))]))
        for stage in stages:
            name = f"{stage}_{kind}"
            if name in options:
                if sources[stage] is not None:
                    raise TypeError(f"The {stage} table was given twice (as an argument and as {name}=).")
                sources[stage] = options.pop(name)
        if kind == "file":  # URLs are downloaded once into the cache
            sources = {stage: None if src is None else local_path(src) for stage, src in sources.items()}
        target_fields = _target_fields(target_fields, options.pop("target_field", None))
        parameters = options.pop("parameters", None)
        if parameters is not None:
            given = (categorical_fields, numerical_fields, target_fields, options.pop("val_split", None))
            return cls._from_parameters(
                sources,
                parameters,
                given,
                batch_size=options.pop("batch_size", None),
                num_workers=options.pop("num_workers", None),
                seed=options.pop("seed", 42),
            )
        return cls._build(sources, categorical_fields, numerical_fields, target_fields, kind=kind, **options)

    constructor.__name__ = constructor.__qualname__ = f"from_{_CONSTRUCTOR_NAMES[kind]}"
    constructor.__doc__ = doc
    return classmethod(constructor)


_CONSTRUCTOR_NAMES = {"data_frame": "data_frame", "file": "csv", "dict": "dicts"}


class TabularData(DataModule):
    """Rows of a table with categorical and numerical columns, and one or more target columns.

    Build it with :meth:`from_csv`, :meth:`from_data_frame` or :meth:`from_dicts`. The
    preprocessing (:class:`~flash.tabular.preprocessing.TabularPreprocessor`) is fitted on the
    training rows only; a task built with ``from_data(data)`` carries it into its checkpoints.

    Each split's :class:`~flash.core.data.datamodule.Split` holds row positions into :attr:`frames`.
    """

    is_regression = False

    def __init__(
        self,
        frames: dict[str, pd.DataFrame | None],
        splits: dict[str, Split | None],
        *,
        preprocessor: TabularPreprocessor,
        target_fields: list[str],
        labels: list[Any] | None = None,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        seed: int = 42,
    ) -> None:
        train = splits.get("train")
        if batch_size is None and train is not None:
            batch_size = suggested_batch_size(len(train))
        super().__init__(
            **splits,
            labels=labels,
            batch_size=batch_size,
            num_workers=0 if num_workers is None else num_workers,
            seed=seed,
        )
        self.frames = frames
        self.preprocessor = preprocessor
        self.target_fields = target_fields
        self.target_mean = target_mean
        self.target_std = target_std

    # -- constructors ----------------------------------------------------------------------------
    from_data_frame = _table_constructor(
        "data_frame",
        """Build the data from pandas DataFrames.

        Args:
            categorical_fields: columns holding categories (text, booleans or codes).
            numerical_fields: columns holding numbers. When neither kind is given, both are
                inferred from the training frame (a :class:`~flash.tabular.frames.FieldInferenceWarning`
                says what was chosen); when one is given, the other is empty.
            target_fields: the column to predict (classification), or one or more (regression).
            train_data_frame, val_data_frame, test_data_frame, predict_data_frame: the tables.
            val_split: fraction of the training rows held out for validation (stratified by class).
            batch_size: rows per batch (default: :func:`suggested_batch_size` of the training rows,
                32 for up to ~1,400 rows, up to 256 for large tables).
            num_workers: loader processes (default 0: rows are already tensors in memory).
            seed: seed of the shuffle and of ``val_split``.
            numerical_scaling: ``"quantile"`` (default), ``"robust"`` or ``"standard"``; see
                :data:`~flash.tabular.preprocessing.SCALINGS`.
            parameters: another data module's :attr:`parameters` (Lightning Flash's spelling):
                build data without training rows (to predict, validate or test) with that data's
                columns, classes and fitted preprocessing.
            target_field: Lightning Flash's singular name of ``target_fields``.
        """,
    )
    from_csv = _table_constructor(
        "file",
        """Build the data from table files (``train_file``, ...): CSV, or TSV, JSON, JSON lines and
        Parquet by their suffix (read by :func:`flash.core.data.tables.read_table`); other
        arguments as in :meth:`from_data_frame`.""",
    )
    from_dicts = _table_constructor(
        "dict",
        """Build the data from dicts: each of ``train_dict``, ... is a dict of columns
        (``{"age": [22, 38], ...}``) or a list of rows (``[{"age": 22, ...}, ...]``); other arguments
        as in :meth:`from_data_frame`.""",
    )

    # -- the shared implementation ---------------------------------------------------------------
    @classmethod
    def _build(
        cls,
        sources: dict[str, Any],
        categorical_fields: Any,
        numerical_fields: Any,
        target_fields: Any,
        *,
        kind: str,
        val_split: float | None = None,
        seed: int = 42,
        numerical_scaling: str = "quantile",
        **options: Any,
    ) -> TabularData:
        """The one implementation of the ``from_*`` constructors; ``options``: ``batch_size``,
        ``num_workers`` (see the class)."""
        categorical = as_field_list(categorical_fields, "categorical_fields")
        numerical = as_field_list(numerical_fields, "numerical_fields")
        targets = as_field_list(target_fields, "target_fields")
        if sources["train"] is None:
            raise ValueError(
                f"Tabular data needs a training table (train_{kind}=...): the preprocessing is fitted on it."
            )
        if not targets:
            raise ValueError("target_fields is required: name the column to predict.")
        if not cls.is_regression and len(targets) != 1:
            raise ValueError(f"Classification predicts one target column; got target_fields={targets}.")
        if val_split is not None and sources["val"] is not None:
            raise ValueError("Pass either val_split or a validation table, not both.")
        frames = {stage: None if src is None else read_table(src, stage) for stage, src in sources.items()}
        categorical, numerical = cls._fields(frames, categorical, numerical, targets)
        encoded = encode_splits(
            {stage: None if frame is None else list(range(len(frame))) for stage, frame in frames.items()},
            {
                stage: cls._raw_targets(frame, targets, "training" if stage == "train" else stage)
                for stage, frame in frames.items()
                if frame is not None and stage != "predict"
            },
            multi_label=False,
            val_split=val_split,
            seed=seed,
            regression=cls.is_regression,
            whats={"train": "training"},
            noun="rows",
        )
        splits = encoded.splits
        if val_split is not None:  # the held-out rows become a validation table of their own
            train = frames["train"]
            for stage in ("train", "val"):
                split = splits[stage]
                frames[stage] = train.iloc[split.inputs].reset_index(drop=True)
                splits[stage] = Split(list(range(len(split))), split.targets)
        preprocessor = TabularPreprocessor.fit(frames["train"], categorical, numerical, numerical_scaling)
        for stage in ("val", "test", "predict"):
            if frames[stage] is not None:
                preprocessor.transform(frames[stage], stage)  # bad values fail here, before training
        mean = std = None
        if cls.is_regression:
            values = splits["train"].targets
            mean = [float(v) for v in values.mean(axis=0)]
            std = [float(v) or 1.0 for v in values.std(axis=0)]
        return cls(
            frames,
            splits,
            preprocessor=preprocessor,
            target_fields=targets,
            labels=encoded.labels,
            target_mean=mean,
            target_std=std,
            seed=seed,
            **options,
        )

    @classmethod
    def _from_parameters(
        cls,
        sources: dict[str, Any],
        parameters: Mapping[str, Any],
        given: tuple[Any, ...],
        *,
        batch_size: int | None,
        num_workers: int | None,
        seed: int,
    ) -> TabularData:
        """Data without training rows, with the columns, classes and preprocessing of ``parameters``."""
        if not isinstance(parameters, Mapping) or "preprocessing" not in parameters:
            raise TypeError("parameters must be another tabular data module's .parameters (a dict).")
        if bool(parameters.get("is_regression")) != cls.is_regression:
            raise TypeError(
                f"These parameters come from {'regression' if parameters.get('is_regression') else 'classification'} "
                f"data; build {cls.__name__} from the parameters of the same kind of data."
            )
        categorical, numerical, targets, val_split = given
        if sources["train"] is not None:
            raise ValueError(
                "parameters= builds data without training rows (its preprocessing is already fitted); "
                "for training data leave parameters out."
            )
        if any(v is not None for v in (categorical, numerical)) or val_split is not None:
            raise ValueError(
                "parameters= carries the columns; leave categorical_fields, numerical_fields and val_split out."
            )
        target_fields = list(parameters["target_fields"])
        if targets is not None and as_field_list(targets, "target_fields") != target_fields:
            raise ValueError(f"target_fields {targets!r} differ from the parameters' {target_fields}.")
        preprocessor = TabularPreprocessor.from_state(dict(parameters["preprocessing"]))
        labels = parameters.get("labels")
        encoder = None if cls.is_regression or labels is None else LabelEncoder(labels)
        frames: dict[str, pd.DataFrame | None] = {"train": None}
        splits: dict[str, Split | None] = {"train": None}
        for stage in ("val", "test", "predict"):
            frame = None if sources[stage] is None else read_table(sources[stage], stage)
            frames[stage], splits[stage] = frame, None
            if frame is None:
                continue
            require_columns(frame, preprocessor.columns, stage, model_columns_hint(preprocessor.columns))
            preprocessor.transform(frame, stage)  # bad values fail here
            encoded = None
            if stage != "predict":
                check_target_present(frame, target_fields, stage)
                raw = cls._raw_targets(frame, target_fields, stage)
                encoded = (
                    np.asarray(raw, dtype=np.float32) if encoder is None else encoder.encode(raw, what=stage)
                )
            splits[stage] = Split(list(range(len(frame))), encoded)
        return cls(
            frames,
            splits,
            preprocessor=preprocessor,
            target_fields=target_fields,
            labels=None if labels is None else list(labels),
            target_mean=parameters.get("target_mean"),
            target_std=parameters.get("target_std"),
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
        )

    @staticmethod
    def _fields(
        frames: dict[str, pd.DataFrame | None],
        categorical: list[str] | None,
        numerical: list[str] | None,
        targets: list[str],
    ) -> tuple[list[str], list[str]]:
        """The input columns (inferred from the training table when neither kind is given), checked
        against every table."""
        train = frames["train"]
        check_target_present(train, targets, "training")
        if categorical is None and numerical is None:
            inferred = infer_fields(train, exclude=targets)
            announce(inferred)
            categorical, numerical = inferred.categorical, inferred.numerical
        categorical, numerical = categorical or [], numerical or []
        clash = [t for t in targets if t in categorical or t in numerical]
        if clash:
            raise ValueError(f"Target column {shown(clash)} is also listed as an input field.")
        inputs = [*numerical, *categorical]
        require_fields(train, inputs, "training")
        for stage in ("val", "test", "predict"):
            if frames[stage] is not None:
                if stage != "predict":
                    check_target_present(frames[stage], targets, stage)
                require_fields(frames[stage], inputs, stage)
        return categorical, numerical

    @classmethod
    def _raw_targets(cls, frame: pd.DataFrame, targets: list[str], what: str) -> Any:
        if not cls.is_regression:
            return frame[targets[0]].tolist()
        return np.stack([target_numbers(frame[t], t, what) for t in targets], axis=1)

    # -- what the task needs ---------------------------------------------------------------------
    @property
    def categorical_fields(self) -> list[str]:
        return list(self.preprocessor.categorical_fields)

    @property
    def numerical_fields(self) -> list[str]:
        return list(self.preprocessor.numerical_fields)

    @property
    def num_targets(self) -> int:
        return len(self.target_fields)

    @property
    def parameters(self) -> dict[str, Any]:
        """What data without training rows needs of this data (Lightning Flash's ``parameters``):
        pass it as ``from_csv(predict_file=..., parameters=data.parameters)``. Plain values."""
        return {
            "is_regression": self.is_regression,
            "target_fields": list(self.target_fields),
            "labels": None if self.labels is None else list(self.labels),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "preprocessing": self.preprocessing_state(),
        }

    def preprocessing_state(self) -> dict[str, Any]:
        """The fitted preprocessing as plain values (what a task stores in its checkpoint)."""
        return self.preprocessor.state_dict()

    def attach_task(self, task: Any) -> None:
        """Take the task's preprocessing (fitted on the data it was built from) for every split."""
        super().attach_task(task)
        task_preprocessor = getattr(task, "preprocessor", None)
        if not isinstance(task_preprocessor, TabularPreprocessor):
            raise TypeError(
                f"{type(task).__name__} is not a tabular task; use TabularClassifier or TabularRegressor."
            )
        for stage, frame in self.frames.items():
            if frame is not None:
                require_fields(
                    frame,
                    task_preprocessor.columns,
                    f"{stage} (for this task's columns)",
                    model_columns_hint(task_preprocessor.columns),
                )
        if hasattr(task, "attach_targets"):
            task.attach_targets(self)
        self.preprocessor = task_preprocessor

    fold_needs_fresh_task = True
    fold_task_example = "lambda data: TabularClassifier.from_data(data)"

    def pooled_training(self) -> Split:
        """The training rows, then the validation rows: positions into :meth:`pooled_frame`."""
        pooled = super().pooled_training()
        return Split(list(range(len(pooled))), pooled.targets)

    def pooled_frame(self) -> pd.DataFrame:
        """The training and validation rows as one table, in :meth:`pooled_training`'s order."""
        parts = [
            self.frames[stage].iloc[split.inputs]
            for stage in ("train", "val")
            if (split := self.splits.get(stage)) is not None and self.frames.get(stage) is not None
        ]
        return pd.concat(parts, ignore_index=True)

    def fold(self, train_indices: Sequence[int], val_indices: Sequence[int]) -> TabularData:
        """A cross-validation fold whose preprocessing (imputation, scaling, categories) and target
        scaling are fitted on the fold's training rows only; build its task with ``from_data``."""
        pooled, frame = self.pooled_training(), self.pooled_frame()
        train, val = pooled.subset(train_indices), pooled.subset(val_indices)
        frames = {
            "train": frame.iloc[train.inputs].reset_index(drop=True),
            "val": frame.iloc[val.inputs].reset_index(drop=True),
            "test": self.frames.get("test"),
            "predict": None,
        }
        splits = {
            "train": Split(list(range(len(train))), train.targets),
            "val": Split(list(range(len(val))), val.targets),
            "test": self.splits.get("test"),
            "predict": None,
        }
        fitted = self.preprocessor
        scalings = [column.scaling for column in fitted.numerical.values()]
        preprocessor = TabularPreprocessor.fit(
            frames["train"],
            fitted.categorical_fields,
            fitted.numerical_fields,
            scalings[0] if scalings else "quantile",
        )
        mean = std = None
        if self.is_regression:
            values = np.asarray(train.targets)
            mean = [float(v) for v in values.mean(axis=0)]
            std = [float(v) or 1.0 for v in values.std(axis=0)]
        return type(self)(
            frames,
            splits,
            preprocessor=preprocessor,
            target_fields=list(self.target_fields),
            labels=self.labels,
            target_mean=mean,
            target_std=std,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            seed=self.seed,
        )

    def make_dataset(self, split: Split, stage: str) -> Dataset:
        frame = self.frames[stage]
        assert frame is not None
        features = self.preprocessor.transform(frame.iloc[split.inputs], stage)
        return TabularDataset(features, split.targets)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items() if v is not None)
        return (
            f"{type(self).__name__}({sizes}, numerical={self.numerical_fields}, "
            f"categorical={self.categorical_fields}, target={self.target_fields}, batch_size={self.batch_size})"
        )

    def describe(self) -> dict[str, Any]:
        """Rows per split, the numerical and categorical columns, and the fraction of missing
        values per column of the training rows (inputs and targets)."""
        rows = {stage: len(split) for stage in ("train", "val", "test") if (split := self.splits.get(stage))}
        description: dict[str, Any] = {
            "rows": rows,
            "numerical columns": self.numerical_fields,
            "categorical columns": self.categorical_fields,
            "target columns": list(self.target_fields),
        }
        frame, train = self.frames.get("train"), self.splits.get("train")
        if frame is not None and train is not None and len(train):
            columns = dict.fromkeys([*self.numerical_fields, *self.categorical_fields, *self.target_fields])
            present = [c for c in columns if c in frame.columns]
            missing = frame.iloc[train.inputs][present].isna().mean()
            description["missing (fraction of training rows)"] = {
                column: round(float(missing[column]), 4) for column in present
            }
        return description


def _target_fields(target_fields: Any, target_field: Any) -> Any:
    """``target_fields``, or Lightning Flash's singular ``target_field``."""
    if target_field is None:
        return target_fields
    if target_fields is not None:
        raise ValueError("Pass target_fields or its singular target_field, not both.")
    return target_field


class TabularClassificationData(TabularData):
    """Tabular data whose target column holds classes (any values: numbers, text, booleans)."""

    is_regression = False


class TabularRegressionData(TabularData):
    """Tabular data whose target column(s) hold numbers."""

    is_regression = True
    fold_task_example = "lambda data: TabularRegressor.from_data(data)"
