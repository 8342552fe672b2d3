"""Dynamic batching: requests that are in the replica at the same time share one inference.

One collector task on the event loop takes the first waiting request, adds whatever else is already
queued (up to `max_size`), and hands the batch to the worker thread. While the worker is busy, new
requests simply queue, so under load batches fill by themselves without anyone waiting on a timer.

The wait (`max_wait_s`) is only for an idle worker: if other requests are already being received
(their bodies are still arriving, see `receiving`), the batch waits for them, but never longer than
`max_wait_s` after its first request arrived. A lone request on an idle replica is dispatched at once,
so batching costs an unloaded replica no latency. There is no polling and no sleep anywhere: the
collector wakes on a queue put or on the wait's deadline.

`max_size=1` switches batching off: every request is its own batch, dispatched as soon as it is queued.

The queue is bounded (`max_queue`): `submit` raises QueueFull beyond it, so an overloaded replica refuses
at once instead of keeping a backlog whose clients have long given up. A submit whose caller is cancelled
(its client went away) cancels its future, and the collector drops it before inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


@dataclass
class Done:
    """What `Batcher.submit` returns: the item's outcome and how its batch went."""

    outcome: Any  # whatever `process` returned for this item (a result or an exception object)
    queue_s: float  # from submit until its batch started on the worker
    batch_size: int


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    enqueued: float


class QueueFull(Exception):
    """The replica already holds `max_queue` requests waiting for the worker."""


class Batcher:
    def __init__(self, process: Callable[[list], Sequence], executor: Executor, max_size: int = 8,
                 max_wait_s: float = 0.002, max_queue: int = 0):
        """`process(items) -> outcomes` runs on `executor`, one outcome per item, in order."""
        if max_size < 1:
            raise ValueError("max batch size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max batch wait must not be negative")
        if max_queue < 0:
            raise ValueError("max queue must not be negative (0 = unbounded)")
        self.process = process
        self.executor = executor
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue  # 0 = unbounded
        self.dropped = 0  # queued requests whose caller gave up before their batch started
        self.incoming = 0  # requests being received that will be submitted soon (event loop thread only)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Requests queued and not yet handed to the worker."""
        return self._queue.qsize() if self._queue else 0

    def start(self) -> None:
        """Start the collector; call from the event loop that will submit (e.g. in the app's lifespan)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="batch-collector")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue and not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Wrap the reading of a request that will be submitted: an idle batch may wait for it."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    async def submit(self, item: Any) -> Done:
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.max_queue and self.depth >= self.max_queue:
            raise QueueFull(f"{self.depth} requests already queued (max queue {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future, time.perf_counter()))
        return await future

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].enqueued + self.max_wait_s
            while len(batch) < self.max_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - time.perf_counter()
                if self.incoming == 0 or remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # clients that gave up cost no inference
            self.dropped += len(batch) - len(live)
            batch = live
            if not batch:
                continue
            try:
                started, outcomes = await loop.run_in_executor(self.executor, self._run, [p.item for p in batch])
            except Exception as exc:  # `process` itself failed: every request of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, outcome in zip(batch, outcomes, strict=True):
                if not p.future.done():
                    p.future.set_result(Done(outcome, max(0.0, started - p.enqueued), len(batch)))

    def _run(self, items: list) -> tuple[float, Sequence]:
        # The start time is taken on the worker, so queue time includes the hand-over to the thread.
        started = time.perf_counter()
        outcomes = self.process(items)
        if len(outcomes) != len(items):
            raise RuntimeError(f"batch of {len(items)} gave {len(outcomes)} outcomes")
        return started, outcomes
