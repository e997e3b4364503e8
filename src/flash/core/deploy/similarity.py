"""Similarity search over embeddings: :class:`SimilarityIndex`, cosine search, exact in torch or
approximate with an HNSW graph.

An index holds a corpus of L2-normalised vectors with an id each, and remembers the modality
(the embedder's ``domain``) and a fingerprint of the embedder that made them, so that queries
embedded by another model, or of another modality, are refused instead of silently giving
meaningless neighbours. The ``"exact"`` backend searches with one matrix product per chunk of
queries: exact, and quick for corpora up to about a million vectors on a CPU. The
``"approximate"`` backend (the ``ann`` extra: the usearch library) walks an HNSW graph instead:
much faster per query on large corpora, but it can miss a neighbour now and then. The scores of
the hits it finds are recomputed exactly, so both backends return the same kind of results.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flash.core.utils.extras import require
from flash.core.utils.jsonable import to_json
from flash.core.utils.validation import check_int

INDEX_FORMAT = 2
"""The version of the saved index layout: 2 adds the approximate backend's graph. An exact index
is still written as format 1, which older flash versions read."""

BACKENDS = ("exact", "approximate", "auto")
"""The search backends: ``"exact"`` (torch), ``"approximate"`` (an HNSW graph, the ``ann`` extra)
and ``"auto"`` (approximate from :data:`AUTO_MIN_SIZE` items on when the ``ann`` extra is
installed, else exact)."""

AUTO_MIN_SIZE = 100_000
"""The corpus size from which ``backend="auto"`` searches approximately (when it can)."""

_KEY = "flash_similarity_index"
_QUERY_CHUNK = 1024
_BUILD_THREADS = 0
"""Threads that build a search graph: 0, every core. Only a graph built on one thread is the same
from run to run (the order in which threads insert items shapes it)."""
_SAME_MODEL = 0.99
"""The cosine similarity an embedder's fingerprint must reach to count as the index's model."""


def _as_matrix(vectors: Any, what: str, normalize: bool = True) -> torch.Tensor:
    if isinstance(vectors, np.ndarray):
        vectors = torch.from_numpy(np.ascontiguousarray(vectors))
    if not isinstance(vectors, torch.Tensor):
        raise TypeError(
            f"{what} must be a NumPy array or a torch tensor of vectors, got {type(vectors).__name__}."
        )
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or not (vectors.is_floating_point() or vectors.dtype in (torch.int32, torch.int64)):
        raise ValueError(
            f"{what} must be vectors of numbers, shape (n, dim); got shape {tuple(vectors.shape)}."
        )
    vectors = vectors.detach().float().cpu()
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{what} hold NaN or infinite values.")
    if (vectors.norm(dim=1) == 0).any():
        raise ValueError(f"{what} hold an all-zero vector, which has no direction to compare.")
    return F.normalize(vectors, dim=1) if normalize else vectors


def _check_backend(backend: Any, size: int) -> str:
    """The backend ``backend`` names, with ``"auto"`` resolved for a corpus of ``size`` items."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not a search backend; choose one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        installed = importlib.util.find_spec("usearch") is not None
        return "approximate" if installed and size >= AUTO_MIN_SIZE else "exact"
    return backend


def _new_graph(vectors: torch.Tensor, saved: torch.Tensor | None = None) -> Any:
    """An HNSW graph over ``vectors`` (inner product, keys: their positions, the library's
    recommended settings), or the one ``saved`` holds."""
    require("usearch", "ann", 'The "approximate" search backend')
    usearch = importlib.import_module("usearch.index")
    if saved is not None:
        damaged = "The saved search graph does not match the index's embeddings: the file is damaged"
        try:
            graph = usearch.Index.restore(saved.numpy())
        except Exception as error:  # the library's own errors for a buffer it cannot read
            raise ValueError(f"{damaged} ({error}).") from error
        if graph is None or len(graph) != len(vectors) or graph.ndim != vectors.shape[1]:
            raise ValueError(f"{damaged}.")
        return graph
    graph = usearch.Index(ndim=int(vectors.shape[1]), metric="ip")
    graph.add(np.arange(len(vectors), dtype=np.uint64), vectors.numpy(), threads=_BUILD_THREADS)
    return graph


