"""``create_app``: the FastAPI app of ``nst-serve``, composed of its parts: the models (``registry``), admission
control (``limits``), the upload budget (``uploads``), readiness (``readiness``), metrics, JSON errors
(``errors``), the routes (``routes``), the web page's static files and what its in-browser mode needs
(``browser``). The HTTP contract is in docs/serve.md; the in-browser mode is in docs/browser.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from nst_fast.serve.browser import CrossOriginIsolation, add_model_route, add_runtime_route
from nst_fast.serve.errors import install_error_handlers
from nst_fast.serve.limits import Admission
from nst_fast.serve.metrics import Metrics, MetricsMiddleware
from nst_fast.serve.readiness import Readiness, warm_up_all
from nst_fast.serve.registry import ModelRegistry
from nst_fast.serve.routes import Services, add_page_route, add_status_routes, add_stylize_route
from nst_fast.serve.settings import ServeSettings
from nst_fast.serve.uploads import UploadBudget
from nst_fast.serve.webfiles import RUNTIME_DIR, STATIC_DIR, Runtime, RuntimeMissing

STATIC_PREFIX = "/static"
log = logging.getLogger("nst_fast.serve")


def browser_runtime(settings: ServeSettings, runtime_dir: Path) -> Runtime | None:
    """The runtime of the page's in-browser mode, or ``None`` (said once, with why, when it is missing): the page
    then stylises on the server only, as before."""
    if not settings.browser:
        return None
    try:
        return Runtime.load(runtime_dir)
    except RuntimeMissing as error:
        log.warning("the page's in-browser mode is off: %s", error)
        return None


def build_services(models: list[Path | str], settings: ServeSettings, runtime_dir: Path = RUNTIME_DIR) -> Services:
    """Load the models (raises ``StylizeError`` for a missing, foreign or duplicate-named file) and make the
    parts the routes share."""
    registry = ModelRegistry.load(models, provider=settings.provider, threads=settings.intra_op_threads)
    metrics = Metrics()
    admission = Admission(settings.max_concurrent, settings.max_queue, settings.timeout_s, metrics.admission_changed)
    runtime = browser_runtime(settings, runtime_dir)
    for served in registry.models.values() if runtime is not None else ():
        why = runtime.unreadable(served.path)
        if why:
            log.warning("model %r stays on the server: %s", served.name, why)
    return Services(
        settings,
        registry,
        metrics,
        admission,
        Readiness(),
        UploadBudget(settings.upload_budget_bytes, metrics),
        runtime,
    )


def create_app(
    models: list[Path | str], settings: ServeSettings | None = None, *, runtime_dir: Path = RUNTIME_DIR
) -> FastAPI:
    """The nst-serve app for the ONNX exports ``models`` (the first is the default). Loads them now (raises
    ``StylizeError`` for a missing, foreign or duplicate-named file); startup then warms each up, after which
    ``/readyz`` answers 200. ``runtime_dir``: the onnxruntime-web files of the page's in-browser mode (``web/build.py``
    writes them); without them the page stylises on the server only."""
    services = build_services(models, settings or ServeSettings(), runtime_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(warm_up_all(services.registry, services.admission.executor, services.readiness))
        try:
            yield
        finally:
            task.cancel()
            services.admission.shutdown()

    app = FastAPI(title="nst-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.state.settings, app.state.registry, app.state.metrics = services.settings, services.registry, services.metrics
    app.state.admission, app.state.readiness = services.admission, services.readiness
    app.add_middleware(MetricsMiddleware, metrics=services.metrics, mounts=(STATIC_PREFIX,))
    install_error_handlers(app, services.metrics)
    add_status_routes(app, services)
    add_stylize_route(app, services)
    if services.runtime is not None:
        app.add_middleware(CrossOriginIsolation)
        add_model_route(app, services.registry, services.runtime)
    add_runtime_route(app, services.runtime)  # before the mount of /static, which would answer first
    add_page_route(app)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app
