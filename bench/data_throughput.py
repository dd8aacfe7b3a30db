"""Training photos: a local folder against a streamed set (local, and from a loopback S3 server), and conversion.

    python bench/data_throughput.py                          # 400 synthetic 640x480 photos (COCO-like)
    python bench/data_throughput.py --photos /data/train2014 --count 2000 --workers 0,1,2,4
    python bench/data_throughput.py --train-steps 10         # also images/s of whole training steps

Measures (medians of ``--repeats`` interleaved rounds; the first batch of each loader, i.e. worker start-up, not
timed): ``nst-convert-photos`` photos/s into a local folder and into S3 (moto's server on 127.0.0.1, started
here); the images/s each training loader delivers (``data=folder``, ``data=stream`` from the local set, from S3
with an empty chunk cache) for each ``--workers``; with ``--train-steps``, the images/s of whole training steps
(``train.py``, 256 px crops, batch 4, random VGG weights) from the folder and from S3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from PIL import Image

SECRET = "bench-secret"


def synthetic_photos(folder: Path, count: int, width: int = 640, height: int = 480) -> list[Path]:
    """``count`` COCO-sized JPEGs (quality 90) with smooth content and sensor-like noise (~100 KB each)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for index in range(count):
        phase = rng.uniform(0, 6, 3)
        base = np.stack([128 + 90 * np.sin(xx / (23 + 7 * c) + yy / (31 + 5 * c) + phase[c]) for c in range(3)], -1)
        noise = rng.normal(0, 12, base.shape)
        path = folder / f"{index // 100:03d}" / f"photo{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def start_s3_server(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """moto's S3 server on a free port of 127.0.0.1, in its own process, and the environment that points at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (home / "aws").mkdir(parents=True, exist_ok=True)
    for name in ("config", "credentials"):
        (home / "aws" / name).write_text("")
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws" / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
    }
    import boto3
    from botocore.exceptions import EndpointConnectionError

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="bench",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    for _ in range(100):
        try:
            client.create_bucket(Bucket="bench")
            return server, env
        except EndpointConnectionError:  # the server is still starting
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("moto's S3 server did not start")


def convert_rate(label: str, source: Path, dest: str, workers: int) -> dict[str, Any]:
    """Convert ``source`` into ``dest`` with ``workers`` processes: photos, seconds, photos/s."""
    from nst_fast.stream.convert import convert

    metadata = convert(source, dest, workers=workers)
    return {
        "into": label,
        "photos": metadata["photos"],
        "seconds": metadata["seconds"],
        "photos_per_s": metadata["photos"] / metadata["seconds"],
    }


def loader_factory(kind: str, source: str, workers: int, size: int, batch: int, cache: Path) -> Callable[[], Any]:
    """A function making a fresh training loader of ``kind`` (``folder`` or ``stream``) with ``workers`` processes
    (a stream's chunk cache emptied first: every chunk is downloaded, as in an epoch over a large set)."""
    from nst_fast.data import ContentDataModule
    from nst_fast.stream.data import StreamDataModule

    def make() -> Any:
        if kind == "folder":
            module = ContentDataModule(source, image_size=size, batch_size=batch, num_workers=workers, pin_memory=False)
        else:
            shutil.rmtree(cache, ignore_errors=True)
            module = StreamDataModule(
                source, cache_dir=str(cache), image_size=size, batch_size=batch, num_workers=workers, pin_memory=False
            )
        module.setup("fit")
        return module.train_dataloader()

    return make


def loader_seconds(make: Callable[[], Any], batches: int) -> float:
    """Seconds for ``batches`` batches after the first one (worker start-up and first chunks excluded)."""
    iterator = iter(make())
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    return elapsed


