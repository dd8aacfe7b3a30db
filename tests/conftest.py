"""Shared fixtures: paths to the optional ../shared folder and small helpers; cores shared out between the
pytest-xdist workers."""

import gc
import os
from pathlib import Path

import pytest


def _share_cores_between_workers() -> None:
    """Under pytest-xdist (``pytest -n N``), each worker and the subprocesses it starts (training runs, servers) get
    ``cores / N`` threads, so that N workers on N cores do not oversubscribe them (OpenMP threads that wait for a
    busy core spin). Runs when this module is imported, before torch reads ``OMP_NUM_THREADS``."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", threads)  # a value the user set stays
        os.environ.setdefault("MKL_NUM_THREADS", threads)


_share_cores_between_workers()

# A test process forks DataLoader workers after hundreds of other tests, some of which leave native objects in
# reference cycles (classes defined in a test, an example module's globals). A forked child that collects an ONNX
# Runtime session's cycle waits forever in its destructor on the parent's thread pool (CI, 2026-12-07): collect in
# the parent first. (The package itself keeps its sessions out of cycles: tests/test_tiling.py.)
os.register_at_fork(before=gc.collect)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
HED_WEIGHTS = SHARED / "weights" / "vgg16_features_hed.pth"


@pytest.fixture
def hed_weights() -> Path:
    """The offline VGG-16 stand-in from ../shared; tests using it skip where it is absent."""
    if not HED_WEIGHTS.is_file():
        pytest.skip(f"{HED_WEIGHTS} not present (../shared is optional)")
    return HED_WEIGHTS


STYLE = {"name": "wave", "image": "/data/styles/wave.jpg", "size": 256}
MULTI_STYLES = [{"name": n, "image": f"/data/styles/{n}.jpg", "size": 256} for n in ("starry", "wave", "udnie")]


def _exported(root: Path, network, styles, identity: bool = False) -> dict:
    """``network``'s checkpoint and its ONNX (float and uint8) and TorchScript exports, by kind."""
    import torch

    from nst_fast.checkpoint import checkpoint_metadata
    from nst_fast.export import export_checkpoint

    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)  # a worker that found another's export failed tries again
    torch.save(
        {
            "state_dict": {f"transformer.{k}": v for k, v in network.state_dict().items()},
            "global_step": 3,
            "nst_fast": checkpoint_metadata(network, styles, identity=identity),
        },
        ckpt,
    )
    result = export_checkpoint(ckpt, uint8=True, torchscript=True, log=lambda _: None)
    return {
        "ckpt": ckpt,
        "onnx": result.file("onnx"),
        "uint8": result.file("onnx_uint8"),
        "torchscript": result.file("torchscript"),
    }


def _exported_once(tmp_path_factory, name: str, network, styles, identity: bool = False) -> dict:
    """``_exported``, written once per test run: under pytest-xdist the first worker to ask exports into the run's
    shared temporary folder (holding a file lock meanwhile) and the others read the paths it wrote. ``network`` must
    be the same in every worker (the seeded ``small_network``)."""
    import json

    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return {"network": network, **_exported(tmp_path_factory.mktemp(name), network, styles, identity)}
    shared = tmp_path_factory.getbasetemp().parent / f"exported-{name}"
    index = shared / "files.json"
    with FileLock(
        f"{shared}.lock", timeout=480
    ):  # an export that hangs fails the waiting workers too (before pytest-timeout)
        if not index.is_file():
            files = _exported(shared, network, styles, identity)
            index.write_text(json.dumps({kind: str(path) for kind, path in files.items()}))
        files = {kind: Path(path) for kind, path in json.loads(index.read_text()).items()}
    return {"network": network, **files}


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict:
    """A small trained-like network, its checkpoint, and its ONNX (float and uint8) and TorchScript exports
    (shared by the stylize, tiling, video and benchmark tests)."""
    from helpers import small_network

    return _exported_once(tmp_path_factory, "model", small_network(0), STYLE)


@pytest.fixture(scope="session")
def multi_models(tmp_path_factory) -> dict:
    """Three styles and the identity: checkpoint, ONNX (float and uint8) and TorchScript."""
    from helpers import small_network

    return _exported_once(tmp_path_factory, "multi", small_network(3, num_conditions=4), MULTI_STYLES, identity=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One S3-compatible server on 127.0.0.1 for the session (``tests/s3_server.py``); skips without moto."""
    from s3_server import loopback_s3

    with loopback_s3(tmp_path_factory.mktemp("aws")) as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The loopback S3 server, with this test's AWS settings (environment) pointing at it."""
    s3_server.apply(monkeypatch)
    return s3_server
