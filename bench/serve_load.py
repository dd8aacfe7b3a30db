"""Load test of ``nst-serve``: N concurrent clients post photos for T seconds; throughput, latency percentiles,
503s, errors, the server's peak RSS, and whether ``/healthz`` answered throughout.

    python bench/serve_load.py --model export/starry.onnx --clients 1,4,32 --duration 25 --photos ~/photos
    python bench/serve_load.py --url http://127.0.0.1:8000 --clients 8 --duration 10      # a running server

With ``--model`` it starts a fresh server per setting (``python -m nst_fast.serve`` on 127.0.0.1, extra options
in ``--server-args``), reads its peak RSS (``VmHWM`` in ``/proc/PID/status``) before stopping it with SIGTERM,
and checks that it exits 0. ``--url`` must be a loopback address: this is not a tool for loading other machines.
Every request must get 200 with an image of the photo's size or 503 with ``Retry-After`` (after which that
client waits as long as told, like a well-behaved client); anything else is an error, as is a ``/healthz`` probe
(every ``--probe-interval`` s) that fails. Exit status 1 when there was any.
Prints a table and writes a JSON record to ``bench/results/serve_load-<timestamp>.json`` (``--out-dir``).
Plain script: it needs httpx and Pillow, not torch.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class Outcome:
    """One request: HTTP status (0 for a transport failure), latency in seconds, whether the answer was
    acceptable (an image of the right size, or a 503 with Retry-After), and what was wrong otherwise."""

    status: int
    seconds: float
    ok: bool
    problem: str = ""


@dataclass
class Probe:
    """The ``/healthz`` probes of one run."""

    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` percent of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def summarize(
    clients: int, outcomes: Sequence[Outcome], duration_s: float, probe: Probe, peak_rss_kb: int | None = None
) -> dict[str, Any]:
    """One row of the report. Latency percentiles (ms) are over the 200 answers; throughput is 200 answers per
    second of the run."""
    images = [o.seconds for o in outcomes if o.status == 200 and o.ok]
    ms = lambda value: None if value is None else round(value * 1000.0, 1)  # noqa: E731
    return {
        "clients": clients,
        "requests": len(outcomes),
        "images": len(images),
        "rejected_503": sum(o.status == 503 and o.ok for o in outcomes),
        "errors": sum(not o.ok for o in outcomes),
        "error_samples": sorted({o.problem for o in outcomes if not o.ok})[:5],
        "duration_s": round(duration_s, 2),
        "throughput_per_s": round(len(images) / duration_s, 2) if duration_s > 0 else 0.0,
        "p50_ms": ms(percentile(images, 50)),
        "p95_ms": ms(percentile(images, 95)),
        "p99_ms": ms(percentile(images, 99)),
        "healthz_probes": len(probe.seconds) + len(probe.failures),
        "healthz_failures": len(probe.failures),
        "healthz_worst_ms": ms(max(probe.seconds, default=None)),
        "server_peak_rss_mb": None if peak_rss_kb is None else round(peak_rss_kb / 1024.0, 1),
    }


COLUMNS = [
    ("clients", "clients"),
    ("requests", "requests"),
    ("images", "200"),
    ("rejected_503", "503"),
    ("errors", "errors"),
    ("throughput_per_s", "images/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("healthz_worst_ms", "/healthz worst ms"),
    ("healthz_failures", "/healthz failed"),
    ("server_peak_rss_mb", "server peak RSS MB"),
]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (``-`` for missing values)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("-" if row.get(key) is None else str(row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


# --- Photos, server ------------------------------------------------------------------------------------------------


def load_photos(folder: Path | None, size: int, limit: int = 16) -> list[bytes]:
    """JPEG bytes of up to ``limit`` photos from ``folder``, centre-cropped and resized to ``size`` x ``size``
    (a synthetic gradient when no folder is given)."""
    sources = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit] if folder else []
    )
    images = [ImageOps.fit(ImageOps.exif_transpose(Image.open(p)).convert("RGB"), (size, size)) for p in sources]
    if not images:
        images = [Image.linear_gradient("L").resize((size, size)).convert("RGB")]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_kb(pid: int) -> int | None:
    """``VmHWM`` (peak resident set size, kB) of a process, from ``/proc`` (``None`` where there is none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Server:
    """``python -m nst_fast.serve`` on a free loopback port, started and stopped by the benchmark."""

    def __init__(self, model: Path, server_args: Sequence[str], ready_timeout_s: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nst_fast.serve",
                "--model",
                str(model),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *server_args,
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"serve_load: the server exited with status {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise SystemExit(f"serve_load: the server was not ready after {ready_timeout_s:g} s")
            time.sleep(0.2)

    def stop(self) -> tuple[int | None, int]:
        """Peak RSS (kB), then SIGTERM and the exit status."""
        peak = peak_rss_kb(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            return peak, self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return peak, self.process.wait()


# --- Load ------------------------------------------------------------------------------------------------------------


def probe_health(url: str, stop: threading.Event, interval_s: float, probe: Probe) -> None:
    """``GET /healthz`` every ``interval_s`` until ``stop``, recording latencies and failures (own thread and
    connection, so that the clients' event loop does not delay it)."""
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = http.get("/healthz")
                if response.status_code == 200 and response.json() == {"status": "ok"}:
                    probe.seconds.append(time.perf_counter() - start)
                else:
                    probe.failures.append(f"status {response.status_code}")
            except httpx.HTTPError as error:
                probe.failures.append(f"{type(error).__name__}: {error}")
            stop.wait(interval_s)


def check_answer(response: httpx.Response, size: int) -> tuple[bool, str]:
    if response.status_code == 503:
        return ("retry-after" in response.headers), "503 without Retry-After"
    if response.status_code != 200:
        return False, f"status {response.status_code}: {response.text[:200]}"
    if not response.headers.get("content-type", "").startswith("image/"):
        return False, f"200 with Content-Type {response.headers.get('content-type')!r}"
    try:
        got = Image.open(io.BytesIO(response.content)).size
    except OSError as error:
        return False, f"200 with an unreadable image ({error})"
    return got == (size, size), f"200 with an image of {got[0]}x{got[1]}, sent {size}x{size}"


async def drive(
    url: str, clients: int, duration_s: float, photos: list[bytes], size: int, fields: dict[str, str]
) -> tuple[list[Outcome], float]:
    """``clients`` loops posting photos until ``duration_s`` has passed; requests under way then are awaited."""
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as http:
        start = time.perf_counter()
        stop_at = start + duration_s

        async def client(index: int) -> None:
            n = index
            while time.perf_counter() < stop_at:
                photo = photos[n % len(photos)]
                n += clients
                sent = time.perf_counter()
                try:
                    response = await http.post(
                        "/v1/stylize", files={"image": ("photo.jpg", photo, "image/jpeg")}, data=fields
                    )
                    ok, problem = check_answer(response, size)
                    outcomes.append(Outcome(response.status_code, time.perf_counter() - sent, ok, problem))
                except httpx.HTTPError as error:
                    outcomes.append(Outcome(0, time.perf_counter() - sent, False, f"{type(error).__name__}: {error}"))
                    continue
                if response.status_code == 503:  # a well-behaved client waits as told
                    wait = float(response.headers.get("retry-after", "1"))
                    await asyncio.sleep(max(0.0, min(wait, stop_at - time.perf_counter())))

        await asyncio.gather(*(client(i) for i in range(clients)))
        return outcomes, time.perf_counter() - start


def run_setting(
    url: str, clients: int, args: argparse.Namespace, photos: list[bytes]
) -> tuple[list[Outcome], float, Probe]:
    """One setting: the clients and the ``/healthz`` prober; returns the outcomes, the run's length and the probe."""
    probe, stop = Probe(), threading.Event()
    prober = threading.Thread(target=probe_health, args=(url, stop, args.probe_interval, probe), daemon=True)
    prober.start()
    fields = {"style": args.style} if args.style else {}
    try:
        outcomes, elapsed = asyncio.run(drive(url, clients, args.duration, photos, args.size, fields))
    finally:
        stop.set()
        prober.join()
    return outcomes, elapsed, probe


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "python": platform.python_version()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", type=Path, help="ONNX export: start a server per setting on 127.0.0.1")
    target.add_argument("--url", help="a running server on this machine (loopback only), e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", default="1,4,32", help="comma-separated concurrent clients (default 1,4,32)")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per setting (default 25)")
    parser.add_argument("--photos", type=Path, default=None, help="folder of JPEG/PNG photos (default: a gradient)")
    parser.add_argument("--size", type=int, default=512, help="photos are centre-cropped to SIZE x SIZE (default 512)")
    parser.add_argument("--style", default=None, help="the form's style field, for multi-style models")
    parser.add_argument("--server-args", default="", help="extra nst-serve options, e.g. '--max-concurrent 2'")
    parser.add_argument("--probe-interval", type=float, default=0.25, help="seconds between /healthz probes")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the JSON record goes")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.url and urlparse(args.url).hostname not in LOOPBACK_HOSTS:
        raise SystemExit(f"serve_load: --url {args.url} is not a loopback address ({', '.join(LOOPBACK_HOSTS)})")
    counts = [int(c) for c in args.clients.split(",")]
    photos = load_photos(args.photos, args.size)
    rows = []
    for clients in counts:
        server = Server(args.model, shlex.split(args.server_args)) if args.model else None
        url = server.url if server else args.url.rstrip("/")
        try:
            outcomes, elapsed, probe = run_setting(url, clients, args, photos)
        finally:
            peak, status = server.stop() if server else (None, None)
        row = summarize(clients, outcomes, elapsed, probe, peak)
        if server is not None:
            row["server_exit_status"] = status
        rows.append(row)
        print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    record = {
        "machine": machine(),
        "config": {
            "model": str(args.model) if args.model else None,
            "url": args.url,
            "duration_s": args.duration,
            "size": args.size,
            "photos": len(photos),
            "style": args.style,
            "server_args": args.server_args,
        },
        "command": " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench/serve_load.py", *argv])),
        "results": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"serve_load-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    record["record_path"] = str(path)
    print(format_table(rows))
    print(json.dumps(rows, indent=2))
    print(f"record: {path}")
    return record


if __name__ == "__main__":
    result = main()
    failed = any(r["errors"] or r["healthz_failures"] or r.get("server_exit_status", 0) for r in result["results"])
    sys.exit(1 if failed else 0)
