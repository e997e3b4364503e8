"""The task base: a LightningModule made of a pretrained ``backbone`` and a new ``head``."""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypedDict

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset
from typing_extensions import Unpack

from flash.core.model.outputs import apply_output
from flash.core.model.preprocessing import Preprocessing
from flash.core.training.optimizers import (
    OptimizerSpec,
    SchedulerSpec,
    build_optimizer,
    build_scheduler,
    check_optimizer,
    check_scheduler,
    layer_rates,
)
from flash.core.utils.jsonable import to_json
from flash.core.utils.progress import progress
from flash.core.utils.validation import check_int

Batch = dict[str, Any]


class Optimization(TypedDict, total=False):
    """The optimisation arguments every task takes by keyword (defaults: the task's
    :attr:`Task.optimization_defaults`).

    Attributes:
        learning_rate: the head's learning rate.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"`` or a callable.
        optimizer_kwargs: more arguments of the optimizer (``weight_decay``, ``momentum``, ...).
        lr_scheduler: ``"cosine"``, ``"onecycle"``, ``"linear_warmup"``, ``"reduce_on_plateau"``,
            ``None`` or a callable; see :mod:`flash.core.training.optimizers`.
        lr_scheduler_kwargs: more arguments of the scheduler.
        backbone_lr_factor: the backbone's learning rate as a fraction of ``learning_rate``
            (discriminative rates; ``1.0`` trains it at the head's rate).
        layer_lr_decay: each backbone block below the top one gets this factor more (``1.0``:
            the same rate for all blocks).
    """

    learning_rate: float
    optimizer: OptimizerSpec
    optimizer_kwargs: dict[str, Any] | None
    lr_scheduler: SchedulerSpec
    lr_scheduler_kwargs: dict[str, Any] | None
    backbone_lr_factor: float
    layer_lr_decay: float


OPTIMIZATION_ARGUMENTS = tuple(Optimization.__annotations__)


