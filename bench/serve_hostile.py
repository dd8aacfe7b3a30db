"""Hostile-load test of ``nst-serve``: idle connections, slow-header and slow-body clients alongside normal
clients; the normal clients' outcomes, ``/healthz`` latency, the server's memory and its SIGTERM exit.

    python bench/serve_hostile.py --model export/starry.onnx --idle 500 --slow-headers 20 --slow-bodies 20 \
        --clients 4 --duration 30
    python bench/serve_hostile.py --model export/starry.onnx --server-root /tmp/old_checkout   # another version

It starts ``python -m nst_fast.serve`` on a free 127.0.0.1 port with the code of ``--server-root`` (default: this
checkout) and its default settings (``--server-args`` adds options), then opens the hostile connections, all on
loopback and bounded in count (at most 2000 each) and time (``--duration`` at most 300 s):

- ``--idle`` connections that send nothing;
- ``--slow-headers`` clients that send a request line, then one byte of a header a second;
- ``--slow-bodies`` clients that send the headers of a 64 KiB ``POST /v1/stylize``, then one body byte a second.

Each reconnects 0.2 s after the server closes it, so that the server faces that many throughout. After
``--settle`` seconds, ``--clients`` normal clients post a photo in a loop for ``--duration`` seconds (waiting
``Retry-After`` after a 503, as a well-behaved client does) while another thread probes ``/healthz`` on a fresh
connection every ``--probe-interval`` seconds and a third samples the server's RSS. Then SIGTERM, with the
hostile connections still open, and the seconds to exit. Prints the row and writes
``bench/results/serve_hostile-<timestamp>.json``. Plain script: httpx and Pillow, no torch.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from serve_load import RESULTS_DIR, free_port, load_photos, machine, peak_rss_kb, percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MAX_HOSTILE = 2000
MAX_DURATION_S = 300.0
RECONNECT_PAUSE_S = 0.2
SLOW_BODY_BYTES = 64 * 1024
BOUNDARY = "hostileboundary"


@dataclass
class Hostile:
    """What the server did to one kind of hostile connection."""

    opened: int = 0
    closed_by_server: int = 0
    connect_failures: int = 0
    answers: collections.Counter = field(default_factory=collections.Counter)  # status lines seen


@dataclass
class Normal:
    """The normal clients' requests: (status, seconds) and the text of the non-200 answers."""

    outcomes: list[tuple[int, float]] = field(default_factory=list)
    refusals: collections.Counter = field(default_factory=collections.Counter)


def slow_header_prelude() -> tuple[bytes, bytes]:
    return f"POST /v1/stylize HTTP/1.1\r\nHost: {HOST}\r\n".encode(), b"X-Slow: " + b"a" * 4096


def slow_body_prelude() -> tuple[bytes, bytes]:
    head = (
        f"POST /v1/stylize HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
        f"\r\nContent-Length: {SLOW_BODY_BYTES}\r\n\r\n"
    )
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'
    return (head + part).encode(), b"\x00" * SLOW_BODY_BYTES


