"""Temporal blending (nst_fast.stylize.temporal, ``nst-stylize --temporal``): less frame-to-frame change along
a known motion, no blending across a scene cut, the blend weight, any model kind, still batched."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
from image_factory import pattern, write_video
from test_stylize import recording_model, run

from nst_fast.stylize.temporal import TemporalBlender

SHIFT = 2  # px per frame: the content moves left


def noisy_pan(path: Path, frames: int = 10, width: int = 64, height: int = 48, noise: float = 8.0) -> None:
    """A window moving right by ``SHIFT`` px per frame over a smooth pattern, with Gaussian noise of std
    ``noise`` levels per frame (sensor noise: what makes a per-frame stylisation flicker)."""
    rng = np.random.default_rng(5)
    scene = pattern(height, width + SHIFT * frames, seed=7).astype(np.float64)
    windows = [
        scene[:, SHIFT * k : SHIFT * k + width] + rng.normal(0, noise, (height, width, 3)) for k in range(frames)
    ]
    write_video(path, [np.clip(w, 0, 255).round().astype(np.uint8) for w in windows], audio=False)


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]).astype(np.float64)


def change_along_motion(frames: np.ndarray, border: int = 6) -> float:
    """Mean |frame t+1 - frame t moved by the known shift| over the interior, frames after the first pair."""
    width = frames.shape[2]
    following = frames[2:, border:-border, border : width - SHIFT - border]
    moved = frames[1:-1, border:-border, border + SHIFT : width - border]
    return float(np.abs(following - moved).mean())


def test_temporal_output_changes_less_along_the_motion(models, tmp_path, capsys) -> None:
    noisy_pan(tmp_path / "pan.mp4")
    for name, options in (("plain", []), ("temporal", ["--temporal"])):
        status, err = run(
            ["--model", models["onnx"], tmp_path / "pan.mp4", "-o", tmp_path / f"{name}.mp4", "--crf", "0", *options],
            capsys,
        )
        assert status == 0, err
    plain, temporal = decoded(tmp_path / "plain.mp4"), decoded(tmp_path / "temporal.mp4")
    assert plain.shape == temporal.shape == (10, 48, 64, 3)
    assert change_along_motion(temporal) < 0.75 * change_along_motion(plain), (
        change_along_motion(temporal),
        change_along_motion(plain),
    )
    # The first frame has nothing to blend with: as without --temporal (--crf 0: lossless H.264).
    assert np.abs(temporal[0] - plain[0]).max() <= 1


def test_weight_is_the_previous_outputs_share_where_nothing_moves() -> None:
    frame = pattern(40, 56, seed=1)
    first, second = np.full((40, 56, 3), 0.2, np.float32), np.full((40, 56, 3), 0.6, np.float32)
    blend = TemporalBlender(weight=0.75)
    np.testing.assert_array_equal(blend(frame, first), first)
    out = blend(frame, second)
    assert blend.last_mask.all()
    np.testing.assert_allclose(out, 0.75 * 0.2 + 0.25 * 0.6, atol=1e-6)
    np.testing.assert_allclose(blend(frame, second), 0.75 * 0.3 + 0.25 * 0.6, atol=1e-6)  # recursive: y_t-1 = 0.3


def test_scene_cut_is_not_blended() -> None:
    before, after = pattern(48, 64, seed=1), np.flipud(pattern(48, 64, seed=9)).copy()
    rng = np.random.default_rng(0)
    styled_before, styled_after = (rng.random((48, 64, 3), dtype=np.float32) for _ in range(2))
    blend = TemporalBlender(weight=0.8)
    blend(before, styled_before)
    np.testing.assert_array_equal(blend(after, styled_after), styled_after)
    assert not blend.last_mask.any()
    # The new shot goes on blending with its own frames.
    blend(after, styled_before)
    assert blend.last_mask.all()


def test_new_frame_size_starts_afresh() -> None:
    blend = TemporalBlender()
    blend(pattern(40, 56), np.zeros((40, 56, 3), np.float32))
    styled = np.full((32, 48, 3), 0.5, np.float32)
    np.testing.assert_array_equal(blend(pattern(32, 48), styled), styled)


@pytest.mark.parametrize("kind", ["onnx", "uint8", "torchscript", "ckpt"])
def test_every_model_kind_multi_style_and_batched(multi_models, tmp_path, capsys, monkeypatch, kind) -> None:
    noisy_pan(tmp_path / "pan.mp4", frames=5)
    status, err = run(
        [
            "--model",
            multi_models[kind],
            tmp_path / "pan.mp4",
            "-o",
            tmp_path / "plain.mp4",
            "--style",
            "wave",
            "--crf",
            "0",
        ],
        capsys,
    )
    assert status == 0, err
    calls: list[tuple[int, ...]] = []
    recording_model(monkeypatch, calls)
    status, err = run(
        [
            "--model",
            multi_models[kind],
            tmp_path / "pan.mp4",
            "-o",
            tmp_path / "temporal.mp4",
            "--style",
            "wave",
            "--crf",
            "0",
            "--temporal",
            "--temporal-weight",
            "0.6",
            "--batch-size",
            "2",
        ],
        capsys,
    )
    assert status == 0, err
    assert [c[0] for c in calls] == [2, 2, 1]  # the network still gets batches
    plain, temporal = decoded(tmp_path / "plain.mp4"), decoded(tmp_path / "temporal.mp4")
    assert plain.shape == temporal.shape == (5, 48, 64, 3)
    assert np.abs(temporal[0] - plain[0]).max() <= 1 < np.abs(temporal[1:] - plain[1:]).mean()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--temporal", "--temporal-weight", "1"], "--temporal-weight 1.0 must be between 0 and 1"),
        (["--temporal", "--temporal-weight", "0"], "--temporal-weight 0.0 must be between 0 and 1"),
    ],
)
def test_bad_weight_is_a_usage_error(models, tmp_path, capsys, options, message) -> None:
    noisy_pan(tmp_path / "pan.mp4", frames=2)
    status, err = run(["--model", models["onnx"], tmp_path / "pan.mp4", "-o", tmp_path / "out.mp4", *options], capsys)
    assert status == 2 and message in err
    assert not (tmp_path / "out.mp4").exists()


def test_missing_opencv_is_a_usage_error_with_the_install_command(models, tmp_path, capsys, monkeypatch) -> None:
    noisy_pan(tmp_path / "pan.mp4", frames=2)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    status, err = run(
        ["--model", models["onnx"], tmp_path / "pan.mp4", "-o", tmp_path / "out.mp4", "--temporal"], capsys
    )
    assert status == 2 and "pip install opencv-python-headless" in err
    assert len(err.strip().splitlines()) == 1
    status, err = run(["--model", models["onnx"], tmp_path / "pan.mp4", "-o", tmp_path / "out.mp4"], capsys)
    assert status == 0, err  # without --temporal OpenCV is not needed
