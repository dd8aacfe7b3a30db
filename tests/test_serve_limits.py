"""nst-serve's limits in-process: the inference queue and its 503s, the request deadline (504, 408), uploads
(a byte budget shared by all, a minimum rate for each: slow uploaders cannot lock fast ones out), clients that
leave, and the warm-up behind readiness."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_support import (
    GOOD,
    AsgiUpload,
    GatedModel,
    check_error,
    encoded,
    gate,
    in_background,
    metric,
    post,
    serve,
    serve_models,
    until,
    wait_for,
)

from nst_fast.errors import StylizeError
from nst_fast.serve.app import create_app
from nst_fast.serve.settings import ServeSettings

__all__ = ["serve", "serve_models"]  # fixtures (serve_models is the fixture "models")


# --- Inference queue and deadline -------------------------------------------------------------------------------


def test_full_queue_gives_503_with_retry_after(serve) -> None:
    client = serve(ServeSettings(max_concurrent=1, max_queue=1, retry_after_s=7))
    model, admission, results = gate(client), client.app.state.admission, []
    first = in_background(client, results)
    wait_for(lambda: admission.running == 1, "the first request to run")
    second = in_background(client, results)
    wait_for(lambda: admission.waiting == 1, "the second request to queue")
    assert client.get("/healthz").status_code == 200  # answered while the slots are taken
    busy = client.get("/metrics").text
    assert metric(busy, "nst_serve_inferences_in_flight") == 1 and metric(busy, "nst_serve_queue_length") == 1
    response = post(client, GOOD)
    check_error(response, 503, "the server is busy")
    assert response.headers["retry-after"] == "7"
    model.gate.set()
    first.join(10)
    second.join(10)
    assert [r.status_code for r in results] == [200, 200]
    text = client.get("/metrics").text
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="200") == 2
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="503") == 1
    assert metric(text, "nst_serve_rejected_total", reason="queue_full") == 1
    assert metric(text, "nst_serve_request_seconds_count", route="/v1/stylize") == 3
    assert metric(text, "nst_serve_inference_seconds_count", model="wave") == 2
    assert metric(text, "nst_serve_inferences_in_flight") == 0 and metric(text, "nst_serve_queue_length") == 0


def test_timeout_gives_504_and_the_slot_is_freed_when_the_run_ends(serve) -> None:
    client = serve(ServeSettings(max_concurrent=1, max_queue=2, timeout_s=0.5))
    model, admission, results = gate(client), client.app.state.admission, []
    first = in_background(client, results)
    wait_for(lambda: admission.running == 1, "the first request to run")
    check_error(post(client, GOOD), 504, "timed out after 0.5 s waiting for a free inference slot")
    first.join(10)
    check_error(results[0], 504, "timed out after 0.5 s stylising")
    assert admission.running == 1  # the run has not ended: its slot stays taken
    model.gate.set()
    wait_for(lambda: admission.running == 0, "the slot to be freed")
    assert post(client, GOOD).status_code == 200
    assert metric(client, "nst_serve_rejected_total", reason="timeout") == 2


def test_admission_runs_in_arrival_order_and_refuses_past_the_queue() -> None:
    from nst_fast.serve.limits import Admission, Overloaded

    async def scenario() -> tuple[list[str], list[tuple[int, int]]]:
        counts: list[tuple[int, int]] = []
        admission = Admission(1, 2, timeout_s=10, on_change=lambda running, waiting: counts.append((running, waiting)))
        order, release = [], threading.Event()

        def work(name: str) -> str:
            release.wait(10)
            order.append(name)
            return name

        tasks = [asyncio.create_task(admission.run(lambda n=n: work(n))) for n in "abc"]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await admission.run(lambda: work("d"))
        release.set()
        assert await asyncio.gather(*tasks) == ["a", "b", "c"]
        admission.shutdown()
        return order, counts

    order, counts = asyncio.run(scenario())
    assert order == ["a", "b", "c"]
    assert counts == [(1, 0), (1, 1), (1, 2), (1, 1), (1, 0), (0, 0)]


def test_inference_threads_yield_the_cores_to_the_event_loop() -> None:
    """Inference threads run nicer than the event loop thread, which answers /healthz and reads uploads."""
    import os

    from nst_fast.serve.limits import INFERENCE_NICENESS, Admission

    admission = Admission(1, 0, timeout_s=10)
    niceness = asyncio.run(admission.run(lambda: os.getpriority(os.PRIO_PROCESS, 0)))  # 0: the calling thread
    admission.shutdown()
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + INFERENCE_NICENESS)


# --- Clients that leave ----------------------------------------------------------------------------------------


def test_a_client_leaving_mid_upload_is_no_error(models, caplog) -> None:
    app = create_app([models["wave"]])

    async def scenario() -> int | None:
        upload = AsgiUpload(app)
        upload.send_part()
        await asyncio.sleep(0.05)
        upload.leave()
        return await upload.answer()

    with caplog.at_level("WARNING"):
        assert asyncio.run(scenario()) == 499  # recorded only: the client is gone
    app.state.admission.shutdown()
    assert [record.getMessage() for record in caplog.records] == []
    text = app.state.metrics.render().decode()
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="499") == 1
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="500") == 0
    assert metric(text, "nst_serve_uploads_in_progress") == 0


def test_a_client_leaving_the_queue_frees_its_place_and_never_runs(models) -> None:
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, max_queue=1))
    served = app.state.registry.models["wave"]
    served.model = model = GatedModel(served.model)
    admission, metrics = app.state.admission, app.state.metrics

    async def scenario() -> list[int | None]:
        running, leaving = AsgiUpload(app), AsgiUpload(app)
        running.send_all()
        await until(lambda: admission.running == 1, "the first request to run")
        leaving.send_all()
        await until(lambda: admission.waiting == 1, "the second request to queue")
        leaving.leave()
        left = await leaving.answer(timeout_s=5)
        assert admission.waiting == 0 and admission.running == 1
        queued = AsgiUpload(app)  # the queue place is free again
        queued.send_all()
        await until(lambda: admission.waiting == 1, "the third request to queue")
        model.gate.set()
        return [left, await running.answer(), await queued.answer()]

    assert asyncio.run(scenario()) == [499, 200, 200]
    admission.shutdown()
    assert metric(metrics.render().decode(), "nst_serve_inference_seconds_count", model="wave") == 2


# --- Uploads: a shared byte budget and a minimum rate ----------------------------------------------------------


def noise_png(side: int) -> bytes:
    return encoded(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_stalled_uploads_do_not_lock_fast_ones_out(models) -> None:
    """More stalled uploads than could be queued hold next to none of the upload budget: a fast upload still gets
    its image, and the stalled ones get 408 at the request deadline, closing their connection."""
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, max_queue=1, timeout_s=1.0, min_upload_rate=0))
    metrics = app.state.metrics

    async def scenario() -> tuple[list[AsgiUpload], int | None, float]:
        stalled = [AsgiUpload(app) for _ in range(5)]
        for upload in stalled:
            upload.send_part()
        await until(lambda: metrics.uploads_in_progress._value.get() == 5, "five uploads in progress")
        fast = AsgiUpload(app)
        fast.send_all()
        status = await fast.answer()
        answered_after = [upload.status for upload in stalled]
        assert answered_after == [None] * 5, answered_after  # the fast one did not wait for them
        for upload in stalled:
            await upload.answer()
        return stalled, status, time.monotonic()

    start = time.monotonic()
    stalled, fast, done = asyncio.run(scenario())
    app.state.admission.shutdown()
    assert fast == 200 and [upload.status for upload in stalled] == [408] * 5 and done - start < 5
    assert stalled[0].error() == (
        "the upload did not arrive within 1 s; send it again over a faster connection, or a smaller file"
    )
    assert stalled[0].headers["connection"] == "close"
    text = metrics.render().decode()
    assert metric(text, "nst_serve_rejected_total", reason="slow_upload") == 5
    assert metric(text, "nst_serve_uploads_in_progress") == 0 and metric(text, "nst_serve_upload_bytes") == 0


def test_an_upload_under_the_minimum_rate_is_cut_after_the_grace_period(models) -> None:
    app = create_app([models["wave"]], ServeSettings(min_upload_rate=10_000, upload_grace_s=0.3, timeout_s=30))
    image = noise_png(64)

    async def scenario() -> tuple[AsgiUpload, AsgiUpload, float]:
        slow, steady = AsgiUpload(app), AsgiUpload(app, image)
        slow.send_part(100)
        start = time.monotonic()
        for offset in range(0, len(steady.body) - 3000, 3000):  # 30 kB/s: three times the minimum
            steady.send_part(offset + 3000, offset)
            await asyncio.sleep(0.1)
        steady.send_all(offset + 3000)
        await slow.answer()
        await steady.answer()
        return slow, steady, time.monotonic() - start

    slow, steady, elapsed = asyncio.run(scenario())
    app.state.admission.shutdown()
    assert elapsed > 0.3 and steady.status == 200, steady.answer_body[:200]
    assert slow.status == 408 and slow.headers["connection"] == "close"
    assert slow.error().startswith(
        "the upload came in too slowly: 100 bytes in 0.3 s, under the minimum of "
        "10000 bytes/s; send it over a faster connection"
    ), slow.error()


def test_uploads_share_a_byte_budget(models) -> None:
    """The budget ((max_concurrent + max_queue) x max_upload_bytes) counts the bytes received: an upload that would
    pass it gets 503 with Retry-After (before reading when its Content-Length says so), the others go on."""
    settings = ServeSettings(max_concurrent=1, max_queue=0, max_upload_bytes=50_000, retry_after_s=3)
    app = create_app([models["wave"]], settings)
    image = noise_png(100)
    metrics = app.state.metrics

    async def scenario() -> list[AsgiUpload]:
        holding = AsgiUpload(app, image)
        holding.send_part(30_000)
        await until(lambda: metrics.upload_bytes._value.get() == 30_000, "30000 bytes held")
        declared, streamed = AsgiUpload(app, image, declare_length=True), AsgiUpload(app, image)
        declared.send_part(10)
        streamed.send_all()
        await declared.answer()
        await streamed.answer()
        holding.send_all(30_000)
        await holding.answer()
        later = AsgiUpload(app, image)
        later.send_all()
        await later.answer()
        return [holding, declared, streamed, later]

    holding, declared, streamed, later = asyncio.run(scenario())
    app.state.admission.shutdown()
    assert len(holding.body) > 30_000 and [holding.status, later.status] == [200, 200]
    for refused in (declared, streamed):
        assert refused.status == 503 and refused.headers["retry-after"] == "3"
        assert refused.headers["connection"] == "close" and refused.error().startswith("the server is busy (")
    assert metric(metrics.render().decode(), "nst_serve_rejected_total", reason="uploads_full") == 2
    assert metric(metrics.render().decode(), "nst_serve_upload_bytes") == 0


def test_one_deadline_covers_the_upload_the_wait_and_the_run(models) -> None:
    """timeout_s counts from the request's start: an upload that took most of it leaves the rest to the run."""
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, timeout_s=2.0, min_upload_rate=0))
    served = app.state.registry.models["wave"]
    served.model = model = GatedModel(served.model)  # the run never ends by itself

    async def scenario() -> tuple[AsgiUpload, float]:
        upload = AsgiUpload(app)
        start = time.monotonic()
        upload.send_part()
        await asyncio.sleep(1.2)
        upload.send_all(100)
        await upload.answer()
        return upload, time.monotonic() - start

    upload, elapsed = asyncio.run(scenario())
    model.gate.set()
    app.state.admission.shutdown()
    assert upload.status == 504 and upload.error().startswith("timed out after 2 s stylising")
    assert 1.9 < elapsed < 2.9, elapsed  # a deadline of its own for the run would end it at 3.2 s


