"""Export of a (small) training checkpoint to ONNX / TorchScript, checked against the eager network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import load_example_client, small_network
from PIL import Image

from nst_fast import __version__
from nst_fast.checkpoint import checkpoint_metadata
from nst_fast.export import ExportError, export_checkpoint
from nst_fast.export.triton import TritonOptions
from nst_fast.models import TransformerNet

REPO_ROOT = Path(__file__).resolve().parents[1]
STYLE = {"name": "starry", "image": "/data/styles/starry_night.jpg", "size": 512}


def save_checkpoint(
    path: Path, network: TransformerNet, style: dict | list[dict] = STYLE, step: int = 7, identity: bool = False
) -> Path:
    """A checkpoint as training writes it, without Lightning: transformer weights under ``transformer.`` and
    other entries (loss network, style targets) that export must ignore."""
    state = {f"transformer.{k}": v for k, v in network.state_dict().items()}
    state["loss_network.features.0.weight"] = torch.zeros(4, 3, 3, 3)
    state["style_grams.0"] = torch.ones(4, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = checkpoint_metadata(network, style, identity)
    torch.save({"state_dict": state, "global_step": step, "nst_fast": meta}, path)
    return path


def export_all(folder: Path, network: TransformerNet, triton: TritonOptions, **checkpoint: object):
    """Every format of ``network``'s checkpoint, verified, and a Triton model: the run folder, the network, the
    result, the log."""
    ckpt = save_checkpoint(folder / "checkpoints" / "last.ckpt", network, **checkpoint)
    lines: list[str] = []
    result = export_checkpoint(ckpt, fp16=True, uint8=True, torchscript=True, triton=triton, log=lines.append)
    return folder, network, result, lines


def eager(network: TransformerNet, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(x)).numpy()


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


def test_wrong_graph_is_refused_by_the_parity_check(tmp_path, monkeypatch) -> None:
    """A graph that runs but computes something else (another network's weights) is refused at the default tolerance."""
    import nst_fast.export.pipeline as export_module

    real_export = export_module.export_onnx
    monkeypatch.setattr(export_module, "export_onnx", lambda network, *a, **k: real_export(small_network(1), *a, **k))
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network(0))
    out_dir = tmp_path / "new" / "export"
    refused = r"starry.onnx: verification failed: max \|diff\| to the eager network .* > tolerance 0.001"
    with pytest.raises(ExportError, match=refused):
        export_checkpoint(ckpt, out_dir, torchscript=False, log=lambda _: None)
    assert not (tmp_path / "new").exists()  # neither the out_dir nor the parent it had to create
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


def _raise(error: BaseException):
    def raiser(*args, **kwargs):
        raise error

    return raiser


@pytest.mark.parametrize(
    "target, error, message",
    [
        (
            "onnx.checker.check_model",
            onnx.checker.ValidationError("Nodes in a graph must be topologically sorted"),
            "starry.onnx: verification crashed (ValidationError: Nodes in a graph must be topologically sorted)",
        ),
        (
            "nst_fast.export.verify.ort_session",
            RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad\nmore"),
            "starry.onnx: verification crashed (RuntimeError: [ONNXRuntimeError] : 10 : INVALID_GRAPH : bad)",
        ),
        (
            "nst_fast.export.verify.ort_session",
            OSError(24, "Too many open files"),
            "starry.onnx: verification crashed (OSError: [Errno 24] Too many open files)",
        ),
        (
            "torch.jit.load",
            RuntimeError("PytorchStreamReader failed reading zip archive"),
            "starry.torchscript.pt: verification crashed (RuntimeError: PytorchStreamReader failed reading zip archive)",
        ),
    ],
    ids=["onnx-checker", "onnxruntime", "oserror-in-check", "jit-load"],
)
def test_crashing_verification_is_a_one_line_error(tmp_path, monkeypatch, target, error, message) -> None:
    monkeypatch.setattr(target, _raise(error))
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network())
    with pytest.raises(ExportError) as info:  # TorchScript only where its check is the one that crashes
        export_checkpoint(ckpt, tmp_path / "out", torchscript=target == "torch.jit.load", log=lambda _: None)
    assert str(info.value) == message
    assert "cannot write" not in str(info.value)
    assert not (tmp_path / "out").exists()


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


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is not really a zip file" * 10)
    return path


def _not_ours(path: Path) -> Path:
    torch.save({"state_dict": TransformerNet(8, 1).state_dict(), "global_step": 3}, path)
    return path


