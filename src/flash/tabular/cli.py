"""Tabular classification and regression in the ``flash`` command: ``flash finetune tabular`` and ``flash predict`` inputs.

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flash.cli import domains
from flash.cli.domains import DomainSpec, Option, register_domain


def _tabular_data(options: dict[str, Any]) -> Any:
    import flash.tabular as tabular

    cls = tabular.TabularRegressionData if options.get("regression") else tabular.TabularClassificationData
    kind = domains.file_kind(options["train_file"], "--train-file")
    if kind == "json":
        raise ValueError("Tabular data is read from .csv or .parquet files; --train-file is JSON.")
    kwargs = domains.data_kwargs(
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
        return cls.from_data_frame(**kwargs, **frames, **domains.loader_kwargs(options))
    return cls.from_csv(**kwargs, **domains.loader_kwargs(options))


def _tabular_task(options: dict[str, Any], data: Any) -> Any:
    import flash.tabular as tabular

    cls = tabular.TabularRegressor if options.get("regression") else tabular.TabularClassifier
    return cls.from_data(data, **domains.task_kwargs(options))


def _tabular_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    import pandas as pd

    frames = []
    names: list[str] = []
    for item in inputs:
        frame = domains.read_table(item)
        frames.append(frame)
        names.extend(f"{item}:{row}" for row in range(len(frame)))
    return names, pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


TABULAR = register_domain(
    DomainSpec(
        predict_help="CSV or Parquet tables",
        order=30,
        outputs=("labels", "probabilities", "set", "values"),
        name="tabular",
        summary="tabular classification or regression from a CSV or Parquet file",
        package="flash.tabular",
        default_backbone="tabm",
        default_strategy="no_freeze",
        options=(
            *domains.split_options(
                "file",
                "training table (.csv or .parquet)",
                "validation table, same columns",
                "test table, same columns",
                metavar="FILE",
                val_aliases=("--valid-file",),
            ),
            domains.target_fields_option("the target column(s), comma-separated"),
            domains.fields_option(
                "--categorical-fields",
                "categorical columns, comma-separated (default: inferred from the data)",
            ),
            domains.fields_option(
                "--numerical-fields", "numerical columns, comma-separated (default: inferred from the data)"
            ),
            Option(
                "--numerical-scaling",
                "how numbers are scaled, fitted on the training rows (default: the data module's, quantile)",
                choices=("quantile", "robust", "standard"),
            ),
            Option("--regression", "predict numbers (regression) instead of classes", kind="flag"),
            *domains.LOADING,
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
