"""Image embeddings on a CPU: nearest-neighbour accuracy before and after finetuning the embedder,
and few-shot classification from K examples per class.

    python benchmarks/fewshot_image.py DATA_DIR [--shots 1,5] [--seeds 0,1,2,3,4] [--embedder-epochs 20] [--classifier-epochs 5]

DATA_DIR holds ``train/<class>/*.jpg`` and ``val/<class>/*.jpg`` (e.g. the ants-vs-bees photos).
Every model is ``flash.image.ImageEmbedder``'s or ``ImageClassifier``'s default backbone
(EfficientNet-Lite0, ImageNet weights, 224 px centre crops for embedding). Each step that runs a
network runs in its own fresh process (:func:`benchmarks.common.run_isolated`):

1. Nearest neighbours. The training images are the index (a ``SimilarityIndex`` of their
   embeddings), each validation image a query; its class is the majority class of its ``k``
   nearest training images by cosine similarity (ties: the class with the larger summed
   similarity). Before finetuning: the shipped ``ImageEmbedder()``. After: the same embedder
   finetuned on the training folder by ``flash.Trainer(max_epochs=--embedder-epochs)
   .finetune(embedder, data, strategy="freeze")`` (supervised-contrastive loss, batch 32): the
   backbone stays frozen and only the projection trains, on backbone features computed once.
   On two CPU cores an epoch through the unfrozen backbone costs minutes, and with 245 images
   the projection is what can move without overfitting the backbone.
2. Few-shot classification. For each K in ``--shots`` and each seed, K training images per class
   are drawn (``numpy.random.default_rng(seed)``, the same draws for every contender), and
   accuracy is measured on the whole validation folder:

   - ``logistic regression``: scikit-learn's ``LogisticRegression()`` on the frozen embeddings;
   - ``prototype``: nearest class mean of the frozen embeddings (cosine);
   - ``flash ImageClassifier``: ``ImageClassificationData.from_files`` of the K-shot images (and
     the validation folder), ``ImageClassifier(num_classes)``, ``flash.Trainer(max_epochs=
     --classifier-epochs).finetune(task, data, strategy="freeze")``: flash's route for a frozen
     backbone (features computed once, the linear head fitted as a linear probe, then trained on).

   The first two reuse the frozen embeddings of step 1 (computed once per run; their time is in
   the first table); their wall time is the fitting and scoring alone. The flash route's covers
   everything from building the data to the last validation, every run included.

Prints two Markdown tables, with wall time and CPU time (user+system) per contender.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, run_isolated

BATCH_SIZE = 32


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _quiet() -> None:
    """No progress bars or Lightning chatter in a contender's process (it is the benchmark's own)."""
    os.environ["FLASH_QUIET"] = "1"
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


def list_split(data_dir: str, split: str) -> tuple[list[str], list[int], list[str]]:
    """The image files of ``data_dir/split/<class>/``, their class numbers and the class names."""
    from flash.image.io import list_images  # the files ``from_folders`` reads

    root = Path(data_dir, split)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, targets = [], []
    for number, name in enumerate(classes):
        images = list_images(root / name)
        files.extend(images)
        targets.extend([number] * len(images))
    return files, targets, classes


def draw_shots(targets: list[int], shots: int, seed: int) -> list[int]:
    """Positions of ``shots`` training items per class, drawn without replacement with ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = np.asarray(targets)
    chosen: list[int] = []
    for label in sorted(set(targets)):
        positions = np.flatnonzero(values == label)
        if len(positions) < shots:
            raise ValueError(f"class {label} has {len(positions)} training images, fewer than {shots} shots")
        chosen.extend(int(p) for p in rng.choice(positions, size=shots, replace=False))
    return sorted(chosen)


# -- contenders that run a network (each in a fresh process) --------------------------------------


def frozen_embeddings(data_dir: str) -> dict[str, Any]:
    """The shipped ``ImageEmbedder()``'s embeddings of every training and validation image."""
    _quiet()
    cpu0 = _cpu_seconds()
    from flash.image import ImageEmbedder

    embedder = ImageEmbedder()
    start = time.perf_counter()
    train = embedder.embed(list_split(data_dir, "train")[0], batch_size=BATCH_SIZE)
    val = embedder.embed(list_split(data_dir, "val")[0], batch_size=BATCH_SIZE)
    embed_s = time.perf_counter() - start
    return {"train": train, "val": val, "train_s": 0.0, "embed_s": embed_s, "cpu_s": _cpu_seconds() - cpu0}


