"""Embedding tasks: a backbone and a projection whose output is one L2-normalised vector per input.

An :class:`EmbeddingTask` trains on labelled data with a metric-learning loss over the pairs a
batch holds (two items of one class are a positive pair, items of different classes negatives),
so the usual classification data modules are its training data. Its one output kind,
``"embeddings"``, is what ``predict``, serving and export give; :meth:`EmbeddingTask.embed`
returns the vectors as one array.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flash.core.model.task import Batch, Task, base_task_arguments

LOSSES = ("supervised_contrastive", "multiple_negatives")
"""The metric-learning losses an :class:`EmbeddingTask` trains with."""


def identity_projection(num_features: int) -> nn.Linear:
    """A square linear layer that starts as the identity: the pretrained embeddings are kept until
    it trains, and the ``freeze`` strategy has something to train on top of a frozen backbone."""
    layer = nn.Linear(num_features, num_features)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(num_features))
        layer.bias.zero_()
    return layer


def positive_mask(targets: torch.Tensor) -> torch.Tensor:
    """``mask[i, j]``: items ``i`` and ``j`` (``i != j``) share a class."""
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    return same & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device)


def supervised_contrastive_loss(
    embeddings: torch.Tensor, targets: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) over a batch of normalised embeddings.

    Each item with at least one other item of its class in the batch is an anchor; its loss is
    the mean over those positives of ``-log softmax`` of the positive's similarity among all
    other items of the batch. Items without a positive in the batch add nothing; a batch without
    any pair gives a zero loss (that still back-propagates).
    """
    similarity = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(len(targets), dtype=torch.bool, device=embeddings.device)
    log_prob = similarity.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    positives = positive_mask(targets)
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not anchors.any():
        return embeddings.sum() * 0.0
    mean_log_prob = (log_prob.masked_fill(~positives, 0.0).sum(dim=1)[anchors]) / counts[anchors]
    return -mean_log_prob.mean()


