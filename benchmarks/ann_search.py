"""Exact against approximate similarity search: build time, query time and recall@k.

    python -m benchmarks.ann_search [--data random|structured] [--size 100000] [--dim 384] [--queries 1000] [--k 10]

Indexes ``--size`` unit vectors of ``--dim`` numbers (seed 0) with
``SimilarityIndex(backend="exact")`` and ``SimilarityIndex(backend="approximate")`` (the ``ann``
extra, at the library's default settings), then searches both with ``--queries`` random unit
vectors: all at once (one ``search`` call) and one at a time (the first 100, one call each).
recall@k is the share of the exact top ``k`` that the approximate search also returns; top-1 the
share of queries whose best hit is the same.

``--data random``: independent random directions (corpus and queries). Their neighbours are
hardly nearer than any other item, the worst case for a graph index. ``--data structured``:
vectors with few degrees of freedom, as embeddings of real corpora have: a random 384 x 16 map of
16 random numbers, plus 10 % noise, normalised.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table
from flash.core.deploy.similarity import SimilarityIndex

SINGLE = 100


LATENT = 16


def unit_vectors(rng: np.random.Generator, n: int, dim: int, mixing: np.ndarray | None) -> np.ndarray:
    """``n`` random unit vectors; with ``mixing`` (``dim x LATENT``), of ``LATENT`` degrees of
    freedom plus 10 % noise."""
    if mixing is None:
        vectors = rng.normal(size=(n, dim))
    else:
        vectors = rng.normal(size=(n, LATENT)) @ mixing.T / np.sqrt(LATENT) + 0.1 * rng.normal(size=(n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["random", "structured"], default="random")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(args.dim, LATENT)) if args.data == "structured" else None
    corpus = unit_vectors(rng, args.size, args.dim, mixing)
    queries = unit_vectors(rng, args.queries, args.dim, mixing)

    rows, found = [], {}
    for backend in ("exact", "approximate"):
        index, build = timed(SimilarityIndex, corpus, backend=backend, normalize=False)
        hits, batch = timed(index.search, queries, k=args.k)
        start = time.perf_counter()
        for query in queries[:SINGLE]:
            index.search(query, k=args.k)
        single = (time.perf_counter() - start) / SINGLE
        found[backend] = [[hit["position"] for hit in row] for row in hits]
        rows.append(
            {
                "backend": backend,
                "build s": build,
                f"{args.queries} queries s": batch,
                "ms per query, one at a time": single * 1000,
            }
        )
    exact, approximate = found["exact"], found["approximate"]
    recall = np.mean([len(set(a) & set(e)) / args.k for a, e in zip(approximate, exact)])
    top1 = np.mean([a[0] == e[0] for a, e in zip(approximate, exact)])
    rows[0].update({f"recall@{args.k}": 1.0, "top-1": 1.0})
    rows[1].update({f"recall@{args.k}": float(recall), "top-1": float(top1)})

    from importlib.metadata import version

    print(
        f"{args.data}: {args.size} unit vectors of {args.dim} numbers, {args.queries} queries, k={args.k}; "
        f"usearch {version('usearch')}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
    )
    columns = ["backend", "build s", f"{args.queries} queries s", "ms per query, one at a time"]
    print_table(rows, [*columns, f"recall@{args.k}", "top-1"])


if __name__ == "__main__":
    main()
