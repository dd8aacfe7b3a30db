"""``ServeSettings``: the limits and runtime choices of ``nst-serve``, one field per command-line option."""

from __future__ import annotations

import os
from dataclasses import dataclass

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import ConfigError


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one server. Every request past them gets an error answer, never a crash:

    - ``max_upload_bytes``: request body size (the multipart upload with its fields) -> 413 above it;
    - ``max_pixels``: decoded image size from the file's header (decompression bombs) -> 413 above it;
    - ``max_side``: the longest side stylised; larger images are downscaled to it (a request's ``max_size`` may
      lower it, not raise it): it bounds the model's memory, about 420 bytes per pixel (README.md, "Serve over HTTP");
    - ``max_concurrent``: inferences running at once (threads sharing one ONNX Runtime session per model);
    - ``max_queue``: requests waiting for an inference slot; more -> 503 with ``Retry-After: retry_after_s``;
    - ``timeout_s``: the longest a request may wait and run, in seconds -> 504 (an inference already running
      keeps its slot until it ends: ONNX Runtime cannot stop a run); also the longest an upload may take to
      arrive -> 408;
    - ``max_connections``: open connections (uvicorn's ``limit_concurrency``); more -> 503 from uvicorn;
    - ``threads``: ONNX Runtime intra-op threads per session (0: the available cores divided by
      ``max_concurrent``, so that concurrent inferences do not oversubscribe the cores);
    - ``provider``: ONNX Runtime execution provider, as ``nst-stylize --provider``.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 2048
    max_concurrent: int = 2
    max_queue: int = 8
    timeout_s: float = 60.0
    max_connections: int = 100
    retry_after_s: int = 1
    threads: int = 0
    provider: str = "auto"

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_concurrent", "max_connections", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_side < MIN_SIDE:
            raise ConfigError(f"max_side must be at least {MIN_SIDE} pixels, got {self.max_side}")
        for name in ("max_queue", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s}")

    @property
    def max_uploads(self) -> int:
        """Uploads read at once: as many as could then be running or queued (more -> 503 before reading), so
        that uploads hold at most this many times ``max_upload_bytes``."""
        return self.max_concurrent + self.max_queue

    @property
    def intra_op_threads(self) -> int:
        """ONNX Runtime intra-op threads per session: ``threads``, or the cores shared by the concurrent
        inferences."""
        return self.threads or max(1, available_cpus() // self.max_concurrent)
