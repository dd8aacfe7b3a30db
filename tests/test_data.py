"""Content data: awkward formats are read, bad files are skipped and reported, empty folders are errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from image_factory import gradient, write_bad_images, write_good_images
from PIL import Image

from nst_fast.data import (
    ContentDataModule,
    ContentImages,
    collate,
    crop_generator,
    load_style_image,
    resize_shorter_side,
)
from nst_fast.errors import ConfigError, MissingFileError
from nst_fast.images import ImageReadError, list_images, open_image, open_rgb


def test_awkward_formats_become_rgb(tmp_path: Path) -> None:
    files = write_good_images(tmp_path)
    for path in files.values():
        image = open_rgb(path)
        assert image.mode == "RGB", path
    rotated = open_rgb(files["rotated"])
    assert rotated.size == (60, 80), "EXIF orientation 6 turns the 80x60 photo upright"
    rgba, alpha = open_image(files["rgba"])
    assert alpha is not None and alpha.size == rgba.size
    sixteen = np.asarray(open_rgb(files["sixteen"]))
    expected = gradient(80, 60)[..., 0]
    assert np.abs(sixteen[..., 0].astype(int) - expected).max() <= 1, "16-bit values keep their full range"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated", "not a readable image"),
        ("empty", "empty file"),
        ("text", "not a readable image"),
        ("bomb", "over the limit"),
    ],
)
def test_bad_files_raise_with_path_and_reason(tmp_path: Path, kind: str, reason: str) -> None:
    path = write_bad_images(tmp_path)[kind]
    with pytest.raises(ImageReadError, match=reason) as error:
        open_rgb(path, max_pixels=100_000_000)
    assert str(path) in str(error.value)


def test_dataset_skips_bad_files_and_reports_them(tmp_path: Path) -> None:
    good = write_good_images(tmp_path / "photos")
    bad = write_bad_images(tmp_path / "photos" / "broken")
    files = list_images(tmp_path / "photos")
    assert len(files) == len(good) + len(bad)
    dataset = ContentImages(files, image_size=32, max_pixels=100_000_000)
    items = [dataset[i] for i in range(len(dataset))]
    assert all(item["image"].shape == (3, 32, 32) for item in items)
    assert all(0 <= item["image"].min() and item["image"].max() <= 1 for item in items)
    reported = {report.split(":")[0] for item in items for report in item["skipped"]}
    assert reported == {str(path) for path in bad.values()}
    batch = collate(items[:3])
    assert batch["image"].shape == (3, 3, 32, 32) and isinstance(batch["skipped"], list)


def test_small_images_are_upscaled_to_the_crop(tmp_path: Path) -> None:
    files = write_good_images(tmp_path)
    crop = ContentImages([files["tiny"]], image_size=48)[0]["image"]
    assert crop.shape == (3, 48, 48)


def test_samples_per_epoch_repeats_files(tmp_path: Path) -> None:
    files = write_good_images(tmp_path)
    assert len(ContentImages([files["rgb"]], 16, samples_per_epoch=10)) == 10


def test_datamodule_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        ContentDataModule(tmp_path / "missing").check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        ContentDataModule(tmp_path / "empty").check()
    write_bad_images(tmp_path / "broken")
    with pytest.raises(ConfigError, match="none of its 4 image files is readable"):
        ContentDataModule(tmp_path / "broken", max_pixels=100_000_000).check()


def test_datamodule_loader_and_preview(tmp_path: Path) -> None:
    write_good_images(tmp_path)
    datamodule = ContentDataModule(tmp_path, image_size=24, batch_size=3, num_workers=0)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (3, 3, 24, 24)
    preview = datamodule.preview_images(2, 24)
    torch.testing.assert_close(preview, datamodule.preview_images(2, 24))  # a fixed set


def test_style_image_resized_by_shorter_side(tmp_path: Path) -> None:
    files = write_good_images(tmp_path)
    assert load_style_image(files["rgb"], 30).shape == (1, 3, 30, 40)
    with pytest.raises(MissingFileError, match="style.image="):
        load_style_image(tmp_path / "nope.jpg", 30)
    with pytest.raises(ImageReadError, match="style.image"):
        load_style_image(write_bad_images(tmp_path / "bad")["text"], 30)


def first_batches(root: Path, rank: int, num_workers: int = 0, seed: int = 0) -> list[dict]:
    """All batches of one epoch as rank ``rank`` of two draws them, after seeding as training does."""
    from types import SimpleNamespace

    torch.manual_seed(seed)
    datamodule = ContentDataModule(
        root, image_size=32, batch_size=2, num_workers=num_workers, samples_per_epoch=8, pin_memory=False
    )
    datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
    datamodule.setup()
    return list(datamodule.train_dataloader())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_rank_draws_its_own_samples_and_crops(tmp_path: Path, num_workers: int) -> None:
    # One wide photo: every sample is that file, so only the random crop offsets and flips tell batches apart.
    Image.fromarray(gradient(400, 80)).save(tmp_path / "wide.png")
    rank0, rank1 = first_batches(tmp_path, 0, num_workers), first_batches(tmp_path, 1, num_workers)
    indices = [{crop.split(":")[0] for batch in rank for crop in batch["crops"]} for rank in (rank0, rank1)]
    assert not indices[0] & indices[1] and len(indices[0] | indices[1]) == 8, "each rank its own half of the epoch"
    assert all(not torch.equal(a["image"], b["image"]) for a, b in zip(rank0, rank1, strict=False)), (
        "two ranks drew the same crops"
    )
    for rank, batches in ((0, rank0), (1, rank1)):
        again = first_batches(tmp_path, rank, num_workers)
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batches, again, strict=False)), (
            "reproducible from the seed"
        )
    assert not torch.equal(rank0[0]["image"], first_batches(tmp_path, 0, num_workers, seed=1)[0]["image"])


def test_loader_workers_start_from_a_fork_server_under_ddp_only(tmp_path: Path) -> None:
    """A DDP rank never forks its loader workers itself (a fork while a gloo thread is in Python can hang the child):
    with two ranks they come from a fork server; a single process keeps PyTorch's default (fork)."""
    from types import SimpleNamespace

    Image.fromarray(gradient(64, 64)).save(tmp_path / "photo.png")
    datamodule = ContentDataModule(tmp_path, image_size=32, batch_size=1, num_workers=2, pin_memory=False)
    datamodule.setup()
    assert datamodule.worker_context() is None and datamodule.train_dataloader().multiprocessing_context is None
    datamodule.trainer = SimpleNamespace(world_size=2, global_rank=1)
    loader = datamodule.train_dataloader()
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    assert next(iter(loader))["image"].shape == (1, 3, 32, 32)  # the set and its crops reach the workers
    datamodule.num_workers = 0
    assert datamodule.worker_context() is None


