"""Export a task's forward pass to ONNX, with what is needed to use the file on its own.

The graph takes the batch ``forward`` receives after preprocessing (``task.example_input()``
shows its form) and returns, for a classifier, ``logits`` and ``probabilities`` (softmax, or
sigmoid for multi-label), for a regressor ``output`` (standardised) and ``values`` (in the
targets' units). Axis 0 of every input and output is a dynamic ``batch`` axis; the other axes
of integer inputs (token ids, attention masks) are dynamic too, float inputs keep their shape.

Inputs are named after the batch: ``input`` for a tensor, the keys for a dict (``input_ids``,
``attention_mask``), ``input_0``, ``input_1``... for a tuple.

The file's ``metadata_props`` hold JSON under ``flash.*`` keys (read them back with
:func:`read_onnx_metadata`): the task class, domain, class names, multi-label threshold, the
inputs and outputs, the task's hyperparameters, its preprocessing (e.g. image size, mean and
std) and, for text, the tokenizer (``tokenizer.json`` of a Hugging Face fast tokenizer).

Exporter: the ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``) is tried first,
as PyTorch deprecates the TorchScript one; where it cannot export a model, the TorchScript exporter
(``dynamo=False``) takes over. Every export is checked with onnxruntime at two batch sizes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import flash
from flash.core.utils.jsonable import to_json

EXPORTERS = ("auto", "dynamo", "torchscript")
METADATA_PREFIX = "flash."
DEFAULT_TOLERANCE = 1e-4


class ExportCheckError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


def export_onnx(
    task: Any,
    path: str | os.PathLike,
    *,
    example_input: Any = None,
    exporter: str = "auto",
    opset_version: int | None = None,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Path:
    """Write ``task``'s forward pass to the ONNX file ``path``.

    Args:
        task: a flash task, or the path of a flash checkpoint.
        path: the ``.onnx`` file to write (its folder is created).
        example_input: a preprocessed batch to trace with; default ``task.example_input(2)``.
        exporter: ``"auto"`` (dynamo, falling back to TorchScript), ``"dynamo"`` or ``"torchscript"``.
        opset_version: the ONNX opset; default: the exporter's (17 for TorchScript).
        check: run the file with onnxruntime at two batch sizes and compare its probabilities
            (values for a regressor) with PyTorch's.
        tolerance: the largest difference ``check`` accepts.

    Returns:
        The path written.

    Raises:
        ExportCheckError: the exported graph's outputs differ from PyTorch's by more than ``tolerance``.
    """
    task = _resolve_task(task)
    if exporter not in EXPORTERS:
        raise ValueError(f"Unknown exporter {exporter!r}. Choose one of {', '.join(EXPORTERS)}.")
    if not isinstance(tolerance, int | float) or not tolerance > 0:
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}.")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the path of the .onnx file to write.")
    path.parent.mkdir(parents=True, exist_ok=True)

    model = task if _on_cpu(task) else copy.deepcopy(task).cpu()
    was_training = model.training
    model.eval()
    try:
        example = model.example_input(2) if example_input is None else example_input
        graph = ExportGraph(model, example)
        with torch.no_grad():
            _export(graph, path, exporter, opset_version, onnx_metadata(model, graph))
        if check:
            check_onnx(model, path, [graph.example, _resized_example(model, example_input)], tolerance)
    finally:
        model.train(was_training)
    return path


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``flash.*`` metadata of an exported file, JSON values decoded, prefix removed."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    return {
        prop.key[len(METADATA_PREFIX) :]: json.loads(prop.value)
        for prop in model.metadata_props
        if prop.key.startswith(METADATA_PREFIX)
    }


def check_onnx(task: Any, path: str | os.PathLike, examples: Sequence[Any], tolerance: float) -> float:
    """Run ``path`` with onnxruntime on ``examples`` and compare with ``task``; return the largest difference."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    was_training = task.training
    task.eval()
    try:
        return _compare(task, session, examples, tolerance)
    finally:
        task.train(was_training)


