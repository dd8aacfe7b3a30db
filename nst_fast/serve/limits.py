"""Admission control for inferences: at most ``max_concurrent`` run at once (in a thread pool, off the event
loop), at most ``max_queue`` wait for a slot, and each request has a deadline.

All bookkeeping happens on the event loop thread, so the counts need no lock. A slot is handed from a finishing
inference straight to the first waiter (first come, first served). A request that times out while its inference
runs gets its answer (504) at once, but the slot stays taken until the thread finishes: the pool never runs more
than ``max_concurrent`` inferences, whatever the clients do.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
#: Niceness the inference threads add to the process's (Linux schedules threads one by one): when the cores are
#: busy, the event loop thread, which answers /healthz and reads uploads, runs before them.
INFERENCE_NICENESS = 5


def lower_thread_priority(increment: int = INFERENCE_NICENESS) -> None:
    """Make the calling thread ``increment`` nicer (a no-op where threads cannot be reniced one by one)."""
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + increment))
    except (AttributeError, OSError):
        pass


class Overloaded(Exception):
    """Every slot is taken and the queue is full (answered 503 with ``Retry-After``)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed while it waited (``waited=True``) or while its inference ran (504)."""

    def __init__(self, timeout_s: float, waited: bool) -> None:
        super().__init__(timeout_s, waited)
        self.timeout_s = timeout_s
        self.waited = waited


class Admission:
    """Slots for ``max_concurrent`` inferences, a wait queue of ``max_queue`` and a per-request ``timeout_s``.

    ``on_change(running, waiting)`` is called on the event loop whenever the counts change (for metrics).
    """

    def __init__(
        self,
        max_concurrent: int,
        max_queue: int,
        timeout_s: float,
        on_change: Callable[[int, int], None] = lambda running, waiting: None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._on_change = on_change
        self.executor = ThreadPoolExecutor(
            max_workers=max_concurrent, thread_name_prefix="nst-inference", initializer=lower_thread_priority
        )

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """Every slot taken and the queue full: a request now would be refused."""
        return self.running >= self.max_concurrent and self.waiting >= self.max_queue

    def _changed(self) -> None:
        self._on_change(self.running, self.waiting)

    def _release(self) -> None:
        """Give the finished inference's slot to the first waiter still waiting, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it: ``running`` stays the same
                self._changed()
                return
        self.running -= 1
        self._changed()

    async def _acquire(self, timeout_s: float) -> None:
        if self.running < self.max_concurrent and not self._waiters:
            self.running += 1
            self._changed()
            return
        if self.full:
            raise Overloaded()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._changed()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except BaseException:  # timed out, or the client went away while waiting
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot arrived just as we gave up: pass it on
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
                self._changed()
            raise

    async def run(self, work: Callable[[], T], deadline: float | None = None) -> T:
        """Run ``work()`` in the thread pool once a slot is free; raises ``Overloaded`` when the queue is full and
        ``DeadlineExceeded`` at ``deadline`` (``time.monotonic()``; default ``timeout_s`` from now), whether still
        waiting or running."""
        deadline = time.monotonic() + self.timeout_s if deadline is None else deadline
        try:
            await self._acquire(max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(self.timeout_s, waited=True) from None
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self.executor, work)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(self.timeout_s, waited=False) from None

    def shutdown(self) -> None:
        """Stop the thread pool without waiting: runs past their deadline may still be going (``running`` counts
        them until they end); ``nst-serve`` exits without waiting for them."""
        self.executor.shutdown(wait=False, cancel_futures=True)