def finetuned_embeddings(data_dir: str, epochs: int) -> dict[str, Any]:
    """Finetune ``ImageEmbedder()`` on the training folder (``strategy="freeze"``), then embed both splits.

    Validation images are not shown to the training (no ``val_folder``): nothing is chosen on them.
    """
    _quiet()
    cpu0 = _cpu_seconds()
    import lightning.pytorch as pl

    import flash
    from flash.image import ImageClassificationData, ImageEmbedder

    pl.seed_everything(0, verbose=False)
    start = time.perf_counter()
    data = ImageClassificationData.from_folders(train_folder=f"{data_dir}/train", batch_size=BATCH_SIZE)
    embedder = ImageEmbedder()
    with tempfile.TemporaryDirectory() as out:
        trainer = flash.Trainer(
            max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False, default_root_dir=out
        )
        trainer.finetune(embedder, data, strategy="freeze")
    train_s = time.perf_counter() - start
    embedder.eval()
    start = time.perf_counter()
    train = embedder.embed(list_split(data_dir, "train")[0], batch_size=BATCH_SIZE)
    val = embedder.embed(list_split(data_dir, "val")[0], batch_size=BATCH_SIZE)
    embed_s = time.perf_counter() - start
    return {
        "train": train,
        "val": val,
        "train_s": train_s,
        "embed_s": embed_s,
        "cpu_s": _cpu_seconds() - cpu0,
    }


def flash_classifier(
    data_dir: str, episodes: list[tuple[int, int, list[int]]], epochs: int
) -> dict[str, Any]:
    """``ImageClassifier`` finetuned with ``strategy="freeze"`` on each episode's K-shot images;
    returns the final validation accuracy of each ``(shots, seed)`` episode (and, to show how it
    got there, the accuracy after every epoch: the runs train for the fixed epochs, none is chosen)."""
    _quiet()
    cpu0 = _cpu_seconds()
    import lightning.pytorch as pl

    import flash
    from flash.image import ImageClassificationData, ImageClassifier

    files, targets, classes = list_split(data_dir, "train")
    val_files, val_targets, _ = list_split(data_dir, "val")
    accuracies, curves = {}, {}
    for shots, seed, chosen in episodes:
        pl.seed_everything(seed, verbose=False)
        data = ImageClassificationData.from_files(
            train_files=[files[i] for i in chosen],
            train_targets=[classes[targets[i]] for i in chosen],
            val_files=val_files,
            val_targets=[classes[t] for t in val_targets],
            labels=classes,
            batch_size=BATCH_SIZE,
            seed=seed,
        )
        task = ImageClassifier(num_classes=data.num_classes)
        with tempfile.TemporaryDirectory() as out:
            trainer = flash.Trainer(
                max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False, default_root_dir=out
            )
            trainer.finetune(task, data, strategy="freeze")
        accuracies[(shots, seed)] = float(trainer.history[-1]["val_accuracy"])
        curves[(shots, seed)] = [round(float(row["val_accuracy"]), 3) for row in trainer.history]
    return {"accuracies": accuracies, "curves": curves, "cpu_s": _cpu_seconds() - cpu0}


# -- contenders on cached embeddings (in this process) ------------------------------------------


def knn_accuracy(train: Any, train_targets: list[int], val: Any, val_targets: list[int], k: int) -> float:
    """Accuracy of a majority vote of the ``k`` nearest training embeddings (a ``SimilarityIndex``)
    for every validation embedding; ties go to the class with the larger summed similarity."""
    from collections import defaultdict

    from flash.core.deploy.similarity import SimilarityIndex

    index = SimilarityIndex(train, ids=list(range(len(train))), normalize=False)
    correct = 0
    for hits, truth in zip(index.search(val, k=k), val_targets):
        votes: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
        for hit in hits:
            vote = votes[train_targets[hit["id"]]]
            vote[0] += 1
            vote[1] += hit["score"]
        predicted = max(votes, key=lambda label: tuple(votes[label]))
        correct += predicted == truth
    return correct / len(val_targets)


