"""Every format of a one-style checkpoint (float32, fp16 and uint8 ONNX, TorchScript, Triton), each checked against the
eager network."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_support import (
    STYLE,
    check_triton_repository,
    eager,
    export_all,
    save_checkpoint,
)
from helpers import small_network

from nst_fast import __version__
from nst_fast.export import ExportError, export_checkpoint
from nst_fast.export.triton import TritonOptions


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_all(tmp_path_factory.mktemp("run"), small_network(), TritonOptions())


def test_writes_all_formats_beside_the_run(exported) -> None:
    run, _, result, lines = exported
    assert result.out_dir == run / "export"
    names = sorted(p.name for p in (run / "export").iterdir())
    assert names == [
        "starry.fp16.onnx",
        "starry.fp16.tiles.zip",
        "starry.onnx",
        "starry.tiles.zip",
        "starry.torchscript.pt",
        "starry.uint8.onnx",
        "starry.uint8.tiles.zip",
        "triton",
    ]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "export"]  # no temporary folder left
    # Every file was verified, and the max difference printed (for tiles: tiled against the whole image).
    for name in names[:-1]:
        verified = f"{name}: OK, " + ("8 passes" if name.endswith(".tiles.zip") else "max |diff|")
        assert any(line.strip().startswith(verified) for line in lines), lines
    assert any(line.strip().startswith("triton/starry/: config.pbtxt parses") for line in lines), lines


def test_onnx_file_is_self_contained_and_described(exported) -> None:
    run, _, _, _ = exported
    model = onnx.load(str(run / "export" / "starry.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    (image,), (stylized,) = model.graph.input, model.graph.output
    assert image.name == "image" and stylized.name == "stylized"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    assert [d.dim_param or d.dim_value for d in stylized.type.tensor_type.shape.dim] == dims
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["nst_fast.style_name"] == "starry"
    assert meta["nst_fast.style_image"] == STYLE["image"]
    assert meta["nst_fast.training_steps"] == "7"
    assert meta["nst_fast.version"] == __version__
    assert "float32 [N, 3, H, W] RGB in [0, 1]" in meta["nst_fast.input"]
    assert json.loads(meta["nst_fast.transformer"]) == {"base_channels": 8, "residual_blocks": 1}


@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 3, 181, 243), (3, 3, 5, 9), (1, 3, 64, 64)])
def test_onnx_matches_eager_at_dynamic_shapes(exported, shape) -> None:
    run, network, _, _ = exported
    session = ort.InferenceSession(str(run / "export" / "starry.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    (y,) = session.run(["stylized"], {"image": x})
    assert y.shape == shape and y.dtype == np.float32
    np.testing.assert_allclose(y, eager(network, x), atol=1e-4, rtol=0)


def test_fp16_onnx_keeps_float32_io_and_is_close(exported) -> None:
    run, network, _, _ = exported
    path = run / "export" / "starry.fp16.onnx"
    model = onnx.load(str(path))
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer) >= 4  # conv weights
    assert {p.key: p.value for p in model.metadata_props}["nst_fast.precision"] == "fp16"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((2, 3, 45, 67), dtype=np.float32)
    (y,) = session.run(None, {"image": x})
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - eager(network, x)).max() < 1e-2


def test_uint8_onnx_takes_and_returns_images(exported) -> None:
    run, network, _, _ = exported
    session = ort.InferenceSession(str(run / "export" / "starry.uint8.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    image = np.random.default_rng(2).integers(0, 256, (47, 33, 3), dtype=np.uint8)
    (y,) = session.run(None, {"image": image})
    assert y.dtype == np.uint8 and y.shape == image.shape
    reference = eager(network, image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0].transpose(1, 2, 0)
    expected = np.clip(np.round(reference * 255.0), 0, 255)
    assert np.abs(y.astype(int) - expected).max() <= 1


def test_torchscript_runs_without_the_package(exported, tmp_path) -> None:
    # Load the TorchScript file in a fresh interpreter in which `import nst_fast` fails.
    run, network, _, _ = exported
    inputs = {
        "odd": np.random.default_rng(3).random((1, 3, 181, 243), dtype=np.float32),
        "batch": np.random.default_rng(4).random((2, 3, 33, 47), dtype=np.float32),
    }
    for name, x in inputs.items():
        np.save(tmp_path / f"{name}.npy", x)
    script = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nst_fast":
            raise ImportError("nst_fast is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np, torch
extra = {{"nst_fast.json": ""}}
model = torch.jit.load({str(run / "export" / "starry.torchscript.pt")!r}, _extra_files=extra)
assert b"nst_fast.style_name" in extra["nst_fast.json"]
for name in ("odd", "batch"):
    x = torch.from_numpy(np.load({str(tmp_path)!r} + f"/{{name}}.npy"))
    with torch.no_grad():
        np.save({str(tmp_path)!r} + f"/{{name}}.out.npy", model(x).numpy())
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name, x in inputs.items():
        y = np.load(tmp_path / f"{name}.out.npy")
        assert y.shape == x.shape
        np.testing.assert_allclose(y, eager(network, x), atol=1e-5, rtol=0)


def test_torchscript_file_keeps_the_size_check(exported) -> None:
    """The traced file works at any size >= 5 and refuses smaller inputs with the eager network's message."""
    run, network, _, _ = exported
    model = torch.jit.load(str(run / "export" / "starry.torchscript.pt"))
    for shape in [(1, 3, 5, 5), (2, 3, 7, 13), (1, 3, 66, 94), (1, 3, 101, 6)]:
        x = torch.rand(shape)
        with torch.no_grad():
            np.testing.assert_allclose(model(x).numpy(), eager(network, x.numpy()), atol=1e-5, rtol=0)
    for shape in [(1, 3, 4, 9), (1, 3, 9, 3), (1, 3, 1, 1)]:
        with pytest.raises(Exception, match=r"TransformerNet expects RGB images \[B, 3, H, W\] with H, W >= 5"):
            model(torch.rand(shape))