async def hostile(port: int, prelude: bytes, drip: bytes | None, stop: asyncio.Event, tally: Hostile) -> None:
    """One hostile connection, reopened whenever the server closes it: ``prelude`` at once, then one byte of
    ``drip`` a second (nothing when ``None``)."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            tally.connect_failures += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)
            continue
        tally.opened += 1
        sent = 0
        try:
            writer.write(prelude)
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except asyncio.TimeoutError:
                    if drip is not None:
                        writer.write(drip[sent % len(drip) : sent % len(drip) + 1])
                        sent += 1
                    continue
                if data.startswith(b"HTTP/"):
                    tally.answers[data.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
                if not data:
                    tally.closed_by_server += 1
                    break
        except OSError:
            tally.closed_by_server += 1
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_PAUSE_S)


async def normal_client(url: str, photo: bytes, stop_at: float, tally: Normal) -> None:
    """Post ``photo`` in a loop until ``stop_at``; a 503 with ``Retry-After`` waits as told."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(90.0)) as http:
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            try:
                response = await http.post("/v1/stylize", files={"image": ("photo.jpg", photo, "image/jpeg")})
            except httpx.HTTPError as error:
                tally.outcomes.append((0, time.monotonic() - sent))
                tally.refusals[f"{type(error).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            tally.outcomes.append((response.status_code, time.monotonic() - sent))
            if response.status_code == 200:
                continue
            retry = response.headers.get("retry-after")
            tally.refusals[f"{response.status_code} retry-after={retry} {response.text[:70]!r}"] += 1
            await asyncio.sleep(min(float(retry) if retry and retry.isdigit() else 1.0, 5.0))


def probe_health(url: str, stop: threading.Event, interval_s: float, seconds: list[float], failures: list[str]) -> None:
    """``GET /healthz`` on a fresh connection every ``interval_s`` (as a load balancer probes), 5 s timeout."""
    while not stop.is_set():
        start = time.monotonic()
        try:
            response = httpx.get(f"{url}/healthz", timeout=5.0)
            if response.status_code == 200:
                seconds.append(time.monotonic() - start)
            else:
                failures.append(f"{response.status_code} {response.text[:40]!r}")
        except httpx.HTTPError as error:
            failures.append(type(error).__name__)
        stop.wait(interval_s)


def sample_rss(pid: int, stop: threading.Event, samples: list[int]) -> None:
    """``VmRSS`` (kB) of ``pid`` every 0.5 s."""
    while not stop.wait(0.5):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]))
        except (OSError, ValueError):
            return


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nst_fast.serve",
            "--model",
            str(args.model),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *shlex.split(args.server_args),
        ],
        cwd=args.server_root,
        env={**os.environ, "PYTHONPATH": str(args.server_root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve_hostile: the server exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("serve_hostile: the server was not ready after 120 s")


async def attack(
    args: argparse.Namespace, port: int, url: str, photo: bytes
) -> tuple[dict[str, Hostile], Normal, asyncio.Event, list[asyncio.Task]]:
    """The hostile connections for the whole run, the normal clients for ``--duration`` after ``--settle``."""
    stop = asyncio.Event()
    kinds = {
        "idle": (args.idle, (b"", None)),
        "slow_headers": (args.slow_headers, slow_header_prelude()),
        "slow_bodies": (args.slow_bodies, slow_body_prelude()),
    }
    tallies = {kind: Hostile() for kind in kinds}
    tasks = [
        asyncio.create_task(hostile(port, *prelude, stop, tallies[kind]))
        for kind, (count, prelude) in kinds.items()
        for _ in range(count)
    ]
    await asyncio.sleep(args.settle)
    normal = Normal()
    stop_at = time.monotonic() + args.duration
    await asyncio.gather(*(normal_client(url, photo, stop_at, normal) for _ in range(args.clients)))
    return tallies, normal, stop, tasks


def summarize(normal: Normal, health: list[float], failures: list[str], rss: list[int]) -> dict[str, Any]:
    images = [seconds for status, seconds in normal.outcomes if status == 200]
    ms = lambda value: None if value is None else round(value * 1000.0, 1)  # noqa: E731
    requests = len(normal.outcomes)
    return {
        "requests": requests,
        "images": len(images),
        "success_rate": round(len(images) / requests, 3) if requests else None,
        "p50_ms": ms(percentile(images, 50)),
        "p99_ms": ms(percentile(images, 99)),
        "refusals": dict(normal.refusals.most_common(6)),
        "healthz_probes": len(health) + len(failures),
        "healthz_failures": len(failures),
        "healthz_failure_kinds": dict(collections.Counter(failures).most_common(4)),
        "healthz_worst_ms": ms(max(health, default=None)),
        "healthz_p99_ms": ms(percentile(health, 99)),
        "server_rss_max_mb": round(max(rss) / 1024, 1) if rss else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    process, url = start_server(args)
    photo = load_photos(args.photos, args.size)[0]
    health, failures, rss = [], [], []
    stop = threading.Event()
    threads = [
        threading.Thread(target=probe_health, args=(url, stop, args.probe_interval, health, failures)),
        threading.Thread(target=sample_rss, args=(process.pid, stop, rss)),
    ]

    async def scenario() -> tuple[dict[str, Hostile], Normal, float, int | None]:
        for thread in threads:
            thread.start()
        tallies, normal, stop_hostile, tasks = await attack(args, int(url.rsplit(":", 1)[1]), url, photo)
        stop.set()
        peak = peak_rss_kb(process.pid)
        at_sigterm = {
            kind: Hostile(t.opened, t.closed_by_server, t.connect_failures, t.answers.copy())
            for kind, t in tallies.items()
        }  # what follows is the server going away
        process.send_signal(signal.SIGTERM)  # the hostile connections are still open
        sent = time.monotonic()
        while process.poll() is None and time.monotonic() - sent < args.exit_wait:
            await asyncio.sleep(0.05)
        exit_s = time.monotonic() - sent
        stop_hostile.set()
        await asyncio.gather(*tasks)
        return at_sigterm, normal, exit_s, peak

    tallies, normal, exit_s, peak = asyncio.run(scenario())
    for thread in threads:
        thread.join()
    if process.poll() is None:
        process.kill()
    status = process.wait()
    row = summarize(normal, health, failures, rss)
    row.update(
        server_peak_rss_mb=None if peak is None else round(peak / 1024, 1),
        sigterm_exit_s=round(exit_s, 2),
        server_exit_status=status,
        hostile={kind: vars(t) | {"answers": dict(t.answers)} for kind, t in tallies.items()},
    )
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the ONNX export to serve")
    parser.add_argument("--server-root", type=Path, default=REPO_ROOT, help="checkout whose nst_fast runs the server")
    parser.add_argument("--server-args", default="", help="extra nst-serve options (default: none, its defaults)")
    parser.add_argument("--idle", type=int, default=500, help="idle connections (default 500)")
    parser.add_argument("--slow-headers", type=int, default=20, help="slow-header clients (default 20)")
    parser.add_argument("--slow-bodies", type=int, default=20, help="slow-body clients (default 20)")
    parser.add_argument("--clients", type=int, default=4, help="normal clients (default 4)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of normal load (default 30)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between the attack and the normal load")
    parser.add_argument("--size", type=int, default=256, help="the normal clients' photo side (default 256)")
    parser.add_argument("--photos", type=Path, default=None, help="folder with a photo to send (default: a gradient)")
    parser.add_argument("--probe-interval", type=float, default=0.2, help="seconds between /healthz probes")
    parser.add_argument("--exit-wait", type=float, default=120.0, help="seconds to wait for the exit after SIGTERM")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the JSON record goes")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if max(args.idle, args.slow_headers, args.slow_bodies, args.clients) > MAX_HOSTILE:
        raise SystemExit(f"serve_hostile: at most {MAX_HOSTILE} connections of each kind")
    if not 0 < args.duration <= MAX_DURATION_S:
        raise SystemExit(f"serve_hostile: --duration must be in (0, {MAX_DURATION_S:g}] s")
    row = run(args)
    record = {
        "machine": machine() | {"load_average": os.getloadavg()},
        "command": " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench/serve_hostile.py", *argv])),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "result": row,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"serve_hostile-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    record["record_path"] = str(path)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
