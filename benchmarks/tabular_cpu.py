"""Tabular benchmark on CPU: flash's TabularClassifier/TabularRegressor next to scikit-learn.

    python benchmarks/tabular_cpu.py TITANIC_CSV [--epochs 20] [--backbones tabm_pwl,mlp_plr]
        [--scalings robust,standard] [--variant d_block=256 --variant epochs=10 ...]

Data sets, each with 5 folds (seed 0; stratified for classification), every contender scored on
the same folds and run in its own process (wall time covers all folds, preprocessing included):

- Titanic (the CSV passed on the command line): Pclass, Sex, Age, SibSp, Parch, Fare, Embarked
  -> Survived; accuracy.
- breast cancer (ships with scikit-learn; 569 rows, 30 numerical columns): accuracy.
- diabetes (ships with scikit-learn; 442 rows, 10 numerical columns): regression, RMSE.

Contenders: flash with its defaults (``TabularClassifier.from_data(data)``, ``flash.Trainer(
max_epochs=--epochs)``), scikit-learn's HistGradientBoosting (native categorical support) and a
linear model (logistic regression / ridge on one-hot categories, imputed and standardised numbers).
``--backbones`` adds rows for other flash backbones, ``--scalings`` for other numerical scalings,
``--variant`` for any other change of settings (see ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, run_isolated

TITANIC_CATEGORICAL = ["Sex", "Embarked"]
TITANIC_NUMERICAL = ["Pclass", "Age", "SibSp", "Parch", "Fare"]
SEED = 0
FOLDS = 5


def load(spec: dict[str, Any]) -> tuple[Any, str, list[str], list[str], bool]:
    """``(frame, target, categorical, numerical, regression)`` for a data set spec."""
    import pandas as pd
    from sklearn import datasets

    if spec["name"] == "titanic":
        frame = pd.read_csv(spec["path"])
        columns = [*TITANIC_CATEGORICAL, *TITANIC_NUMERICAL, "Survived"]
        return frame[columns], "Survived", TITANIC_CATEGORICAL, TITANIC_NUMERICAL, False
    loader = {"breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes}[spec["name"]]
    kwargs = {"scaled": False} if spec["name"] == "diabetes" else {}
    frame = loader(as_frame=True, **kwargs).frame
    numerical = [c for c in frame.columns if c != "target"]
    return frame, "target", [], numerical, spec["name"] == "diabetes"


def folds(frame: Any, target: str, regression: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (KFold if regression else StratifiedKFold)(FOLDS, shuffle=True, random_state=SEED)
    return list(splitter.split(frame, frame[target]))


def score(predictions: Any, truth: np.ndarray, regression: bool) -> float:
    predictions = np.asarray(predictions)
    if regression:
        return float(np.sqrt(np.mean((predictions.astype(float) - truth.astype(float)) ** 2)))
    return float(np.mean(predictions == truth))


DATA_SETTINGS = ("numerical_scaling", "val_split", "batch_size")
TASK_SETTINGS = ("backbone", "learning_rate")


def parse_variant(text: str) -> dict[str, Any]:
    """``"backbone=tabm_pwl,d_block=256"`` -> settings; keys other than data, task and ``epochs``
    settings are backbone options."""
    settings: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"variant part {part!r} is not key=value")
        for cast in (int, float):
            try:
                settings[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            settings[key] = value
    return settings


def run_flash(spec: dict[str, Any], epochs: int, settings: dict[str, Any], threads: int) -> list[float]:
    """flash with its defaults, changed by ``settings`` (see :func:`parse_variant`), on every fold."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(threads)

    import flash
    from flash.tabular import (
        TabularClassificationData,
        TabularClassifier,
        TabularRegressionData,
        TabularRegressor,
    )

    frame, target, categorical, numerical, regression = load(spec)
    data_class = TabularRegressionData if regression else TabularClassificationData
    task_class = TabularRegressor if regression else TabularClassifier
    settings = dict(settings)
    epochs = int(settings.pop("epochs", epochs))
    data_kwargs = {k: settings.pop(k) for k in DATA_SETTINGS if k in settings}
    task_kwargs = {k: settings.pop(k) for k in TASK_SETTINGS if k in settings}
    if settings:
        task_kwargs["backbone_kwargs"] = settings
    scores = []
    for fold, (train_rows, test_rows) in enumerate(folds(frame, target, regression)):
        pl.seed_everything(fold, verbose=False)
        train, test = frame.iloc[train_rows], frame.iloc[test_rows]
        data = data_class.from_data_frame(
            categorical, numerical, target, train_data_frame=train, **data_kwargs
        )
        task = task_class.from_data(data, **task_kwargs)
        trainer = flash.Trainer(
            max_epochs=epochs,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
        )
        trainer.finetune(task, data)
        scores.append(score(task.predict(test.drop(columns=[target])), test[target].to_numpy(), regression))
    return scores


