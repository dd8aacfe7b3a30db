"""``nst-serve``: the command line that builds ``ServeSettings``, loads the models and runs uvicorn with
``connections.GuardedH11Protocol``, then exits without waiting for inference runs abandoned past their deadline."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI

from nst_fast.assets import DEFAULT_MODEL
from nst_fast.errors import EXIT_USAGE, ConfigError, StylizeError
from nst_fast.serve.settings import ServeSettings, available_cpus

if TYPE_CHECKING:
    import uvicorn

#: What ``nst-serve`` without ``--model`` serves: the bundled models, the default first.
SERVED_BY_DEFAULT = (DEFAULT_MODEL,)
PROG = "nst-serve"
#: Seconds uvicorn waits for in-flight requests on SIGTERM beyond the request timeout, before closing them. Every
#: request ends within ``timeout_s`` of its headers, so this is a backstop (e.g. a client too slow to read its
#: answer).
SHUTDOWN_GRACE_S = 5.0
log = logging.getLogger("nst_fast.serve")


def build_parser() -> argparse.ArgumentParser:
    defaults = ServeSettings()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve nst-fast ONNX models over HTTP (POST /v1/stylize, GET /v1/styles, a web page at /).",
        epilog="SIGTERM or Ctrl-C: stop accepting connections, answer the requests in flight (within --timeout "
        "of their start; at most --timeout + 5 s), exit 0 without waiting for inference runs abandoned past "
        "their deadline. Exit status 2: bad option or model. Guide: docs/serve.md.",
    )
    parser.add_argument(
        "--model",
        "-m",
        dest="models",
        action="append",
        default=None,
        help="an ONNX export or the name of a bundled model (repeat for several; the first is the "
        "default; named by file stem). Default: the bundled models "
        f"({', '.join(SERVED_BY_DEFAULT)})",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; put a TLS reverse proxy in front for others)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    add_limit_options(parser.add_argument_group("limits"), defaults)
    add_connection_options(parser.add_argument_group("connections"), defaults)
    add_runtime_options(parser.add_argument_group("runtime"), defaults)
    return parser


def add_limit_options(parser: argparse._ArgumentGroup, defaults: ServeSettings) -> None:
    """What one request may ask for, and how many run or wait at once."""
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=defaults.max_upload_bytes / 2**20,
        help="largest request body in MiB (default %(default)g): 413 above",
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=defaults.max_pixels / 1e6,
        help="largest decoded image in millions of pixels (default %(default)g): 413 above",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=defaults.max_side,
        help="longest side stylised, in pixels: larger images are downscaled (default %(default)s; "
        "a request's max_size may lower it)",
    )
    parser.add_argument(
        "--max-inference-mb",
        type=int,
        default=defaults.max_inference_mb,
        help="memory one inference's network may use, in MiB (default %(default)s): larger photos go tile by tile "
        "with the whole-image result, in tiles that fit (models need their NAME.tiles.zip, else 413)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=defaults.max_concurrent,
        help="inferences running at once (default %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests waiting for an inference; more get 503 with Retry-After (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout_s,
        help="seconds a request may take from its headers to its answer (default %(default)g): "
        "408 if its upload has not arrived by then, 504 if it is still waiting or running",
    )


def add_connection_options(parser: argparse._ArgumentGroup, defaults: ServeSettings) -> None:
    """How slow or idle clients are bounded."""
    parser.add_argument(
        "--min-upload-rate",
        type=float,
        default=defaults.min_upload_rate / 1024,
        help="KiB/s an upload must average after --upload-grace seconds (default %(default)g; "
        "0: no minimum): 408 below it",
    )
    parser.add_argument(
        "--upload-grace",
        type=float,
        default=defaults.upload_grace_s,
        help="seconds before the minimum upload rate applies (default %(default)g)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open connections (default %(default)s); past it a new one closes the connection "
        "waiting longest for its request, and health probes are always answered",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout_s,
        help="seconds a connection may take to send a request's headers (default %(default)g): 408 and closed after",
    )
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=defaults.keep_alive_s,
        help="seconds an idle keep-alive connection stays open (default %(default)g)",
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=defaults.retry_after_s,
        help="Retry-After seconds of 503 answers (default %(default)s)",
    )


def add_runtime_options(parser: argparse._ArgumentGroup, defaults: ServeSettings) -> None:
    """ONNX Runtime, the page's in-browser mode and logging."""
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help=f"ONNX Runtime intra-op threads per session (default 0: the {available_cpus()} "
        "available cores divided by --max-concurrent)",
    )
    parser.add_argument(
        "--provider",
        default=defaults.provider,
        help="ONNX Runtime provider: auto (TensorRT > CUDA > CPU), tensorrt, cuda, cpu, ...",
    )
    parser.add_argument(
        "--no-browser",
        dest="browser",
        action="store_false",
        help="do not offer the page's in-browser mode (by default offered where the onnxruntime-web "
        "files are installed: the page may then download a model, GET /v1/models/NAME.onnx, "
        "and run it on the visitor's device; docs/browser.md)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default info)",
    )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """``ServeSettings`` from parsed options; raises ``ConfigError`` naming a value out of range."""
    return ServeSettings(
        max_upload_bytes=round(args.max_upload_mb * 2**20),
        max_pixels=round(args.max_megapixels * 1e6),
        max_side=args.max_side,
        max_inference_mb=args.max_inference_mb,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        min_upload_rate=round(args.min_upload_rate * 1024),
        upload_grace_s=args.upload_grace,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        keep_alive_s=args.keep_alive,
        retry_after_s=args.retry_after,
        threads=args.threads,
        provider=args.provider,
        browser=args.browser,
    )


def server_config(
    app: FastAPI, settings: ServeSettings, host: str, port: int, log_level: str = "info"
) -> uvicorn.Config:
    """uvicorn's config for ``app``: the guarded protocol (header timeout, connection cap, JSON refusals) in place
    of ``limit_concurrency``, no WebSocket upgrades, and a graceful shutdown of at most the request timeout plus
    ``SHUTDOWN_GRACE_S``."""
    import uvicorn

    from nst_fast.serve.connections import ConnectionGuard, connections_allowed, protocol_class

    guard = ConnectionGuard(settings, app.state.metrics, connections_allowed(settings.max_connections))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_class(guard),
        ws="none",
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=settings.timeout_s + SHUTDOWN_GRACE_S,
    )


def run_server(config: uvicorn.Config) -> None:
    """Run uvicorn until SIGTERM/SIGINT; returns once the requests in flight have been answered."""
    import uvicorn

    # uvicorn re-raises the stopping signal once it has shut down, to the handler it found: make that one a
    # no-op, so that a clean shutdown ends with status 0 instead of death by signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_past_abandoned_runs(app: FastAPI) -> None:
    """Every request is answered; inference runs that went past their deadline (answered 504) may still be going
    in their threads, which ONNX Runtime cannot stop and Python would wait for at exit: exit 0 now instead."""
    running = app.state.admission.running
    if running:
        log.warning("exiting without waiting for %d inference run(s) abandoned past their deadline", running)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as error:
        parser.error(str(error))
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port (1-65535)")
    from nst_fast.serve.app import create_app

    try:
        app = create_app(args.models or list(SERVED_BY_DEFAULT), settings)
    except StylizeError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    run_server(server_config(app, settings, args.host, args.port, args.log_level))
    exit_past_abandoned_runs(app)
    return 0
