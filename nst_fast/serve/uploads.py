"""Receiving uploads fairly: a byte budget shared by all uploads and a minimum transfer rate for each.

Uploads are limited by what they cost, not by how many there are: the bytes received and not yet handed on
(``ServeSettings.upload_budget_bytes``, which bounds their memory and temporary files) and the time they hold
their connection. A client trickling its body at 1 byte/s holds almost no budget, and once
``upload_grace_s`` has passed it must average ``min_upload_rate`` bytes/s or get 408 and lose its connection, so
slow or stalled uploaders cannot lock fast ones out; every upload must also arrive before the request's deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nst_fast.serve.errors import CLOSE, RequestError, busy_error
from nst_fast.serve.metrics import Metrics
from nst_fast.serve.settings import ServeSettings

Receive = Callable[[], Awaitable[dict]]


class UploadBudget:
    """Bytes of uploads being received now, across requests (event loop only: no lock); at most ``limit``."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.used = 0
        self.uploads = 0
        self._metrics = metrics

    @property
    def room(self) -> int:
        return self.limit - self.used

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes if they fit."""
        if size > self.room:
            return False
        self.used += size
        self._metrics.upload_bytes.set(self.used)
        return True

    def give_back(self, size: int) -> None:
        self.used -= size
        self._metrics.upload_bytes.set(self.used)

    def count(self, change: int) -> None:
        """One upload more (1) or less (-1) in progress."""
        self.uploads += change
        self._metrics.uploads_in_progress.set(self.uploads)


class MeteredUpload:
    """The ``receive`` of one request body: refuses it (413) past ``max_upload_bytes``, (503) past the budget, and
    (408) when it falls under the minimum rate or passes ``deadline`` (``time.monotonic()``). ``release()`` gives
    its bytes back to the budget once the body has been parsed."""

    def __init__(self, receive: Receive, budget: UploadBudget, settings: ServeSettings, deadline: float) -> None:
        self._receive = receive
        self._budget = budget
        self._settings = settings
        self._deadline = deadline
        self.start = time.monotonic()
        self.received = 0
        self._held = 0

    def _rate_deadline(self) -> float:
        """When the bytes received so far stop meeting the minimum rate (never within the grace period)."""
        rate = self._settings.min_upload_rate
        if rate <= 0:
            return float("inf")
        return self.start + max(self._settings.upload_grace_s, self.received / rate)

    def _too_slow(self, rate_deadline: float) -> RequestError:
        settings = self._settings
        if rate_deadline < self._deadline:
            elapsed = time.monotonic() - self.start
            return RequestError(
                408,
                f"the upload came in too slowly: {self.received} bytes in {elapsed:.1f} s, under "
                f"the minimum of {settings.min_upload_rate} bytes/s; send it over a faster "
                "connection",
                CLOSE,
                "slow_upload",
            )
        return RequestError(
            408,
            f"the upload did not arrive within {settings.timeout_s:g} s; send it again over a "
            "faster connection, or a smaller file",
            CLOSE,
            "slow_upload",
        )

    async def __call__(self) -> dict:
        rate_deadline = self._rate_deadline()
        wait = min(rate_deadline, self._deadline) - time.monotonic()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, wait))
        except asyncio.TimeoutError:
            raise self._too_slow(rate_deadline) from None
        if message["type"] == "http.request":
            self._count(len(message.get("body", b"")))
        return message

    def _count(self, size: int) -> None:
        self.received += size
        limit = self._settings.max_upload_bytes
        if self.received > limit:
            raise RequestError(413, f"the upload is over the limit of {limit} bytes; send a smaller file", CLOSE)
        if not self._budget.take(size):
            raise busy_error("uploads_full", f"{self._budget.uploads} uploads coming in", self._settings.retry_after_s)
        self._held += size

    def release(self) -> None:
        self._budget.give_back(self._held)
        self._held = 0
