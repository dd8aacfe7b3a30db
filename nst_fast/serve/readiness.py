"""Readiness: each model runs one small image at startup (ONNX Runtime's first run allocates its buffers, so that
the first request is not the slow one); ``/readyz`` answers 200 once all have, 503 saying why before or after a
failure."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import numpy as np

from nst_fast.serve.registry import ModelRegistry, ServedModel
from nst_fast.stylize.core import stylize_array
from nst_fast.stylize.styles import parse_style_weights

log = logging.getLogger("nst_fast.serve")

#: Size of the warm-up image each model runs once at startup.
WARMUP_SIDE = 64
#: Seconds the warm-up of one model may take (its own deadline, not the requests' ``timeout_s``: a first run on
#: a busy machine may be slow), and how often a failing one is tried, a pause apart, before readiness gives up.
WARMUP_TIMEOUT_S = 300.0
WARMUP_ATTEMPTS = 3
WARMUP_RETRY_PAUSE_S = 0.5


class Readiness:
    """``starting`` until the warm-up ends, then ``ready`` or ``failed`` (with the reason in ``error``)."""

    def __init__(self) -> None:
        self.status = "starting"
        self.error: str | None = "the models are warming up; retry shortly"

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def body(self) -> dict[str, str | None]:
        return {"status": self.status, "error": self.error}


def warm_up(served: ServedModel) -> None:
    """One small image through the model with its first style."""
    model = served.model
    weights = parse_style_weights(model, None if len(model.styles) == 1 else model.styles[0], None)
    stylize_array(model, np.full((1, WARMUP_SIDE, WARMUP_SIDE, 3), 128, dtype=np.uint8), False, weights)


async def warm_up_one(served: ServedModel, executor: Executor) -> str | None:
    """Warm ``served`` up on the inference threads, retrying a failing run; ``None``, or why it failed."""
    loop = asyncio.get_running_loop()
    for attempt in range(1, WARMUP_ATTEMPTS + 1):
        try:
            await asyncio.wait_for(loop.run_in_executor(executor, warm_up, served), WARMUP_TIMEOUT_S)
            return None
        except asyncio.TimeoutError:
            return f"warm-up of model {served.name!r} did not finish in {WARMUP_TIMEOUT_S:g} s"
        except Exception as error:  # a model that cannot run: stay unready and say why
            problem = f"warm-up of model {served.name!r} failed ({attempt} of {WARMUP_ATTEMPTS} tries): {error}"
            if attempt == WARMUP_ATTEMPTS:
                return problem
            log.warning("%s; trying again", problem)
            await asyncio.sleep(WARMUP_RETRY_PAUSE_S)
    return None


async def warm_up_all(registry: ModelRegistry, executor: Executor, readiness: Readiness) -> None:
    """Warm every model up, outside admission (requests cannot crowd it out; its deadline is
    ``WARMUP_TIMEOUT_S``); then ``readiness`` says ready, or why not."""
    for served in registry.models.values():
        problem = await warm_up_one(served, executor)
        if problem is not None:
            log.error("%s; the server stays unready", problem)
            readiness.status, readiness.error = "failed", problem
            return
    readiness.status, readiness.error = "ready", None
