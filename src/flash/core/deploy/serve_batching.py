"""Dynamic batching: concurrent requests wait a few milliseconds to share one forward pass.

Requests enter an asyncio queue. A collector takes the first waiting request, then more for
up to ``max_wait_s`` or until ``max_batch_size`` items are gathered, and runs the model once on
all their items in a single worker thread (so the event loop keeps accepting requests while the
model runs, and the model never runs twice at once). While it runs, new requests queue up and
form the next batch at once: under load, batches fill without waiting.

If a batch fails, each of its requests is run alone, so one request's bad input costs only that
request its answer.

Nothing grows with the number of requests served: the queue is bounded (``max_queue_size``),
the batch in flight is dropped once answered, and the record of batch sizes keeps the last
:data:`BATCH_HISTORY` beside two running totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

BATCH_HISTORY = 1000
"""How many of the latest batch sizes :attr:`BatchPredictor.batch_sizes` keeps."""


class ServerBusyError(RuntimeError):
    """The queue of waiting requests is full."""


class ServerStoppingError(RuntimeError):
    """The server shut down before the request was answered."""


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future = field(repr=False)


class BatchPredictor:
    """Runs ``run_batch(items) -> results`` (one result per item) on batches of concurrent requests.

    Args:
        run_batch: the model call; runs in one worker thread.
        max_batch_size: the most items one call receives (a single larger request runs alone).
        max_wait_s: how long the first request of a batch waits for company.
        max_queue_size: requests allowed to wait; more are refused with :class:`ServerBusyError`.

    Attributes:
        batch_sizes: the sizes of the latest :data:`BATCH_HISTORY` model calls, oldest first.
        batches_run: model calls so far; ``items_run``: the items they took.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
        max_queue_size: int = 1024,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self.batch_sizes: deque[int] = deque(maxlen=BATCH_HISTORY)
        self.batches_run = 0
        self.items_run = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._held: _Pending | None = None
        self._in_flight: list[_Pending] = []

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._collector.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flash-predict")
        self._collector = asyncio.create_task(self._collect_forever())

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        if self._queue is not None:
            waiting = [*self._in_flight, *([self._held] if self._held is not None else [])]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            for pending in waiting:
                if not pending.future.done():
                    pending.future.set_exception(ServerStoppingError("The server is shutting down."))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    async def predict(self, items: list[Any]) -> list[Any]:
        """Queue ``items`` (one request's worth) and wait for their results, in order."""
        if not self.running or self._queue is None:
            raise ServerStoppingError("The model is not running.")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(list(items), future))
        except asyncio.QueueFull:
            raise ServerBusyError(
                f"The server has {self.max_queue_size} requests waiting; try again shortly."
            ) from None
        return await future

    async def _next(self, timeout: float | None = None) -> _Pending | None:
        """The request held back from the last batch, else the next queued one (``None`` on timeout)."""
        assert self._queue is not None
        if self._held is not None:
            pending, self._held = self._held, None
            return pending
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _collect_forever(self) -> None:
        while True:
            first = await self._next()
            assert first is not None
            batch, size = [first], len(first.items)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch_size:
                pending = await self._next(deadline - time.monotonic())
                if pending is None:
                    break
                if size + len(pending.items) > self.max_batch_size:
                    self._held = pending  # starts the next batch
                    break
                batch.append(pending)
                size += len(pending.items)
            self._in_flight = batch
            await self._run(batch)
            self._in_flight = []

    async def _run(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # drop requests whose client went away
        if not batch:
            return
        items = [item for pending in batch for item in pending.items]
        try:
            results = await self._call(items)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].future, error=error)
                return
            for pending in batch:
                await self._run([pending])
            return
        start = 0
        for pending in batch:
            _settle(pending.future, result=list(results[start : start + len(pending.items)]))
            start += len(pending.items)

    async def _call(self, items: list[Any]) -> Sequence[Any]:
        self.batch_sizes.append(len(items))
        self.batches_run += 1
        self.items_run += len(items)
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self.run_batch, items)
        if len(results) != len(items):
            raise RuntimeError(f"The model returned {len(results)} results for {len(items)} inputs.")
        return results


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