def multiple_negatives_loss(
    embeddings: torch.Tensor, targets: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Multiple-negatives ranking loss over the pairs of a labelled batch.

    Each item with another item of its class in the batch is an anchor paired with the next such
    item (in batch order, wrapping round); the other items of different classes are its
    negatives (other items of its own class are left out, not counted as negatives). The loss is
    the cross-entropy of picking the positive among them, at ``1 / temperature`` scale (20 for
    the default 0.05, as sentence-transformers uses).
    """
    n = len(targets)
    positives = positive_mask(targets)
    index = torch.arange(n, device=embeddings.device)
    # the next positive after i, wrapping round: rank candidates by (j - i) mod n
    distance = (index.unsqueeze(0) - index.unsqueeze(1)) % n
    distance = distance.masked_fill(~positives, n)
    partner = distance.argmin(dim=1)
    anchors = positives.any(dim=1)
    if not anchors.any():
        return embeddings.sum() * 0.0
    keep = ~positives | (index.unsqueeze(0) == partner.unsqueeze(1))
    keep &= ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    similarity = (embeddings @ embeddings.T / temperature).masked_fill(~keep, float("-inf"))
    return F.cross_entropy(similarity[anchors], partner[anchors])


_LOSS_FUNCTIONS = {
    "supervised_contrastive": supervised_contrastive_loss,
    "multiple_negatives": multiple_negatives_loss,
}


def check_loss(loss: Any, temperature: Any) -> None:
    """Raise unless ``loss`` is one of :data:`LOSSES` and ``temperature`` a positive number (an
    embedding task calls this before building its backbone)."""
    if loss not in _LOSS_FUNCTIONS:
        raise ValueError(f"Unknown loss {loss!r}. Choose one of {', '.join(LOSSES)}.")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")


class PairLoss(nn.Module):
    """One of :data:`LOSSES` as a module: ``(embeddings, targets) -> loss`` at ``temperature``."""

    def __init__(self, name: str = "supervised_contrastive", temperature: float = 0.05) -> None:
        super().__init__()
        check_loss(name, temperature)
        self.name = name
        self.temperature = float(temperature)

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _LOSS_FUNCTIONS[self.name](embeddings, targets, self.temperature)

    def extra_repr(self) -> str:
        return f"{self.name}, temperature={self.temperature}"


def check_pairs(
    targets: Sequence[Any] | np.ndarray,
    labels: Sequence[Any] | None = None,
    learner: str = "an embedder",
    remedy: str = "",
) -> None:
    """Refuse training targets that give a metric-learning loss no positive pair to learn from;
    the messages name the ``learner`` and end with ``remedy`` (another way out, if any).

    Raises:
        ValueError: a class has a single example (naming it and what to do), or there is one class.
    """
    values = np.asarray(targets)
    if values.ndim != 1:
        raise ValueError("An embedder learns from one label per item; multi-label targets are not supported.")
    counts = Counter(values.tolist())
    lonely = [
        labels[k] if labels is not None and isinstance(k, int) else k for k, c in counts.items() if c < 2
    ]
    if lonely:
        shown = ", ".join(repr(x) for x in lonely[:10]) + (" ..." if len(lonely) > 10 else "")
        raise ValueError(
            f"{len(lonely)} class(es) have a single training example ({shown}): {learner} learns from pairs "
            f"of examples of one class. Add at least one more example to each, or drop those classes{remedy}."
        )
    if len(counts) < 2:
        raise ValueError(
            f"The training data has a single class: {learner} learns to tell classes apart, so it needs "
            "examples of at least two."
        )


def check_training_pairs(datamodule: Any, learner: str = "an embedder", remedy: str = "") -> None:
    """:func:`check_pairs` on the training targets of a flash data module (nothing to check when
    the data is something else or its training split has no targets)."""
    splits = getattr(datamodule, "splits", None)
    train = splits.get("train") if isinstance(splits, dict) else None
    if train is not None and train.targets is not None:
        check_pairs(train.targets, getattr(datamodule, "labels", None), learner, remedy)


class EmbeddingTask(Task):
    """A task whose output is one L2-normalised embedding per input: ``normalize(head(backbone(x)))``.

    Trained on labelled items (any classification data module) with a metric-learning loss over
    the pairs of each batch: bigger batches hold more pairs, and every class needs at least two
    training examples.

    Args:
        backbone: the pretrained part.
        head: the projection on top of it (default for family tasks: :func:`identity_projection`).
        loss: ``"supervised_contrastive"`` (all positives of each item in the batch) or
            ``"multiple_negatives"`` (one positive per item, the other classes' items as negatives).
        temperature: the similarities are divided by this before the softmax (0.05: scale 20).
        **kwargs: :class:`~flash.core.model.task.Task` arguments (learning rate, optimizer, ...).
    """

    outputs = ("embeddings",)
    serve_outputs = ("embeddings",)
    output_fields = {"embeddings": "embedding"}
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        loss: str = "supervised_contrastive",
        temperature: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, head, loss_fn=PairLoss(loss, temperature), **kwargs)
        self.loss = loss
        self.temperature = float(temperature)
        self.labels: list[Any] | None = None

    # -- the model ------------------------------------------------------------------------------
    def normalize(self, output: torch.Tensor) -> torch.Tensor:
        """Unit-length rows (what every output of the task is)."""
        return F.normalize(output.float(), dim=-1)

    def forward(self, x: Any) -> torch.Tensor:
        return self.normalize(self.head(self.backbone(x)))

    def step_output(self, batch: Batch, stage: str) -> torch.Tensor:
        if "features" in batch:
            return self.normalize(self.head(batch["features"]))
        return self(batch["input"])

    # -- the labelled data ----------------------------------------------------------------------
    def attach_labels(self, labels: Sequence[Any] | None, multi_label: bool | None = None) -> None:
        """Keep the training data's class names (shown by a server's ``/health``); multi-label data
        is refused."""
        if multi_label:
            raise ValueError("An embedder learns from one label per item; multi-label data is not supported.")
        if labels is not None:
            self.labels = list(labels)

    def on_fit_start(self) -> None:
        """Check that every training class has a pair of examples before the first step."""
        check_training_pairs(getattr(self.trainer, "datamodule", None))

    # -- outputs --------------------------------------------------------------------------------
    def format_output(self, output: torch.Tensor, kind: str) -> list[Any]:
        """One ``float32`` NumPy vector per item."""
        return list(output.detach().float().cpu().numpy())

    def output_to_json(self, result: Any, kind: str) -> Any:
        return [float(x) for x in np.asarray(result).ravel()]

    def embed(
        self,
        inputs: Any,
        batch_size: int = 32,
        num_workers: int = 0,
        return_tensors: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """The L2-normalised embeddings of ``inputs`` (whatever :meth:`predict` takes).

        Returns:
            A ``float32`` NumPy array of shape ``(n, dim)`` for a collection of inputs, ``(dim,)``
            for a single input; a CPU ``torch.Tensor`` of the same shape with ``return_tensors=True``.
        """
        rows, single = self.predict_outputs(inputs, ("embeddings",), batch_size, num_workers)
        vectors = np.stack([row["embeddings"] for row in rows]).astype(np.float32, copy=False)
        if single:
            vectors = vectors[0]
        return torch.from_numpy(vectors) if return_tensors else vectors

    @property
    def embedding_dim(self) -> int:
        """The length of each embedding."""
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        if last:
            return int(last[-1].out_features)
        return int(self.example_embedding().shape[-1])

    def example_embedding(self) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self(self.example_input(1))
        finally:
            self.train(was_training)

    # -- export ---------------------------------------------------------------------------------
    def export_outputs(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embeddings": output.float()}

    def export_output_descriptions(self) -> dict[str, str]:
        return {"embeddings": "one L2-normalised embedding per input, (batch, dim)"}

    def export_metadata(self) -> dict[str, Any]:
        return {**super().export_metadata(), "embedding_dim": self.embedding_dim, "normalized": True}


def embedder_arguments(cls: type, built: Any, values: dict[str, Any]) -> dict[str, Any]:
    """What a family's embedder hands :class:`EmbeddingTask`: its registry-built backbone
    (``built.module``, ``built.blocks``), an identity projection of its width, and the base
    arguments among ``values`` (the constructor's ``locals()``; see ``base_task_arguments``)."""
    return {
        "backbone": built.module,
        "head": identity_projection(built.num_features),
        "backbone_blocks": built.blocks,
        **base_task_arguments(cls, values),
    }