def _sklearn_preprocessing(categorical: list[str], numerical: list[str]) -> Any:
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = [
        (make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numerical)
    ]
    if categorical:
        parts.append(
            (
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                categorical,
            )
        )
    return make_column_transformer(*parts)


def run_sklearn(spec: dict[str, Any], model: str, threads: int) -> list[float]:
    """A scikit-learn model on every fold: ``"gradient_boosting"`` or ``"linear"``."""
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime, so that threadpoolctl can limit it)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return _sklearn_folds(spec, model)


def _sklearn_folds(spec: dict[str, Any], model: str) -> list[float]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline

    frame, target, categorical, numerical, regression = load(spec)
    scores = []
    for train_rows, test_rows in folds(frame, target, regression):
        train, test = frame.iloc[train_rows], frame.iloc[test_rows]
        x_train, x_test = train.drop(columns=[target]), test.drop(columns=[target])
        if model == "gradient_boosting":
            for column in categorical:
                kinds = x_train[column].astype("category").cat.categories
                x_train[column] = x_train[column].astype(pd_categorical(kinds))
                x_test[column] = x_test[column].astype(pd_categorical(kinds))
            boosting = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
            estimator = boosting(categorical_features="from_dtype", random_state=SEED)
        else:
            linear = RidgeCV() if regression else LogisticRegression(max_iter=2000)
            estimator = make_pipeline(_sklearn_preprocessing(categorical, numerical), linear)
        estimator.fit(x_train, train[target])
        scores.append(score(estimator.predict(x_test), test[target].to_numpy(), regression))
    return scores


def pd_categorical(categories: Any) -> Any:
    import pandas as pd

    return pd.CategoricalDtype(categories)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("titanic_csv", help="path to the Titanic CSV (Kaggle's train.csv)")
    parser.add_argument("--epochs", type=int, default=20, help="flash training epochs (default 20)")
    parser.add_argument("--backbones", default="", help="extra flash backbones to compare, comma-separated")
    parser.add_argument("--scalings", default="", help="extra numerical scalings to compare, comma-separated")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        help="an extra flash row with changed settings, e.g. 'd_block=256' or 'epochs=10' or "
        "'val_split=0.2' or 'backbone=tabm_pwl,k=8' (repeatable)",
    )
    parser.add_argument(
        "--datasets", default="titanic,breast_cancer,diabetes", help="data sets to run, comma-separated"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads per contender, for torch and scikit-learn's OpenMP alike (default: all CPUs); "
        "on a shared, busy machine use 1: OpenMP's spin-waiting makes gradient boosting crawl there",
    )
    args = parser.parse_args(argv)
    if not Path(args.titanic_csv).is_file():
        parser.error(f"{args.titanic_csv} does not exist")
    import torch

    print(
        f"command: python benchmarks/tabular_cpu.py {' '.join(sys.argv[1:] if argv is None else argv)}\n"
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {args.threads} thread(s) per contender; {FOLDS} folds, seed {SEED}\n"
    )
    extra_backbones = [b for b in args.backbones.split(",") if b]
    extra_scalings = [s for s in args.scalings.split(",") if s]
    for name in [d for d in args.datasets.split(",") if d]:
        spec = {"name": name, "path": str(Path(args.titanic_csv).resolve())}
        regression = name == "diabetes"
        variants = [
            *({"backbone": b} for b in extra_backbones),
            *({"numerical_scaling": s} for s in extra_scalings),
            *args.variant,
        ]
        contenders: list[tuple[str, Any, tuple]] = [
            (f"flash (defaults, {args.epochs} epochs)", run_flash, (spec, args.epochs, {}, args.threads)),
            *(
                (
                    "flash " + ", ".join(f"{k}={v}" for k, v in variant.items()),
                    run_flash,
                    (spec, args.epochs, variant, args.threads),
                )
                for variant in variants
            ),
            ("HistGradientBoosting", run_sklearn, (spec, "gradient_boosting", args.threads)),
            ("ridge" if regression else "logistic regression", run_sklearn, (spec, "linear", args.threads)),
        ]
        metric = "RMSE (lower is better)" if regression else "accuracy"
        rows = []
        for label, fn, fn_args in contenders:
            scores, seconds, peak_mb = run_isolated(fn, *fn_args)
            rows.append(
                {
                    "model": label,
                    f"mean {metric}": float(np.mean(scores)),
                    "std": float(np.std(scores)),
                    "folds": " ".join(f"{s:.3f}" for s in scores),
                    "wall s": seconds,
                    "peak MB": peak_mb,
                }
            )
            print(f"  {name}: {label} done", file=sys.stderr, flush=True)
        print(f"### {name} ({metric}, {FOLDS} folds)\n")
        print_table(rows, list(rows[0]))
        print()


if __name__ == "__main__":
    main()
