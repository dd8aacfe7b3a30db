"""nst-stylize on images, folders and videos, checked against the eager network run on known pixels."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
import torch
from image_factory import make_video, pattern
from onnx import TensorProto, helper
from PIL import Image

from nst_fast.images import preserve_color
from nst_fast.models import TransformerNet
from nst_fast.stylize import StylizeError, choose_providers, main


def expected(network: TransformerNet, rgb: np.ndarray) -> np.ndarray:
    """The eager network on a uint8 HWC RGB array, as uint8."""
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = network(x)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def max_level_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def run(args: list, capsys) -> tuple[int, str]:
    status = main([str(a) for a in args] + ["--quiet"])
    return status, capsys.readouterr().err


# --- Images ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["onnx", "uint8", "torchscript", "ckpt"])
def test_single_image_matches_eager(models, tmp_path, capsys, kind) -> None:
    rgb = pattern(37, 51)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    status, err = run(["--model", models[kind], tmp_path / "in.png", "-o", tmp_path / "out" / "styled.png"], capsys)
    assert status == 0, err
    out = np.asarray(Image.open(tmp_path / "out" / "styled.png"))
    assert out.shape == (37, 51, 3)
    assert max_level_diff(out, expected(models["network"], rgb)) <= 1


def test_rgba_keeps_alpha(models, tmp_path, capsys) -> None:
    rgb = pattern(30, 41, 1)
    alpha = np.tile(np.linspace(0, 255, 41).astype(np.uint8), (30, 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "in.png")
    status, err = run(["--model", models["onnx"], tmp_path / "in.png", "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGBA" and out.size == (41, 30)
    out = np.asarray(out)
    np.testing.assert_array_equal(out[..., 3], alpha)
    assert max_level_diff(out[..., :3], expected(models["network"], rgb)) <= 1


def test_grayscale_and_16_bit(models, tmp_path, capsys) -> None:
    gray = pattern(29, 33, 2)[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    deep = (np.arange(29 * 33).reshape(29, 33) * 60).astype(np.uint16)  # spans 0..57k of 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    status, err = run(
        ["--model", models["onnx"], tmp_path / "gray.png", tmp_path / "deep.png", "-o", tmp_path / "out"], capsys
    )
    assert status == 0, err
    network = models["network"]
    out = np.asarray(Image.open(tmp_path / "out" / "gray.png"))
    assert out.shape == (29, 33, 3)
    assert max_level_diff(out, expected(network, np.repeat(gray[..., None], 3, -1))) <= 1
    deep8 = np.round(deep / 65535.0 * 255.0).astype(np.uint8)
    out = np.asarray(Image.open(tmp_path / "out" / "deep.png"))
    assert max_level_diff(out, expected(network, np.repeat(deep8[..., None], 3, -1))) <= 1


def test_exif_orientation_is_applied(models, tmp_path, capsys) -> None:
    stored = pattern(24, 40, 3)  # as stored: 40 wide, 24 high; orientation 6 = display rotated 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    status, err = run(["--model", models["onnx"], tmp_path / "phone.png", "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    out_image = Image.open(tmp_path / "out.png")
    assert out_image.size == (24, 40)
    assert out_image.getexif().get(0x0112) in (None, 1)  # pixels are upright: viewers must not rotate again
    displayed = np.rot90(stored, k=-1)
    assert max_level_diff(np.asarray(out_image), expected(models["network"], np.ascontiguousarray(displayed))) <= 1


def test_palette_and_cmyk(models, tmp_path, capsys) -> None:
    Image.fromarray(pattern(20, 26, 4)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    Image.fromarray(pattern(21, 27, 5)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    status, err = run(
        ["--model", models["onnx"], tmp_path / "palette.png", tmp_path / "cmyk.jpg", "-o", tmp_path / "out"], capsys
    )
    assert status == 0, err
    assert Image.open(tmp_path / "out" / "palette.png").size == (26, 20)
    cmyk_out = Image.open(tmp_path / "out" / "cmyk.jpg")
    assert cmyk_out.mode == "RGB" and cmyk_out.size == (27, 21)


def test_max_size_downscales(models, tmp_path, capsys) -> None:
    Image.fromarray(pattern(100, 200, 6)).save(tmp_path / "big.png")
    status, err = run(
        ["--model", models["onnx"], tmp_path / "big.png", "-o", tmp_path / "small.png", "--max-size", 50], capsys
    )
    assert status == 0, err
    assert Image.open(tmp_path / "small.png").size == (50, 25)


def test_an_image_too_thin_once_downscaled_says_it_was_downscaled() -> None:
    from nst_fast.stylize.core import prepare_image

    thin = Image.fromarray(pattern(4000, 6, 2))  # 6 wide: fine as it is, 1 wide at --max-size 1000
    with pytest.raises(
        StylizeError,
        match=r"^thin.png: 6x4000 downscaled to 2x1000 \(longest side at most 1000\) is "
        r"too small: the network needs at least 5x5; crop it",
    ):
        prepare_image(thin, None, 1000, "thin.png")
    assert prepare_image(thin, None, None, "thin.png")[0].shape == (4000, 6, 3)
    with pytest.raises(StylizeError, match=r"^tiny.png: 4x4 is too small \(the network needs at least 5x5\)$"):
        prepare_image(Image.fromarray(pattern(4, 4, 2)), None, 1000, "tiny.png")


def _ycbcr(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(int)


def test_preserve_color_formula_against_pillow_ycbcr() -> None:
    content = pattern(16, 16, 7).astype(np.float32) / 255
    stylized = pattern(16, 16, 8).astype(np.float32) / 255
    out = (preserve_color(content, stylized) * 255).round().astype(np.uint8)
    content_ycc = _ycbcr((content * 255).round().astype(np.uint8))
    stylized_ycc = _ycbcr((stylized * 255).round().astype(np.uint8))
    out_ycc = _ycbcr(out)
    assert np.abs(out_ycc[..., 0] - stylized_ycc[..., 0]).max() <= 2  # luminance from the stylised image
    assert np.abs(out_ycc[..., 1:] - content_ycc[..., 1:]).max() <= 2  # chrominance from the photo


def test_preserve_color_cli(models, tmp_path, capsys) -> None:
    rgb = pattern(32, 48, 9)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    status, err = run(
        ["--model", models["onnx"], tmp_path / "in.png", "-o", tmp_path / "kept.png", "--preserve-color"], capsys
    )
    assert status == 0, err
    out_ycc = _ycbcr(np.asarray(Image.open(tmp_path / "kept.png")))
    stylized_ycc = _ycbcr(expected(models["network"], rgb))
    content_ycc = _ycbcr(rgb)
    assert np.abs(out_ycc[..., 0] - stylized_ycc[..., 0]).mean() < 1.5
    assert np.abs(out_ycc[..., 1:] - content_ycc[..., 1:]).mean() < 1.5
    # ...and it is not simply the plain stylised image.
    assert np.abs(out_ycc[..., 1:] - stylized_ycc[..., 1:]).mean() > 3


# --- Folders, naming and failures ------------------------------------------------------------------------------------


def test_folder_with_broken_file(models, tmp_path, capsys) -> None:
    photos = tmp_path / "photos"
    (photos / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(pattern(20, 30, 10)).save(photos / "a.png")
    Image.fromarray(pattern(25, 19, 11)).save(photos / "trip" / "day1" / "b.jpg", quality=95)
    Image.fromarray(pattern(22, 22, 12)).save(photos / "trip" / "c.gif")
    (photos / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (photos / "notes.txt").write_text("not an image, and not picked up from a folder")
    status, err = run(["--model", models["onnx"], photos, "-o", tmp_path / "out"], capsys)
    assert status == 1
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["a.png", "trip/c.png", "trip/day1/b.jpg"]  # GIF written as PNG
    failures = [line for line in err.splitlines() if "broken.jpg" in line]
    assert len(failures) == 1 and "not a readable image" in failures[0]
    assert np.asarray(Image.open(tmp_path / "out" / "trip" / "day1" / "b.jpg")).shape == (25, 19, 3)


def recording_model(monkeypatch, calls: list, fail_batches: bool = False) -> None:
    """Make ``load_model`` return the real model, recording each call's batch shape in ``calls``; ``fail_batches``: calls
    with more than one image raise MemoryError, as a model out of memory would."""
    import nst_fast.stylize.cli as stylize_module

    real_load = stylize_module.load_model

    def recording_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        real_call = model.__call__

        class Recording(type(model)):
            def __call__(self, batch, weights=None):
                calls.append(batch.shape)
                if fail_batches and batch.shape[0] > 1:
                    raise MemoryError("out of memory for a batch")
                return real_call(batch, weights)

        model.__class__ = Recording
        return model

    monkeypatch.setattr(stylize_module, "load_model", recording_load)


def test_same_sized_images_are_batched(models, tmp_path, capsys, monkeypatch) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"a": (20, 30), "b": (20, 30), "c": (20, 30), "d": (24, 18), "e": (20, 30)}
    for index, (name, (height, width)) in enumerate(sizes.items()):
        Image.fromarray(pattern(height, width, index)).save(photos / f"{name}.png")
    (photos / "broken.png").write_bytes(b"\x89PNG truncated")
    calls: list[tuple[int, ...]] = []
    recording_model(monkeypatch, calls)
    status, err = run(["--model", models["onnx"], photos, "-o", tmp_path / "out", "--batch-size", "2"], capsys)
    assert status == 1 and "broken.png" in err
    # a, b together; broken skipped; c alone (d has another size); d alone; e alone.
    assert calls == [(2, 20, 30, 3), (1, 20, 30, 3), (1, 24, 18, 3), (1, 20, 30, 3)]
    for index, (name, (height, width)) in enumerate(sizes.items()):
        out = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert max_level_diff(out, expected(models["network"], pattern(height, width, index))) <= 1


def test_failed_batch_is_retried_one_by_one(models, tmp_path, capsys, monkeypatch) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, name in enumerate("abc"):
        Image.fromarray(pattern(20, 30, index)).save(photos / f"{name}.png")
    (tmp_path / "out" / "b.png").mkdir(parents=True)  # b's output cannot be written: a folder is in the way
    calls: list[int] = []
    recording_model(monkeypatch, calls)
    status, err = run(["--model", models["onnx"], photos, "-o", tmp_path / "out", "--batch-size", "3"], capsys)
    assert status == 1
    assert [shape[0] for shape in calls] == [3, 1, 1, 1], "the failed batch of three is run again image by image"
    failures = [line for line in err.splitlines() if line.startswith("nst-stylize:")]
    assert len(failures) == 1 and "b.png" in failures[0], err
    for index, name in ((0, "a"), (2, "c")):
        out = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert max_level_diff(out, expected(models["network"], pattern(20, 30, index))) <= 1


def test_batch_the_model_cannot_run_is_retried_one_by_one(models, tmp_path, capsys, monkeypatch) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, name in enumerate("abc"):
        Image.fromarray(pattern(20, 30, index)).save(photos / f"{name}.png")
    calls: list[int] = []
    recording_model(monkeypatch, calls, fail_batches=True)
    status, err = run(["--model", models["onnx"], photos, "-o", tmp_path / "out", "--batch-size", "2"], capsys)
    assert status == 0, err
    assert [shape[0] for shape in calls] == [2, 1, 1, 1]
    for index, name in enumerate("abc"):
        out = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert max_level_diff(out, expected(models["network"], pattern(20, 30, index))) <= 1


@pytest.mark.parametrize(
    "kind, options, target, warning",
    [
        ("onnx", ["--device", "cuda"], "out.png", "--device cuda has no effect on ONNX models"),
        ("torchscript", ["--provider", "cpu"], "out.png", "--provider cpu has no effect on torch models"),
        ("ckpt", ["--threads", "2"], "out.png", "--threads 2 has no effect on torch models"),
        ("uint8", ["--batch-size", "8"], "out.png", "--batch-size 8 has no effect on uint8 models"),
        ("onnx", ["--crf", "30"], "clip.avi", "--crf 30 has no effect on clip.avi"),
        ("onnx", ["--temporal"], "out.png", "--temporal has no effect on images"),
        ("onnx", ["--temporal-weight", "0.5"], "clip.mp4", "--temporal-weight 0.5 has no effect without --temporal"),
        ("onnx", [], "out.png", None),
        ("onnx", ["--crf", "30", "--provider", "cpu", "--threads", "1"], "clip.mp4", None),
    ],
)
def test_options_the_model_or_output_ignores_are_warned_about(
    models, tmp_path, capsys, kind, options, target, warning
) -> None:
    source = tmp_path / ("clip.mp4" if target.startswith("clip") else "in.png")
    if target.startswith("clip"):
        make_video(source, frames=2)
    else:
        Image.fromarray(pattern(20, 24)).save(source)
    status, err = run(["--model", models[kind], source, "-o", tmp_path / "out" / target, *options], capsys)
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("nst-stylize: warning:")]
    if warning is None:
        assert warnings == [], err
    else:
        assert len(warnings) == 1 and warning in warnings[0], err


def test_not_an_image_is_one_line(models, tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    status, err = run(["--model", models["onnx"], tmp_path / "notes.txt", "-o", tmp_path / "out.png"], capsys)
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "not a readable image" in err
    assert not (tmp_path / "out.png").exists()


def test_output_naming_rules(models, tmp_path, capsys) -> None:
    Image.fromarray(pattern(20, 20, 13)).save(tmp_path / "x.png")
    (tmp_path / "dir").mkdir()
    assert run(["--model", models["onnx"], tmp_path / "x.png", "-o", tmp_path / "dir"], capsys)[0] == 0
    assert (tmp_path / "dir" / "x.png").is_file()  # an existing folder: written inside it
    assert run(["--model", models["onnx"], tmp_path / "x.png", "-o", tmp_path / "x.png"], capsys)[0] == 2
    assert (
        run(["--model", models["onnx"], tmp_path / "x.png", "-o", tmp_path / "y.jpg", "--format", "jpg"], capsys)[0]
        == 0
    )
    assert Image.open(tmp_path / "y.jpg").format == "JPEG"
    (tmp_path / "other").mkdir()
    shutil.copy(tmp_path / "x.png", tmp_path / "other" / "x.png")
    status, err = run(
        ["--model", models["onnx"], tmp_path / "x.png", tmp_path / "other" / "x.png", "-o", tmp_path / "o"], capsys
    )
    assert status == 2 and "would both be written" in err
    status, err = run(["--model", models["onnx"], tmp_path / "missing.png", "-o", tmp_path / "o.png"], capsys)
    assert status == 2 and "does not exist" in err


def _foreign_onnx(path: Path, input_name: str, with_metadata: bool) -> Path:
    node = helper.make_node("Identity", [input_name], ["out"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, "h", "w"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if with_metadata:
        helper.set_model_props(model, {"nst_fast.format": "1"})
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _foreign_onnx(p / "m.onnx", "image", with_metadata=False), "not an nst-fast model (no"),
        (lambda p: _foreign_onnx(p / "m.onnx", "input", with_metadata=True), "expected input 'image' of tensor(float)"),
        (lambda p: (p / "m.onnx").write_bytes(b"garbage" * 50) and p / "m.onnx", "not a loadable ONNX model"),
        (lambda p: (p / "m.pt").write_bytes(b"garbage" * 50) and p / "m.pt", "not a loadable TorchScript file"),
        (lambda p: (p / "m.bin").write_bytes(b"x") and p / "m.bin", "unknown model type"),
        (lambda p: p / "absent.onnx", "does not exist"),
    ],
    ids=["no-metadata", "wrong-input", "corrupt-onnx", "corrupt-torchscript", "unknown-suffix", "missing"],
)
def test_foreign_models_are_rejected(tmp_path, capsys, make, message) -> None:
    model = make(tmp_path)
    Image.fromarray(pattern(20, 20)).save(tmp_path / "x.png")
    status, err = run(["--model", model, tmp_path / "x.png", "-o", tmp_path / "out.png"], capsys)
    assert status == 2
    ours = [line for line in err.splitlines() if line.startswith("nst-stylize")]  # torch may add a FutureWarning
    assert len(ours) == 1 and message in ours[0] and "Traceback" not in err, err
    assert not (tmp_path / "out.png").exists()


def test_torchscript_without_our_metadata_is_rejected(tmp_path, capsys) -> None:
    traced = torch.jit.trace(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))
    torch.jit.save(traced, str(tmp_path / "foreign.pt"))
    Image.fromarray(pattern(20, 20)).save(tmp_path / "x.png")
    status, err = run(["--model", tmp_path / "foreign.pt", tmp_path / "x.png", "-o", tmp_path / "out.png"], capsys)
    assert status == 2 and "not an nst-fast TorchScript export" in err


def test_provider_choice() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", available) == available[:2] + ["CPUExecutionProvider"]
    assert choose_providers("auto", ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("tensorrt", available) == available[:2] + ["CPUExecutionProvider"]
    assert choose_providers("cpu", available) == ["CPUExecutionProvider"]
    with pytest.raises(StylizeError, match="not available"):
        choose_providers("cuda", ["CPUExecutionProvider"])


# --- Video -----------------------------------------------------------------------------------------------------------


def test_video_frames_and_audio(models, tmp_path, capsys) -> None:
    make_video(tmp_path / "clip.mp4")
    with av.open(str(tmp_path / "clip.mp4")) as container:
        decoded_in = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    status, err = run(
        ["--model", models["onnx"], tmp_path / "clip.mp4", "-o", tmp_path / "styled.mp4", "--batch-size", 3], capsys
    )
    assert status == 0, err
    with av.open(str(tmp_path / "styled.mp4")) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.audio[0].codec_context.name == "aac"
        audio_packets = sum(1 for p in container.demux(audio=0) if p.size)
        container.seek(0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert audio_packets > 0
    assert len(frames) == 8 and frames[0].shape == (48, 64, 3)
    # Lossy both ways (and 4:2:0 chroma): compare luminance with the eager network on each decoded input frame;
    # each output frame must match its own input frame, in order, far better than any other.
    luma = lambda rgb: rgb.astype(np.float64) @ [0.299, 0.587, 0.114]  # noqa: E731
    wanted = [luma(expected(models["network"], source)) for source in decoded_in]
    errors = np.array([[np.abs(luma(got) - want).mean() for want in wanted] for got in frames])
    assert (np.diag(errors) < 4).all(), errors.round(1)
    assert (errors.argmin(axis=1) == np.arange(8)).all(), errors.round(1)
    assert not list(tmp_path.glob(".*partial*"))


def test_video_in_folder_keeps_container(models, tmp_path, capsys) -> None:
    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "clip.mp4", frames=3)
    Image.fromarray(pattern(20, 20)).save(tmp_path / "in" / "still.png")
    status, err = run(["--model", models["uint8"], tmp_path / "in", "-o", tmp_path / "out"], capsys)
    assert status == 0, err
    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
    assert (tmp_path / "out" / "still.png").is_file()


# --- Subprocesses: console script, python -m, and no torch on the ONNX path --------------------------------------------


def test_console_script(models, tmp_path) -> None:
    # CI installs the package (pip install -e .), so the console script must be there: missing is a failure.
    script = Path(sys.executable).parent / "nst-stylize"
    if not script.exists():
        script = shutil.which("nst-stylize")
    assert script is not None, "nst-stylize console script not installed: pip install -e ."
    Image.fromarray(pattern(20, 24)).save(tmp_path / "x.png")
    done = subprocess.run(
        [str(script), "--model", str(models["onnx"]), str(tmp_path / "x.png"), "-o", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "o.png").size == (24, 20)


@pytest.mark.parametrize("options", [[], ["--temporal"]])
def test_onnx_path_never_imports_torch(models, tmp_path, options) -> None:
    Image.fromarray(pattern(20, 24)).save(tmp_path / "x.png")
    make_video(tmp_path / "clip.mp4", frames=2)
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "pytorch_lightning", "lightning", "torchvision"):
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())
sys.argv = ["nst-stylize", "--model", {str(models["onnx"])!r}, {str(tmp_path / "x.png")!r}, {str(tmp_path / "clip.mp4")!r},
            "-o", {str(tmp_path / "out")!r}, *{options!r}]
import runpy
try:
    runpy.run_module("nst_fast.stylize", run_name="__main__")  # python -m nst_fast.stylize
except SystemExit as exit:
    assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
    sys.exit(exit.code)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "x.png").is_file() and (tmp_path / "out" / "clip.mp4").is_file()


def test_video_audio_reencoded_when_container_cannot_hold_it(models, tmp_path, capsys) -> None:
    make_video(tmp_path / "clip.mp4", frames=4)  # AAC audio, which WebM cannot store
    status, err = run(
        ["--model", models["onnx"], tmp_path / "clip.mp4", "-o", tmp_path / "clip.webm", "--max-size", 32], capsys
    )
    assert status == 0, err
    with av.open(str(tmp_path / "clip.webm")) as container:
        assert container.streams.audio[0].codec_context.name in ("opus", "vorbis")
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (32, 24)


# --- Multi-style models: --style, --strength, --list-styles -----------------------------------------------------


def expected_weighted(network: TransformerNet, rgb: np.ndarray, style_weights: list[float]) -> np.ndarray:
    """The eager network with the given style weights (identity 1 - sum), as uint8."""
    w = torch.tensor([style_weights + [1 - sum(style_weights)]])
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = network(x, w)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["onnx", "uint8", "torchscript", "ckpt"])
@pytest.mark.parametrize(
    ("options", "weights"),
    [
        (["--style", "wave"], [0.0, 1.0, 0.0]),
        (["--style", "starry=0.6,udnie=0.4"], [0.6, 0.0, 0.4]),
        (["--style", "udnie", "--strength", "0.3"], [0.0, 0.0, 0.3]),
        (["--style", "starry=0.5,wave=0.5", "--strength", "0"], [0.0, 0.0, 0.0]),
    ],
)
def test_styles_blends_and_strength(multi_models, tmp_path, capsys, kind, options, weights) -> None:
    rgb = pattern(23, 31, seed=4)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    status, err = run(
        ["--model", multi_models[kind], tmp_path / "in.png", "-o", tmp_path / "out.png", *options], capsys
    )
    assert status == 0, err
    got = np.asarray(Image.open(tmp_path / "out.png"))
    assert max_level_diff(got, expected_weighted(multi_models["network"], rgb, weights)) <= 1


def test_list_styles(multi_models, models, capsys) -> None:
    assert main(["--model", str(multi_models["onnx"]), "--list-styles"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == ["starry", "wave", "udnie"] and "identity" in out
    assert main(["--model", str(models["onnx"]), "--list-styles"]) == 0
    assert capsys.readouterr().out.strip() == "wave"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "this model has 3 styles: choose with --style"),
        (["--style", "monet"], "unknown style 'monet'; this model has: starry, wave, udnie"),
        (["--style", "wave=-0.2"], "weight -0.2 of 'wave' must be a finite number >= 0"),
        (["--style", "wave=nan"], "weight nan of 'wave' must be a finite number >= 0"),
        (["--style", "wave="], "weight '' of 'wave' is not a number"),
        (["--style", "wave=0.7,udnie=0.6"], "weights sum to 1.3 > 1"),
        (["--style", "wave=x"], "weight 'x' of 'wave' is not a number"),
        (["--style", "wave", "--strength", "1.5"], "--strength 1.5 is out of range"),
    ],
)
def test_bad_style_choices_are_usage_errors(multi_models, tmp_path, capsys, options, message) -> None:
    Image.fromarray(pattern(16, 16)).save(tmp_path / "in.png")
    status, err = run(
        ["--model", multi_models["onnx"], tmp_path / "in.png", "-o", tmp_path / "out.png", *options], capsys
    )
    assert status == 2 and message in err and "starry, wave, udnie" in err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--style", "starry"], "unknown style 'starry'; this model has: wave"),
        (["--strength", "0.5"], "--strength needs a model trained with the identity condition"),
    ],
)
def test_single_style_models_refuse_other_styles_and_strength(models, tmp_path, capsys, options, message) -> None:
    Image.fromarray(pattern(16, 16)).save(tmp_path / "in.png")
    status, err = run(["--model", models["onnx"], tmp_path / "in.png", "-o", tmp_path / "out.png", *options], capsys)
    assert status == 2 and message in err
    status, err = run(
        ["--model", models["onnx"], tmp_path / "in.png", "-o", tmp_path / "out.png", "--style", "wave"], capsys
    )
    assert status == 0, err
