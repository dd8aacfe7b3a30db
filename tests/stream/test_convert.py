"""nst-convert-photos: photos to a streamed set, bad files skipped and named, resume, local and S3 destinations."""

import io
import json
from pathlib import Path

import pytest
from image_factory import write_bad_images, write_good_images, write_photos
from PIL import Image

from nst_fast.errors import ConfigError
from nst_fast.stream import convert as convert_module
from nst_fast.stream.convert import PhotoEncoder, convert, main


def stored(dest: str | Path, **options) -> dict[str, Image.Image]:
    """The converted set's photos by stored name, read back with litdata."""
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(dest), **options)
    items = [dataset[index] for index in range(len(dataset))]
    return {item["name"]: Image.open(io.BytesIO(item["image"])) for item in items}


def test_encoder_scales_large_photos_down_and_names_bad_files(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (400, 300), "teal").save(tmp_path / "large.png")
    Image.new("RGB", (80, 60), "teal").save(tmp_path / "small.png")
    bad = write_bad_images(tmp_path / "bad")["text"]
    encoder = PhotoEncoder(str(tmp_path), size=100, quality=90, max_pixels=10**8)
    [large] = encoder(str(tmp_path / "large.png"))
    [small] = encoder(str(tmp_path / "small.png"))
    assert large["name"] == "large.png" and Image.open(io.BytesIO(large["image"])).size == (133, 100)
    assert Image.open(io.BytesIO(small["image"])).size == (80, 60), "small photos are never upscaled"
    assert Image.open(io.BytesIO(small["image"])).format == "JPEG"
    assert list(encoder(str(bad))) == []
    assert f"skipped unreadable photo {bad}: not a readable image" in capsys.readouterr().err


@pytest.mark.slow
def test_convert_a_folder_skipping_bad_files(tmp_path: Path, capfd) -> None:
    good = write_good_images(tmp_path / "photos")
    bad = write_bad_images(tmp_path / "photos" / "broken")
    metadata = convert(
        tmp_path / "photos", str(tmp_path / "set"), size=40, workers=2, chunk_bytes="8KB", max_pixels=10**8
    )
    assert metadata["complete"] and metadata["photos"] == len(good) and metadata["skipped"] == len(bad)
    assert json.loads((tmp_path / "set" / "nst-fast.json").read_text()) == metadata
    err = capfd.readouterr().err
    for path in bad.values():
        assert f"skipped unreadable photo {path}" in err
    photos = stored(tmp_path / "set")
    assert set(photos) == {str(path.relative_to(tmp_path / "photos")) for path in good.values()}
    assert all(min(photo.size) <= 40 and photo.mode == "RGB" for photo in photos.values())
    assert photos["rotated.jpg"].size == (40, 53), "EXIF orientation applied before scaling (60x80 upright)"


class WorkerRecorder(PhotoEncoder):
    """Names each sample after the process that started its worker and the worker's ``NST_TEST_MARK``."""

    def __call__(self, path: str):
        import os

        for sample in super().__call__(path):
            yield {**sample, "name": f"{os.getppid()}-{os.environ.get('NST_TEST_MARK')}-{sample['name']}"}


@pytest.mark.slow  # two conversions, each in its own process
def test_workers_are_not_forks_of_the_caller_and_see_its_environment_as_it_is(tmp_path: Path, monkeypatch) -> None:
    """A fork of the caller would copy the locks its other threads hold (the loopback S3 server's, an S3 client's)
    and hang a worker that needs one; a worker must still see the caller's environment as it is at each call
    (credentials, AWS_ENDPOINT_URL), and the caller's start method is left alone."""
    import multiprocessing
    import os

    write_photos(tmp_path / "photos", 4)
    monkeypatch.setattr(convert_module, "PhotoEncoder", WorkerRecorder)
    start_method = multiprocessing.get_start_method(allow_none=True)
    for mark in ("first", "second"):
        monkeypatch.setenv("NST_TEST_MARK", mark)
        assert convert(tmp_path / "photos", str(tmp_path / mark), workers=2)["photos"] == 4
        parents, marks = zip(*(name.split("-")[:2] for name in stored(tmp_path / mark)), strict=True)
        assert str(os.getpid()) not in parents, parents
        assert set(marks) == {mark}
    assert multiprocessing.get_start_method(allow_none=True) == start_method


