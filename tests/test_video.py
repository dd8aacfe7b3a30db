"""Video outputs (nst_fast.stylize.video): sizes and pixel formats every player decodes, checked by decoding the
written files with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from image_factory import write_video
from test_stylize import expected, run


def blocks(height: int, width: int, seed: int) -> np.ndarray:
    """Mid-range colour blocks of 4x4 pixels: sharp edges, so a crop and a rescale give different frames."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 196, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:height, :width]


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ [0.299, 0.587, 0.114]


@pytest.mark.parametrize(
    ("suffix", "size", "written", "codec", "audio"),
    [
        (".mp4", (64, 48), (64, 48), "h264", "aac"),
        (".mp4", (65, 49), (64, 48), "h264", "aac"),  # H.264 4:2:0 needs even sides: last column and row dropped
        (".mkv", (64, 49), (64, 48), "h264", "aac"),
        (".mov", (65, 48), (64, 48), "h264", "aac"),
        (".webm", (65, 49), (65, 49), "vp9", "opus"),  # VP9 codes odd sides in 4:2:0
        (".avi", (65, 49), (65, 49), "mpeg4", "aac"),
    ],
)
def test_outputs_are_yuv420p_at_the_documented_size(
    models, tmp_path, capsys, suffix, size, written, codec, audio
) -> None:
    width, height = size
    write_video(tmp_path / "clip.mkv", [blocks(height, width, seed) for seed in range(5)])
    status, err = run(["--model", models["onnx"], tmp_path / "clip.mkv", "-o", tmp_path / f"out{suffix}"], capsys)
    assert status == 0, err
    with av.open(str(tmp_path / f"out{suffix}")) as container:
        stream = container.streams.video[0].codec_context
        assert (stream.name, stream.pix_fmt, stream.width, stream.height) == (codec, "yuv420p", *written)
        if codec == "h264":
            assert stream.profile in ("High", "Main", "Constrained Baseline"), stream.profile
        assert [s.codec_context.name for s in container.streams.audio] == [audio]
        assert sum(1 for packet in container.demux(audio=0) if packet.size) > 0
    frames = decoded(tmp_path / f"out{suffix}")
    assert len(frames) == 5 and frames[0].shape == (written[1], written[0], 3)
    # Each output frame is the network on the top-left written-size part of its own input frame (not on a
    # rescaled frame): luminance against the eager network, lossy both ways (VP9 at CRF 31 and
    # MPEG-4 at its default bit rate more so).
    inputs = [frame[: written[1], : written[0]] for frame in decoded(tmp_path / "clip.mkv")]
    wanted = [luma(expected(models["network"], source)) for source in inputs]
    errors = np.array([[np.abs(luma(got) - want).mean() for want in wanted] for got in frames])
    assert (np.diag(errors) < (4 if codec == "h264" else 9)).all(), errors.round(1)
    assert (errors.argmin(axis=1) == np.arange(5)).all(), errors.round(1)


def test_odd_sizes_below_the_network_minimum_after_cropping_are_refused(models, tmp_path, capsys) -> None:
    write_video(tmp_path / "clip.mkv", [blocks(5, 8, seed) for seed in range(2)], audio=False)
    status, err = run(["--model", models["onnx"], tmp_path / "clip.mkv", "-o", tmp_path / "out.mp4"], capsys)
    assert status == 1 and "8x4 is too small" in err and "cropped to even sides" in err
    assert not (tmp_path / "out.mp4").exists()
    status, err = run(["--model", models["onnx"], tmp_path / "clip.mkv", "-o", tmp_path / "out.webm"], capsys)
    assert status == 0, err
    assert decoded(tmp_path / "out.webm")[0].shape == (5, 8, 3)