class Task(LightningModule):
    """A finetuning task: ``head(backbone(input))``.

    Batches are dicts with ``"input"`` (whatever the backbone takes) and, for training and
    evaluation, ``"target"``.

    Args:
        backbone: the pretrained part.
        head: the new layers on top of it.
        model: instead of ``backbone`` and ``head``, one module that is the whole network
            (Lightning Flash's ``Task(model=...)``): it trains as the head, under no backbone,
            and is also reachable as ``task.model``.
        backbone_blocks: the backbone's blocks from input to output (CNN stages, transformer
            layers); ``unfreeze_milestones`` counts these. Default: the backbone's children.
        loss_fn: ``(output, target) -> loss``.
        metrics: torchmetrics to log per stage as ``train_<name>``, ``val_<name>``, ``test_<name>``:
            a dict by name, or a metric or list of metrics (named after their class, in snake case).
        **optimization: how it trains (:class:`Optimization`: ``learning_rate``, ``optimizer``,
            ``lr_scheduler``, ...), by keyword. Every task takes the same ones; what a task
            leaves out comes from its class's :attr:`optimization_defaults`.
    """

    optimization_defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 1e-3,
        "optimizer": "adamw",
        "optimizer_kwargs": None,
        "lr_scheduler": None,
        "lr_scheduler_kwargs": None,
        "backbone_lr_factor": 1.0,
        "layer_lr_decay": 1.0,
    }
    """The :class:`Optimization` arguments a task uses when they are not given (tasks override some)."""

    def __init__(
        self,
        backbone: nn.Module | None = None,
        head: nn.Module | None = None,
        *,
        model: nn.Module | None = None,
        backbone_blocks: Sequence[nn.Module] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        metrics: Any = None,
        **optimization: Unpack[Optimization],
    ) -> None:
        super().__init__()
        backbone, head = _backbone_and_head(backbone, head, model)
        settings = self._optimization_settings(optimization)
        learning_rate, optimizer, lr_scheduler = (
            settings["learning_rate"],
            settings["optimizer"],
            settings["lr_scheduler"],
        )
        backbone_lr_factor, layer_lr_decay = settings["backbone_lr_factor"], settings["layer_lr_decay"]
        if (
            not isinstance(learning_rate, int | float)
            or not math.isfinite(learning_rate)
            or learning_rate <= 0
        ):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
        check_optimizer(optimizer)
        check_scheduler(lr_scheduler)
        layer_rates(1, learning_rate, backbone_lr_factor, layer_lr_decay)  # validates the factors
        self.backbone = backbone
        self.head = head
        if model is not None:  # the same module as the head, not registered twice (one state-dict entry)
            object.__setattr__(self, "model", model)
        blocks = list(backbone_blocks) if backbone_blocks is not None else list(backbone.children())
        self._backbone_block_names = _block_names(backbone, blocks)
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        metrics = metrics_dict(metrics)
        self.train_metrics = nn.ModuleDict({k: m.clone() for k, m in metrics.items()})
        self.val_metrics = nn.ModuleDict({k: m.clone() for k, m in metrics.items()})
        self.test_metrics = nn.ModuleDict({k: m.clone() for k, m in metrics.items()})
        self.learning_rate = float(learning_rate)
        self.optimizer = optimizer
        self.optimizer_kwargs = settings["optimizer_kwargs"]
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_kwargs = settings["lr_scheduler_kwargs"]
        self.backbone_lr_factor = float(backbone_lr_factor)
        self.layer_lr_decay = float(layer_lr_decay)

    def _optimization_settings(self, given: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(OPTIMIZATION_ARGUMENTS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], OPTIMIZATION_ARGUMENTS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {', '.join(unknown)}.{hint} "
                f"The optimisation arguments every task takes are {', '.join(OPTIMIZATION_ARGUMENTS)}."
            )
        settings = {**Task.optimization_defaults, **type(self).optimization_defaults, **given}
        return {name: dict(v) if isinstance(v, dict) else v for name, v in settings.items()}

    def optimization_hyperparameters(self) -> dict[str, Any]:
        """The optimisation settings in force, as checkpoint hyperparameters: an optimizer or
        scheduler given as a class or callable is recorded as ``"custom"`` (a checkpoint cannot
        rebuild it: pass it again when loading)."""
        optimizer, scheduler = self.optimizer, self.lr_scheduler
        return {
            "learning_rate": self.learning_rate,
            "optimizer": optimizer if isinstance(optimizer, str) else "custom",
            "optimizer_kwargs": self.optimizer_kwargs,
            "lr_scheduler": scheduler if scheduler is None or isinstance(scheduler, str) else "custom",
            "lr_scheduler_kwargs": self.lr_scheduler_kwargs,
            "backbone_lr_factor": self.backbone_lr_factor,
            "layer_lr_decay": self.layer_lr_decay,
        }

    def unsaved_hyperparameters(self) -> list[str]:
        """The optimisation arguments a checkpoint cannot hold (an optimizer or scheduler given as a
        class or callable), for ``save_hyperparameters(ignore=...)``."""
        return [
            name
            for name, value in (("optimizer", self.optimizer), ("lr_scheduler", self.lr_scheduler))
            if value is not None and not isinstance(value, str)
        ]

    def fresh_for(self, data: Any) -> Task | None:
        """An untrained task like this one, built for ``data`` (a cross-validation fold), for tasks
        built from their data's fitted preprocessing; ``None`` (the default): a copy of this task
        as it is serves every fold."""
        return None

    # -- structure ------------------------------------------------------------------------------
    @property
    def backbone_blocks(self) -> list[nn.Module]:
        """The backbone's blocks from input to output."""
        return [self.backbone.get_submodule(name) for name in self._backbone_block_names]

    @property
    def feature_extractor(self) -> nn.Module:
        """The backbone under the name the finetuning page's custom-callback example uses."""
        return self.backbone

    def modules_to_freeze(self) -> nn.Module | Sequence[nn.Module] | None:
        """What the finetuning strategies freeze (Lightning Flash's hook): the backbone. Override it
        to freeze other modules; ``None`` freezes nothing."""
        return self.backbone

    def forward(self, x: Any) -> torch.Tensor:
        return self.head(self.backbone(x))

    # -- preprocessing -------------------------------------------------------------------------
    preprocessing: Preprocessing | None = None
    """What the task's inputs must look like (a domain's :class:`~flash.core.model.preprocessing.Preprocessing`),
    read by data modules in their ``setup`` hook; ``None`` where the domain has none."""

    def use_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Make ``preprocessing`` the task's; it is saved in the hyperparameters, so checkpoints
        (and predictions after loading one) use it.

        A data module calls this from its ``setup`` hook when the data fixes part of the
        preprocessing (an image data module built with ``image_size=``).
        """
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}.")
        self.preprocessing = preprocessing
        self.hparams["preprocessing"] = preprocessing.to_dict()

    # -- training -------------------------------------------------------------------------------
    def step_output(self, batch: Batch, stage: str) -> torch.Tensor:
        """The model's output for a training or evaluation batch: ``head(batch["features"])`` when
        the data supplies the backbone's features (computed once for a frozen backbone), else
        ``self(batch["input"])``."""
        if "features" in batch:
            return self.head(batch["features"])
        return self(batch["input"])

    def step_target(self, target: Any) -> Any:
        """The batch's target as the loss and metrics take it."""
        return target

    def step_loss(self, output: torch.Tensor, target: Any, stage: str) -> torch.Tensor:
        """The loss of ``output`` (from :meth:`step_output`) against ``target``."""
        return self.loss_fn(output, target)

    def metric_input(self, output: torch.Tensor) -> torch.Tensor:
        """What the metrics see of :meth:`step_output`'s output (logits by default)."""
        return output

    head_is_prior: bool = False
    """Whether the head's weights already hold knowledge to keep (a zero-shot classifier's): the
    ``contrastive`` strategy then adds the head's class vectors to its training batches and to the
    head's fit as one example per class."""

    training_objective: Callable[[Batch], torch.Tensor] | None = None
    """A loss that replaces the supervised one in training steps while a strategy sets it (the
    ``contrastive`` strategy trains the backbone on pairs of examples); ``None``: the task's own
    :meth:`step_loss`. It takes the batch as a ``{"input", "target"}`` dict."""

    def _shared_step(self, batch: Batch, stage: str) -> torch.Tensor:
        """The one supervised step of every task: output, loss, and the stage's logged metrics.
        Batches are ``{"input", "target"}`` dicts or ``(input, target)`` pairs."""
        if not isinstance(batch, Mapping) or "target" not in batch:
            inputs, target = input_and_target(batch)
            batch = {"input": inputs, "target": target}
        if stage == "train" and self.training_objective is not None:
            loss = self.training_objective(batch)
            self.log(
                "train_loss",
                loss,
                prog_bar=True,
                on_step=False,
                on_epoch=True,
                batch_size=_batch_size(batch["target"]),
            )
            return loss
        target = self.step_target(batch["target"])
        output = self.step_output(batch, stage)
        loss = self.step_loss(output, target, stage)
        logged = {"prog_bar": True, "on_step": False, "on_epoch": True, "batch_size": _batch_size(target)}
        self.log(f"{stage}_loss", loss, **logged)
        metrics = getattr(self, f"{stage}_metrics")
        if metrics:
            prediction = self.metric_input(output)
            for name, metric in metrics.items():
                metric.update(prediction, target)
                self.log(f"{stage}_{name}", metric, **logged)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """One result per item, of the kind :attr:`predict_output` names (an output kind, a
        Lightning Flash output name or an :class:`~flash.core.model.outputs.Output`; default: the
        first of :attr:`outputs`); ``trainer.predict(..., output=...)`` sets it for one run."""
        return apply_output(self, self(predict_input(batch)), getattr(self, "predict_output", None))

    # -- optimisation ---------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Every parameter, in stable named groups: ``head`` then ``backbone.<i>`` per block."""
        blocks = self.backbone_blocks
        rates = layer_rates(len(blocks), self.learning_rate, self.backbone_lr_factor, self.layer_lr_decay)
        assigned: set[int] = set()
        block_params: list[list[nn.Parameter]] = []
        for block in blocks:
            params = [p for p in block.parameters() if id(p) not in assigned]
            assigned.update(id(p) for p in params)
            block_params.append(params)
        loose = [p for p in self.backbone.parameters() if id(p) not in assigned]
        if loose and block_params:
            block_params[0] = loose + block_params[0]  # stem parameters outside any block
        elif loose:
            block_params.append(loose)
            rates = rates or [self.learning_rate * self.backbone_lr_factor]
        assigned.update(id(p) for p in loose)
        head = [p for p in self.parameters() if id(p) not in assigned]
        groups = [{"name": "head", "params": head, "lr": self.learning_rate}]
        groups += [
            {"name": f"backbone.{i}", "params": params, "lr": rate}
            for i, (params, rate) in enumerate(zip(block_params, rates))
            if params
        ]
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(
            self.optimizer, self.param_groups(), self.learning_rate, self.optimizer_kwargs
        )
        total_steps = self._total_steps()
        scheduler = build_scheduler(self.lr_scheduler, optimizer, total_steps, self.lr_scheduler_kwargs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _total_steps(self) -> int:
        try:
            steps = self.trainer.estimated_stepping_batches
        except (RuntimeError, AttributeError):
            return 1
        return int(steps) if math.isfinite(steps) else 1000

    # -- the task contract: what the CLI, serving, export and plots use ---------------------------
    monitor: str = "val_loss"
    """The validation metric that says which epoch is best (``flash finetune --keep best``,
    ``--early-stopping``); :attr:`monitor_mode` says whether lower or higher is better."""

    monitor_mode: str = "min"
    """``"min"`` or ``"max"``: the direction in which :attr:`monitor` improves."""

    domain: str = "generic"
    """The name of the task's family (its ``flash finetune`` command and ``flash predict`` input
    reader are found under it); shown by ``/health`` and recorded in exports."""

    outputs: tuple[str, ...] = ("raw",)
    """The kinds of prediction :meth:`predict` offers; the first is the default."""

    serve_outputs: tuple[str, ...] = ()
    """The kinds one served prediction holds (default: the first of :attr:`outputs`)."""

    output_fields: dict[str, str] = {}
    """The JSON field of each output kind in served predictions (default: the kind's name)."""

    input_description: str = "one input the task accepts"
    """What one JSON input of a serving request is, in words (errors and the OpenAPI page)."""

    input_schema: dict[str, Any] = {}
    """The JSON schema of one serving input (the OpenAPI page); empty means any JSON value."""

    def predict(
        self, inputs: Any, output: str | None = None, batch_size: int = 32, num_workers: int = 0
    ) -> Any:
        """Predict on ``inputs``; a single input gives a single result, a collection a list.

        Args:
            inputs: what the task accepts (see the subclass).
            output: one of :attr:`outputs` (default: the first), e.g. ``"labels"`` or
                ``"probabilities"`` for a classifier, ``"values"`` for a regressor.
            batch_size: items per forward pass.
            num_workers: loader processes.
        """
        kind = output or self.outputs[0]
        self.check_output(kind)
        rows, single = self.predict_outputs(inputs, (kind,), batch_size, num_workers)
        results = [row[kind] for row in rows]
        return results[0] if single else results

    def predict_outputs(
        self, inputs: Any, kinds: Sequence[str], batch_size: int = 32, num_workers: int = 0
    ) -> tuple[list[dict[str, Any]], bool]:
        """Several kinds of prediction from one forward pass: ``{kind: result}`` per item, in
        input order, and whether ``inputs`` was a single item."""
        for kind in kinds:
            self.check_output(kind)
        check_int(batch_size, "batch_size", 1)
        check_int(num_workers, "num_workers", 0)
        dataset, single = self.predict_dataset(inputs)
        loader = DataLoader(
            dataset, batch_size=batch_size, collate_fn=self.collate_fn(), num_workers=num_workers
        )
        was_training = self.training
        self.eval()
        rows: list[dict[str, Any]] = []
        try:
            with torch.inference_mode():
                for batch in progress(loader, desc="Predicting"):
                    batch = self.transfer_batch_to_device(batch, self.device, 0)
                    output = self(batch["input"])
                    per_kind = [self.format_output(output, kind) for kind in kinds]
                    rows.extend(dict(zip(kinds, values)) for values in zip(*per_kind))
        finally:
            self.train(was_training)
        return rows, single

    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        """A dataset of ready items for ``inputs``, and whether ``inputs`` was a single item."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_dataset().")

    def collate_fn(self) -> Callable[[list[Any]], Batch] | None:
        """How items become a batch; ``None`` uses torch's default collate."""
        return None

    def check_output(self, output: str) -> None:
        if output not in self.outputs:
            raise ValueError(f"Unknown output {output!r}. Choose one of {', '.join(self.outputs)}.")

    def format_output(self, output: torch.Tensor, kind: str) -> list[Any]:
        """Turn a batch of model outputs into a list of per-item results of ``kind``."""
        return list(output.detach().cpu())

    def output_to_json(self, result: Any, kind: str) -> Any:
        """One item's result of ``kind`` as a JSON value (numbers, strings, lists, objects)."""
        return to_json(result)

    # -- serving --------------------------------------------------------------------------------
    def decode_serve_input(self, value: Any) -> Any:
        """Turn one JSON value of a serving request into an input :meth:`predict` accepts.

        Raises:
            ValueError: naming what is wrong with ``value``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be served.")

    def decode_serve_file(self, data: bytes, filename: str = "") -> Any:
        """Turn one uploaded file's bytes into an input :meth:`predict` accepts. Tasks that take
        files override this; the server then accepts multipart uploads.

        Raises:
            ValueError: naming what is wrong with the file.
        """
        raise TypeError(f"A {type(self).__name__} takes JSON inputs, not file uploads.")

    @property
    def accepts_files(self) -> bool:
        """Whether :meth:`decode_serve_file` is implemented (the server then takes uploads)."""
        return type(self).decode_serve_file is not Task.decode_serve_file

    def serve_predictions(
        self, items: list[Any], batch_size: int, kinds: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """JSON-ready predictions of decoded serving inputs: one object per item, holding a field
        per kind (:attr:`serve_outputs` by default, named by :attr:`output_fields`)."""
        kinds = tuple(kinds or self.serve_outputs or self.outputs[:1])
        rows, _ = self.predict_outputs(items, kinds, batch_size)
        return [
            {self.output_fields.get(kind, kind): self.output_to_json(row[kind], kind) for kind in kinds}
            for row in rows
        ]

    def serve(self, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
        """Serve this task over HTTP until interrupted; see :func:`flash.core.serve.serve`."""
        from flash.core.utils.extras import require_extra

        require_extra("serve", "Serving a model")
        from flash.core.deploy.serve import serve

        serve(self, host=host, port=port, **kwargs)

    # -- export ---------------------------------------------------------------------------------
    def example_input(self, batch_size: int = 2) -> Any:
        """A batch input as :meth:`forward` receives it after preprocessing (for export)."""
        raise NotImplementedError(f"{type(self).__name__} does not provide an example input.")

    def export_outputs(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named outputs of an exported graph, computed from :meth:`forward`'s output. The
        last one is what the export check compares with PyTorch."""
        return {"output": output.float()}

    def export_output_descriptions(self) -> dict[str, str]:
        """A sentence per name of :meth:`export_outputs` (stored in the exported file)."""
        return {"output": "the model's output, (batch, ...)"}

    def export_metadata(self) -> dict[str, Any]:
        """What an exported file records besides the graph: the task's preprocessing and whatever
        a user needs to turn the outputs into predictions (every value JSON-ready)."""
        preprocessing = getattr(self, "preprocessing", None)
        if hasattr(preprocessing, "to_dict"):
            preprocessing = preprocessing.to_dict()
        return {"preprocessing": to_json(preprocessing) if isinstance(preprocessing, Mapping) else {}}

    def to_onnx(self, file_path: Any, input_sample: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Export :meth:`forward` to an ONNX file; see :func:`flash.core.export.export_onnx`."""
        from flash.core.utils.extras import require_extra

        require_extra("export", "ONNX export")
        from flash.core.deploy.export import export_onnx

        return export_onnx(self, file_path, example_input=input_sample, **kwargs)

    # -- checkpoints ----------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, *args: Any, device: str | torch.device | None = None, **kwargs: Any
    ) -> Any:
        """Load a task; its backbone is built without downloading weights (the checkpoint has them).

        ``checkpoint_path`` may be an http(s) URL: it is downloaded once into the cache
        (:func:`flash.core.data.download.cached_download`).

        Args:
            device: where the loaded task lives, so where :meth:`predict` runs: ``"auto"`` (the
                default: a GPU when there is one), ``"cpu"`` or ``"gpu"``. Lightning's
                ``map_location``, when given without ``device``, decides instead.
        """
        from flash.core.data.download import local_path
        from flash.core.deploy.checkpoint import check_flash_checkpoint
        from flash.core.utils.device import resolve_device

        target = None if device is None and "map_location" in kwargs else resolve_device(device or "auto")
        checkpoint_path = local_path(checkpoint_path)
        check_flash_checkpoint(checkpoint_path, task_class=cls)
        if "pretrained" in inspect.signature(cls.__init__).parameters:
            kwargs.setdefault("pretrained", False)
        kwargs.setdefault("weights_only", True)
        kwargs.setdefault("map_location", "cpu")
        task = super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        return task if target is None else task.to(target)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from flash.core.deploy.checkpoint import FLASH_CHECKPOINT_KEY, checkpoint_marker

        checkpoint[FLASH_CHECKPOINT_KEY] = checkpoint_marker(type(self))


def base_task_arguments(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` (a task constructor's ``locals()``) that the constructors of
    ``cls``'s bases take by keyword: what a domain task hands on to :class:`Task` and
    :class:`~flash.core.model.classification.ClassificationTask` unchanged (learning rate,
    optimizer, scheduler, labels, ...), so each new base option reaches every task.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping of argument names, got {type(values).__name__}.")
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        init = base.__dict__.get("__init__")
        if init is not None and issubclass(base, Task):
            names.update(
                p.name for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY
            )
    return {name: values[name] for name in names if name in values}


def _backbone_and_head(
    backbone: nn.Module | None, head: nn.Module | None, model: nn.Module | None
) -> tuple[nn.Module, nn.Module]:
    if model is not None:
        if backbone is not None or head is not None:
            raise TypeError("Pass either model= (the whole network) or backbone and head, not both.")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        return nn.Identity(), model
    if backbone is None or head is None:
        raise TypeError(
            "A Task needs a backbone and a head (Task(backbone, head)), or the whole network as Task(model=...)."
        )
    return backbone, head


def metrics_dict(metrics: Any) -> dict[str, nn.Module]:
    """``metrics`` as a dict by name: a dict is kept, a metric or a list of metrics is named after
    each metric's class in snake case (``MulticlassAccuracy`` -> ``multiclass_accuracy``)."""
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        return dict(metrics)
    items = [metrics] if isinstance(metrics, nn.Module) else metrics
    if not isinstance(items, Sequence) or not all(isinstance(m, nn.Module) for m in items):
        raise TypeError(
            "metrics must be a dict of name -> torchmetrics metric, a metric or a list of metrics; "
            f"got {type(metrics).__name__}."
        )
    named: dict[str, nn.Module] = {}
    for metric in items:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(metric).__name__).lower()
        if name in named:
            raise ValueError(f"Two metrics would both be named {name!r}; pass a dict of name -> metric.")
        named[name] = metric
    return named


def input_and_target(batch: Any) -> tuple[Any, Any]:
    """A training batch's input and target: from a ``{"input", "target"}`` dict or an ``(input, target)`` pair."""
    if isinstance(batch, Mapping) and "input" in batch and "target" in batch:
        return batch["input"], batch["target"]
    if isinstance(batch, list | tuple) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        'A training batch must be a dict with "input" and "target" or an (input, target) pair; got '
        + (
            f"a dict with keys {sorted(map(str, batch))}."
            if isinstance(batch, Mapping)
            else f"{type(batch).__name__}."
        )
    )


def predict_input(batch: Any) -> Any:
    """A prediction batch's input: ``batch["input"]``, the first item of a tuple, or the batch itself."""
    if isinstance(batch, Mapping):
        if "input" not in batch:
            raise TypeError(
                f'A prediction batch dict needs an "input" key; got keys {sorted(map(str, batch))}.'
            )
        return batch["input"]
    if isinstance(batch, list | tuple) and batch:
        return batch[0]
    return batch


def _batch_size(target: Any) -> int:
    if isinstance(target, torch.Tensor):
        return int(target.shape[0]) if target.ndim else 1
    return len(target)


def _block_names(backbone: nn.Module, blocks: list[nn.Module]) -> list[str]:
    names = {id(m): n for n, m in backbone.named_modules()}
    missing = [i for i, b in enumerate(blocks) if id(b) not in names]
    if missing:
        raise ValueError(f"backbone_blocks {missing} are not submodules of the backbone.")
    return [names[id(b)] for b in blocks]
