"""The batcher on its own: concurrent requests share calls, a bad request fails alone, a full queue says so."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flash.core.deploy.serve_batching import BatchPredictor, ServerBusyError, ServerStoppingError


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_calls_and_keep_their_order():
    calls: list[list[int]] = []

    def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def main():
        predictor = BatchPredictor(double, max_batch_size=8, max_wait_s=0.05)
        await predictor.start()
        try:
            requests = [list(range(i, i + 1 + i % 3)) for i in range(20)]
            results = await asyncio.gather(*(predictor.predict(r) for r in requests))
        finally:
            await predictor.stop()
        return requests, results

    requests, results = run(main())
    assert results == [[2 * x for x in r] for r in requests]
    assert all(len(c) <= 8 for c in calls)
    assert len(calls) < len(requests)
    assert sum(len(c) for c in calls) == sum(len(r) for r in requests)


def test_a_request_larger_than_a_batch_runs_alone():
    calls: list[int] = []

    def identity(items):
        calls.append(len(items))
        return list(items)

    async def main():
        predictor = BatchPredictor(identity, max_batch_size=4, max_wait_s=0.01)
        await predictor.start()
        try:
            return await asyncio.gather(predictor.predict(list(range(10))), predictor.predict([99]))
        finally:
            await predictor.stop()

    big, small = run(main())
    assert big == list(range(10)) and small == [99]
    assert 10 in calls


def test_a_failing_request_does_not_fail_its_batch_mates():
    def picky(items):
        if any(x < 0 for x in items):
            raise ValueError("negative input")
        return [x + 1 for x in items]

    async def main():
        predictor = BatchPredictor(picky, max_batch_size=16, max_wait_s=0.05)
        await predictor.start()
        try:
            return await asyncio.gather(
                predictor.predict([1, 2]),
                predictor.predict([-1]),
                predictor.predict([3]),
                return_exceptions=True,
            )
        finally:
            await predictor.stop()

    good, bad, other = run(main())
    assert good == [2, 3] and other == [4]
    assert isinstance(bad, ValueError)


def test_a_full_queue_is_refused_and_stop_fails_waiting_requests():
    gate = threading.Event()

    def slow(items):
        gate.wait(5)
        return list(items)

    async def main():
        predictor = BatchPredictor(slow, max_batch_size=1, max_wait_s=0, max_queue_size=2)
        await predictor.start()
        first = asyncio.ensure_future(predictor.predict([0]))
        await asyncio.sleep(0.05)  # the first request is now inside the model
        waiting = [asyncio.ensure_future(predictor.predict([i])) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(ServerBusyError, match="try again"):
            await predictor.predict([3])
        gate.set()
        assert await first == [0]
        await asyncio.gather(*waiting)
        await predictor.stop()
        with pytest.raises(ServerStoppingError):
            await predictor.predict([4])

    run(main())