def logistic_regression(train: Any, targets: Any, val: Any) -> Any:
    """scikit-learn's ``LogisticRegression()`` (L2, C=1) on the embeddings: predicted val classes."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(train, targets).predict(val)


def prototype(train: Any, targets: Any, val: Any) -> Any:
    """Nearest class mean by cosine similarity: predicted val classes."""
    import numpy as np

    labels = np.unique(targets)
    means = np.stack([train[targets == label].mean(axis=0) for label in labels])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return labels[(val @ means.T).argmax(axis=1)]


def _mean_sd(values: list[float]) -> str:
    import numpy as np

    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="folder with train/ and val/ class folders")
    parser.add_argument("--shots", default="1,5", help="examples per class, comma-separated (default 1,5)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="draws per K, comma-separated (default 0-4)")
    parser.add_argument("--embedder-epochs", type=int, default=20, help="epochs finetuning the embedder")
    parser.add_argument("--classifier-epochs", type=int, default=5, help="epochs of each few-shot classifier")
    args = parser.parse_args(argv)
    data_dir = str(Path(args.data_dir).resolve())
    for split in ("train", "val"):
        if not Path(data_dir, split).is_dir():
            parser.error(f"{data_dir} has no {split}/ folder.")
    try:
        shots = sorted({int(s) for s in args.shots.split(",") if s.strip()})
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error("--shots and --seeds take comma-separated integers, e.g. --shots 1,5 --seeds 0,1,2")
    if not shots or min(shots) < 1 or not seeds:
        parser.error("--shots needs positive integers and --seeds at least one seed.")
    if args.embedder_epochs < 1 or args.classifier_epochs < 1:
        parser.error("--embedder-epochs and --classifier-epochs must be at least 1.")

    import numpy as np

    files, train_targets, classes = list_split(data_dir, "train")
    val_files, val_targets, val_classes = list_split(data_dir, "val")
    if val_classes != classes:
        parser.error(
            f"train/ has classes {classes}, val/ has {val_classes}: give both the same class folders."
        )
    episodes = [(k, seed, draw_shots(train_targets, k, seed)) for k in shots for seed in seeds]
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {len(files)} train and {len(val_files)} "
        f"val images, classes {', '.join(classes)}; shots {shots}, seeds {seeds}",
        flush=True,
    )

    # 1. nearest neighbours before and after finetuning the embedder
    embedded = {}
    knn_rows = []
    for name, fn, fn_args in (
        ("ImageEmbedder(), not finetuned", frozen_embeddings, (data_dir,)),
        (
            f"finetuned: freeze, {args.embedder_epochs} epochs",
            finetuned_embeddings,
            (data_dir, args.embedder_epochs),
        ),
    ):
        start = time.strftime("%H:%M:%S")
        result, seconds, peak_mb = run_isolated(fn, *fn_args)
        embedded[name] = result
        row = {
            "embedder": name,
            "1-NN accuracy": round(
                knn_accuracy(result["train"], train_targets, result["val"], val_targets, 1), 3
            ),
            "5-NN accuracy": round(
                knn_accuracy(result["train"], train_targets, result["val"], val_targets, 5), 3
            ),
            "train s": f"{result['train_s']:.1f}",
            "embed s": f"{result['embed_s']:.1f}",
            "wall s": f"{seconds:.1f}",
            "cpu s": f"{result['cpu_s']:.1f}",
            "peak MB": round(peak_mb),
        }
        knn_rows.append(row)
        print(f"[{start}] {row}", flush=True)

    # 2. few-shot classification
    frozen = embedded["ImageEmbedder(), not finetuned"]
    x_train, x_val = frozen["train"], frozen["val"]
    y_train, y_val = np.asarray(train_targets), np.asarray(val_targets)
    results: dict[str, dict[tuple[int, int], float]] = {}
    timing: dict[str, tuple[float, float]] = {}
    for name, fit in (
        ("logistic regression (frozen)", logistic_regression),
        ("prototype (frozen)", prototype),
    ):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        results[name] = {
            (k, seed): float((fit(x_train[chosen], y_train[chosen], x_val) == y_val).mean())
            for k, seed, chosen in episodes
        }
        timing[name] = (time.perf_counter() - wall0, time.process_time() - cpu0)
        shown = ", ".join(f"{episode}: {accuracy:.3f}" for episode, accuracy in results[name].items())
        print(f"{name}, val accuracy by (K, seed): {shown}", flush=True)
    start = time.strftime("%H:%M:%S")
    name = f"flash ImageClassifier, freeze, {args.classifier_epochs} epochs"
    result, seconds, _ = run_isolated(flash_classifier, data_dir, episodes, args.classifier_epochs)
    results[name] = result["accuracies"]
    timing[name] = (seconds, result["cpu_s"])
    print(f"[{start}] {name}, {seconds:.1f} s; val accuracy after each epoch, by (K, seed):", flush=True)
    for episode, curve in result["curves"].items():
        print(f"    {episode}: {curve}", flush=True)

    fewshot_rows = []
    for name, by_episode in results.items():
        row: dict[str, Any] = {"contender": name}
        for k in shots:
            row[f"K={k} accuracy"] = _mean_sd([by_episode[(k, seed)] for seed in seeds])
        row["wall s"] = f"{timing[name][0]:.1f}"
        row["cpu s"] = f"{timing[name][1]:.1f}"
        row["wall s per run"] = f"{timing[name][0] / len(episodes):.2f}"
        fewshot_rows.append(row)

    print()
    print(
        f"Nearest neighbours: {len(files)} train images as the index, {len(val_files)} val images as queries"
    )
    print()
    print_table(
        knn_rows,
        ["embedder", "1-NN accuracy", "5-NN accuracy", "train s", "embed s", "wall s", "cpu s", "peak MB"],
    )
    print()
    print(
        f"Few-shot: K train images per class, seeds {','.join(map(str, seeds))}; accuracy on all "
        f"{len(val_files)} val images, mean ± sd"
    )
    print()
    print_table(
        fewshot_rows,
        ["contender", *(f"K={k} accuracy" for k in shots), "wall s", "cpu s", "wall s per run"],
    )


if __name__ == "__main__":
    main()
