"""data=stream's data module: checks with actionable errors, crops from the streamed set, exact loader resume."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from image_factory import write_photos

from nst_fast.errors import ConfigError
from nst_fast.stream.convert import convert
from nst_fast.stream.data import StreamDataModule


@pytest.fixture(scope="module")
def local_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 photos (96x64) converted at 48 px into a local streamed set, in chunks of a few photos."""
    root = tmp_path_factory.mktemp("stream")
    write_photos(root / "photos", 16)
    convert(root / "photos", str(root / "set"), size=48, workers=2, chunk_bytes="12KB")
    return root / "set"


def datamodule(url: Path | str, tmp_path: Path, **settings) -> StreamDataModule:
    settings = {"image_size": 32, "batch_size": 2, "num_workers": 0, "pin_memory": False, **settings}
    module = StreamDataModule(str(url), cache_dir=str(tmp_path / "cache"), **settings)
    module.setup("fit")
    return module


def crops(batches) -> list[str]:
    return [crop for batch in batches for crop in batch["crops"]]


def lightning_epoch(loader, done: int = 0) -> list[dict]:
    """One epoch as Lightning takes it: the ``len(loader) - done`` batches left, never exhausting the iterator."""
    batches = iter(loader)
    return [next(batches) for _ in range(len(loader) - done)]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_loader_continues_its_epoch_with_the_same_crops(
    local_set: Path, tmp_path: Path, workers: int
) -> None:
    torch.manual_seed(7)
    uninterrupted = datamodule(local_set, tmp_path, num_workers=workers).train_dataloader()
    full, following = lightning_epoch(uninterrupted), lightning_epoch(uninterrupted)
    assert len(full) == 8 and all(batch["image"].shape == (2, 3, 32, 32) for batch in full)
    names = [crop.split(":")[1].split("@")[0] for crop in crops(full)]
    assert len(set(names)) == 16, "an epoch is one pass over the set"
    for taken in (3, 7):
        loader = datamodule(local_set, tmp_path, num_workers=workers).train_dataloader()
        batches = iter(loader)
        seen = [next(batches) for _ in range(taken)]
        state = loader.state_dict()
        resumed = datamodule(local_set, tmp_path, num_workers=workers).train_dataloader()
        resumed.load_state_dict(state)
        rest = lightning_epoch(resumed, done=taken)
        assert crops(seen + rest) == crops(full)
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(seen + rest, full, strict=False))
        assert crops(lightning_epoch(resumed)) == crops(following), "then the next epoch, as uninterrupted"


@pytest.mark.slow
def test_resume_refuses_another_set_seed_batch_size_or_loader(local_set: Path, tmp_path: Path) -> None:
    torch.manual_seed(7)
    loader = datamodule(local_set, tmp_path).train_dataloader()
    batches = iter(loader)
    seen = [next(batches) for _ in range(2)]
    state = loader.state_dict()
    with pytest.raises(ConfigError, match=r"data.batch_size=2 on 1 device\(s\); this run .* data.batch_size=4 on 1"):
        datamodule(local_set, tmp_path, batch_size=4).train_dataloader().load_state_dict(state)
    with pytest.raises(ConfigError, match="not saved by a streamed set's loader"):
        loader.load_state_dict({"epoch": 0, "batches": 2, "batch_size": 2, "world_size": 1})
    torch.manual_seed(8)
    with pytest.raises(ConfigError, match="with seed=7, .* this run streams .* with seed=8"):
        datamodule(local_set, tmp_path).train_dataloader().load_state_dict(state)
    shutil.copytree(local_set, tmp_path / "copy")
    torch.manual_seed(7)
    copy = datamodule(tmp_path / "copy", tmp_path).train_dataloader()
    with pytest.raises(ConfigError, match=r"in the set .*/set with .* this run streams .*/copy with"):
        copy.load_state_dict(state)
    assert len(seen) == 2


@pytest.mark.slow
def test_crops_differ_by_epoch_and_seed(local_set: Path, tmp_path: Path) -> None:
    torch.manual_seed(7)
    loader = datamodule(local_set, tmp_path).train_dataloader()
    first, second = crops(loader), crops(loader)
    assert sorted(c.split("@")[0] for c in first) == sorted(c.split("@")[0] for c in second)
    assert first != second, "each epoch reshuffles and draws new crops"
    torch.manual_seed(8)
    assert crops(datamodule(local_set, tmp_path).train_dataloader()) != first


@pytest.mark.slow
def test_preview_and_checks(local_set: Path, tmp_path: Path, caplog) -> None:
    module = datamodule(local_set, tmp_path, image_size=64)
    assert "stores photos at 48 px" in caplog.text and "--size 64" in caplog.text
    assert module.photos == 16
    preview = module.preview_images(3, 40)
    assert preview.shape == (3, 3, 40, 40) and 0 <= preview.min() and preview.max() <= 1
    module.check_batches(8)
    with pytest.raises(ConfigError, match=r"holds 16 photos, too few .* on each of 9 device\(s\): 18 are needed"):
        module.check_batches(9)
    module.num_workers = 2
    with pytest.raises(ConfigError, match=r"\(data.num_workers=2\) on each of 5 device\(s\): 20 are needed"):
        module.check_batches(5)


def test_missing_or_unfinished_sets_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no converted photo set .* `nst-convert-photos /path/to/photos "):
        StreamDataModule(str(tmp_path / "nothing")).check()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "nst-fast.json").write_text(json.dumps({"complete": False}))
    with pytest.raises(ConfigError, match="its conversion was interrupted; run the same nst-convert-photos"):
        StreamDataModule(str(tmp_path / "half")).check()
    with pytest.raises(ConfigError, match="data.url='gs://b/set': a streamed set lives at s3://"):
        StreamDataModule("gs://b/set")
    with pytest.raises(ConfigError, match="data.max_cache_size='lots' is not a size: write e.g. 50GB"):
        StreamDataModule(str(tmp_path), max_cache_size="lots")
    assert StreamDataModule(str(tmp_path), max_cache_size="1.5 gb").max_cache_size == "1.5 gb"