def training_rate(data: list[str], steps: int, workers: int, run_dir: Path) -> float:
    """Median ``perf/images_per_s`` of a short ``train.py`` run (256 px, batch 4, random VGG), the first interval
    left out."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [
        sys.executable,
        str(common.REPO_ROOT / "train.py"),
        "loss.weights=none",
        "data.image_size=256",
        "data.batch_size=4",
        f"data.num_workers={workers}",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=2",
        "callbacks.images.every_n_steps=100000",
        "trainer.accelerator=cpu",
        "callbacks.checkpoint.every_n_train_steps=100000",
        f"hydra.run.dir={run_dir}",
        *data,
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=run_dir.parent, timeout=3600)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    values = [event.value for event in events.Scalars("perf/images_per_s")][1:]
    return statistics.median(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: synthetic 640x480 ones)")
    parser.add_argument("--count", type=int, default=400, help="synthetic photos to make, or photos to use")
    parser.add_argument("--size", type=int, default=256, help="crop size and stored size (256)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per loader measurement")
    parser.add_argument("--workers", default="0,1,2", help="loader worker counts to compare")
    parser.add_argument("--convert-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=0, help="also time whole training steps (0: no)")
    parser.add_argument("--out-dir", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    info = common.machine_info(torch.device("cpu"))
    print(f"# {info['cpu_model']} | {info['cpu_count']} CPUs | torch {info['torch_version']}")
    work = Path(tempfile.mkdtemp(prefix="nst-data-bench-"))
    server, env = start_s3_server(work)
    saved = dict(os.environ)
    os.environ.update(env)  # for this process, its loader workers and the training runs it starts
    try:
        return _run(args, info, work)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def _loader_rates(args: argparse.Namespace, photos: Path, work: Path) -> dict[str, float]:
    """Images/s of each source x worker count, timed in interleaved rounds (ABC CBA ...), medians."""
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    sources = {
        "folder": ("folder", str(photos)),
        "stream-local": ("stream", str(work / "set")),
        "stream-s3": ("stream", "s3://bench/set"),
    }
    makers = {
        f"{name} w{count}": loader_factory(kind, url, count, args.size, args.batch, work / f"cache-{name}-{count}")
        for name, (kind, url) in sources.items()
        for count in workers
    }
    seconds: dict[str, list[float]] = {name: [] for name in makers}
    for round_ in range(args.repeats):
        for name, make in list(makers.items())[:: 1 if round_ % 2 == 0 else -1]:
            seconds[name].append(loader_seconds(make, args.batches))
    return {name: args.batches * args.batch / statistics.median(values) for name, values in seconds.items()}


def _run(args: argparse.Namespace, info: dict[str, Any], work: Path) -> dict[str, Any]:
    from nst_fast.images import list_images

    if args.photos:
        photos = work / "photos"
        for path in list_images(args.photos)[: args.count]:
            target = photos / path.relative_to(args.photos)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    else:
        photos = work / "photos"
        synthetic_photos(photos, args.count)
    megabytes = sum(path.stat().st_size for path in list_images(photos)) / 1e6
    conversions = [
        convert_rate("local folder", photos, str(work / "set"), args.convert_workers),
        convert_rate("s3 (loopback)", photos, "s3://bench/set", args.convert_workers),
    ]
    converted = sum(path.stat().st_size for path in (work / "set").iterdir()) / 1e6
    print(f"\n{args.count} photos, {megabytes:.1f} MB; converted at {args.size} px: {converted:.1f} MB")
    print(
        common.table(
            [[c["into"], c["photos"], c["seconds"], c["photos_per_s"]] for c in conversions],
            ["into", "photos", "seconds", "photos/s"],
        )
    )
    loaders = _loader_rates(args, photos, work)
    print()
    print(common.table([[name, rate] for name, rate in loaders.items()], ["loader", "images/s"]))
    record: dict[str, Any] = {
        "machine": info,
        "config": {k: str(v) for k, v in vars(args).items()},
        "photos_megabytes": megabytes,
        "converted_megabytes": converted,
        "conversion": conversions,
        "loader_images_per_s": loaders,
    }
    if args.train_steps:
        rates = {}
        for name, data in (
            ("folder", ["data=folder", f"data.root={photos}"]),
            ("stream-s3", ["data=stream", "data.url=s3://bench/set", f"data.cache_dir={work / 'cache-train'}"]),
        ):
            rates[name] = training_rate(data, args.train_steps, 2, work / f"train-{name}")
        print()
        print(common.table([[name, rate] for name, rate in rates.items()], ["training step from", "images/s"]))
        record["training_images_per_s"] = rates
    path = common.write_record("data_throughput", record, args.out_dir)
    print(f"\nrecord: {path}")
    record["record_path"] = str(path)
    return record


if __name__ == "__main__":
    main()