def _wrong_architecture(path: Path) -> Path:
    network = TransformerNet(8, 1)
    checkpoint = {
        "state_dict": {f"transformer.{k}": v for k, v in network.state_dict().items()},
        "global_step": 1,
        "nst_fast": checkpoint_metadata(TransformerNet(16, 2), STYLE),
    }
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "does not exist"),
        (_corrupt, "corrupt or not a PyTorch file"),
        (_not_ours, "not an nst-fast checkpoint"),
        (_wrong_architecture, "weights do not fit"),
    ],
    ids=["missing", "corrupt", "not-ours", "wrong-architecture"],
)
def test_bad_checkpoints_are_one_line_errors(tmp_path, make, message) -> None:
    ckpt = make(tmp_path / "model.ckpt")
    with pytest.raises(ExportError) as info:
        export_checkpoint(ckpt, tmp_path / "out", log=lambda _: None)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_an_error(tmp_path) -> None:
    ckpt = save_checkpoint(tmp_path / "last.ckpt", small_network())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot write to"):
        export_checkpoint(ckpt, blocker / "export", log=lambda _: None)
    assert blocker.read_text() == "not a folder"


def test_web_without_the_runtime_files_is_refused_before_exporting(tmp_path, monkeypatch) -> None:
    from nst_fast.export import pipeline
    from nst_fast.export.results import ExportUsageError
    from nst_fast.serve.webfiles import Runtime

    monkeypatch.setattr(pipeline, "Runtime", type("Absent", (), {"load": lambda: Runtime.load(tmp_path / "none")}))
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network())
    with pytest.raises(
        ExportUsageError,
        match=r"export.web=true needs the page's runtime: no onnxruntime-web files "
        r"in .*none: in a checkout, run `python web/build.py`",
    ):
        export_checkpoint(ckpt, tmp_path / "out", web=True, log=lambda _: None)
    assert not (tmp_path / "out").exists()


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "export.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_cli_writes_only_to_out_dir(tmp_path) -> None:
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "step=7.ckpt", small_network())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # Lightning names checkpoints step=N.ckpt: Hydra needs such a value quoted.
    done = _run_cli(
        [
            f"ckpt_path='{os.path.relpath(ckpt, cwd)}'",
            "export.torchscript=false",
            "export.triton.enabled=true",
            "export.triton.instance_kind=KIND_CPU",
            "export.triton.max_batch_size=2",
        ],
        cwd,
    )
    assert done.returncode == 0, done.stderr
    assert "starry.onnx: OK, max |diff|" in done.stdout
    assert list(cwd.iterdir()) == []  # no outputs/, .hydra/ or export.log in the working directory
    export = tmp_path / "run" / "export"
    assert sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.is_file()) == [
        "starry.onnx",
        "starry.tiles.zip",
        "triton/starry/1/model.onnx",
        "triton/starry/config.pbtxt",
    ]
    config = (export / "triton" / "starry" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in config and "max_batch_size: 2\n" in config


@pytest.mark.parametrize(
    "args, message, status",
    [
        ([], "ckpt_path is required", 2),
        (["ckpt_path=/nonexistent/last.ckpt"], "does not exist", 2),
        (["ckpt_path=CKPT", "export.tolerance=-1"], "verification failed: max |diff|", 1),
        (
            ["ckpt_path=CKPT", "export.triton.tensorrt=true"],
            "export.triton.tensorrt=true needs export.triton.enabled=true",
            2,
        ),
        (
            ["ckpt_path=CKPT", "export.triton.enabled=true", "export.triton.instance_kind=KIND_TPU"],
            "export.triton.instance_kind='KIND_TPU' is not one of KIND_GPU, KIND_CPU",
            2,
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message, status) -> None:
    ckpt = save_checkpoint(tmp_path / "ckpt" / "last.ckpt", small_network())
    done = _run_cli([arg.replace("CKPT", str(ckpt)) for arg in args], tmp_path / "ckpt")
    assert done.returncode == status, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", "last.ckpt"]


# --- Multi-style networks: a second input, style_weights -------------------------------------------------------

MULTI_STYLES = [{"name": n, "image": f"/data/styles/{n}.jpg", "size": 256} for n in ("starry", "wave", "udnie")]
#: The paintings of the multi-style export: the bundled starry night as recorded on another machine (found in the
#: package here), a portrait painting of one colour (written by ``paint_multi_styles``), and a missing one.
FOREIGN_BUNDLED = "/elsewhere/lib/python3.11/site-packages/nst_fast/assets/styles/starry_night.jpg"
WAVE_SIZE, WAVE_COLOUR = (90, 240), (20, 90, 200)


def multi_styles(folder: Path) -> list[dict]:
    """The styles of the multi-style export in ``folder``."""
    return [
        {"name": "starry", "image": FOREIGN_BUNDLED, "size": 256},
        {"name": "wave", "image": str(folder / "paintings" / "wave.png"), "size": 256},
        {"name": "udnie", "image": "/data/styles/udnie.jpg", "size": 256},
    ]


def paint_multi_styles(folder: Path) -> list[dict]:
    """``multi_styles(folder)``, with the wave painting written."""
    styles = multi_styles(folder)
    Path(styles[1]["image"]).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", WAVE_SIZE, WAVE_COLOUR).save(styles[1]["image"])
    return styles


def multi_network(seed: int = 0) -> TransformerNet:
    """Three styles and the identity, with distinct random norm rows."""
    return small_network(seed, num_conditions=4)


def eager_weighted(network: TransformerNet, x: np.ndarray, style_weights: np.ndarray) -> np.ndarray:
    """The network with the identity taking 1 - sum of the style weights."""
    w = torch.from_numpy(style_weights)
    condition = torch.cat([w, 1 - w.sum(1, keepdim=True)], 1)
    with torch.no_grad():
        return network(torch.from_numpy(x), condition).numpy()


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


def test_cli_config_mistake_is_a_usage_error(tmp_path) -> None:
    done = _run_cli(["ckpt_path=/nonexistent/last.ckpt", "export.no_such_key=1"], tmp_path)
    assert done.returncode == 2 and "Could not override 'export.no_such_key'" in done.stderr, done.stderr


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


# --- Style thumbnails in the metadata ------------------------------------------------------------------------------


def decode_jpeg(text: str) -> Image.Image:
    import base64
    import io

    data = base64.b64decode(text, validate=True)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and len(data) < 16_000
    return image.convert("RGB")


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


def test_missing_painting_gives_null(exported) -> None:
    run, _, result, lines = exported
    meta = {p.key: p.value for p in onnx.load(str(result.file("onnx"))).metadata_props}
    assert json.loads(meta["nst_fast.style_thumbnails"]) == [None]
    assert any(f"painting {STYLE['image']!r} not found here" in line for line in lines), lines


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


# --- Triton model repository ---------------------------------------------------------------------------------------


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("fixture, model", [("exported", "starry"), ("exported_multi", "starry_wave_udnie")])
def test_triton_repository_matches_the_onnx_graph(fixture, model, request) -> None:
    from tritonclient.grpc import model_config_pb2 as schema

    run, _, result, _ = request.getfixturevalue(fixture)
    repository = run / "export" / "triton"
    assert result.triton == repository / model
    assert sorted(str(p.relative_to(repository)) for p in repository.rglob("*") if p.is_file()) == [
        f"{model}/1/model.onnx",
        f"{model}/config.pbtxt",
    ]
    assert (repository / model / "1" / "model.onnx").read_bytes() == result.file("onnx").read_bytes()
    config = parse_config(repository / model / "config.pbtxt")
    assert (config.name, config.platform) == (model, "onnxruntime_onnx")
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [schema.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_GPU"]
    # Against the graph as ONNX Runtime reads it: names, float32, dims without the (dynamic) batch dim.
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for declared, graph in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in graph]
        for tensor, value in zip(declared, graph, strict=False):
            assert value.type == "tensor(float)" and schema.DataType.Name(tensor.data_type) == "TYPE_FP32"
            assert isinstance(value.shape[0], str)
            assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in value.shape[1:]]
    styles = json.loads(config.parameters["nst_fast.styles"].string_value)
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if model == "starry":
        assert config.max_batch_size == 8 and [t.name for t in config.input] == ["image"]
        assert styles == ["starry"] and not accelerators
        assert list(config.input[0].dims) == [3, -1, -1]
    else:
        assert config.max_batch_size == 4 and styles == ["starry", "wave", "udnie"]
        assert [list(t.dims) for t in config.input] == [[3, -1, -1], [3]]
        (tensorrt,) = accelerators
        assert tensorrt.name == "tensorrt" and dict(tensorrt.parameters) == {
            "precision_mode": "FP16",
            "trt_profile_min_shapes": "image:1x3x5x5,style_weights:1x3",
            "trt_profile_opt_shapes": "image:4x3x256x256,style_weights:4x3",
            "trt_profile_max_shapes": "image:4x3x768x768,style_weights:4x3",
        }


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


def test_triton_needs_tritonclient_and_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    from nst_fast.export import ExportUsageError

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network())
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import fails as if not installed
    with pytest.raises(ExportUsageError, match=r"pip install 'nst-fast\[triton\]'"):
        export_checkpoint(ckpt, triton=TritonOptions(), log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


@pytest.mark.parametrize(
    "options, message",
    [
        (TritonOptions(max_batch_size=0), "export.triton.max_batch_size=0 must be an integer >= 1"),
        (TritonOptions(tensorrt=True, instance_kind="KIND_CPU"), "export.triton.tensorrt=true needs GPU instances"),
        (TritonOptions(trt_opt_side=512, trt_max_side=256), "export.triton.trt_max_side=256 must be an integer >= 512"),
    ],
)
def test_unusable_triton_options_are_refused(options, message) -> None:
    from nst_fast.export.triton import TritonConfigError

    with pytest.raises(TritonConfigError, match=re.escape(message)):
        options.check()


def test_triton_model_names_are_url_friendly() -> None:
    from nst_fast.export.triton import triton_model_name

    assert triton_model_name("starry") == "starry"
    assert triton_model_name("starry+wave+udnie") == "starry_wave_udnie"
    assert triton_model_name("my style (v2)") == "my_style__v2_"


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


# --- int8 ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory) -> Path:
    """Three small smooth 'photos' (gradients, blobs and noise): int8 calibration and verification input."""
    from PIL import Image

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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


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
    from PIL import Image

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
