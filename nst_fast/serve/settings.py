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
      lower it, not raise it). The default takes a camera's photos at full size;
    - ``max_inference_mb``: memory an inference's network may use (MiB). A photo that would need more whole (about
      420 bytes per pixel: ``WHOLE_BYTES_PER_PIXEL``) goes tile by tile, exactly (``nst_fast.stylize.tiling``), in
      tiles whose side keeps it within this; a model without its ``NAME.tiles.zip`` answers 413 for such photos;
    - ``max_concurrent``: inferences running at once (threads sharing one ONNX Runtime session per model);
    - ``max_queue``: requests waiting for an inference slot; more -> 503 with ``Retry-After: retry_after_s``;
    - ``timeout_s``: the longest a request may take from its headers to its answer, in seconds: its upload
      arriving (-> 408 past it), waiting for a slot and running (-> 504; an inference already running keeps its
      slot until it ends: ONNX Runtime cannot stop a run);
    - ``min_upload_rate``: bytes a second an upload must average once ``upload_grace_s`` seconds have passed
      (-> 408 below it), so that stalled or trickling uploads let go of their connection early; 0: no minimum;
    - ``max_connections``: open connections. A new one past it closes the connection that has waited longest
      for its request's headers; when none waits, it may only ask ``/healthz`` or ``/readyz`` (others: 503);
    - ``header_timeout_s``: seconds a connection may take to send a request's headers, from its opening or the
      end of its previous answer (-> 408 and closed); ``keep_alive_s``: an idle keep-alive connection is closed
      after that many seconds;
    - ``threads``: ONNX Runtime intra-op threads per session (0: the available cores divided by
      ``max_concurrent``, so that concurrent inferences do not oversubscribe the cores);
    - ``provider``: ONNX Runtime execution provider, as ``nst-stylize --provider``;
    - ``browser``: offer the page's in-browser mode where the onnxruntime-web files are installed: the model files
      are downloadable (``GET /v1/models/NAME.onnx``) and the page may run them on the visitor's device.
    """

    max_upload_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_side: int = 8192
    max_inference_mb: int = 1024
    max_concurrent: int = 2
    max_queue: int = 8
    timeout_s: float = 300.0
    min_upload_rate: int = 4096
    upload_grace_s: float = 5.0
    max_connections: int = 1000
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    retry_after_s: int = 1
    threads: int = 0
    provider: str = "auto"
    browser: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_upload_bytes",
            "max_pixels",
            "max_inference_mb",
            "max_concurrent",
            "max_connections",
            "retry_after_s",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_side < MIN_SIDE:
            raise ConfigError(f"max_side must be at least {MIN_SIDE} pixels, got {self.max_side}")
        for name in ("max_queue", "threads", "min_upload_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be at least 0, got {getattr(self, name)}")
        for name in ("timeout_s", "header_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.upload_grace_s >= 0:
            raise ConfigError(f"upload_grace_s must be at least 0, got {self.upload_grace_s}")

    @property
    def upload_budget_bytes(self) -> int:
        """Bytes of uploads being received at once, across requests: as many full uploads as could then be running
        or queued. Counted as the bytes arrive (a trickling upload holds next to nothing); past it -> 503."""
        return (self.max_concurrent + self.max_queue) * self.max_upload_bytes

    @property
    def intra_op_threads(self) -> int:
        """ONNX Runtime intra-op threads per session: ``threads``, or the cores shared by the concurrent
        inferences."""
        return self.threads or max(1, available_cpus() // self.max_concurrent)
