"""train.py data=stream from a real S3-compatible server on 127.0.0.1: two CPU DDP ranks with two loader workers
each stream disjoint shares; a run resumed mid-epoch continues with exactly the crops the uninterrupted run drew;
no credential reaches a log, a config or a checkpoint."""

import subprocess
from pathlib import Path

import pytest
from helpers import logged_batches, run_train
from image_factory import write_photos
from s3_server import SECRET_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def streamed_set(s3_server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """16 photos converted into s3://photos/coco on the loopback server, in chunks of a few photos."""
    from nst_fast.stream.convert import convert

    root = tmp_path_factory.mktemp("coco")
    write_photos(root / "photos", 16)
    with pytest.MonkeyPatch.context() as patch:
        s3_server.apply(patch)
        convert(root / "photos", s3_server.url("coco"), size=48, workers=2, chunk_bytes="12KB")
    return s3_server.url("coco")


def train_from_s3(url: str, run_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """The smoke run on two CPU DDP ranks with two loader workers each, every batch's crops logged; each run has its
    own chunk cache (a resumed run may cache elsewhere)."""
    return run_train(
        "experiment=smoke_stream",
        "data=stream",
        f"data.url={url}",
        "data.num_workers=2",
        f"data.cache_dir={run_dir.parent / ('chunks-' + run_dir.name)}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "hydra.verbose=nst_fast.data",
        f"hydra.run.dir={run_dir}",
        *overrides,
        cwd=run_dir.parent,
        timeout=240,
        check=check,
    )


def test_ddp_from_s3_streams_disjoint_shares_and_resumes_mid_epoch(s3, streamed_set: str, tmp_path: Path) -> None:
    # 16 photos, 2 ranks, batch 2: epochs of 4 steps; checkpoints at steps 3 and 6.
    train_from_s3(streamed_set, tmp_path / "full")
    full = logged_batches(tmp_path / "full")
    assert sorted(full) == [(rank, step) for rank in (0, 1) for step in range(1, 7)]
    epoch = [{crop.split(":")[1].split("@")[0] for step in range(1, 5) for crop in full[rank, step]} for rank in (0, 1)]
    assert len(epoch[0]) == len(epoch[1]) == 8 and not epoch[0] & epoch[1], "each rank streams its own half"
    assert [full[rank, 5] for rank in (0, 1)] != [full[rank, 1] for rank in (0, 1)], "the next epoch is reshuffled"

    checkpoint = tmp_path / "full" / "checkpoints" / "step_000003.ckpt"
    train_from_s3(streamed_set, tmp_path / "resumed", f"ckpt_path={checkpoint}")
    resumed = logged_batches(tmp_path / "resumed")
    assert sorted(resumed) == [(rank, step) for rank in (0, 1) for step in range(4, 7)]
    assert all(resumed[key] == full[key] for key in resumed), "the rest of the epoch, then the next, as uninterrupted"

    written = [path for run in ("full", "resumed") for path in (tmp_path / run).rglob("*") if path.is_file()]
    assert written and not [path for path in written if SECRET_KEY.encode() in path.read_bytes()]


def test_a_set_that_is_not_there_is_a_usage_error(s3, streamed_set: str, tmp_path: Path) -> None:
    result = train_from_s3(streamed_set + "-missing", tmp_path / "run", "trainer.devices=1", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"data.url='{streamed_set}-missing' holds no converted photo set" in result.stderr
