"""int8 quantisation helpers (nst_fast.export.quantize): the float-exact graph rewrites and the percentile ranges,
checked against ONNX Runtime runs of the models before and after."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import small_network
from onnx import TensorProto, helper

from nst_fast.checkpoint import CheckpointInfo
from nst_fast.export import export_onnx
from nst_fast.export.calibration import calibration_feeds, percentile_ranges
from nst_fast.export.qdq_rewrites import (
    equalise_before_norms,
    move_quantisation_across_data_movement,
    normalised_convolutions,
)


def run(model: onnx.ModelProto, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"image": x})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> onnx.ModelProto:
    """A small network's float32 ONNX export with its constant subgraphs folded (as quantisation sees it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = tmp_path_factory.mktemp("quantize")
    network = small_network(1)
    export_onnx(network, folder / "net.onnx", CheckpointInfo(transformer=dict(network.config)))
    quant_pre_process(str(folder / "net.onnx"), str(folder / "prepared.onnx"), skip_symbolic_shape=True)
    return onnx.load(str(folder / "prepared.onnx"))


def photos(count: int, seed: int, shape=(1, 3, 40, 48)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for _ in range(count)]


def centred_spreads(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """Per norm channel, max |value - channel mean| of each conv output that feeds an instance norm."""
    targets = normalised_convolutions(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node, _, _ in targets:
        probe.graph.output.append(helper.make_empty_tensor_value_info(node.output[0]))
    values = run(probe, x, [node.output[0] for node, _, _ in targets])
    spreads = []
    for (_, group, _), value in zip(targets, values, strict=False):
        grouped = value.reshape(value.shape[1] // group, -1)
        spreads.append(np.abs(grouped - grouped.mean(axis=1, keepdims=True)).max(axis=1))
    return spreads


def test_equalisation_keeps_the_function_and_levels_the_channels(prepared) -> None:
    calibration = photos(1, 0)
    before = onnx.ModelProto()
    before.CopyFrom(prepared)
    # Every conv but the last (to RGB, no norm after it) feeds a norm; the decoder's through a DepthToSpace.
    targets = normalised_convolutions(before)
    assert len(targets) == 7 and sorted({group for _, group, _ in targets}) == [1, 4]
    assert [eps for _, _, eps in targets] == pytest.approx([1e-5] * 7)
    assert max(spread.max() / spread.min() for spread in centred_spreads(before, calibration[0])) > 1.5
    after, factors = equalise_before_norms(
        onnx.load_from_string(before.SerializeToString()), calibration_feeds(calibration, [None])
    )
    assert len(factors) == 7 and min(factors.values()) >= 1.0
    for spread in centred_spreads(after, calibration[0]):
        np.testing.assert_allclose(spread, spread.max(), rtol=1e-4)  # all channels span the same range now
    x = photos(1, 9, (2, 3, 37, 53))[0]
    # The network is unchanged, up to the norms' eps (1e-5, now relatively smaller) and float rounding.
    np.testing.assert_allclose(run(after, x)[0], run(before, x)[0], atol=1e-4)


def test_moving_quantisation_across_data_movement_is_exact(prepared, tmp_path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    onnx.save(prepared, str(tmp_path / "float.onnx"))
    feeds = iter(calibration_feeds(photos(2, 1), [None]))

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    quantize_static(
        str(tmp_path / "float.onnx"),
        str(tmp_path / "qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    qdq = onnx.load(str(tmp_path / "qdq.onnx"))
    moved = onnx.load(str(tmp_path / "qdq.onnx"))
    moved_dq, moved_q, dropped = move_quantisation_across_data_movement(moved)
    assert moved_dq >= 2 and moved_q >= 6 and dropped >= 3
    ops = [node.op_type for node in moved.graph.node]
    assert ops.count("Relu") == [node.op_type for node in qdq.graph.node].count("Relu") - dropped
    # DepthToSpace now reads a QuantizeLinear-side (uint8) tensor: its input comes straight from a quantised conv.
    producers = {out: node for node in moved.graph.node for out in node.output}
    assert any(
        producers[n.input[0]].op_type == "QuantizeLinear" for n in moved.graph.node if n.op_type == "DepthToSpace"
    )
    x = photos(1, 5, (1, 3, 45, 39))[0]
    np.testing.assert_allclose(run(moved, x)[0], run(qdq, x)[0], atol=1e-6)


def test_percentile_ranges_clip_the_largest_values_over_all_feeds() -> None:
    node = helper.make_node("Identity", ["image"], ["copy"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("copy", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    values = np.random.default_rng(0).permutation(100_000).astype(np.float32) - 10.0  # -10 .. 99989
    feeds = [{"image": values[:50_000][None]}, {"image": values[50_000:][None]}]
    # The 99th percentile of |x| over both feeds: 1000 values lie beyond it, the 1000th largest is 98990.
    assert percentile_ranges(model, feeds, ["copy"], percentile=99.0) == {"copy": (-10.0, 98990.0)}
    # 99.999: one value beyond, so the threshold is the largest value; the lower end stays the extreme seen.
    assert percentile_ranges(model, feeds, ["copy"], percentile=99.999) == {"copy": (-10.0, 99989.0)}
