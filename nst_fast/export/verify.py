"""Verification: every exported file is run before it is kept and compared with the eager network of the
checkpoint (ONNX Runtime's CPU provider for ONNX, ``torch.jit.load`` for TorchScript), at an odd size and at batch
2, with every style case of multi-condition networks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nst_fast.checkpoint import CheckpointInfo
from nst_fast.conventions import (
    EXPORT_FORMAT,
    INPUT_NAME,
    META_FORMAT,
    META_LAYOUT,
    OUTPUT_NAME,
    TORCHSCRIPT_META_FILE,
    WEIGHTS_NAME,
    metadata_conditions,
)
from nst_fast.export.results import VERIFY_SHAPES, VERIFY_SHAPES_UINT8, ExportError
from nst_fast.interface import exported_interface, info_conditions
from nst_fast.models.transformer import TransformerNet

#: A model as verification runs it: ``(image, style_weights or None) -> output``.
Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def eager_runner(network: TransformerNet, info: CheckpointInfo) -> Runner:
    """The reference: the eager float32 network behind the exported interface."""
    module = exported_interface(network, info)

    def run(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            inputs = [torch.from_numpy(x)] + ([] if weights is None else [torch.from_numpy(weights)])
            return module(*inputs).numpy()

    return run


def verification_weights(info: CheckpointInfo) -> list[np.ndarray | None]:
    """Style-weight vectors ``[S]`` the files are checked with: each style one-hot, a blend of the first two
    (and of all when there is no identity), and with the identity half strength and zero strength. ``[None]``
    for one-condition networks, which take no weights."""
    count = len(info.styles)
    if info_conditions(info) == 1:
        return [None]
    cases = [np.eye(count, dtype=np.float32)[index] for index in range(count)]
    if count >= 2:
        cases.append(np.array([0.6, 0.4] + [0.0] * (count - 2), dtype=np.float32))
    if info.identity:
        cases.append(np.array([0.5] + [0.0] * (count - 1), dtype=np.float32))
        cases.append(np.zeros(count, dtype=np.float32))
    elif count >= 3:
        cases.append(np.full(count, 1.0 / count, dtype=np.float32))
    return cases


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_onnx_file(path: Path, opset: int, layout: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"{path.name}: {len(external)} weights stored as external data; expected one self-contained file"
        )
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < opset:
        raise ExportError(f"{path.name}: opset {version} < requested {opset}")
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_FORMAT) != EXPORT_FORMAT or meta.get(META_LAYOUT) != layout:
        raise ExportError(f"{path.name}: nst-fast metadata missing from the written file")
    inputs = [INPUT_NAME, WEIGHTS_NAME] if metadata_conditions(meta) > 1 else [INPUT_NAME]
    if [i.name for i in model.graph.input] != inputs or [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        raise ExportError(f"{path.name}: expected inputs {inputs} and output {OUTPUT_NAME!r}")


def _compare(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], tolerance: float) -> float:
    worst = 0.0
    for got, want in pairs:
        if got.shape != want.shape:
            raise ExportError(f"{name}: output shape {got.shape} != expected {want.shape}")
        if not np.isfinite(got.astype(np.float64)).all():
            raise ExportError(f"{name}: non-finite output at input size {want.shape}")
        diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
        if diff > tolerance:
            raise ExportError(
                f"{name}: verification failed: max |diff| to the eager network {diff:.3g} > tolerance {tolerance:g} "
                f"at size {'x'.join(map(str, want.shape))}"
            )
        worst = max(worst, diff)
    return worst


def _batch_weights(cases: list[np.ndarray | None], first: int, batch: int) -> np.ndarray | None:
    """Rows ``first, first + 1, ...`` of the cases (cyclically): each image of a batch gets its own weights."""
    if cases[0] is None:
        return None
    return np.stack([cases[(first + row) % len(cases)] for row in range(batch)])


def verify_nchw(run: Runner, reference: Runner, cases: list[np.ndarray | None], name: str, tolerance: float) -> float:
    """Compare ``run`` with ``reference`` on random images of ``VERIFY_SHAPES``, once per weight case."""
    rng = np.random.default_rng(0)
    pairs = []
    for shape in VERIFY_SHAPES:
        x = rng.random(shape, dtype=np.float32)
        for first in range(len(cases)):
            weights = _batch_weights(cases, first, shape[0])
            pairs.append((run(x, weights), reference(x, weights)))
    return _compare(name, pairs, tolerance)


def verify_uint8(run: Runner, reference: Runner, cases: list[np.ndarray | None], name: str, tolerance: float) -> float:
    """The same for the uint8 HWC model (one image, weights ``[S]``), against the rounded reference."""
    rng = np.random.default_rng(0)
    pairs = []
    for shape in VERIFY_SHAPES_UINT8:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        for weights in cases:
            batch_weights = None if weights is None else weights[None]
            want = np.clip(np.round(reference(x, batch_weights)[0].transpose(1, 2, 0) * 255.0), 0, 255)
            got = run(image, weights)
            if got.dtype != np.uint8:
                raise ExportError(f"{name}: output dtype {got.dtype}, expected uint8")
            pairs.append((got, want))
    return _compare(name, pairs, tolerance)


def check_onnx(
    path: Path,
    opset: int,
    layout: str,
    reference: Runner,
    cases: list[np.ndarray | None],
    tolerance: float,
    uint8_io: bool = False,
) -> tuple[float, tuple[tuple[int, ...], ...]]:
    """Check an ONNX file's structure (``check_onnx_file``), then its outputs against ``reference`` with ONNX
    Runtime: the worst max |difference| and the shapes tried."""
    check_onnx_file(path, opset, layout)
    session = ort_session(path)

    def run(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        feeds = {INPUT_NAME: x} if weights is None else {INPUT_NAME: x, WEIGHTS_NAME: weights}
        return session.run(None, feeds)[0]

    if uint8_io:
        return verify_uint8(run, reference, cases, path.name, tolerance), VERIFY_SHAPES_UINT8
    return verify_nchw(run, reference, cases, path.name, tolerance), VERIFY_SHAPES


def check_torchscript(
    path: Path, reference: Runner, cases: list[np.ndarray | None], tolerance: float
) -> tuple[float, tuple[tuple[int, ...], ...]]:
    """Load a TorchScript file as a user would (``torch.jit.load``), check its metadata, compare its outputs."""
    extra = {TORCHSCRIPT_META_FILE: ""}
    loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if META_FORMAT not in json.loads(extra[TORCHSCRIPT_META_FILE] or "{}"):
        raise ExportError(f"{path.name}: nst-fast metadata missing from the written file")

    def run(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            inputs = [torch.from_numpy(x)] + ([] if weights is None else [torch.from_numpy(weights)])
            return loaded(*inputs).numpy()

    return verify_nchw(run, reference, cases, path.name, tolerance), VERIFY_SHAPES