@pytest.mark.slow  # a conversion process
def test_an_error_in_the_conversion_process_is_raised_in_the_caller(tmp_path: Path) -> None:
    write_photos(tmp_path / "photos", 1)
    encoder = PhotoEncoder(str(tmp_path / "photos"), size=40, quality=90, max_pixels=10**8)
    inputs = [str(path) for path in (tmp_path / "photos").rglob("*.jpg")]
    settings = {"chunk_bytes": "a lot", "workers": 1}  # litdata's workers fail on it
    with pytest.raises(RuntimeError, match="a lot"):
        convert_module._optimize(encoder, inputs, str(tmp_path / "set"), settings, None, append=False)


@pytest.mark.slow
def test_convert_refuses_other_files_or_a_finished_set_unless_overwrite(tmp_path: Path) -> None:
    write_photos(tmp_path / "photos", 3)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        convert(tmp_path / "photos", str(tmp_path / "busy"), workers=1)
    convert(tmp_path / "photos", str(tmp_path / "set"), workers=1)
    with pytest.raises(ConfigError, match="already holds a converted set of 3 photos; pass --overwrite"):
        convert(tmp_path / "photos", str(tmp_path / "set"), workers=1)
    write_photos(tmp_path / "photos", 5)
    assert convert(tmp_path / "photos", str(tmp_path / "set"), workers=1, overwrite=True)["photos"] == 5
    assert len(stored(tmp_path / "set")) == 5


@pytest.mark.slow
@pytest.mark.parametrize("merged", [False, True], ids=["before-index", "after-index"])
def test_an_interrupted_conversion_resumes_with_the_part_under_way(tmp_path: Path, monkeypatch, merged: bool) -> None:
    write_photos(tmp_path / "photos", 10)
    dest = tmp_path / "set"
    real_optimize, calls = convert_module._optimize, []

    def crash_in_second_part(encoder, inputs, *args, **kwargs):
        calls.append(len(inputs))
        index_before = (dest / "index.json").read_text() if (dest / "index.json").exists() else None
        real_optimize(encoder, inputs, *args, **kwargs)
        if len(calls) == 2:  # killed while the second part was written, before or after its index was merged
            if not merged:
                (dest / "index.json").write_text(index_before)
            raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "_optimize", crash_in_second_part)
    with pytest.raises(KeyboardInterrupt):
        convert(tmp_path / "photos", str(dest), workers=2, chunk_bytes="8KB", part_size=4)
    assert json.loads((dest / "nst-fast.json").read_text())["files_done"] == 4
    monkeypatch.setattr(convert_module, "_optimize", lambda *a, **k: (calls.append(len(a[1])), real_optimize(*a, **k)))
    metadata = convert(tmp_path / "photos", str(dest), workers=2, chunk_bytes="8KB", part_size=4)
    assert calls == [4, 4] + ([4, 2] if not merged else [2]), "only the part under way is converted again"
    assert metadata["photos"] == 10 and sorted(stored(dest)) == sorted(
        f"{'odd/' * (i % 2)}photo{i:03d}.jpg" for i in range(10)
    )
    (dest / "nst-fast.json").write_text(json.dumps({**metadata, "complete": False}))  # as if interrupted again
    with pytest.raises(ConfigError, match=r"other settings \{'size': 256\}: run it again with those"):
        convert(tmp_path / "photos", str(dest), size=128, workers=2, chunk_bytes="8KB", part_size=4)


@pytest.mark.slow
def test_convert_into_s3(tmp_path: Path, s3) -> None:
    write_photos(tmp_path / "photos", 6)
    assert main([str(tmp_path / "photos"), s3.url("sets/six"), "--workers", "2", "--size", "48"]) == 0
    keys = s3.keys("sets/six/")
    assert {"sets/six/index.json", "sets/six/nst-fast.json"} <= set(keys)
    assert any(key.endswith(".bin") for key in keys)
    photos = stored(s3.url("sets/six"), cache_dir=str(tmp_path / "cache"))
    assert len(photos) == 6 and all(min(photo.size) == 48 for photo in photos.values())
    assert main([str(tmp_path / "photos"), s3.url("sets/six")]) == 2, "a finished set is not converted again"


def test_cli_usage_errors(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing"), str(tmp_path / "set")]) == 2
    assert "SRC=" in capsys.readouterr().err
    write_photos(tmp_path / "photos", 1)
    assert main([str(tmp_path / "photos"), "gs://bucket/set"]) == 2
    assert "a streamed set lives at s3://bucket/prefix or in a local folder" in capsys.readouterr().err
    assert main([str(tmp_path / "photos"), "s3://KEY:SECRET@bucket/set"]) == 2
    assert "the URL holds credentials" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "photos"), str(tmp_path / "set"), "--quality", "0"])