class SimilarityIndex:
    """Nearest-neighbour search by cosine similarity over a corpus of embeddings: exact, or
    approximate with ``backend="approximate"``.

    Build one from an embedder and a corpus with :meth:`build` (or from vectors with the
    constructor), query it with :meth:`search`, and keep it with :meth:`save` / :meth:`load`.

    Args:
        embeddings: the corpus vectors, ``(n, dim)`` (NumPy or torch); they are L2-normalised.
        ids: one id per vector (strings or integers, e.g. file names); default ``0 .. n - 1``.
        items: optionally, one string per vector to return with each hit (e.g. the text itself).
        modality: what was embedded (an embedder's ``domain``, e.g. the family name); queries
            embedded by an embedder of another domain are refused.
        model: a JSON-ready description of the embedder (recorded in saved indexes; the
            ``flash search`` command reads its ``"source"``).
        fingerprint: the embedder's embedding of its own example input (see :meth:`build`),
            checked against a query embedder's; ``None`` skips the check.
        normalize: L2-normalise ``embeddings`` (``False`` keeps vectors that already are, bit for bit).
        backend: how :meth:`search` finds neighbours, one of :data:`BACKENDS`: ``"exact"``
            (every item compared, in torch), ``"approximate"`` (an HNSW graph built here: faster
            queries on large corpora, may miss a neighbour; needs ``pip install "flash-finetune[ann]"``)
            or ``"auto"`` (approximate from :data:`AUTO_MIN_SIZE` items on if that is installed).
    """

    def __init__(
        self,
        embeddings: Any,
        ids: Sequence[str | int] | None = None,
        *,
        items: Sequence[str] | None = None,
        modality: str | None = None,
        model: Mapping[str, Any] | None = None,
        fingerprint: Any = None,
        normalize: bool = True,
        backend: str = "exact",
    ) -> None:
        vectors = _as_matrix(embeddings, "The corpus embeddings", normalize)
        if len(vectors) == 0:
            raise ValueError("The corpus is empty: an index needs at least one item.")
        resolved = _check_backend(backend, len(vectors))
        if ids is None:
            ids = list(range(len(vectors)))
        ids = list(ids)
        if len(ids) != len(vectors):
            raise ValueError(
                f"{len(ids)} ids were given for {len(vectors)} embeddings; give one id per item."
            )
        for position, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
                raise TypeError(f"Id {position} is a {type(value).__name__}; ids are strings or integers.")
        if items is not None:
            items = list(items)
            if len(items) != len(vectors) or not all(isinstance(x, str) for x in items):
                raise ValueError(
                    f"items must be one string per embedding ({len(vectors)}), got {len(items)} values."
                )
        if modality is not None and not isinstance(modality, str):
            raise TypeError(f"modality must be a string, got {type(modality).__name__}.")
        self.embeddings = vectors
        self.ids: list[str | int] = [v if isinstance(v, str) else int(v) for v in ids]
        self.items: list[str] | None = items
        self.modality = modality
        self.model: dict[str, Any] = dict(to_json(dict(model or {})))
        self.fingerprint = None if fingerprint is None else _as_matrix(fingerprint, "The fingerprint")[0]
        self.backend = resolved
        """The search backend in use: ``"exact"`` or ``"approximate"``."""
        self._graph = _new_graph(vectors) if resolved == "approximate" else None

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        embedder: Any,
        corpus: Any,
        ids: Sequence[str | int] | None = None,
        batch_size: int = 32,
        source: str | None = None,
        items: Sequence[str] | None = None,
        backend: str = "exact",
    ) -> SimilarityIndex:
        """Embed ``corpus`` with ``embedder`` (an embedding task) and index it.

        Args:
            embedder: a task with ``embed`` (``TextEmbedder``, ``ImageEmbedder``, ...).
            corpus: what ``embedder.embed`` takes: a list of items, a folder, a file, ...
            ids: one id per embedded item (default: their positions).
            batch_size: items per forward pass.
            source: where the embedder comes from (a checkpoint path, a backbone name), recorded
                for ``flash search``.
            items: one string per item to return with each hit (e.g. the texts).
            backend: ``"exact"``, ``"approximate"`` or ``"auto"`` (see :class:`SimilarityIndex`).
        """
        if not callable(getattr(embedder, "embed", None)):
            raise TypeError(
                f"build() takes an embedder (a task with embed()), got {type(embedder).__name__}."
            )
        if isinstance(corpus, list | tuple) and not corpus:
            raise ValueError("The corpus is empty: give at least one item to index.")
        _check_backend(backend, 0)  # a misspelt backend fails before the corpus is embedded
        vectors = embedder.embed(corpus, batch_size=batch_size)
        model = {"task": type(embedder).__name__, "backbone": str(getattr(embedder, "backbone_name", ""))}
        if source is not None:
            model["source"] = str(source)
        return cls(
            vectors,
            ids,
            items=items,
            modality=getattr(embedder, "domain", None),
            model=model,
            fingerprint=embedder.example_embedding(),
            normalize=False,  # an embedder's vectors are unit length already: kept as embed() gave them
            backend=backend,
        )

    # -- size -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """The length of each vector."""
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        return (
            f"SimilarityIndex({len(self)} items, dim={self.dim}, modality={self.modality!r}, "
            f"backend={self.backend!r})"
        )

    # -- searching ------------------------------------------------------------------------------
    def check_embedder(self, embedder: Any) -> None:
        """Raise unless ``embedder`` makes embeddings comparable with the index's: the same domain,
        length and (when the index has a fingerprint) model."""
        domain = getattr(embedder, "domain", None)
        if self.modality is not None and domain != self.modality:
            raise ValueError(
                f"This index holds {self.modality} embeddings, but the query embedder ({type(embedder).__name__}) "
                f"embeds {domain} inputs: query it with {self.modality} inputs and the embedder that built it."
            )
        if self.fingerprint is None:
            return
        probe = _as_matrix(embedder.example_embedding(), "The embedder's embedding")[0]
        if len(probe) != self.dim:
            raise ValueError(
                f"The query embedder makes {len(probe)}-long vectors, the index holds {self.dim}-long ones: "
                "query it with the embedder that built it."
            )
        if float(probe @ self.fingerprint) < _SAME_MODEL:
            built = self.model.get("source") or self.model.get("backbone") or "another model"
            raise ValueError(
                f"The query embedder is not the model this index was built with ({built}); its embeddings "
                "are not comparable. Query with that model, or build the index again with this one."
            )

    def search(
        self, queries: Any, k: int = 5, embedder: Any = None, batch_size: int = 32
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """The ``k`` items most similar to each query, best first.

        Args:
            queries: with ``embedder``, inputs it embeds (a text, an image, a list of them, ...);
                without, query vectors ``(dim,)`` or ``(n, dim)``.
            k: neighbours per query (at most the size of the index).
            embedder: the model that built the index (it is checked against the index).
            batch_size: queries per forward pass of ``embedder``.

        Returns:
            For one query, a list of ``{"id", "score", "position"}`` dicts (``score``: the cosine
            similarity, computed exactly with either backend, ``position``: the item's place in
            the index; ``"item"`` too when the index holds items); for several, one such list per
            query.
        """
        check_int(k, "k", 1)
        if k > len(self):
            raise ValueError(f"k={k} but the index holds {len(self)} item(s); ask for k <= {len(self)}.")
        if embedder is not None:
            self.check_embedder(embedder)
            vectors = embedder.embed(queries, batch_size=batch_size)
            single = np.ndim(vectors) == 1
        elif isinstance(queries, np.ndarray | torch.Tensor) and queries.ndim in (1, 2):
            vectors, single = queries, queries.ndim == 1
        else:
            raise ValueError(
                f"This index holds {self.modality or 'vector'} embeddings: give query vectors (an array of shape "
                f"(n, {self.dim})), or pass embedder= (the model that built the index) to embed "
                f"{type(queries).__name__} queries."
            )
        matrix = _as_matrix(vectors, "The query embeddings")
        if matrix.shape[1] != self.dim:
            raise ValueError(
                f"The queries are {matrix.shape[1]}-long vectors, the index holds {self.dim}-long ones: "
                "embed them with the model that built the index."
            )
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(matrix), _QUERY_CHUNK):
            scores, positions = self._top_k(matrix[start : start + _QUERY_CHUNK], k)
            for row_scores, row_positions in zip(scores.tolist(), positions.tolist()):
                results.append([self._hit(int(p), float(s)) for s, p in zip(row_scores, row_positions)])
        return results[0] if single else results

    def _top_k(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The scores and positions of the ``k`` best items for each query, best first."""
        if self._graph is None:
            return (queries @ self.embeddings.T).topk(k, dim=1)
        matches = self._graph.search(queries.numpy(), k)
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        counts = np.atleast_1d(getattr(matches, "counts", keys.shape[1]))
        positions = torch.zeros(len(queries), k, dtype=torch.long)
        full = torch.from_numpy(counts >= k)
        positions[full] = torch.from_numpy(keys[:, :k][counts >= k])
        if not full.all():  # the graph walk found fewer than k items: search those queries exactly
            positions[~full] = (queries[~full] @ self.embeddings.T).topk(k, dim=1).indices
        scores = torch.einsum("nd,nkd->nk", queries, self.embeddings[positions])
        scores, order = scores.sort(dim=1, descending=True)
        return scores, positions.gather(1, order)

    def _hit(self, position: int, score: float) -> dict[str, Any]:
        hit: dict[str, Any] = {"id": self.ids[position], "score": score, "position": position}
        if self.items is not None:
            hit["item"] = self.items[position]
        return hit

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the index to ``path`` (a torch file of tensors and plain values); an existing file
        is kept unless ``overwrite=True``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or another path.")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; give a file path for the index.")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            _KEY: INDEX_FORMAT if self._graph is not None else 1,
            "embeddings": self.embeddings,
            "ids": self.ids,
            "items": self.items,
            "modality": self.modality,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "backend": self.backend,
        }
        if self._graph is not None:
            state["graph"] = torch.frombuffer(bytearray(self._graph.save()), dtype=torch.uint8)
        temporary = path.with_name(path.name + ".partial")
        torch.save(state, temporary)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None) -> SimilarityIndex:
        """Read an index written by :meth:`save` (loaded with ``weights_only=True``: no code runs).

        Args:
            path: the index file.
            backend: the search backend (see :class:`SimilarityIndex`); default: the one it was
                saved with (``"exact"`` for files of older flash versions).
        """
        path = Path(path)
        if backend is not None:
            _check_backend(backend, 0)
        if not path.is_file():
            raise FileNotFoundError(f"No index at {path}: the file does not exist.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a foreign or damaged file can fail anywhere in the unpickler
            raise ValueError(
                f"{path} is not a flash similarity index ({type(error).__name__}: {error})."
            ) from error
        if not isinstance(state, dict) or _KEY not in state:
            raise ValueError(f"{path} is not a flash similarity index (written by SimilarityIndex.save).")
        if state[_KEY] > INDEX_FORMAT:
            raise ValueError(
                f"{path} was written by a newer flash (index format {state[_KEY]}); upgrade flash."
            )
        index = cls(
            state["embeddings"],
            state["ids"],
            items=state.get("items"),
            modality=state.get("modality"),
            model=state.get("model"),
            fingerprint=state.get("fingerprint"),
            normalize=False,
        )
        index.backend = _check_backend(
            state.get("backend", "exact") if backend is None else backend, len(index)
        )
        if index.backend == "approximate":  # the saved graph when there is one, else built now
            index._graph = _new_graph(index.embeddings, state.get("graph"))
        return index
