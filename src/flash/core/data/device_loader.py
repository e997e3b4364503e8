"""Feed an accelerator from a DataLoader: pinned batches, non-blocking copies, work that overlaps the step.

:class:`DeviceLoader` wraps a loader of CPU batches and yields batches that are ready on the
device. On CUDA the per-batch device work (copies, GPU decoding and augmentation) runs in a
background thread on its own CUDA stream, so the next batch is prepared while the model trains on
the current one; the training stream waits for a batch only when it is consumed. On the CPU the
same work runs inline, so the logic is identical and testable without a GPU.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch

from flash.core.utils.validation import check_int

BatchTransform = Callable[[Any, int], Any]
"""``transform(cpu_batch, epoch) -> device_batch``."""

_POLL_SECONDS = 0.1


def move_to_device(batch: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Copy every tensor in ``batch`` (nested dicts, lists, tuples) to ``device``.

    Copies to CUDA are non-blocking; they only overlap with other work when the source tensors
    are in pinned memory (``DataLoader(pin_memory=True)`` pins them).
    """
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking and device.type == "cuda")
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(value, device, non_blocking) for value in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(value, device, non_blocking) for value in batch)
    return batch


def _record_stream(batch: Any, stream: torch.cuda.Stream) -> None:
    """Tell the caching allocator that ``stream`` uses the batch's tensors (made on another stream)."""
    if isinstance(batch, torch.Tensor):
        if batch.is_cuda:
            batch.record_stream(stream)
    elif isinstance(batch, Mapping):
        for value in batch.values():
            _record_stream(value, stream)
    elif isinstance(batch, list | tuple):
        for value in batch:
            _record_stream(value, stream)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _EpochSetter:
    """What Lightning finds as ``loader.sampler``: it calls ``set_epoch`` on it every epoch."""

    def __init__(self, owner: DeviceLoader) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


class DeviceLoader:
    """Batches of ``loader``, made ready on ``device`` by ``transform``, prepared ahead of use.

    Args:
        loader: a sized iterable of CPU batches, usually a ``DataLoader`` with ``pin_memory=True``
            on CUDA.
        transform: ``transform(batch, epoch) -> batch``, or a sequence of such stages applied in
            order (each stage gets its own thread, so stages of consecutive batches overlap). The
            last stage returns tensors on ``device``. Default: :func:`move_to_device`.
        device: where batches go. ``None`` picks ``cuda`` when available, else ``cpu``.
        prefetch: how many batches may wait between two stages (>= 1).
        background: run the stages in background threads. Default: on CUDA only (on a CPU the
            threads would compete with the model for the same cores).

    The epoch handed to the stages is the last one given to :meth:`set_epoch` (Lightning calls
    it through ``loader.sampler.set_epoch`` every epoch); it is forwarded to the wrapped loader's
    sampler, so shuffling and augmentation both follow ``(seed, epoch)``.
    """

    def __init__(
        self,
        loader: Iterable[Any],
        transform: BatchTransform | Sequence[BatchTransform] | None = None,
        device: torch.device | str | None = None,
        prefetch: int = 2,
        background: bool | None = None,
    ) -> None:
        check_int(prefetch, "prefetch", 1)
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be an iterable of batches, got {type(loader).__name__}.")
        stages = (
            [self._move] if transform is None else [transform] if callable(transform) else list(transform)
        )
        if not stages or not all(callable(stage) for stage in stages):
            raise TypeError(
                "transform must be a callable (batch, epoch) -> batch, or a non-empty list of them."
            )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} was asked for, but no CUDA device is available.")
        self.loader = loader
        self.stages: list[BatchTransform] = stages
        self.prefetch = prefetch
        self.background = self.device.type == "cuda" if background is None else bool(background)
        self.epoch = 0

    def _move(self, batch: Any, epoch: int) -> Any:
        return move_to_device(batch, self.device)

    # -- what Lightning and training loops use -------------------------------------------------
    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    @property
    def sampler(self) -> _EpochSetter:
        return _EpochSetter(self)

    @property
    def batch_sampler(self) -> None:
        """``None``: batching happens inside the wrapped loader (Lightning reads this attribute)."""
        return None

    @property
    def dataset(self) -> Any:
        return getattr(self.loader, "dataset", None)

    @property
    def batch_size(self) -> int | None:
        return getattr(self.loader, "batch_size", None)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next pass, and pass it on to the wrapped loader's samplers."""
        check_int(epoch, "epoch", 0)
        self.epoch = epoch
        targets: dict[int, Any] = {}
        for owner in (self.loader, getattr(self.loader, "batch_sampler", None)):
            sampler = getattr(owner, "sampler", None)
            if sampler is not None and callable(getattr(sampler, "set_epoch", None)):
                targets[id(sampler)] = sampler
        for sampler in targets.values():
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing (not even the wrapped loader's workers) starts before the first
        # ``next``, which Lightning calls after ``set_epoch``.
        epoch = self.epoch
        if self.background:
            yield from self._iterate_in_background(epoch)
            return
        for batch in self.loader:
            for stage in self.stages:
                batch = stage(batch, epoch)
            yield batch

    # -- the background threads ----------------------------------------------------------------
    def _iterate_in_background(self, epoch: int) -> Iterator[Any]:
        stop = threading.Event()
        outboxes = [queue.Queue(maxsize=self.prefetch) for _ in self.stages]
        inboxes = [None, *outboxes[:-1]]
        threads = [
            threading.Thread(
                target=self._run_stage,
                args=(stage, epoch, inbox, outbox, stop),
                name="flash-device-loader",
                daemon=True,
            )
            for stage, inbox, outbox in zip(self.stages, inboxes, outboxes)
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                item = _get(outboxes[-1], stop)
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield self._arrive(item)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def _arrive(self, item: tuple[Any, torch.cuda.Event | None]) -> Any:
        """Make the current stream wait for the work that produced ``item`` on another stream."""
        batch, event = item
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            _record_stream(batch, current)
        return batch

    def _run_stage(
        self,
        stage: BatchTransform,
        epoch: int,
        inbox: queue.Queue | None,
        outbox: queue.Queue,
        stop: threading.Event,
    ) -> None:
        try:
            with ExitStack() as context:
                stream = None
                if self.device.type == "cuda":
                    stream = torch.cuda.Stream(self.device)
                    context.enter_context(torch.cuda.device(self.device))
                    context.enter_context(torch.cuda.stream(stream))
                for item in self.loader if inbox is None else _received(inbox, stop):
                    if isinstance(item, _Failure):
                        _put(outbox, item, stop)
                        return
                    batch = item if inbox is None else self._arrive(item)
                    prepared = stage(batch, epoch)
                    event = None
                    if stream is not None:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if stop.is_set() or not _put(outbox, (prepared, event), stop):
                        return
            _put(outbox, _END, stop)
        except BaseException as error:  # handed downstream; the consumer raises it
            _put(outbox, _Failure(error), stop)


def _put(box: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            box.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            pass
    return False


def _get(box: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return box.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            pass
    return _END


def _received(box: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """Items from an upstream stage until it ends (a failure is passed on, then ends the stage)."""
    while True:
        item = _get(box, stop)
        if item is _END:
            return
        yield item
        if isinstance(item, _Failure):
            return
