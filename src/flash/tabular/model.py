"""``TabularClassifier`` and ``TabularRegressor``: tabular networks trained from scratch, with their preprocessing."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from typing_extensions import Unpack

from flash.core.data.tables import read_table, shown
from flash.core.model.classification import ClassificationTask
from flash.core.model.regression import RegressionTask
from flash.core.model.task import Optimization, Task, base_task_arguments
from flash.core.utils.validation import check_int
from flash.tabular.backbones import DEFAULT_BACKBONE, TABULAR_BACKBONES, LinearEnsemble, build_backbone
from flash.tabular.data import TabularData, TabularDataset
from flash.tabular.preprocessing import TabularPreprocessor

log = logging.getLogger(__name__)

DEFAULT_LEARNING_RATE = 2e-3
DEFAULT_WEIGHT_DECAY = 3e-4
_SCALAR = (str, int, float, bool)


def _network(
    preprocessing: dict[str, Any], backbone: str, backbone_kwargs: dict[str, Any] | None, out_features: int
) -> tuple[TabularPreprocessor, Any, nn.Module, dict[str, Any]]:
    """The preprocessor, backbone and head, and every backbone option used (defaults filled in)."""
    if not isinstance(preprocessing, Mapping):
        raise TypeError(
            "preprocessing must be the fitted preprocessing of a tabular data module (data.preprocessing_state()); "
            "build the task with TabularClassifier.from_data(data) or TabularRegressor.from_data(data)."
        )
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, Mapping):
        raise TypeError(f"backbone_kwargs must be a dict of backbone options, got {backbone_kwargs!r}.")
    preprocessor = TabularPreprocessor.from_state(dict(preprocessing))
    given = dict(backbone_kwargs or {})
    built = build_backbone(backbone, preprocessor, **given)
    head = LinearEnsemble(built.num_features, out_features, k=built.preprocessing["ensemble_size"])
    # A backbone registered elsewhere may not report its options: keep what was given.
    resolved = dict(built.preprocessing.get("options", given))
    return preprocessor, built, head, resolved


class TabularTask:
    """What the tabular classifier and regressor share: preprocessing, ensemble training, predict inputs.

    The backbone returns ``(batch, k, width)`` and the head ``(batch, k, outputs)``: ``k`` ensemble
    members (TabM) that train on the same batches, each with its own loss. :meth:`forward` gives
    their combined prediction.
    """

    optimization_defaults = {
        **Task.optimization_defaults,
        "learning_rate": DEFAULT_LEARNING_RATE,
        "optimizer_kwargs": {"weight_decay": DEFAULT_WEIGHT_DECAY},
    }

    domain = "tabular"
    monitor = "val_loss"  # the ensemble's loss: finer-grained than accuracy on small validation sets
    monitor_mode = "min"
    input_description = "an object mapping each column name to its value"
    input_schema = {"type": "object"}
    preprocessor: TabularPreprocessor
    target_fields: list[str]

    @classmethod
    def available_backbones(cls) -> list[str]:
        """Names accepted by ``backbone=`` (all train from scratch and work offline)."""
        return TABULAR_BACKBONES.available()

    def _init_tabular(self, task_class: type, values: dict[str, Any], out_features: int) -> None:
        """What both tabular constructors do with their arguments (``values``, their ``locals()``):
        build the network, hand the base task its arguments, keep every argument in the
        hyperparameters (the backbone's options with their defaults filled in)."""
        preprocessor, built, head, resolved = _network(
            values["preprocessing"], values["backbone"], values["backbone_kwargs"], out_features
        )
        arguments = base_task_arguments(task_class, values)
        super().__init__(
            built.module, head, backbone_blocks=built.blocks, **arguments, **values["optimization"]
        )  # type: ignore[call-arg]
        self.preprocessor = preprocessor
        self.target_fields = list(values["target_fields"] or [])
        self.restore_best_weights = bool(values["restore_best_weights"])
        names = [
            n for n in inspect.signature(task_class.__init__).parameters if n not in ("self", "optimization")
        ]
        self.save_hyperparameters(  # type: ignore[attr-defined]
            {
                **{n: values[n] for n in names},
                **self.optimization_hyperparameters(),  # type: ignore[attr-defined]
                "backbone_kwargs": resolved,
            }
        )

    _DATA_ARGUMENTS = ("num_classes", "preprocessing", "labels", "target_fields", "num_targets",
                       "target_mean", "target_std")  # fmt: skip

    def fresh_for(self, data: Any) -> Any:
        """An untrained task with this one's options for ``data`` (a cross-validation fold), its
        preprocessing and targets fitted on that data's training rows (``from_data``)."""
        options = {k: v for k, v in self.hparams.items() if k not in self._DATA_ARGUMENTS}
        custom = [k for k in ("optimizer", "lr_scheduler") if options.get(k) == "custom"]
        if custom:
            raise TypeError(
                f"This task's {custom[0]} is a custom class, which cannot be rebuilt for each fold: pass a "
                f"function that builds the task, e.g. model=lambda data: {type(self).__name__}.from_data(data, ...)."
            )
        return type(self).from_data(data, **options)  # type: ignore[attr-defined]

    # -- the network ---------------------------------------------------------------------------
    def members(self, x: torch.Tensor) -> torch.Tensor:
        """Every ensemble member's output, ``(batch, k, outputs)``."""
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.members(x))

    def combine(self, members: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def member_loss(self, members: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the supervised step (its loop is the core task's) ---------------------------------------
    def step_output(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """Every member's output: training optimises each member's loss."""
        return self.members(batch["input"])

    def step_loss(self, output: torch.Tensor, target: torch.Tensor, stage: str) -> torch.Tensor:
        """Training: every member's loss; validation and test: the ensemble's."""
        return self.member_loss(output if stage == "train" else self.combine(output).unsqueeze(1), target)

    def metric_input(self, output: torch.Tensor) -> torch.Tensor:
        """The metrics see the ensemble's prediction, as the classification or regression task shows it."""
        return super().metric_input(self.combine(output))  # type: ignore[misc]

    # -- keeping the best epoch ----------------------------------------------------------------------
    restore_best_weights: bool = True

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        self._best_epoch: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # type: ignore[misc]
        if not self.restore_best_weights or self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        score = self.trainer.callback_metrics.get(self.monitor)
        if score is None or not math.isfinite(float(score)):
            return
        best = getattr(self, "_best_epoch", None)
        if best is None or (float(score) < best[0] if self.monitor_mode == "min" else float(score) > best[0]):
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}
            self._best_epoch = (float(score), self.current_epoch, state)

    def on_fit_end(self) -> None:
        """With validation data, go back to the weights of the epoch with the best :attr:`monitor`
        (the lowest ``val_loss``), as ``flash finetune --keep best`` does."""
        super().on_fit_end()  # type: ignore[misc]
        best = getattr(self, "_best_epoch", None)
        self._best_epoch = None
        if best is None or not self.restore_best_weights:
            return
        score, epoch, state = best
        self.load_state_dict(state)
        if epoch < self.current_epoch - 1:
            log.info(
                "Restored the weights of epoch %d, which had the best %s (%.4f).", epoch, self.monitor, score
            )

    # -- inputs ----------------------------------------------------------------------------------
    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        """Rows to predict: a DataFrame, a CSV path, a list of row dicts, a dict of columns, or one row
        (a dict of column -> value, or a pandas Series).

        Raises:
            ValueError: for a missing column, text in a numerical column or infinite values.
        """
        if isinstance(inputs, pd.Series):
            inputs = inputs.to_dict()
        single = isinstance(inputs, Mapping) and not any(
            isinstance(v, list | tuple | np.ndarray | pd.Series) for v in inputs.values()
        )
        frame = read_table([inputs] if single else inputs, "predict")
        if frame.empty:
            raise ValueError("There are no rows to predict.")
        self.preprocessor.check_columns(frame, "predict", ignore=self.target_fields)
        return TabularDataset(self.preprocessor.transform(frame, "predict")), single

    def decode_serve_input(self, value: Any) -> dict[str, Any]:
        """One JSON object of a request (column -> value) -> a row :meth:`predict` accepts.

        Raises:
            ValueError: if ``value`` is not an object, lacks a column, or holds a bad value.
        """
        columns = self.preprocessor.columns
        if not isinstance(value, Mapping):
            raise ValueError(
                f"Each tabular input must be a JSON object of column -> value with the columns "
                f"{shown(columns, 50)}; got {type(value).__name__}."
            )
        missing = [c for c in columns if c not in value]
        if missing:
            raise ValueError(
                f"The input lacks column{'s' if len(missing) > 1 else ''} {shown(missing, 50)}. "
                f"The model needs: {shown(columns, 50)} (null for a missing value)."
            )
        row = {c: value[c] for c in columns}
        nested = [c for c, v in row.items() if v is not None and not isinstance(v, _SCALAR)]
        if nested:
            raise ValueError(f"Column {shown(nested)} must hold a number, a string, a boolean or null.")
        self.preprocessor.transform(pd.DataFrame([row]), "request")
        return row

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        """A batch of ``batch_size`` typical rows, preprocessed: ``(batch_size, features)`` floats."""
        frame = pd.DataFrame([self.preprocessor.typical_row()] * batch_size)
        return torch.as_tensor(self.preprocessor.transform(frame, "example"), device=self.device)

    def _check_data(self, data: Any, regression: bool) -> None:
        if not isinstance(data, TabularData):
            raise TypeError(
                f"Expected tabular data (TabularClassificationData/TabularRegressionData), got {type(data).__name__}."
            )
        if data.is_regression != regression:
            wanted = "TabularRegressionData" if regression else "TabularClassificationData"
            raise TypeError(f"{type(self).__name__} trains on {wanted}, got {type(data).__name__}.")


class TabularClassifier(TabularTask, ClassificationTask):
    """Classify table rows with a tabular network trained from scratch.

    Build it from the data: ``TabularClassifier.from_data(data, backbone="tabm")``.

    Args:
        num_classes: number of classes.
        preprocessing: the data's fitted preprocessing (``data.preprocessing_state()``); it travels
            in checkpoints so ``predict`` takes raw rows.
        backbone: one of :meth:`available_backbones` (default ``"tabm"``).
        backbone_kwargs: the backbone's options (e.g. ``{"k": 16, "d_block": 256}``). The task
            saves every option, defaults filled in, so a checkpoint rebuilds the same network
            even after a default changes.
        labels: class names (filled from the data at training time).
        target_fields: the data's target column (ignored when present in rows to predict).
        learning_rate: AdamW learning rate (default 2e-3).
        optimizer, optimizer_kwargs: default AdamW with ``weight_decay=3e-4``.
        lr_scheduler, lr_scheduler_kwargs: see :class:`~flash.core.model.task.Task`.
        label_smoothing: cross-entropy label smoothing.
        restore_best_weights: when the data has validation rows, end training with the weights
            of the epoch with the lowest ``val_loss`` (early stopping without stopping early).
    """

    def __init__(
        self,
        num_classes: int,
        preprocessing: dict[str, Any],
        backbone: str = DEFAULT_BACKBONE,
        backbone_kwargs: dict[str, Any] | None = None,
        labels: list[Any] | None = None,
        target_fields: list[str] | None = None,
        label_smoothing: float = 0.0,
        restore_best_weights: bool = True,
        **optimization: Unpack[Optimization],
    ) -> None:
        self._init_tabular(TabularClassifier, locals(), num_classes)

    @classmethod
    def from_data(cls, data: TabularData, **kwargs: Any) -> TabularClassifier:
        """A classifier for ``data``'s columns, classes and fitted preprocessing; ``kwargs`` as in the constructor."""
        if not isinstance(data, TabularData) or data.is_regression:
            raise TypeError(
                f"TabularClassifier.from_data needs TabularClassificationData, got {type(data).__name__}."
            )
        return cls(
            num_classes=data.num_classes,
            preprocessing=data.preprocessing_state(),
            labels=data.labels,
            target_fields=data.target_fields,
            **kwargs,
        )

    def attach_targets(self, data: TabularData) -> None:
        self._check_data(data, regression=False)

    def combine(self, members: torch.Tensor) -> torch.Tensor:
        # log of the members' mean probability: softmax of it is the ensemble's probability
        log_probs = F.log_softmax(members.float(), dim=-1)
        return torch.logsumexp(log_probs, dim=1) - math.log(members.shape[1])

    def member_loss(self, members: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = members.shape[1]
        return self.loss_fn(members.flatten(0, 1).float(), target.repeat_interleave(k))


class TabularRegressor(TabularTask, RegressionTask):
    """Predict one or more numbers per table row with a tabular network trained from scratch.

    Build it from the data: ``TabularRegressor.from_data(data)``. Targets are standardised with
    the training mean and standard deviation (kept in checkpoints); predictions are in the
    original units. Arguments as in :class:`TabularClassifier` (``restore_best_weights`` too), plus ``num_targets``,
    ``target_mean`` and ``target_std``.
    """

    def __init__(
        self,
        preprocessing: dict[str, Any],
        num_targets: int = 1,
        backbone: str = DEFAULT_BACKBONE,
        backbone_kwargs: dict[str, Any] | None = None,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        target_fields: list[str] | None = None,
        restore_best_weights: bool = True,
        **optimization: Unpack[Optimization],
    ) -> None:
        check_int(num_targets, "num_targets", 1)
        for name, stats in (("target_mean", target_mean), ("target_std", target_std)):
            if stats is not None and len(stats) != num_targets:
                raise ValueError(f"{name} needs {num_targets} values (one per target), got {stats!r}.")
        self._init_tabular(TabularRegressor, locals(), num_targets)

    @classmethod
    def from_data(cls, data: TabularData, **kwargs: Any) -> TabularRegressor:
        """A regressor for ``data``'s columns, targets and fitted preprocessing; ``kwargs`` as in the constructor."""
        if not isinstance(data, TabularData) or not data.is_regression:
            raise TypeError(
                f"TabularRegressor.from_data needs TabularRegressionData, got {type(data).__name__}."
            )
        return cls(
            preprocessing=data.preprocessing_state(),
            num_targets=data.num_targets,
            target_mean=data.target_mean,
            target_std=data.target_std,
            target_fields=data.target_fields,
            **kwargs,
        )

    def attach_targets(self, data: TabularData) -> None:
        """Check the data's targets; a task built without target statistics takes the data's."""
        self._check_data(data, regression=True)
        if data.num_targets != self.num_targets:
            raise ValueError(
                f"The task predicts {self.num_targets} targets but the data has {data.num_targets} "
                f"({', '.join(data.target_fields)})."
            )
        if self.hparams.get("target_mean") is None and data.target_mean is not None:
            self.target_mean.copy_(torch.tensor(data.target_mean).view(1, -1))
            self.target_std.copy_(torch.tensor(data.target_std).view(1, -1))
            self.hparams["target_mean"] = list(data.target_mean)
            self.hparams["target_std"] = list(data.target_std)

    def predict(self, inputs: Any, output: str = "values", batch_size: int = 32, num_workers: int = 0) -> Any:
        """Predicted numbers for ``inputs`` (rows as in :meth:`predict_dataset`), in the target's units:
        a float per row (a list of floats per row for several targets)."""
        return super().predict(inputs, output=output, batch_size=batch_size, num_workers=num_workers)

    def combine(self, members: torch.Tensor) -> torch.Tensor:
        return members.float().mean(dim=1)

    def member_loss(self, members: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        standardized = (
            target.float().view(members.shape[0], 1, -1) - self.target_mean.unsqueeze(1)
        ) / self.target_std.unsqueeze(1)
        return self.loss_fn(members.float(), standardized.expand_as(members))
