"""``flash embed`` and ``flash search``: embeddings of inputs, and similarity search over them.

Both work for any embedding task (a task whose outputs are ``"embeddings"``): a checkpoint, or a
family's default embedder named by its domain (``flash embed text ...``), which the family
registers with :func:`register_embedder`. Inputs are read by the domain's ``flash predict``
reader. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from flash.cli.domains import DOMAINS, Command, domain_of_task, positive_int
from flash.cli.format import FORMATS, format_rows

EMBEDDERS: dict[str, str] = {}
"""The default embedder class of each domain, as ``"module:Class"`` (imported when used)."""

ACCELERATORS = ("auto", "cpu", "gpu")


def register_embedder(domain: str, target: str) -> None:
    """Make ``target`` (``"package.module:Class"``, built with no arguments) the embedder that
    ``flash embed DOMAIN ...`` and ``flash search`` use when no checkpoint is named."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(f"An embedder is named as 'package.module:Class', got {target!r}.")
    EMBEDDERS[domain] = target


def load_embedder(model: str, accelerator: str = "auto") -> Any:
    """The embedder ``model`` names: a checkpoint file, or a domain with a default embedder."""
    from flash.core.deploy.checkpoint import load_task
    from flash.core.utils.device import resolve_device

    device = resolve_device(accelerator)
    if model in EMBEDDERS and not Path(model).is_file():
        module, _, name = EMBEDDERS[model].partition(":")
        task = getattr(importlib.import_module(module), name)()
    elif Path(model).is_file():
        task = load_task(model)
        if "embeddings" not in getattr(task, "outputs", ()):
            raise ValueError(
                f"{model} holds a {type(task).__name__}, which makes no embeddings; give an embedder's "
                f"checkpoint or one of: {', '.join(EMBEDDERS)} (the default embedders)."
            )
    else:
        raise FileNotFoundError(
            f"{model!r} is neither a checkpoint file nor a domain with a default embedder "
            f"({', '.join(EMBEDDERS)})."
        )
    return task.to(device).eval()


def _model_source(model: str) -> str:
    return model if model in EMBEDDERS and not Path(model).is_file() else str(Path(model).resolve())


def _read_inputs(task: Any, inputs: list[str]) -> tuple[list[str], Any]:
    spec = domain_of_task(task)
    if spec.predict_inputs is None:
        raise ValueError(f"The flash command cannot read inputs for {spec.name} tasks.")
    names, values = spec.predict_inputs(task, inputs, {option.dest: None for option in spec.predict_options})
    if not names:
        raise ValueError("No inputs to embed.")
    return names, values


def _check_out(path: str | None, force: bool) -> Path | None:
    out = Path(path) if path else None
    if out is not None and out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it, or another path.")
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, metavar="N", help="inputs per forward pass"
    )
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="where the model runs: auto (a GPU when there is one), cpu or gpu",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# -- flash embed ------------------------------------------------------------------------------------
def _embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="an embedder's checkpoint, or a domain for its default embedder: "
        + ", ".join(sorted(EMBEDDERS) or ["(none registered)"]),
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="what to embed, as `flash predict` reads it: "
        + "; ".join(f"{s.predict_help} ({s.name})" for s in DOMAINS.values() if s.name in EMBEDDERS),
    )
    parser.add_argument(
        "--index",
        metavar="FILE",
        help="build a similarity index of the inputs (ids: the input names) and save it to FILE "
        "for `flash search`, instead of writing the embeddings",
    )
    parser.add_argument(
        "--backend",
        choices=("exact", "approximate", "auto"),  # similarity.BACKENDS, without importing torch here
        help="with --index: how `flash search` searches it (default: exact; approximate needs "
        'pip install "flash-finetune[ann]")',
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write the embeddings to FILE (.npy: a NumPy array) instead of printing"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="json", help="how to write the embeddings (not for .npy files)"
    )
    _common(parser)


