"""The ``contrastive`` strategy: few-shot classification by training the backbone on pairs, then
fitting the head in closed form.

With a handful of examples per class, a linear head trained by gradient descent together with the
backbone has too little signal to move either well. This strategy splits the two (the recipe
SetFit made known):

1. **The backbone learns on pairs.** Every training step uses a supervised contrastive loss over
   the batch's L2-normalised backbone features: two examples of one class are pulled together,
   examples of different classes pushed apart. A batch of ``n`` examples holds ``n * (n - 1)``
   ordered pairs, so no pair list is generated (SetFit's pair generation grows with the classes).
2. **The head is fitted, not trained.** Before each validation and when training ends, the head
   is fitted to the backbone's features of the training data as an L2-regularised logistic
   regression (full batch, L-BFGS).

A head that starts as a prior (:attr:`~flash.core.model.task.Task.head_is_prior`, e.g. a
zero-shot classifier's) takes part in both: its class vectors (the normalised rows of its weight:
for a zero-shot classifier, the embeddings of the label descriptions) join every batch of step 1
as one more example of their class, so each example is pulled towards its class's description and
every example in a batch has a positive; and they join the head's training data in step 2, one
example per class, so the prior counts for much with a few examples and little with many.

The features are normalised for the loss but not for the head: the head sees what it sees at
prediction time, and the regularisation is scaled by the features' mean squared length, so it
means the same for every backbone.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn

from flash.core.model.embedding import check_training_pairs, supervised_contrastive_loss
from flash.core.model.evaluation import outputs_over
from flash.core.training.finetuning import FlashBaseFinetuning


class Contrastive(FlashBaseFinetuning):
    """Train the backbone with a supervised contrastive loss; fit the head as a logistic regression.

    For classifiers (single-label). Nothing is frozen: the backbone trains at its usual learning
    rate (``learning_rate * backbone_lr_factor``) and the head is refitted from the features at
    each validation and at the end of training, so validation metrics, checkpoints and
    ``predict`` use a fitted head.

    Args:
        temperature: similarities are divided by this in the contrastive loss (0.05: scale 20, the
            softmax temperature sentence encoders are trained with).
        head_l2: strength of the head's L2 regularisation: scikit-learn's ``1 / C`` for a
            multinomial logistic regression on features of unit length. 0.25 (``C = 4``) pulls
            the weights towards zero less than scikit-learn's default ``C = 1``, whose
            probabilities on a few-shot set sit close to uniform.
        train_bn: keep BatchNorm layers training (nothing is frozen; kept for the common signature).

    Every class needs at least two training examples (one is enough with a prior head), and the
    loss only sees the pairs within a batch: use a batch size that holds all of a few-shot
    training set, or several examples of each class.
    """

    def __init__(
        self, temperature: float = 0.05, head_l2: float = 0.25, train_bn: bool | None = None
    ) -> None:
        super().__init__("backbone", train_bn=train_bn)
        for name, value in (("temperature", temperature), ("head_l2", head_l2)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"Contrastive({name}=...) must be a positive number, got {value!r}.")
        self.temperature = float(temperature)
        self.head_l2 = float(head_l2)
        self._class_vectors: torch.Tensor | None = None

    # -- checks ---------------------------------------------------------------------------------
    def validate(self, pl_module: nn.Module, max_epochs: int | None = None) -> None:
        for name in ("backbone", "head"):
            if not isinstance(getattr(pl_module, name, None), nn.Module):
                raise AttributeError(
                    f"The contrastive strategy trains a task's `backbone` and fits its `head`; "
                    f"{type(pl_module).__name__} has no module `{name}`."
                )
        if not hasattr(pl_module, "num_classes") or "embeddings" in getattr(pl_module, "outputs", ()):
            raise TypeError(
                f"The contrastive strategy is for classifiers; {type(pl_module).__name__} is not one. "
                "(An embedder already trains on pairs: use 'no_freeze'.)"
            )
        if getattr(pl_module, "multi_label", False):
            raise ValueError(
                "The contrastive strategy needs one class per example; this classifier is multi-label. "
                "Use 'no_freeze' or 'freeze_unfreeze'."
            )

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Nothing is frozen."""

    # -- Lightning hooks ------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        prior = bool(getattr(pl_module, "head_is_prior", False))
        self._class_vectors = class_vectors(pl_module.head, pl_module.num_classes) if prior else None
        if self._class_vectors is None:
            check_training_pairs(
                getattr(trainer, "datamodule", None),
                "the contrastive strategy",
                remedy=" (or start from a classifier whose head is a prior, such as a zero-shot one)",
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.training_objective = functools.partial(self.pair_loss, pl_module)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.fit_head(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.training_objective = None
        self.fit_head(trainer, pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        pl_module.training_objective = None

    # -- the two halves -------------------------------------------------------------------------
    def pair_loss(self, pl_module: LightningModule, batch: dict[str, Any]) -> torch.Tensor:
        """The supervised contrastive loss of a batch's normalised backbone features."""
        target = pl_module.step_target(batch["target"])
        if not isinstance(target, torch.Tensor) or target.ndim != 1 or target.is_floating_point():
            raise ValueError(
                "The contrastive strategy needs one class index per example; this data's targets are "
                f"{getattr(target, 'shape', type(target).__name__)} {getattr(target, 'dtype', '')}."
            )
        if "features" in batch:
            raise ValueError(
                "The contrastive strategy trains the backbone, so it cannot use cached features."
            )
        features = F.normalize(pl_module.backbone(batch["input"]).float(), dim=-1)
        if self._class_vectors is not None:  # each class's prior vector joins the batch as one of its items
            vectors = self._class_vectors.to(features)
            features = torch.cat([features, vectors])
            target = torch.cat([target, torch.arange(len(vectors), device=target.device)])
        return supervised_contrastive_loss(features, target, self.temperature)

    def fit_head(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fit the head to the backbone's features of the training data (see the module's docs)."""
        loader = trainer.train_dataloader
        if loader is None:
            return
        features, targets = backbone_features(pl_module, loader)
        if self._class_vectors is not None:  # one more example per class, at the features' typical length
            length = features.pow(2).sum(dim=1).mean().sqrt()
            features = torch.cat([features, self._class_vectors.to(features) * length])
            targets = torch.cat([targets, torch.arange(len(self._class_vectors), device=targets.device)])
        fit_logistic_head(pl_module.head, features, targets, self.head_l2)


def class_vectors(head: nn.Module, num_classes: int) -> torch.Tensor | None:
    """The normalised rows of a linear head's weight (one per class), or ``None`` when the head has
    no single ``(num_classes, features)`` weight matrix."""
    weights = [p for p in head.parameters() if p.ndim == 2 and p.shape[0] == num_classes]
    if len(weights) != 1:
        return None
    return F.normalize(weights[0].detach().float().clone(), dim=1)


def backbone_features(pl_module: LightningModule, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's features (eval mode, no gradients) and the targets of every batch of ``loader``,
    each batch passed through the task's batch-transfer hooks first."""
    features, targets = outputs_over(pl_module, loader, pl_module.backbone, desc="Fitting the head")
    if targets is None:
        raise ValueError("The training batches carry no targets; the head is fitted on labelled examples.")
    return features, pl_module.step_target(targets.to(features.device))


def fit_logistic_head(
    head: nn.Module, features: torch.Tensor, targets: torch.Tensor, l2: float, max_iter: int = 200
) -> None:
    """Fit ``head`` in place: mean cross-entropy plus ``l2 * s / (2 n) * ||W||^2`` over its weight
    matrices (biases free), where ``s`` is the features' mean squared length, by full-batch L-BFGS. For a linear head this is scikit-learn's
    multinomial logistic regression with ``C = 1 / l2`` on features scaled to unit mean squared
    length (for two classes, its binary form with ``C = 2 / l2``), and as for it, the problem is
    convex."""
    was_training = head.training
    head.eval()
    n = len(features)
    scale = features.pow(2).sum(dim=1).mean().clamp(min=1e-12)
    weights = [p for p in head.parameters() if p.ndim > 1]
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), targets)
        penalty = sum((p**2).sum() for p in weights)
        loss = loss + l2 * scale / (2 * n) * penalty
        loss.backward()
        return loss

    try:
        with torch.enable_grad():
            optimizer.step(closure)
    finally:
        for p in params:
            p.grad = None
        head.train(was_training)
