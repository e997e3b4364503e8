"""PyTorch Lightning 1.x / Lightning Flash 0.8 Trainer arguments, mapped onto Lightning 2's.

``flash.Trainer(gpus=1)``, ``tpu_cores=8``, ``trainer.fit(model, train_dataloader=...)`` and
``trainer.predict(model, datamodule=..., output="probabilities")`` run as Flash 0.8 users wrote
them; each old spelling warns with :class:`~flash.core.utils.deprecation.FlashDeprecationWarning`
naming the current one.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from flash.core.utils.deprecation import warn_deprecated

_DEVICE_ARGUMENTS = {"gpus": "gpu", "tpu_cores": "tpu", "ipus": "ipu", "hpus": "hpu", "num_processes": "cpu"}
"""PL 1.x per-accelerator device counts -> the accelerator they meant."""

_RENAMED = {
    "checkpoint_callback": "enable_checkpointing",
    "replace_sampler_ddp": "use_distributed_sampler",
}
"""PL 1.x arguments whose value carries over under a new name."""

_DROPPED = {
    "flush_logs_every_n_steps": "loggers flush on their own schedule",
    "prepare_data_per_node": "set it on the data module (prepare_data_per_node attribute)",
    "terminate_on_nan": "use detect_anomaly=True or a callback",
    "amp_backend": "mixed precision is chosen by precision= alone",
    "amp_level": "mixed precision is chosen by precision= alone",
    "move_metrics_to_cpu": "metrics stay on their device",
    "track_grad_norm": "log gradient norms in a callback (lightning.pytorch.utilities.grad_norm)",
    "auto_select_gpus": "devices= picks the devices",
    "multiple_trainloader_mode": "wrap the loaders in lightning.pytorch.utilities.CombinedLoader",
}
"""PL 1.x arguments with no Lightning 2 equivalent: ignored with a warning saying what to do."""


def map_legacy_trainer_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of ``flash.Trainer(...)`` with PL 1.x arguments replaced by Lightning 2's.

    ``gpus=N`` becomes ``accelerator="gpu", devices=N`` (``gpus=0`` the CPU; ``None`` is dropped),
    and likewise ``tpu_cores``, ``ipus``, ``hpus`` and ``num_processes``;
    ``progress_bar_refresh_rate``, ``weights_summary``, ``checkpoint_callback``,
    ``replace_sampler_ddp``, ``stochastic_weight_avg`` and ``resume_from_checkpoint`` map to their
    successors; arguments Lightning 2 dropped are ignored. Each warns.

    Raises:
        ValueError: an old device argument together with ``accelerator=``/``devices=``.
    """
    kwargs = dict(kwargs)
    for old, accelerator in _DEVICE_ARGUMENTS.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if value is None:
            continue
        given = [name for name in ("accelerator", "devices") if kwargs.get(name) not in (None, "auto")]
        if given:
            raise ValueError(
                f"Pass either {old}= (PyTorch Lightning 1.x) or {' and '.join(given)}=, not both; "
                f"write accelerator={accelerator!r}, devices=... alone."
            )
        if value in (0, "0", []) and old != "num_processes":
            kwargs["accelerator"] = "cpu"
            hint = 'accelerator="cpu"'
        else:
            kwargs["accelerator"] = accelerator
            kwargs["devices"] = value
            hint = f'accelerator="{accelerator}", devices={value!r}'
        warn_deprecated(f"flash.Trainer({old}={value!r}) is PyTorch Lightning 1.x; write {hint}.")
    for old, new in _RENAMED.items():
        if old in kwargs:
            if new in kwargs:
                raise ValueError(f"Pass either {old}= or its new name {new}=, not both.")
            kwargs[new] = kwargs.pop(old)
            warn_deprecated(f"flash.Trainer({old}=...) is now {new}=...")
    if "progress_bar_refresh_rate" in kwargs:
        rate = kwargs.pop("progress_bar_refresh_rate")
        if rate == 0:
            kwargs["enable_progress_bar"] = False
            hint = "enable_progress_bar=False"
        else:
            from lightning.pytorch.callbacks import TQDMProgressBar

            _add_callback(kwargs, TQDMProgressBar(refresh_rate=int(rate or 1)))
            hint = "callbacks=[TQDMProgressBar(refresh_rate=...)]"
        warn_deprecated(
            f"flash.Trainer(progress_bar_refresh_rate=...) is PyTorch Lightning 1.x; write {hint}."
        )
    if "weights_summary" in kwargs:
        summary = kwargs.pop("weights_summary")
        kwargs["enable_model_summary"] = summary is not None
        warn_deprecated(
            "flash.Trainer(weights_summary=...) is PyTorch Lightning 1.x; write enable_model_summary=."
        )
    if "stochastic_weight_avg" in kwargs:
        if kwargs.pop("stochastic_weight_avg"):
            from lightning.pytorch.callbacks import StochasticWeightAveraging

            _add_callback(kwargs, StochasticWeightAveraging(swa_lrs=1e-2))
        warn_deprecated(
            "flash.Trainer(stochastic_weight_avg=True) is PyTorch Lightning 1.x; "
            "write callbacks=[StochasticWeightAveraging(swa_lrs=...)]."
        )
    for old, advice in _DROPPED.items():
        if old in kwargs:
            kwargs.pop(old)
            warn_deprecated(f"flash.Trainer({old}=...) was removed in Lightning 2 and is ignored: {advice}.")
    return kwargs