# --- Readiness ---------------------------------------------------------------------------------------------------


class BrokenModel(GatedModel):
    """A model whose every run fails, as ONNX Runtime does when it runs out of memory."""

    def __call__(self, batch, weights=None):
        raise StylizeError("ONNX Runtime failed on input (1, 64, 64, 3) (out of memory)")


def test_a_failing_model_is_reported_by_readiness_and_as_a_500(models) -> None:
    app = create_app([models["wave"]])
    served = app.state.registry.models["wave"]
    served.model = BrokenModel(served.model)
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").json()["status"] != "starting", "the warm-up to end")
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "failed"
        assert response.json()["error"] == (
            "warm-up of model 'wave' failed (3 of 3 tries): ONNX Runtime failed on input (1, 64, 64, 3) (out of memory)"
        )
        response = post(client, GOOD)
        assert response.status_code == 500 and response.json() == {
            "error": "the model failed: ONNX Runtime failed on input (1, 64, 64, 3) (out of memory)"
        }
        assert client.get("/healthz").status_code == 200


def test_warm_up_has_its_own_deadline_and_does_not_queue(models) -> None:
    """A first run slower than the requests' timeout, with the only queue place taken, still makes the server
    ready: the warm-up runs outside admission with its own deadline."""
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, max_queue=0, timeout_s=0.2))
    served = app.state.registry.models["wave"]
    served.model = model = GatedModel(served.model)
    with TestClient(app) as client:
        time.sleep(0.5)  # the warm-up's run is held past the requests' timeout
        assert client.get("/readyz").json()["status"] == "starting"
        model.gate.set()
        wait_for(lambda: client.get("/readyz").json()["status"] != "starting", "the warm-up to end")
        assert client.get("/readyz").json() == {"status": "ready", "models": ["wave"]}
        assert metric(client, "nst_serve_inference_seconds_count", model="wave") == 0  # not a request