def run_embed(args: argparse.Namespace) -> int:
    index_path = _check_out(args.index, args.force)
    out = _check_out(args.out, args.force)
    if index_path is not None and out is not None:
        raise ValueError("Give either --index (a similarity index) or --out (the embeddings), not both.")
    if args.backend is not None and index_path is None:
        raise ValueError("--backend is how an index is searched: give it with --index FILE.")
    task = load_embedder(args.model, args.accelerator)
    names, inputs = _read_inputs(task, args.inputs)
    if index_path is not None:
        from flash.core.deploy.similarity import SimilarityIndex

        texts = list(inputs) if all(isinstance(x, str) for x in inputs) and list(inputs) != names else None
        index = SimilarityIndex.build(
            task,
            inputs,
            ids=names,
            batch_size=args.batch_size,
            source=_model_source(args.model),
            items=texts,
            backend=args.backend or "exact",
        )
        index.save(index_path, overwrite=args.force)
        print(f"Indexed {len(index)} items ({index.dim}-long embeddings) into {index_path}", file=sys.stderr)
        return 0
    vectors = task.embed(inputs, batch_size=args.batch_size)
    if out is not None and out.suffix.lower() == ".npy":
        import numpy as np

        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, vectors)
        print(f"{len(vectors)} embeddings of {vectors.shape[1]} numbers written to {out}", file=sys.stderr)
        return 0
    rows = [{"input": name, "embedding": [float(x) for x in row]} for name, row in zip(names, vectors)]
    if args.format != "json":
        rows = [{"input": r["input"], **{f"e{i}": x for i, x in enumerate(r["embedding"])}} for r in rows]
    _write(format_rows(rows, args.format), out, f"{len(rows)} embeddings")
    return 0


def _write(text: str, out: Path | None, what: str) -> None:
    if out is None:
        print(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    print(f"{what} written to {out}", file=sys.stderr)


EMBED = Command(
    name="embed",
    help="embed inputs with an embedder (or build a similarity index of them)",
    description=(
        "Embed inputs with an embedder's checkpoint or a domain's default embedder (e.g. `flash embed text "
        "'a sentence'` uses the shipped MiniLM model): one L2-normalised vector per input, printed as JSON "
        "or CSV or saved as a .npy array; with --index FILE, a similarity index of the inputs for "
        "`flash search`."
    ),
    configure=_embed_arguments,
    run=run_embed,
)


# -- flash search -----------------------------------------------------------------------------------
def _search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="INDEX", help="an index written by `flash embed --index`")
    parser.add_argument(
        "queries", metavar="QUERY", nargs="+", help="queries, read as `flash embed` reads inputs"
    )
    parser.add_argument(
        "-k",
        "--top-k",
        dest="k",
        type=positive_int,
        metavar="K",
        help="neighbours per query (default: 5, or the size of a smaller index)",
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="the embedder for the queries (default: the one that built the index)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="how to print the results")
    parser.add_argument("--out", metavar="FILE", help="write the results to FILE instead of printing them")
    _common(parser)


def run_search(args: argparse.Namespace) -> int:
    from flash.core.deploy.similarity import SimilarityIndex

    out = _check_out(args.out, args.force)
    index = SimilarityIndex.load(args.index)
    model = args.model or index.model.get("source")
    if not model:
        raise ValueError(f"{args.index} does not record its embedder; name it with --model.")
    k = min(5, len(index)) if args.k is None else args.k
    if k > len(index):
        raise ValueError(f"-k {k} but the index holds {len(index)} item(s); ask for at most {len(index)}.")
    task = load_embedder(model, args.accelerator)
    index.check_embedder(task)
    try:
        names, inputs = _read_inputs(task, args.queries)
    except (ValueError, OSError) as error:
        wanted = domain_of_task(task).predict_help or f"{index.modality} inputs"
        raise ValueError(
            f"{str(error).rstrip('.')}. This index holds {index.modality} embeddings: its queries are {wanted}."
        ) from error
    results = index.search(list(inputs), k=k, embedder=task, batch_size=args.batch_size)
    rows = [
        {"query": name, "rank": rank, "id": hit["id"], "score": round(hit["score"], 6), **_item(hit)}
        for name, hits in zip(names, results)
        for rank, hit in enumerate(hits, start=1)
    ]
    _write(format_rows(rows, args.format), out, f"{len(rows)} results")
    return 0


def _item(hit: dict[str, Any]) -> dict[str, Any]:
    return {"item": hit["item"]} if "item" in hit else {}


SEARCH = Command(
    name="search",
    help="find the inputs of an index most similar to queries",
    description=(
        "Search an index built by `flash embed MODEL INPUT... --index FILE`: the queries are embedded by "
        "the same model and the K most similar items listed with their cosine similarity, best first."
    ),
    configure=_search_arguments,
    run=run_search,
)