def test_a_sample_crop_depends_on_seed_epoch_and_index_only(tmp_path: Path) -> None:
    Image.fromarray(gradient(400, 80)).save(tmp_path / "wide.png")
    single = [batch["image"] for batch in first_batches(tmp_path, 0, num_workers=0)]
    parallel = [batch["image"] for batch in first_batches(tmp_path, 0, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(single, parallel, strict=False)), (
        "the number of loader workers changes nothing"
    )
    dataset = ContentImages([tmp_path / "wide.png"], image_size=32, seed=3)
    crops = {key: dataset[key]["image"] for key in [(0, 1), (0, 2), (1, 1)]}
    assert torch.equal(crops[(0, 1)], dataset[(0, 1)]["image"]) and torch.equal(dataset[1]["image"], crops[(0, 1)])
    assert not torch.equal(crops[(0, 1)], crops[(0, 2)]) and not torch.equal(crops[(0, 1)], crops[(1, 1)])
    # Independently: the crop is the square at the offset crop_generator's draws give (the photo is 160x32 at 32 px).
    generator = crop_generator(3, 1, 1)
    top, left = (
        torch.randint(0, 1, (), generator=generator).item(),
        torch.randint(0, 129, (), generator=generator).item(),
    )
    expected = resize_shorter_side(Image.fromarray(gradient(400, 80)), 32).crop((left, top, left + 32, top + 32))
    if torch.rand((), generator=generator) < 0.5:
        expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    torch.testing.assert_close(crops[(1, 1)], torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1) / 255)
