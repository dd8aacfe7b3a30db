"""``nst-serve``: the command line that builds ``ServeSettings``, loads the models and runs uvicorn."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI

from nst_fast.errors import EXIT_USAGE, ConfigError, StylizeError
from nst_fast.serve.settings import ServeSettings, available_cpus

PROG = "nst-serve"
#: Seconds uvicorn waits for in-flight requests on SIGTERM beyond the request timeout, before closing them.
SHUTDOWN_GRACE_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    defaults = ServeSettings()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve nst-fast ONNX models over HTTP (POST /v1/stylize, GET /v1/styles, a web page at /).",
        epilog="SIGTERM or Ctrl-C: stop accepting connections, finish the requests in flight, exit 0. "
               "Exit status 2: bad option or model.",
    )
    parser.add_argument("--model", "-m", dest="models", action="append", required=True, type=Path,
                        help="an ONNX export (repeat for several; the first is the default; named by file stem)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; put a TLS reverse proxy in front for others)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / 2**20,
                        help="largest request body in MiB (default %(default)g): 413 above")
    parser.add_argument("--max-megapixels", type=float, default=defaults.max_pixels / 1e6,
                        help="largest decoded image in millions of pixels (default %(default)g): 413 above")
    parser.add_argument("--max-side", type=int, default=defaults.max_side,
                        help="longest side stylised, in pixels: larger images are downscaled (default %(default)s; "
                             "a request's max_size may lower it); it bounds the memory per inference")
    parser.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent,
                        help="inferences running at once (default %(default)s)")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="requests waiting for an inference; more get 503 with Retry-After (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s,
                        help="seconds a request may wait and run (default %(default)g): 504 after; also the "
                             "most an upload may take to arrive: 408 after")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections,
                        help="open connections; more get 503 from uvicorn (default %(default)s)")
    parser.add_argument("--retry-after", type=int, default=defaults.retry_after_s,
                        help="Retry-After seconds of 503 answers (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help=f"ONNX Runtime intra-op threads per session (default 0: the {available_cpus()} "
                             "available cores divided by --max-concurrent)")
    parser.add_argument("--provider", default=defaults.provider,
                        help="ONNX Runtime provider: auto (TensorRT > CUDA > CPU), tensorrt, cuda, cpu, ...")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default info)")
    return parser


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """``ServeSettings`` from parsed options; raises ``ConfigError`` naming a value out of range."""
    return ServeSettings(
        max_upload_bytes=round(args.max_upload_mb * 2**20), max_pixels=round(args.max_megapixels * 1e6),
        max_side=args.max_side,
        max_concurrent=args.max_concurrent, max_queue=args.max_queue, timeout_s=args.timeout,
        max_connections=args.max_connections,
        retry_after_s=args.retry_after, threads=args.threads, provider=args.provider,
    )


def run_server(app: FastAPI, settings: ServeSettings, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT; returns once the requests in flight have finished
    (uvicorn's graceful shutdown, at most the request timeout plus ``SHUTDOWN_GRACE_S``)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            limit_concurrency=settings.max_connections,
                            timeout_graceful_shutdown=settings.timeout_s + SHUTDOWN_GRACE_S)
    # uvicorn re-raises the stopping signal once it has shut down, to the handler it found: make that one a
    # no-op, so that a clean shutdown ends with status 0 instead of death by signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        app = create_app(args.models, settings)
    except StylizeError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    run_server(app, settings, args.host, args.port, args.log_level)
    return 0
