"""The benchmark scripts run end to end at a tiny size and write their JSON records (no timing assertions)."""

from __future__ import annotations

import importlib
import io
import json
import random
import struct
import sys
import zlib
from collections.abc import Collection
from pathlib import Path

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_module():
    sys.path.insert(0, str(BENCH))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_train_step_writes_record(bench_module, tmp_path: Path) -> None:
    train_step = bench_module("train_step")
    record = train_step.main(
        [
            "--size",
            "32",
            "--batch",
            "1",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--loader-workers",
            "0",
            "--loader-batches",
            "1",
            "--compare-curves",
            "2",
            "--style-size",
            "32",
            "--peak-size",
            "256",
            "--also",
            "32-true+channels_last+plain_layers",
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    assert Path(record["record_path"]).parent == tmp_path
    for key in ("machine", "config", "ours", "steps", "ratio_ours_vs_reference", "flops", "loader", "curves"):
        assert key in saved, key
    assert {"cpu_model", "torch_version", "torch_threads"} <= set(saved["machine"])
    assert set(saved["steps"]) == {"32-true", "32-true+channels_last+plain_layers", "reference"}
    assert saved["steps"]["32-true"]["images_per_s"] > 0
    flops = saved["flops"]
    assert flops["ours_per_step"] > 0 and flops["reference_per_step"] > flops["ours_per_step"]
    assert {"fp32", "bf16"} <= set(flops["matmul_peak_gflops_per_s"])
    assert saved["loader"][0]["num_workers"] == 0 and saved["loader"][0]["images_per_s"] > 0
    # Same init, same data, same precision, plain layers vs sub-pixel layers: the series agree.
    assert saved["curves"]["max_relative_difference"] < 1e-4
    assert len(saved["curves"]["series"]["reference"]) == 2


def test_inference_writes_record(bench_module, tmp_path: Path) -> None:
    inference = bench_module("inference")
    record = inference.main(
        [
            "--sizes",
            "32,40x24",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--runtimes",
            "eager-fp32,eager-fp32-cl,torchscript",
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    assert {"machine", "config", "runtimes", "results"} <= set(saved)
    rows = {(r["size"], r["runtime"]): r for r in saved["results"]}
    assert set(rows) == {
        (s, r) for s in ("32", "40x24") for r in ("eager-fp32-plain", "eager-fp32", "eager-fp32-cl", "torchscript")
    }
    for row in rows.values():
        assert row["median_s"] > 0 and row["max_abs_diff_vs_reference"] < 1e-3
    assert rows[("40x24", "eager-fp32-plain")]["width"] == 40 and rows[("40x24", "eager-fp32-plain")]["height"] == 24


def test_size_parsing(bench_module) -> None:
    inference = bench_module("inference")
    assert inference.parse_size("1920x1080") == (1080, 1920)
    assert inference.parse_size("512") == (512, 512)
    train_step = bench_module("train_step")
    assert train_step.parse_variant("bf16-mixed+channels_last") == ("bf16-mixed", frozenset({"channels_last"}))
    with pytest.raises(SystemExit):
        train_step.parse_variant("32-true+turbo")


def _save(path: Path, network, styles: list[dict], identity: bool, step: int) -> Path:
    import torch

    from nst_fast.checkpoint import checkpoint_metadata

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"transformer.{k}": v for k, v in network.state_dict().items()},
            "global_step": step,
            "nst_fast": checkpoint_metadata(network, styles, identity),
        },
        path,
    )
    return path


@pytest.mark.slow  # a whole benchmark run (export, int8 calibration or a video)
def test_multistyle_report_writes_record_and_sheet(bench_module, tmp_path: Path) -> None:
    from helpers import small_network
    from image_factory import write_good_images
    from PIL import Image

    from nst_fast.assets import asset_path

    write_good_images(tmp_path / "photos")
    styles = [
        {"name": n, "image": asset_path(f"styles/{f}"), "size": 32}
        for n, f in (("starry", "starry_night.jpg"), ("wave", "wave.jpg"))
    ]
    multi = _save(tmp_path / "multi" / "checkpoints" / "last.ckpt", small_network(1, 3), styles, True, 10)
    single = _save(tmp_path / "single" / "checkpoints" / "last.ckpt", small_network(2), styles[:1], False, 5)
    new = {"name": "udnie", "image": asset_path("styles/udnie.jpg"), "size": 32}
    scratch = _save(tmp_path / "scratch" / "checkpoints" / "last.ckpt", small_network(3), [new], False, 5)
    for step in (1, 2):
        _save(
            tmp_path / "tuned" / "checkpoints" / f"step_{step:06d}.ckpt",
            small_network(step, 4),
            styles + [new],
            True,
            step,
        )
    multistyle = bench_module("multistyle")
    record = multistyle.main(
        [
            "--multi",
            str(multi),
            "--single",
            f"starry={single}",
            "--finetune-run",
            str(tmp_path / "tuned"),
            "--scratch",
            str(scratch),
            "--sheet",
            str(tmp_path / "sheet.jpg"),
            "--photos",
            str(tmp_path / "photos"),
            "--vgg-weights",
            "random",
            "--size",
            "32",
            "--out-dir",
            str(tmp_path / "records"),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    rows = {row["style"]: row for row in saved["comparison"]}
    assert set(rows) == {"starry", "wave"} and "single" in rows["starry"] and "single" not in rows["wave"]
    assert all(rows["starry"][k]["style"] > 0 and rows["starry"][k]["content"] > 0 for k in ("multi", "single"))
    ramp = saved["strength"]["ramps"]["wave"]
    assert ramp["strengths"] == [0.0, 0.25, 0.5, 0.75, 1.0] and len(ramp["costs"]) == 5
    assert saved["strength"]["identity_psnr_db"] > 0
    curve = saved["finetune"]["tuned"]
    assert curve["style"] == "udnie" and [p["step"] for p in curve["points"]] == [1, 2]
    with Image.open(tmp_path / "sheet.jpg") as sheet:
        # Photos, two styles, a blend and a strength ramp: 5 rows; 5 columns of 192 px tiles (fewer photos: fewer).
        assert sheet.height == 5 * (192 + 4) + 4


def test_heldout_psnr_and_condition_weights(bench_module) -> None:
    import torch

    from nst_fast.checkpoint import CheckpointInfo

    heldout = bench_module("heldout")
    image = torch.rand(1, 3, 8, 8)
    assert heldout.psnr(image, image) == float("inf")
    assert abs(heldout.psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)) - 20.0) < 1e-5  # float32 0.1
    info = CheckpointInfo(transformer={"num_conditions": 3}, styles=[{"name": "a"}, {"name": "b"}], identity=True)
    torch.testing.assert_close(heldout.condition_weights(info, [0.2, 0.5]), torch.tensor([[0.2, 0.5, 0.3]]))
    assert heldout.condition_weights(CheckpointInfo(transformer={}, styles=[{"name": "a"}]), [1.0]) is None


def test_serve_load_report_on_synthetic_latencies(bench_module) -> None:
    serve_load = bench_module("serve_load")
    latencies = [i / 1000.0 for i in range(100, 0, -1)]  # 1..100 ms, in reverse order
    outcomes = [serve_load.Outcome(200, s, True) for s in latencies]
    outcomes += [serve_load.Outcome(503, 0.001, True)] * 5 + [serve_load.Outcome(500, 0.2, False, "status 500: x")]
    probe = serve_load.Probe(seconds=[0.002, 0.010, 0.004], failures=["ConnectError: refused"])
    row = serve_load.summarize(4, outcomes, 10.0, probe, peak_rss_kb=204800)
    assert (row["requests"], row["images"], row["rejected_503"], row["errors"]) == (106, 100, 5, 1)
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (50.0, 95.0, 99.0)  # nearest rank
    assert row["throughput_per_s"] == 10.0 and row["error_samples"] == ["status 500: x"]
    assert (row["healthz_probes"], row["healthz_failures"], row["healthz_worst_ms"]) == (4, 1, 10.0)
    assert row["server_peak_rss_mb"] == 200.0
    table = serve_load.format_table([row])
    assert table.splitlines()[2] == "| 4 | 106 | 100 | 5 | 1 | 10.0 | 50.0 | 95.0 | 99.0 | 10.0 | 1 | 200.0 |"
    assert serve_load.summarize(1, [], 1.0, serve_load.Probe())["p50_ms"] is None
    assert serve_load.percentile([3.0], 99) == 3.0


@pytest.mark.slow
def test_serve_load_smoke_run(bench_module, tmp_path: Path) -> None:
    from onnx_factory import tiny_onnx_model

    serve_load = bench_module("serve_load")
    model = tiny_onnx_model(tmp_path / "tiny.onnx", ["wave"])
    record = serve_load.main(
        ["--model", str(model), "--clients", "2", "--duration", "1.5", "--size", "48", "--out-dir", str(tmp_path)]
    )
    (row,) = json.loads(Path(record["record_path"]).read_text())["results"]
    assert row["images"] > 0 and row["errors"] == 0 and row["healthz_failures"] == 0, row
    assert row["server_exit_status"] == 0 and row["server_peak_rss_mb"] > 0
    with pytest.raises(SystemExit, match="not a loopback address"):
        serve_load.main(["--url", "http://example.com:8000", "--out-dir", str(tmp_path)])


@pytest.mark.slow
def test_serve_hostile_smoke_run(bench_module, tmp_path: Path) -> None:
    from onnx_factory import tiny_onnx_model

    serve_hostile = bench_module("serve_hostile")
    model = tiny_onnx_model(tmp_path / "tiny.onnx", ["wave"])
    record = serve_hostile.main(
        [
            "--model",
            str(model),
            "--idle",
            "30",
            "--slow-headers",
            "3",
            "--slow-bodies",
            "3",
            "--clients",
            "2",
            "--duration",
            "2",
            "--settle",
            "0.5",
            "--size",
            "48",
            "--out-dir",
            str(tmp_path),
        ]
    )
    row = json.loads(Path(record["record_path"]).read_text())["result"]
    assert row["images"] > 0 and row["success_rate"] == 1.0 and row["healthz_failures"] == 0, row
    assert row["server_exit_status"] == 0 and row["server_peak_rss_mb"] > 0
    assert row["hostile"]["idle"]["opened"] >= 30 and row["hostile"]["slow_bodies"]["opened"] >= 3
    with pytest.raises(SystemExit, match="at most 2000 connections"):
        serve_hostile.main(["--model", str(model), "--idle", "5000", "--out-dir", str(tmp_path)])


@pytest.mark.slow
def test_browser_smoke_run(bench_module, tmp_path: Path) -> None:
    from browser_support import require_chromium_here, require_runtime
    from onnx_factory import tiny_onnx_model
    from PIL import Image

    require_chromium_here()
    require_runtime()
    browser = bench_module("browser")
    model = tiny_onnx_model(tmp_path / "tiny.onnx", ["wave"])
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 24), (200, 120, 40)).save(photo)
    record = browser.main(
        [
            "--model",
            str(model),
            "--photo",
            str(photo),
            "--sizes",
            "256",
            "--repeats",
            "1",
            "--seconds",
            "1",
            "--warmup",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    assert {"cpu", "load_average", "chromium", "webcam", "first_result", "parity"} <= set(saved)
    assert set(saved["webcam"]) == {"johnson 256 px browser", "johnson 256 px server"}
    assert saved["webcam"]["johnson 256 px browser"][0]["where"].startswith("in this browser, WebAssembly")
    browser_first = saved["first_result"]["johnson browser (nst-serve)"]
    assert browser_first["seconds"] > 0 and "ort-wasm-simd-threaded.wasm" in browser_first["files"]
    assert saved["parity"]["wasm"]["as uploaded"]["max_abs_diff"] <= 2


@pytest.mark.slow  # a whole benchmark run (export, int8 calibration or a video)
def test_temporal_demo_writes_gif_and_strip(bench_module, models, tmp_path: Path) -> None:
    from image_factory import pattern
    from PIL import Image

    Image.fromarray(pattern(60, 80)).save(tmp_path / "photo.png")
    bench_module("temporal_demo").main(
        [
            str(models["onnx"]),
            "--photo",
            str(tmp_path / "photo.png"),
            "--size",
            "48x32",
            "--frames",
            "15",
            "--gif",
            str(tmp_path / "a.gif"),
            "--diff",
            str(tmp_path / "d.png"),
        ]
    )
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 15 and gif.size == (2 * 48 + 4, 32 + 18)
    assert Image.open(tmp_path / "d.png").size == (3 * (48 - 2 + 4), 2 * (32 - 1 + 4 + 16))


def test_temporal_inference_writes_record(bench_module, models, tmp_path: Path) -> None:
    if not (BENCH / "temporal.py").is_file():
        pytest.skip("bench/temporal.py (the known-motion flicker ratio, from the stability work) is not here")
    from image_factory import pattern
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        Image.fromarray(pattern(72, 96, index)).save(photos / f"p{index}.png")
    record = bench_module("temporal_inference").main(
        [
            str(models["onnx"]),
            "--photos",
            str(photos),
            "--clip-photo",
            "p0.png",
            "--weights",
            "0.7",
            "--presets",
            "fast",
            "--size",
            "40",
            "--frames",
            "3",
            "--margin",
            "6",
            "--border",
            "2",
            "--clip-size",
            "48x32",
            "--clip-frames",
            "4",
            "--cost-size",
            "32",
            "--repeats",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    plain, blended = saved["results"]
    assert plain["preset"] is None and plain["departure_rms"] == 0 and blended["departure_rms"] > 0
    assert blended["flicker"]["all"]["flicker_ratio"] < plain["flicker"]["all"]["flicker_ratio"]
    assert {"model", "fast"} == set(saved["cost_ms"])


@pytest.mark.slow  # a whole benchmark run (export, int8 calibration or a video)
def test_inference_times_the_int8_model(bench_module, tmp_path: Path) -> None:
    inference = bench_module("inference")
    record = inference.main(
        [
            "--sizes",
            "36",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--runtimes",
            "onnxruntime-int8",
            "--int8-calibration-size",
            "32",
            "--out-dir",
            str(tmp_path),
        ]
    )
    row = next(r for r in record["results"] if r["runtime"] == "onnxruntime-int8")
    assert row["median_s"] > 0 and 0 < row["max_abs_diff_vs_reference"] < 1.0
    assert 10.0 < row["psnr_db_vs_reference"] < 200.0  # quantised: close to the float network, not equal


@pytest.mark.slow  # a whole benchmark run (export, int8 calibration or a video)
def test_inference_builds_the_light_network(bench_module, tmp_path: Path) -> None:
    inference = bench_module("inference")
    record = inference.main(
        [
            "--sizes",
            "32",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--runtimes",
            "onnxruntime-fp32",
            "--model",
            "light",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert {r["runtime"] for r in record["results"]} == {"eager-fp32-plain", "onnxruntime-fp32"}
    assert record["config"]["model"] == "light"
    with pytest.raises(SystemExit, match="--model tiny: no .*tiny.yaml; known: johnson, light"):
        inference.main(["--sizes", "32", "--model", "tiny", "--out-dir", str(tmp_path)])


@pytest.mark.slow  # a whole benchmark run (export, int8 calibration or a video)
def test_heldout_runs_onnx_models_like_the_network(bench_module, tmp_path: Path) -> None:
    import torch
    from helpers import small_network

    from nst_fast.checkpoint import CheckpointInfo
    from nst_fast.export import export_onnx

    heldout = bench_module("heldout")
    network = small_network(2, num_conditions=3)
    info = CheckpointInfo(transformer=dict(network.config), styles=[{"name": "a"}, {"name": "b"}], identity=True)
    export_onnx(network, tmp_path / "net.onnx", info)
    photo = torch.rand(1, 3, 27, 33)
    got = heldout.onnx_stylise(tmp_path / "net.onnx", [0.0, 1.0])(photo)
    with torch.no_grad():
        want = network(photo, torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def _smooth_photos(count: int, height: int = 40, width: int = 48):
    """Photo-like test images: random colours upsampled bilinearly (smooth, so resampling is well behaved)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, height // 8, width // 8, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
    return [image[None] for image in smooth]


def test_pan_sequence_is_the_moving_window_and_whole_pixel_motion_undoes_exactly(bench_module) -> None:
    import torch

    temporal = bench_module("temporal")
    photo = _smooth_photos(1)[0]
    frames = temporal.pan_sequence(photo, (1.0, 2.0), frames=3, margin=4, noise_std=0.0)
    assert frames.shape == (3, 3, 32, 40)
    for k in range(3):  # window k starts at (4 + k, 4 + 2k)
        torch.testing.assert_close(frames[k], photo[0, :, 4 + k : 36 + k, 4 + 2 * k : 44 + 2 * k])
    squared, count = temporal.motion_differences(frames, (1.0, 2.0), border=0)
    assert squared < 1e-10 and count == 2 * 3 * (32 - 1) * (40 - 2), "2 pairs, 3 channels, the pixels still in view"
    _, count = temporal.motion_differences(frames, (1.0, 2.0), border=2)
    assert count == 2 * 3 * (32 - 4) * (40 - 4), "the 2 px border holds the pixels that left the view"
    with pytest.raises(ValueError, match="cannot hold"):
        temporal.pan_sequence(photo, (0.0, 3.0), frames=3, margin=4, noise_std=0.0)


def test_flicker_ratio_is_one_for_the_identity_and_above_one_for_per_frame_noise(bench_module) -> None:
    import torch

    temporal = bench_module("temporal")
    photos = _smooth_photos(2)
    options = {"frames": 3, "margin": 4, "border": 2, "noise_std": 3 / 255}
    identity = temporal.known_motion_flicker(lambda frame: frame, photos, **options)
    assert set(identity) == {"still", "whole", "subpixel", "all"}
    for result in identity.values():
        assert result["flicker_ratio"] == pytest.approx(1.0, abs=1e-9) and result["input_rms"] > 0
    generator = torch.Generator().manual_seed(1)
    noisy = temporal.known_motion_flicker(
        lambda frame: frame + 0.05 * torch.randn(frame.shape, generator=generator), photos, **options
    )
    for result in noisy.values():
        # Independent noise of std s on each frame adds 2 s^2 to the squared difference: about (0.05/0.017)^2 more.
        assert result["flicker_ratio"] > 2.0
    blurred = temporal.known_motion_flicker(
        lambda frame: torch.nn.functional.avg_pool2d(frame, 3, stride=1, padding=1, count_include_pad=False),
        photos,
        **options,
    )
    assert blurred["still"]["flicker_ratio"] < 0.5, "a filter that averages the noise away flickers less"


def _write_video(path: Path, photo, frames: int = 6) -> None:
    import av
    import numpy as np

    codec = next(c for c in ("libx264", "mpeg4") if c in av.codecs_available)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(frames):  # the photo panning right by 2 px a frame
            array = (photo[0, :, 8:56, 4 + 2 * k : 68 + 2 * k].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode(None))


def test_video_warping_error_identity_and_noise(bench_module, tmp_path: Path) -> None:
    import torch

    temporal = bench_module("temporal")
    _write_video(tmp_path / "pan.mp4", _smooth_photos(1, 64, 96)[0])
    frames = temporal.read_video(tmp_path / "pan.mp4", max_frames=5)
    assert len(frames) == 5 and frames[0].shape == (1, 3, 48, 64)
    identity = temporal.video_warping_error(lambda frame: frame, frames)
    assert identity["warping_ratio"] == pytest.approx(1.0) and identity["valid_fraction"] > 0.5
    generator = torch.Generator().manual_seed(2)
    noisy = temporal.video_warping_error(
        lambda frame: frame + 0.05 * torch.randn(frame.shape, generator=generator), frames
    )
    assert noisy["warping_ratio"] > 2.0


def test_temporal_report_writes_record(bench_module, tmp_path: Path) -> None:
    from helpers import small_network
    from image_factory import write_good_images

    from nst_fast.assets import asset_path

    write_good_images(tmp_path / "photos")
    _write_video(tmp_path / "pan.mp4", _smooth_photos(1, 64, 96)[0], frames=3)
    style = {"name": "starry", "image": asset_path("styles/starry_night.jpg"), "size": 32}
    checkpoint = _save(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network(1), [style], False, 7)
    temporal = bench_module("temporal")
    record = temporal.main(
        [
            str(checkpoint),
            "--photos",
            str(tmp_path / "photos"),
            "--vgg-weights",
            "random",
            "--size",
            "40",
            "--frames",
            "3",
            "--margin",
            "4",
            "--border",
            "2",
            "--video",
            str(tmp_path / "pan.mp4"),
            "--video-size",
            "48",
            "--sheet",
            str(tmp_path / "sheet.jpg"),
            "--out-dir",
            str(tmp_path / "records"),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    assert {"machine", "options", "motions", "results"} <= set(saved)
    result = saved["results"][0]
    assert result["step"] == 7
    starry = result["styles"]["starry"]
    assert (
        set(starry["flicker"]) == {"still", "whole", "subpixel", "all"}
        and starry["flicker"]["all"]["flicker_ratio"] > 0
    )
    assert starry["videos"][str(tmp_path / "pan.mp4")]["frames"] == 3
    assert starry["heldout"]["style"] > 0 and starry["heldout"]["content"] > 0
    from PIL import Image

    with Image.open(tmp_path / "sheet.jpg") as sheet:  # photos, then stylised and flicker rows per checkpoint
        assert sheet.height == 3 * (160 + 4) + 4


@pytest.mark.slow
def test_data_throughput_writes_record(bench_module, tmp_path: Path) -> None:
    pytest.importorskip("moto.server", reason="moto[server] is not installed (dev extra)")
    data_throughput = bench_module("data_throughput")
    record = data_throughput.main(
        [
            "--count",
            "8",
            "--size",
            "32",
            "--batch",
            "2",
            "--batches",
            "1",
            "--workers",
            "0",
            "--repeats",
            "1",
            "--convert-workers",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    assert [c["into"] for c in saved["conversion"]] == ["local folder", "s3 (loopback)"]
    assert all(c["photos"] == 8 and c["photos_per_s"] > 0 for c in saved["conversion"])
    assert set(saved["loader_images_per_s"]) == {"folder w0", "stream-local w0", "stream-s3 w0"}
    assert all(rate > 0 for rate in saved["loader_images_per_s"].values())
    assert "cpu_model" in saved["machine"] and "training_images_per_s" not in saved


@pytest.mark.slow
def test_tiling_writes_record_and_crop(bench_module, models, tmp_path: Path) -> None:
    from image_factory import pattern
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        Image.fromarray(pattern(72, 96, index)).save(photos / f"p{index}.png")
    record = bench_module("tiling").main(
        [
            "--models",
            str(models["onnx"]),
            "--sizes",
            "0.02",
            "--whole-up-to",
            "0.02",
            "--tile-size",
            "64",
            "--photos",
            str(photos),
            "--fidelity-size",
            "96x64",
            "--tile-sizes",
            "16,32",
            "--extra-photos",
            "1",
            "--crop",
            str(tmp_path / "crop.jpg"),
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    tiled, whole = saved["memory"]
    assert tiled["tiled"] and not whole["tiled"] and whole["max_diff_tiled_vs_whole"] <= 1
    assert [(r["photo"], r["tile"]) for r in saved["fidelity"]] == [("p0.png", 16), ("p0.png", 32), ("p1.png", 16)]
    assert all(r["max_diff"] <= 1 for r in saved["fidelity"]) and (tmp_path / "crop.jpg").is_file()


def texture(number: int, size: tuple[int, int]) -> Image.Image:
    """A stand-in photo: 8x6 grey blocks drawn at random (seeded by ``number``), tinted, so that any two differ."""
    rng = random.Random(number)
    blocks = Image.frombytes("L", (8, 6), rng.randbytes(48)).resize(size, Image.Resampling.NEAREST)
    return Image.merge("RGB", (blocks, blocks.point(lambda v: v // 2), Image.new("L", size, number % 256)))


def rcc_bundle(
    files: dict[str, bytes], zlib_paths: Collection[str] = (), zstd_paths: Collection[str] = (), version: int = 3
) -> bytes:
    """A Qt resource bundle holding ``files`` (path -> bytes), laid out by hand as ``rcc_index`` documents it:
    header, tree (breadth first, so each directory's children are contiguous), names, data. ``zlib_paths`` are
    stored qCompress-ed; ``zstd_paths`` are only flagged as zstd (their bytes stay plain)."""
    root: dict = {}
    for path in files:
        *folders, leaf = path.strip("/").split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = path
    nodes: list[tuple[str, dict | str]] = [("", root)]
    first_child = {}
    for index, (_, node) in enumerate(nodes):  # grows while it runs: breadth first
        if isinstance(node, dict):
            first_child[index] = len(nodes)
            nodes.extend(sorted(node.items()))
    tree, names, data = bytearray(), bytearray(), bytearray()
    modified = b"\0" * 8 if version >= 2 else b""
    for index, (name, node) in enumerate(nodes):
        name_offset = len(names)
        if index:
            names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        if isinstance(node, dict):
            tree += struct.pack(">IHII", name_offset, 2, len(node), first_child[index]) + modified
            continue
        payload, flags = files[node], 4 if node in zstd_paths else 0
        if node in zlib_paths:
            payload, flags = struct.pack(">I", len(payload)) + zlib.compress(payload), 1
        tree += struct.pack(">IHHHI", name_offset, flags, 0, 0, len(data)) + modified
        data += struct.pack(">I", len(payload)) + payload
    header_size = 24 if version >= 3 else 20
    names_at = header_size + len(tree)
    data_at = names_at + len(names)
    header = b"qres" + struct.pack(">IIII", version, header_size, data_at, names_at)
    return header + (b"\0" * 4 if version >= 3 else b"") + tree + names + data


def fake_packages(
    debian_photos, monkeypatch, small: Collection[str] = (), broken: Collection[str] = (), height: int = 200
) -> list:
    """Fake ``unpack``: each package holds its listed photos as textures (Qt bundles built by ``rcc_bundle``, every
    other file zlib-compressed), ``height`` pixels high and wider, those named in ``small`` 40x30; a package in ``broken`` cannot be fetched.
    Returns the wide set's photos, whose positions seed their textures."""
    photos = debian_photos.select("wide")

    def fake_unpack(package: str, folder: Path, version: str | None = None, suite: str | None = None):
        if package in broken:
            raise debian_photos.FetchError(f"'apt-get download {package}' failed: no network")
        root = folder / package
        bundles: dict[str, dict[str, bytes]] = {}
        for number, photo in enumerate(photos):
            if photo.package != package:
                continue
            image = texture(number, (40, 30) if photo.name in small else (height * 3 // 2 + number % 25, height))
            bundle, rcc, inner = photo.member.partition(".rcc:")
            if rcc:
                encoded = io.BytesIO()
                image.save(encoded, "PNG")
                bundles.setdefault(f"{bundle}.rcc", {})[inner] = encoded.getvalue()
            else:
                (root / photo.member.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                image.save(root / photo.member.lstrip("/"))
        for bundle, files in bundles.items():
            (root / bundle.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / bundle.lstrip("/")).write_bytes(rcc_bundle(files, zlib_paths=list(files)[::2]))
        return root, version or "1.0"

    monkeypatch.setattr(debian_photos, "unpack", fake_unpack)
    return photos


def credit_rows(folder: Path) -> dict[str, list[str]]:
    """CREDITS.md's rows by file: [author, licence, source, link]."""
    lines = (folder / "CREDITS.md").read_text(encoding="utf-8").splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines if line.startswith("| ")]
    return {row[0]: row[1:] for row in rows[2:]}


def test_debian_photos_scales_and_credits_every_photo(bench_module, tmp_path: Path, monkeypatch) -> None:
    """bench/debian_photos.py without apt: each package is faked with images of the listed names; every photo of
    the default (study) set comes out with its shorter side at --size, and CREDITS.md names its author and licence."""
    debian_photos = bench_module("debian_photos")
    fake_packages(debian_photos, monkeypatch)
    assert debian_photos.main([str(tmp_path / "out"), "--size", "100"]) == 0
    written = sorted((tmp_path / "out").glob("*.jpg"))
    expected = sum(len(photos) for photos in debian_photos.PHOTOS.values())
    assert len(written) == expected == 25
    for path in written:
        with Image.open(path) as image:
            assert min(image.size) == 100
    credits = (tmp_path / "out" / "CREDITS.md").read_text(encoding="utf-8")
    assert (
        "| bridge_by_sander_klootwijk.jpg | Sander Klootwijk | CC-BY-SA-4.0 | Debian `lomiri-wallpapers-16.04`"
        in credits
    )
    assert credits.count("| GPL-2+ |") == 12


def test_debian_photos_wide_set_credits_each_file_and_permissive_drops_share_alike(
    bench_module, tmp_path: Path, monkeypatch, capsys
) -> None:
    """--set wide writes and credits each of its 175 photos (GCompris's out of hand-built Qt bundles), skipping one
    smaller than --size with a message; --permissive leaves out every CC-BY-SA, GPL and GFDL one; a package that
    cannot be fetched is named, the others are built, and the exit status says the set is incomplete."""
    debian_photos = bench_module("debian_photos")
    photos = fake_packages(debian_photos, monkeypatch, small={"palapeli_castle_maintenon.jpg"}, height=60)
    assert debian_photos.main([str(tmp_path / "wide"), "--set", "wide", "--size", "48"]) == 0
    assert "left out palapeli_castle_maintenon.jpg: 40x30 is smaller than --size 48" in capsys.readouterr().err
    rows = credit_rows(tmp_path / "wide")
    written = {path.name for path in (tmp_path / "wide").glob("*.jpg")}
    assert written == set(rows) == {photo.name for photo in photos} - {"palapeli_castle_maintenon.jpg"}
    assert len(written) == 174
    assert rows["gcompris_erase_alpaca.jpg"] == [
        "Dietmar Rabich / Wikimedia Commons",
        "CC-BY-SA-4.0",
        "Debian `gcompris-qt-data` 3.1-2 "
        "(/usr/share/gcompris-qt/rcc/erase.rcc:/gcompris/src/activities/erase/resource/alpaca.webp)",
        "https://commons.wikimedia.org/wiki/File:D%C3%BClmen,_B%C3%B6rnste,_Alpakas_--_2020_--_5338.jpg",
    ]
    assert rows["budgie_tea_gardens.jpg"][1:3] == [
        "CC0-1.0",
        "Debian `budgie-backgrounds` 3.0-1 (/usr/share/backgrounds/budgie/tea-gardens.jpg)",
    ]
    for number, photo in enumerate(photos):
        if photo.name in written:
            with Image.open(tmp_path / "wide" / photo.name) as image:
                assert min(image.size) == 48
                if photo.name.startswith("gcompris_"):  # each came out of its bundle intact, raw or zlib
                    mine, source = (
                        debian_photos.thumbnails(image),
                        debian_photos.thumbnails(texture(number, image.size)),
                    )
                    assert debian_photos.distance(mine, source) < debian_photos.NEAR_DUPLICATE

    assert debian_photos.main([str(tmp_path / "free"), "--set", "wide", "--permissive", "--size", "48"]) == 0
    licences = {licence for _, licence, _, _ in credit_rows(tmp_path / "free").values()}
    assert licences == {"public-domain", "CC0-1.0", "CC-BY-2.0", "CC-BY-3.0", "CC-BY-4.0"}
    assert len(list((tmp_path / "free").glob("*.jpg"))) == len(debian_photos.select("wide", permissive=True)) == 115

    fake_packages(debian_photos, monkeypatch, broken={"budgie-backgrounds"}, height=60)
    assert debian_photos.main([str(tmp_path / "part"), "--set", "wide", "--permissive", "--size", "48"]) == 2
    assert "could not fetch budgie-backgrounds (its 14 photos are missing)" in capsys.readouterr().err
    assert len(credit_rows(tmp_path / "part")) == 115 - 14


def test_rcc_reader_extracts_a_hand_built_bundle(bench_module) -> None:
    """rcc_index/rcc_read list and extract every file of a Qt resource bundle, stored raw or zlib-compressed, in
    format versions 1 to 3; a zstd entry and a file that is no bundle raise RccError saying so."""
    debian_photos = bench_module("debian_photos")
    files = {"/a/b/raw.txt": b"hello", "/a/packed.bin": bytes(range(256)) * 8, "/top/\u00fcber.txt": "ü".encode()}
    for version in (1, 2, 3):
        bundle = rcc_bundle(files, zlib_paths=["/a/packed.bin"], version=version)
        index = debian_photos.rcc_index(bundle)
        assert set(index) == set(files)
        assert index["/a/packed.bin"].flags == debian_photos.RCC_ZLIB
        assert {path: debian_photos.rcc_read(bundle, entry) for path, entry in index.items()} == files
    bundle = rcc_bundle(files, zstd_paths=["/a/b/raw.txt"])
    with pytest.raises(debian_photos.RccError, match="zstd"):
        debian_photos.rcc_read(bundle, debian_photos.rcc_index(bundle)["/a/b/raw.txt"])
    with pytest.raises(debian_photos.RccError, match="qres"):
        debian_photos.rcc_index(b"PK\x03\x04 not a bundle")


def test_debian_photos_exclude_drops_a_near_copy(bench_module, tmp_path: Path, monkeypatch, capsys) -> None:
    """--exclude DIR leaves out a photo whose retoned, rescaled, recompressed copy is in DIR, and keeps the rest."""
    debian_photos = bench_module("debian_photos")
    photos = fake_packages(debian_photos, monkeypatch)
    held = tmp_path / "held"
    held.mkdir()
    copy = texture(3, (330, 200)).resize((165, 100)).point(lambda v: int(v * 0.8) + 30)
    copy.save(held / "copy.jpg", quality=80)
    texture(999, (330, 200)).save(held / "other.png")
    assert debian_photos.main([str(tmp_path / "out"), "--size", "64", "--exclude", str(held)]) == 0
    assert f"left out {photos[3].name}: a near copy of {held / 'copy.jpg'}" in capsys.readouterr().err
    assert set(credit_rows(tmp_path / "out")) == {photo.name for photo in photos[:25]} - {photos[3].name}
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 24

    (tmp_path / "empty").mkdir()
    assert debian_photos.main([str(tmp_path / "none"), "--exclude", str(tmp_path / "empty")]) == 1
    assert "no images" in capsys.readouterr().err


def test_ceiling_optimises_each_photo_toward_the_painting(bench_module, tmp_path: Path) -> None:
    from image_factory import write_good_images

    write_good_images(tmp_path / "photos")
    ceiling = bench_module("ceiling")
    common = ["--photos", str(tmp_path / "photos"), "--vgg-weights", "random", "--size", "96", "--style-size", "64"]
    record = ceiling.main(
        [*common, "--names", "rgb,gray", "--steps", "8", "--lr", "0.05", "--out-dir", str(tmp_path / "records")]
    )
    saved = json.loads(Path(record["record_path"]).read_text())
    assert [row["photo"] for row in saved["results"]] == ["gray", "rgb"]
    heldout = bench_module("heldout")
    loss = heldout.build_loss("random")
    for row in saved["results"]:
        assert row["objective_last"] < row["objective_first"]
        assert set(row["style_error_by_layer"]) == {"relu1_2", "relu2_2", "relu3_3", "relu4_3"}
        assert row["content_error"] > 0  # the photo itself is 0: the pixels moved
    # Measured independently: the photo as it is, against the same painting, is farther from it.
    photo = heldout.load_photo(tmp_path / "photos" / "rgb.jpg", 96)
    painting = ceiling.load_style_image(ceiling.asset_path("styles/starry_night.jpg"), 64)
    as_is = ceiling.measure(loss, painting, photo, photo)
    rgb = next(row for row in saved["results"] if row["photo"] == "rgb")
    assert as_is["content_error"] == 0 and rgb["style_error"] < as_is["style_error"]
    with pytest.raises(SystemExit, match="no photo named nowhere"):
        ceiling.main([*common, "--names", "nowhere", "--steps", "1"])