def _add_callback(kwargs: dict[str, Any], callback: pl.Callback) -> None:
    callbacks = kwargs.get("callbacks") or []
    callbacks = [callbacks] if isinstance(callbacks, pl.Callback) else list(callbacks)
    kwargs["callbacks"] = [*callbacks, callback]


class LegacyTrainerEntryPoints:
    """``fit``/``predict`` keywords of PyTorch Lightning 1.x and Lightning Flash 0.8 (mixed into
    :class:`flash.Trainer` before :class:`lightning.pytorch.Trainer`)."""

    _resume_from_checkpoint: str | None = None

    def _pop_resume_from_checkpoint(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Keep ``resume_from_checkpoint=`` of ``Trainer(...)`` for the first ``fit``."""
        if "resume_from_checkpoint" in kwargs:
            self._resume_from_checkpoint = kwargs.pop("resume_from_checkpoint")
            warn_deprecated(
                "flash.Trainer(resume_from_checkpoint=...) is PyTorch Lightning 1.x; "
                "write trainer.fit(..., ckpt_path=...)."
            )
        return kwargs

    def fit(
        self,
        model: pl.LightningModule,
        train_dataloaders: Any = None,
        *args: Any,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        """Lightning's ``fit``; ``train_dataloader=`` (PyTorch Lightning 1.x) is ``train_dataloaders=``."""
        if train_dataloader is not None:
            if train_dataloaders is not None:
                raise ValueError("Pass train_dataloaders= (or its old name train_dataloader=), not both.")
            warn_deprecated(
                "trainer.fit(train_dataloader=...) is PyTorch Lightning 1.x; write train_dataloaders=."
            )
            train_dataloaders = train_dataloader
        if self._resume_from_checkpoint is not None and not args and kwargs.get("ckpt_path") is None:
            kwargs["ckpt_path"] = self._resume_from_checkpoint
            self._resume_from_checkpoint = None
        return super().fit(model, train_dataloaders, *args, **kwargs)  # type: ignore[misc]

    def predict(
        self,
        model: pl.LightningModule | None = None,
        dataloaders: Any = None,
        *args: Any,
        output: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``predict``; ``output=`` (Lightning Flash) chooses what each prediction is:
        an output kind of the task (``"labels"``, ``"probabilities"``, ...), a Lightning Flash name
        (``"classes"``, ``"preds"``, ...) or an :class:`~flash.core.model.outputs.Output`."""
        if output is None:
            return super().predict(model, dataloaders, *args, **kwargs)  # type: ignore[misc]
        from flash.core.model.outputs import resolve_output

        task = model if model is not None else getattr(self, "lightning_module", None)
        if task is None:
            raise ValueError(
                "trainer.predict(output=...) needs the model: trainer.predict(model, ..., output=...)."
            )
        resolve_output(task, output)  # a bad output fails before any batch runs
        missing = object()
        previous = task.__dict__.get("predict_output", missing)
        task.predict_output = output
        try:
            return super().predict(model, dataloaders, *args, **kwargs)  # type: ignore[misc]
        finally:
            if previous is missing:
                task.__dict__.pop("predict_output", None)
            else:
                task.predict_output = previous
