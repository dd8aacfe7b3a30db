"""Shared by the export tests: checkpoints written as training writes them, every format exported, the eager network
to compare with, the multi-style paintings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from helpers import small_network
from PIL import Image

from nst_fast.checkpoint import checkpoint_metadata
from nst_fast.export import export_checkpoint
from nst_fast.export.triton import TritonOptions
from nst_fast.models import TransformerNet

REPO_ROOT = Path(__file__).resolve().parents[2]

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


def decode_jpeg(text: str) -> Image.Image:
    import base64
    import io

    data = base64.b64decode(text, validate=True)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and len(data) < 16_000
    return image.convert("RGB")


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_triton_repository(exported: tuple, model: str) -> None:
    """The Triton repository of an ``export_all`` result: files, config against the ONNX graph, the model's options."""
    from tritonclient.grpc import model_config_pb2 as schema

    run, _, result, _ = exported
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


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "export.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))