def _compare(task: Any, session: Any, examples: Sequence[Any], tolerance: float) -> float:
    worst = 0.0
    for example in examples:
        if example is None:
            continue
        graph = ExportGraph(task, example)
        with torch.no_grad():
            expected = graph(*graph.tensors)[-1].numpy()
        feeds = {name: tensor.numpy() for name, tensor in zip(graph.input_names, graph.tensors)}
        got = session.run([graph.output_names[-1]], feeds)[0]
        if got.shape != expected.shape:
            raise ExportCheckError(
                f"The ONNX file gives {graph.output_names[-1]} of shape {got.shape} for a batch of "
                f"{graph.batch_size}, PyTorch {expected.shape}: the batch axis is not dynamic."
            )
        difference = float(np.abs(got.astype(np.float64) - expected).max()) if got.size else 0.0
        if not math.isfinite(difference) or difference > tolerance:
            raise ExportCheckError(
                f"The ONNX file's {graph.output_names[-1]} differ from PyTorch's by {difference:.2e} "
                f"(tolerance {tolerance:.0e}) on a batch of {graph.batch_size}."
            )
        worst = max(worst, difference)
    return worst


# -- the graph ------------------------------------------------------------------------------------
class ExportGraph(nn.Module):
    """``task`` with flat tensor inputs and named outputs, as ONNX wants them."""

    def __init__(self, task: Any, example: Any) -> None:
        super().__init__()
        self.task = task
        self.kind, self.input_names, tensors = _flatten(example)
        self.example = example
        self.tensors = tuple(tensors)
        self.keys = list(example) if self.kind == "dict" else None
        self.batch_size = int(self.tensors[0].shape[0])
        with torch.no_grad():
            self.output_names = list(task.export_outputs(task(self._batch(self.tensors))))
        if not self.output_names:
            raise TypeError(f"{type(task).__name__}.export_outputs() names no outputs; cannot export it.")
        self.eval()  # exporters restore the wrapper's mode afterwards, and with it the task's

    def _batch(self, tensors: Sequence[torch.Tensor]) -> Any:
        if self.kind == "tensor":
            return tensors[0]
        if self.kind == "dict":
            return dict(zip(self.keys, tensors))
        return tuple(tensors)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.task.export_outputs(self.task(self._batch(tensors))).values())

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for name, tensor in zip(self.input_names, self.tensors):
            axes[name] = {0: "batch"}
            if not tensor.is_floating_point():
                axes[name].update({i: f"{name}_axis_{i}" for i in range(1, tensor.ndim)})
        for name in self.output_names:
            axes[name] = {0: "batch"}
        return axes

    def dynamic_shapes(self) -> tuple[tuple[dict[int, Any], ...]]:
        """``torch.export``'s form: one entry for ``*tensors``, holding one spec per tensor."""
        from torch.export import Dim

        axes = self.dynamic_axes()
        return (tuple({i: Dim.DYNAMIC for i in axes[name]} for name in self.input_names),)

    def describe_inputs(self) -> list[dict[str, Any]]:
        axes = self.dynamic_axes()
        return [
            {
                "name": name,
                "dtype": str(tensor.dtype).removeprefix("torch."),
                "shape": [axes[name].get(i, int(size)) for i, size in enumerate(tensor.shape)],
            }
            for name, tensor in zip(self.input_names, self.tensors)
        ]


def _flatten(example: Any) -> tuple[str, list[str], list[torch.Tensor]]:
    def tensor(value: Any, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"The example input's {what} is a {type(value).__name__}; export needs tensors.")
        if value.ndim == 0:
            raise ValueError(f"The example input's {what} has no batch axis.")
        return value.detach().cpu()

    if isinstance(example, torch.Tensor):
        return "tensor", ["input"], [tensor(example, "tensor")]
    if isinstance(example, Mapping) and example:
        names = [str(key) for key in example]
        return "dict", names, [tensor(value, f"{key!r} entry") for key, value in example.items()]
    if isinstance(example, tuple | list) and example:
        names = [f"input_{i}" for i in range(len(example))]
        return "tuple", names, [tensor(value, f"item {i}") for i, value in enumerate(example)]
    raise TypeError(
        f"The example input must be a tensor, a dict of tensors or a tuple of tensors, got {type(example).__name__}."
    )


