"""int8 export: calibration, the quantised graph, its verification against the float32 model, and its consumers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_support import (
    MULTI_STYLES,
    eager,
    eager_weighted,
    multi_network,
    psnr,
    save_checkpoint,
)
from helpers import small_network
from PIL import Image

from nst_fast.export import ExportError, export_checkpoint
from nst_fast.models import TransformerNet


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory) -> Path:
    """Three small smooth 'photos' (gradients, blobs and noise): int8 calibration and verification input."""

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:72, 0:96] / 72.0
    for index in range(3):
        phase = rng.uniform(0, 6, 3)
        image = np.stack([0.5 + 0.4 * np.sin(3 * rows + 2 * columns + p) for p in phase], axis=2)
        image += rng.normal(0, 0.05, image.shape)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"photo{index}.png")
    return folder


def export_int8(folder: Path, network: TransformerNet, photos: Path, min_psnr: float, **checkpoint: object):
    from nst_fast.export import Int8Settings

    ckpt = save_checkpoint(folder / "checkpoints" / "last.ckpt", network, **checkpoint)
    lines: list[str] = []
    settings = Int8Settings(calibration=str(photos), size=48, min_psnr=min_psnr)
    result = export_checkpoint(ckpt, torchscript=False, int8=True, int8_settings=settings, log=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def exported_int8(tmp_path_factory, calibration_folder):
    return export_int8(tmp_path_factory.mktemp("run"), small_network(), calibration_folder, min_psnr=15.0)


def test_int8_model_is_quantised_and_described_like_the_others(exported_int8) -> None:
    result, lines = exported_int8
    names = sorted(p.name for p in result.out_dir.iterdir())
    assert names == ["starry.int8.onnx", "starry.int8.tiles.zip", "starry.onnx", "starry.tiles.zip"]
    quantised, float_model = onnx.load(str(result.file("onnx_int8"))), onnx.load(str(result.file("onnx")))
    ops = [node.op_type for node in quantised.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    int8_weights = [t for t in quantised.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 6  # the 8 convs of TransformerNet(8, 1) but the first two
    meta = {p.key: p.value for p in quantised.metadata_props}
    float_meta = {p.key: p.value for p in float_model.metadata_props}
    assert meta.pop("nst_fast.precision") == "int8" and float_meta.pop("nst_fast.precision") == "fp32"
    assert meta == float_meta
    line = next(line for line in lines if "starry.int8.onnx: OK" in line)
    assert "PSNR to starry.onnx >=" in line and "181x243" in line


def test_int8_model_runs_at_any_size_close_to_the_float_model(exported_int8) -> None:
    result, _ = exported_int8
    x = np.random.default_rng(3).random((2, 3, 37, 51), dtype=np.float32) * 0.5 + 0.25
    got = ort.InferenceSession(str(result.file("onnx_int8")), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]
    want = ort.InferenceSession(str(result.file("onnx")), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert got.shape == want.shape and got.dtype == np.float32
    assert psnr(got, want) > 15.0


def test_int8_verification_below_the_threshold_is_an_actionable_error(tmp_path, calibration_folder) -> None:
    with pytest.raises(
        ExportError,
        match=r"starry\.int8\.onnx: int8 verification failed: PSNR to the float32 model "
        r"[\d.]+ dB < export\.int8\.min_psnr 200 dB .*export\.int8\.calibration=FOLDER.*accept a lower PSNR \(export\.int8\.min_psnr",
    ):
        export_int8(tmp_path / "run", small_network(), calibration_folder, min_psnr=200.0)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]  # nothing left behind


def test_int8_calibration_without_photos_is_a_usage_error(tmp_path) -> None:
    from nst_fast.export import ExportUsageError

    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ExportUsageError, match=r"no photos for int8 calibration in .*empty: set export\.int8\.calibration"
    ):
        export_int8(tmp_path / "run", small_network(), tmp_path / "empty", min_psnr=15.0)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]  # refused before exporting


def test_int8_multi_style_model_takes_float_style_weights(tmp_path, calibration_folder) -> None:
    network = multi_network()
    result, _ = export_int8(
        tmp_path / "run", network, calibration_folder, min_psnr=15.0, style=MULTI_STYLES, identity=True
    )
    session = ort.InferenceSession(str(result.file("onnx_int8")), providers=["CPUExecutionProvider"])
    weights_input = session.get_inputs()[1]
    assert weights_input.name == "style_weights" and weights_input.type == "tensor(float)"
    x = np.random.default_rng(4).random((2, 3, 40, 44), dtype=np.float32)
    weights = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=np.float32)
    got = session.run(None, {"image": x, "style_weights": weights})[0]
    want = eager_weighted(network, x, weights)
    assert psnr(got, want) > 15.0
    # Each image its own weights: the second row is not the first one's style.
    swapped = session.run(None, {"image": x, "style_weights": weights[::-1].copy()})[0]
    assert np.abs(swapped - got).max() > 0.05


def test_nst_stylize_runs_the_int8_model(exported_int8, tmp_path) -> None:

    from nst_fast.stylize import main
    from nst_fast.stylize.models import load_model

    result, _ = exported_int8
    model = load_model(result.file("onnx_int8"))
    assert "int8" in model.description and model.metadata["nst_fast.precision"] == "int8"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    assert (
        main(
            [
                "--model",
                str(result.file("onnx_int8")),
                str(tmp_path / "in.png"),
                "-o",
                str(tmp_path / "out.png"),
                "--quiet",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "out.png").size == (47, 33)


def test_light_network_exports_in_float_and_int8(tmp_path, calibration_folder) -> None:
    torch.manual_seed(2)
    network = TransformerNet(8, 1, separable=True).eval()
    result, _ = export_int8(tmp_path / "run", network, calibration_folder, min_psnr=15.0)
    x = np.random.default_rng(5).random((1, 3, 45, 38), dtype=np.float32)
    session = ort.InferenceSession(str(result.file("onnx")), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x})[0], eager(network, x), atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(result.file("onnx"))).metadata_props}
    assert json.loads(meta["nst_fast.transformer"])["separable"] is True
    quantised = ort.InferenceSession(str(result.file("onnx_int8")), providers=["CPUExecutionProvider"])
    assert psnr(quantised.run(None, {"image": x})[0], eager(network, x)) > 15.0