def test_missing_painting_gives_null(exported) -> None:
    run, _, result, lines = exported
    meta = {p.key: p.value for p in onnx.load(str(result.file("onnx"))).metadata_props}
    assert json.loads(meta["nst_fast.style_thumbnails"]) == [None]
    assert any(f"painting {STYLE['image']!r} not found here" in line for line in lines), lines


def test_checkpoints_from_before_multi_style_still_export(tmp_path) -> None:
    # Their metadata has "style" only (no "styles", no "identity"): one style, one input.
    network = small_network(4)
    ckpt = save_checkpoint(tmp_path / "old" / "last.ckpt", network)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["nst_fast"] = {key: checkpoint["nst_fast"][key] for key in ("format", "version", "transformer", "style")}
    torch.save(checkpoint, ckpt)
    result = export_checkpoint(ckpt, torchscript=False, log=lambda _: None)
    session = ort.InferenceSession(str(result.file("onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["nst_fast.styles"]) == ["starry"] and meta["nst_fast.identity"] == "false"
    x = np.random.default_rng(7).random((1, 3, 20, 24), dtype=np.float32)
    np.testing.assert_allclose(session.run(None, {"image": x})[0], eager(network, x), atol=1e-4, rtol=0)


def test_export_fails_when_the_written_config_does_not_match(exported, tmp_path, monkeypatch) -> None:
    from nst_fast.export import pipeline
    from nst_fast.export import triton as triton_repo

    real = triton_repo.triton_config_text
    monkeypatch.setattr(
        triton_repo,
        "triton_config_text",
        lambda *args: real(*args).replace(
            '"stylized" data_type: TYPE_FP32 dims: [ 3, -1, -1 ]', '"stylized" data_type: TYPE_FP32 dims: [ 3, -1, 64 ]'
        ),
    )
    _, _, result, _ = exported
    with pytest.raises(
        ExportError,
        match=r"triton/starry/config.pbtxt: output 'stylized' dims \[3, -1, 64\] are not "
        r"the ONNX graph's \[3, -1, -1\].*export.triton.enabled=false",
    ):
        pipeline.write_triton(result.file("onnx"), tmp_path, "starry", TritonOptions(), result.info, print)


def test_triton_model_names_are_url_friendly() -> None:
    from nst_fast.export.triton import triton_model_name

    assert triton_model_name("starry") == "starry"
    assert triton_model_name("starry+wave+udnie") == "starry_wave_udnie"
    assert triton_model_name("my style (v2)") == "my_style__v2_"


def test_triton_repository_matches_the_onnx_graph(exported) -> None:
    check_triton_repository(exported, "starry")


def _float_graph(*nodes, weights: bool = False) -> onnx.ModelProto:
    """A hand-made float32 model with the exported interface: ``image [batch, 3, height, width]`` (and
    ``style_weights [batch, 2]``) in, ``stylized`` out, computed by ``nodes``."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])]
    if weights:
        inputs.append(helper.make_tensor_value_info("style_weights", TensorProto.FLOAT, ["batch", 2]))
    output = helper.make_tensor_value_info("stylized", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    graph = helper.make_graph(list(nodes), "net", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_uint8_wrapping_of_an_identity_graph_gives_the_image_back(tmp_path) -> None:
    """The uint8 file's conversions alone (the float graph is the identity): every 8-bit value comes back exactly,
    in HWC; the style weights vector reaches the graph as one row."""
    from onnx import helper

    from nst_fast.export.writers import _wrap_in_uint8_io

    model = _float_graph(
        helper.make_node("ReduceSum", ["style_weights"], ["total"], keepdims=1),
        helper.make_node("Unsqueeze", ["total", "axes"], ["total4"]),
        helper.make_node("Mul", ["image", "total4"], ["stylized"]),
        weights=True,
    )
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"))
    _wrap_in_uint8_io(model.graph)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image, weights = session.get_inputs()
    assert (image.type, image.shape, weights.shape) == ("tensor(uint8)", ["height", "width", 3], [2])
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    (same,) = session.run(None, {"image": levels, "style_weights": np.array([0.25, 0.75], dtype=np.float32)})
    assert same.dtype == np.uint8 and np.array_equal(same, levels)
    (half,) = session.run(None, {"image": levels, "style_weights": np.array([0.25, 0.25], dtype=np.float32)})
    np.testing.assert_array_equal(half, np.round(levels / 2.0).astype(np.uint8))  # halves round to even, as torch


def test_uint8_wrapping_refuses_nested_graphs() -> None:
    from onnx import TensorProto, helper

    from nst_fast.export.writers import _wrap_in_uint8_io

    branch = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["inner"])],
        "branch",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)],
    )
    model = _float_graph(
        helper.make_node("Constant", [], ["condition"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["condition"], ["stylized"], then_branch=branch, else_branch=branch),
    )
    with pytest.raises(ValueError, match=r"nested graphs \(If\)"):
        _wrap_in_uint8_io(model.graph)