# -- exporting ------------------------------------------------------------------------------------
def _export(
    graph: ExportGraph, path: Path, exporter: str, opset_version: int | None, metadata: dict[str, Any]
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".flash-onnx-", dir=path.parent))
    try:
        target = tmp / "model.onnx"
        errors: list[str] = []
        for name in ("dynamo", "torchscript") if exporter == "auto" else (exporter,):
            try:
                _EXPORT_WITH[name](graph, target, opset_version)
                break
            except Exception as error:
                if exporter != "auto":
                    raise
                errors.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
        else:
            raise RuntimeError(
                f"Neither ONNX exporter could export {type(graph.task).__name__}: " + "; ".join(errors)
            )
        _save_with_metadata(target, path, metadata)
    finally:
        for leftover in sorted(tmp.rglob("*"), reverse=True):
            leftover.rmdir() if leftover.is_dir() else leftover.unlink()
        tmp.rmdir()


def _export_torchscript(graph: ExportGraph, target: Path, opset_version: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            graph.tensors,
            os.fspath(target),
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_axes=graph.dynamic_axes(),
            opset_version=opset_version or 17,
            dynamo=False,
        )


def _export_dynamo(graph: ExportGraph, target: Path, opset_version: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            graph.tensors,
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_shapes=graph.dynamic_shapes(),
            opset_version=opset_version,
            dynamo=True,
            verbose=False,
        )
    program.save(os.fspath(target))


_EXPORT_WITH = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def _save_with_metadata(source: Path, path: Path, metadata: dict[str, Any]) -> None:
    """Add the metadata, fold any external weights in, and move the file into place in one step."""
    import onnx

    model = onnx.load(os.fspath(source))
    del model.metadata_props[:]
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key = METADATA_PREFIX + key
        prop.value = json.dumps(value)
    model.producer_name = "flash"
    model.producer_version = flash.__version__
    partial = path.with_name(f".{path.name}.part")
    onnx.save_model(model, os.fspath(partial), save_as_external_data=False)
    os.replace(partial, path)


# -- metadata -------------------------------------------------------------------------------------
def onnx_metadata(task: Any, graph: ExportGraph) -> dict[str, Any]:
    """What the exported file records about the task (every value JSON-serialisable): what any
    export holds, then the task's own :meth:`~flash.core.model.task.Task.export_metadata`."""
    cls = type(task)
    descriptions = task.export_output_descriptions()
    meta: dict[str, Any] = {
        "version": flash.__version__,
        "task": f"{cls.__module__}.{cls.__qualname__}",
        "domain": getattr(task, "domain", "generic"),
        "inputs": graph.describe_inputs(),
        "outputs": {name: descriptions.get(name, "") for name in graph.output_names},
        "hyperparameters": to_json(dict(getattr(task, "hparams", {}))),
    }
    meta.update(to_json(task.export_metadata()))
    return meta


# -- helpers --------------------------------------------------------------------------------------
def _resized_example(task: Any, given: Any) -> Any:
    """A second batch of another size, to check that the batch axis is dynamic."""
    if given is not None:
        return None
    try:
        return task.example_input(3)
    except Exception:
        return None


def _on_cpu(task: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in task.parameters())


def _resolve_task(task: Any) -> Any:
    if isinstance(task, str | os.PathLike):
        from flash.core.deploy.checkpoint import load_task

        return load_task(task, device="cpu")
    if not isinstance(task, nn.Module) or not hasattr(task, "example_input"):
        raise TypeError(f"Export a flash task or the path of its checkpoint, got {type(task).__name__}.")
    return task
