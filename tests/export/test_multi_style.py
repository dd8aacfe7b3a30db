"""Multi-style networks: a second input (``style_weights``) in every format, verified on blends and doses; the
paintings' thumbnails; their Triton model and its example client."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_support import (
    MULTI_STYLES,
    REPO_ROOT,
    WAVE_COLOUR,
    check_triton_repository,
    decode_jpeg,
    eager_weighted,
    export_all,
    multi_network,
    multi_styles,
    paint_multi_styles,
    parse_config,
    save_checkpoint,
)
from helpers import load_example_client
from PIL import Image

from nst_fast.export import ExportError, export_checkpoint
from nst_fast.export.triton import TritonOptions


@pytest.fixture(scope="module")
def exported_multi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    triton = TritonOptions(max_batch_size=4, tensorrt=True, trt_opt_side=256, trt_max_side=768)
    return export_all(folder, multi_network(), triton, style=paint_multi_styles(folder), identity=True)


def test_multi_style_export_takes_style_weights_per_image(exported_multi) -> None:
    run, network, result, lines = exported_multi
    path = result.file("onnx")
    assert path.name == "starry+wave+udnie.onnx" and len(result.files) == 7  # 4 and the ONNX files' 3 tiles files
    model = onnx.load(str(path))
    image, weights = model.graph.input
    assert (image.name, weights.name) == ("image", "style_weights")
    dims = [d.dim_param or d.dim_value for d in weights.type.tensor_type.shape.dim]
    assert dims[1] == 3 and isinstance(dims[0], str) and dims[0] == image.type.tensor_type.shape.dim[0].dim_param
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["nst_fast.styles"]) == ["starry", "wave", "udnie"] and meta["nst_fast.identity"] == "true"
    assert json.loads(meta["nst_fast.style_images"]) == [s["image"] for s in multi_styles(run)]
    assert "style_weights: float32 [N, S]" in meta["nst_fast.input"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).random((4, 3, 29, 38), dtype=np.float32)
    rows = np.array([[1, 0, 0], [0.3, 0.7, 0], [0, 0, 0.4], [0, 0, 0]], dtype=np.float32)  # style, blend, dose, photo
    (y,) = session.run(None, {"image": x, "style_weights": rows})
    np.testing.assert_allclose(y, eager_weighted(network, x, rows), atol=1e-4, rtol=0)
    assert np.abs(y[0] - y[1]).max() > 1e-3 and np.abs(y[2] - y[3]).max() > 1e-3


def test_multi_style_uint8_fp16_and_torchscript_take_the_weights(exported_multi) -> None:
    _, network, result, _ = exported_multi
    image = np.random.default_rng(6).integers(0, 256, (31, 26, 3), dtype=np.uint8)
    weights = np.array([0.2, 0.0, 0.5], dtype=np.float32)
    session = ort.InferenceSession(str(result.file("onnx_uint8")), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"image": image, "style_weights": weights})
    x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    want = np.clip(np.round(eager_weighted(network, x, weights[None])[0].transpose(1, 2, 0) * 255), 0, 255)
    assert y.dtype == np.uint8 and np.abs(y.astype(int) - want).max() <= 1
    session = ort.InferenceSession(str(result.file("onnx_fp16")), providers=["CPUExecutionProvider"])
    (y16,) = session.run(None, {"image": x, "style_weights": weights[None]})
    assert np.abs(y16 - eager_weighted(network, x, weights[None])).max() < 1e-2
    traced = torch.jit.load(str(result.file("torchscript")))
    with torch.no_grad():
        out = traced(torch.from_numpy(x), torch.from_numpy(weights[None])).numpy()
    np.testing.assert_allclose(out, eager_weighted(network, x, weights[None]), atol=1e-5, rtol=0)


def test_verification_checks_blends_and_strength(tmp_path, monkeypatch) -> None:
    # A graph that is right for one-hot weights but ignores everything else (it snaps to the largest weight)
    # must be refused: the verification runs blends and reduced strengths, not only the styles themselves.
    import nst_fast.export.writers as writers
    from nst_fast.interface import StyleWeightsInput

    ckpt = save_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.ckpt", multi_network(2), MULTI_STYLES, identity=True
    )

    class Snapping(torch.nn.Module):
        def __init__(self, network: torch.nn.Module, identity: bool) -> None:
            super().__init__()
            self.inner = StyleWeightsInput(network, identity)

        def forward(self, image, style_weights):
            full = torch.cat([style_weights, 1 - style_weights.sum(1, keepdim=True)], 1)
            snapped = torch.nn.functional.one_hot(full.argmax(1), full.shape[1]).float()
            return self.inner.network(image, snapped)

    # The written file snaps; the reference (nst_fast.export.verify's own exported_interface) does not.
    monkeypatch.setattr(writers, "exported_interface", lambda network, info: Snapping(network, info.identity))
    with pytest.raises(ExportError, match=r"starry\+wave\+udnie.onnx: verification failed"):
        export_checkpoint(ckpt, torchscript=False, log=lambda _: None)


def test_verification_weights_cover_styles_blends_and_doses() -> None:
    from nst_fast.checkpoint import CheckpointInfo
    from nst_fast.export.verify import verification_weights

    info = CheckpointInfo(transformer={"num_conditions": 4}, styles=MULTI_STYLES, identity=True)
    cases = [tuple(c.tolist()) for c in verification_weights(info)]
    assert {(1, 0, 0), (0, 1, 0), (0, 0, 1)} <= set(cases)
    assert any(0 < max(c) < 1 and abs(sum(c) - 1) < 1e-6 for c in cases), "a blend"
    assert any(0 < sum(c) < 1 for c in cases) and (0, 0, 0) in cases, "reduced and zero strength"
    assert verification_weights(CheckpointInfo(transformer={}, styles=MULTI_STYLES[:1])) == [None]


def test_thumbnails_of_the_paintings_in_style_order(exported_multi) -> None:
    run, _, result, lines = exported_multi
    for kind in ("onnx", "onnx_fp16", "onnx_uint8"):
        meta = {p.key: p.value for p in onnx.load(str(result.file(kind))).metadata_props}
        starry, wave, udnie = json.loads(meta["nst_fast.style_thumbnails"])
    extra = {"nst_fast.json": ""}
    torch.jit.load(str(result.file("torchscript")), _extra_files=extra)
    assert json.loads(json.loads(extra["nst_fast.json"])["nst_fast.style_thumbnails"]) == [starry, wave, udnie]
    # starry: recorded on another machine, found in the package here; longer side 128, the painting's content.
    painting = Image.open(REPO_ROOT / "nst_fast" / "assets" / "styles" / "starry_night.jpg").convert("RGB")
    width, height = painting.size
    expected_size = (128, round(128 * height / width)) if width >= height else (round(128 * width / height), 128)
    thumbnail = decode_jpeg(starry)
    assert thumbnail.size == expected_size
    reference = np.asarray(painting.resize(expected_size, Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(np.asarray(thumbnail, dtype=float) - reference).mean() < 12  # JPEG and resampling differences
    # wave: a 90x240 portrait of one colour -> 48x128 of that colour.
    thumbnail = decode_jpeg(wave)
    assert thumbnail.size == (48, 128)
    assert np.abs(np.asarray(thumbnail, dtype=float).mean(axis=(0, 1)) - WAVE_COLOUR).max() < 3
    # udnie: missing here -> null, with a note; the export went on.
    assert udnie is None
    assert [line for line in lines if "note:" in line] == [
        "  note: style 'udnie': painting '/data/styles/udnie.jpg' not found here; its thumbnail is null"
    ]


def test_unreadable_painting_gives_null_with_a_note(tmp_path) -> None:
    from nst_fast.checkpoint import CheckpointInfo
    from nst_fast.export.metadata import style_thumbnails

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    bundled = {"name": "scream", "image": "styles/the_scream.jpg"}  # relative to the package's assets
    notes: list[str] = []
    starry, scream = style_thumbnails(
        CheckpointInfo({}, [{"name": "starry", "image": str(broken)}, bundled]), notes.append
    )
    assert starry is None and len(notes) == 1 and "style 'starry'" in notes[0] and "not a readable image" in notes[0]
    assert max(decode_jpeg(scream).size) == 128


def test_triton_repository_matches_the_onnx_graph(exported_multi) -> None:
    check_triton_repository(exported_multi, "starry_wave_udnie")


def _multi_config(exported_multi) -> tuple[str, onnx.ModelProto]:
    run, _, _, _ = exported_multi
    folder = run / "export" / "triton" / "starry_wave_udnie"
    return (folder / "config.pbtxt").read_text(), onnx.load(str(folder / "1" / "model.onnx"))


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "dims: [ 3 ]",
            "dims: [ 4 ]",
            "input 'style_weights' dims [4] are not the ONNX graph's [3] (its [-1, 3] without the batch dim)",
        ),
        (
            "dims: [ 3, -1, -1 ] },",
            "dims: [ -1, 3, -1, -1 ] },",
            "input 'image' dims [-1, 3, -1, -1] are not the ONNX graph's [3, -1, -1]",
        ),
        (
            '"style_weights" data_type: TYPE_FP32',
            '"style_weights" data_type: TYPE_UINT8',
            "input 'style_weights' data_type TYPE_UINT8 is not the ONNX graph's TYPE_FP32",
        ),
        ('name: "stylized"', 'name: "output"', "output names ['output'] are not the ONNX graph's ['stylized']"),
        ("max_batch_size: 4", "max_batch_size: 0", "dynamic_batching needs max_batch_size > 0"),
        ('name: "starry_wave_udnie"', 'name: "starry+wave"', "name 'starry+wave' is not the model folder's name"),
        (
            "768x768,style_weights:4x3",
            "768x768,style_weights:4x5",
            "trt_profile_max_shapes gives 'style_weights' the shape [4, 5]",
        ),
        ("image:4x3x768x768", "image:9x3x768x768", "trt_profile_max_shapes gives 'image' batch 9 > max_batch_size 4"),
        ("kind: KIND_GPU", "kind: KIND_CPU", "a GPU execution accelerator is set but every instance group is KIND_CPU"),
        ("max_batch_size: 4", "max_batch_size: four", "does not parse as Triton's ModelConfig"),
        ("dynamic_batching {", "dynamic_batcher {", 'has no field named "dynamic_batcher"'),
    ],
)
def test_wrong_triton_config_is_refused(exported_multi, old, new, message) -> None:
    from nst_fast.export.triton import TritonConfigError, check_triton_config

    text, model = _multi_config(exported_multi)
    check_triton_config(text, model, "starry_wave_udnie")  # the written one passes
    assert text.count(old) == 1
    with pytest.raises(TritonConfigError) as caught:
        check_triton_config(text.replace(old, new), model, "starry_wave_udnie")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_example_client_request_runs_on_the_exported_model(exported_multi, tmp_path) -> None:
    # No Triton server here: a stand-in client answers get_model_config from config.pbtxt (as Triton's HTTP API
    # returns it: JSON with the proto field names) and infer by running 1/model.onnx with the request's tensors.
    from google.protobuf import json_format

    client_module = load_example_client()
    run, network, _, _ = exported_multi
    folder = run / "export" / "triton" / "starry_wave_udnie"
    config = json_format.MessageToDict(parse_config(folder / "config.pbtxt"), preserving_proto_field_name=True)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    class Result:
        def __init__(self, outputs: dict) -> None:
            self.outputs = outputs

        def as_numpy(self, name: str) -> np.ndarray:
            return self.outputs[name]

    class StandIn:
        def get_model_config(self, model: str) -> dict:
            assert model == "starry_wave_udnie"
            return config

        def infer(self, model, inputs, outputs):
            feeds = {}
            for tensor in inputs:
                dtype = {"FP32": np.float32}[tensor.datatype()]
                feeds[tensor.name()] = np.frombuffer(tensor._get_binary_data(), dtype=dtype).reshape(tensor.shape())
            names = [output.name() for output in outputs]
            return Result(dict(zip(names, session.run(names, feeds), strict=False)))

    photo = Image.fromarray(np.random.default_rng(8).integers(0, 256, (21, 34, 3), dtype=np.uint8))
    out = client_module.stylize(StandIn(), "starry_wave_udnie", photo, style="wave", strength=0.5)
    x = np.asarray(photo, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    want = eager_weighted(network, x, np.array([[0.0, 0.5, 0.0]], dtype=np.float32))[0].transpose(1, 2, 0)
    assert out.size == photo.size
    assert np.abs(np.asarray(out, dtype=float) - np.round(want * 255)).max() <= 1
