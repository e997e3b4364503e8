"""Tabular classification and regression in the ``flash`` command: ``flash finetune tabular`` and ``flash predict`` inputs.

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flash.cli.domains import (
    BATCH_SIZE,
    NUM_WORKERS,
    VAL_SPLIT,
    DomainSpec,
    Option,
    data_kwargs,
    fields,
    file_kind,
    loader_kwargs,
    read_table,
    register_domain,
    task_kwargs,
)


def _tabular_data(options: dict[str, Any]) -> Any:
    import flash.tabular as tabular

    cls = tabular.TabularRegressionData if options.get("regression") else tabular.TabularClassificationData
    kind = file_kind(options["train_file"], "--train-file")
    if kind == "json":
        raise ValueError("Tabular data is read from .csv or .parquet files; --train-file is JSON.")
    kwargs = data_kwargs(
        options,
        ("categorical_fields", "numerical_fields", "target_fields", "train_file", "val_file", "test_file"),
    )
    if kind == "parquet":
        import pandas as pd

        frames = {
            name.replace("_file", "_data_frame"): pd.read_parquet(kwargs.pop(name))
            for name in ("train_file", "val_file", "test_file")
            if name in kwargs
        }
        return cls.from_data_frame(**kwargs, **frames, **loader_kwargs(options))
    return cls.from_csv(**kwargs, **loader_kwargs(options))


def _tabular_task(options: dict[str, Any], data: Any) -> Any:
    import flash.tabular as tabular

    cls = tabular.TabularRegressor if options.get("regression") else tabular.TabularClassifier
    return cls.from_data(data, **task_kwargs(options))


def _tabular_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    import pandas as pd

    frames = []
    names: list[str] = []
    for item in inputs:
        frame = read_table(item)
        frames.append(frame)
        names.extend(f"{item}:{row}" for row in range(len(frame)))
    return names, pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


TABULAR = register_domain(
    DomainSpec(
        predict_help="CSV or Parquet tables",
        order=30,
        outputs=("labels", "probabilities", "values"),
        name="tabular",
        summary="tabular classification or regression from a CSV or Parquet file",
        package="flash.tabular",
        default_backbone="tabm",
        default_strategy="no_freeze",
        options=(
            Option("--train-file", "training table (.csv or .parquet)", kind="path", metavar="FILE"),
            Option(
                "--val-file",
                "validation table, same columns",
                kind="path",
                aliases=("--valid-file",),
                metavar="FILE",
            ),
            Option("--test-file", "test table, same columns", kind="path", metavar="FILE"),
            Option(
                "--target-fields",
                "the target column(s), comma-separated",
                fields,
                kind="fields",
                aliases=("--target-field",),
                metavar="COLUMNS",
            ),
            Option(
                "--categorical-fields",
                "categorical columns, comma-separated (default: inferred from the data)",
                fields,
                kind="fields",
                metavar="COLUMNS",
            ),
            Option(
                "--numerical-fields",
                "numerical columns, comma-separated (default: inferred from the data)",
                fields,
                kind="fields",
                metavar="COLUMNS",
            ),
            Option(
                "--numerical-scaling",
                "how numbers are scaled, fitted on the training rows (default: the data module's, quantile)",
                choices=("quantile", "robust", "standard"),
            ),
            Option("--regression", "predict numbers (regression) instead of classes", kind="flag"),
            VAL_SPLIT,
            BATCH_SIZE,
            NUM_WORKERS,
        ),
        build_data=_tabular_data,
        build_task=_tabular_task,
        predict_inputs=_tabular_inputs,
        required=(("train_file",), ("target_fields",)),
        example=(
            "flash finetune tabular --train-file titanic.csv --target-field Survived "
            "--categorical-fields Pclass,Sex,Embarked --numerical-fields Age,SibSp,Parch,Fare --val-split 0.2"
        ),
    )
)
