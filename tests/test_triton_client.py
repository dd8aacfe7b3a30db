"""examples/triton_client.py: the request it builds, without a Triton server (none can run here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import load_example_client

from nst_fast.export.triton import TensorSpec, TritonOptions, triton_config_text

client = load_example_client()


def test_request_holds_the_photo_as_float_nchw_and_the_weights() -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    weights = np.array([[0.0, 0.7, 0.0]], dtype=np.float32)
    photo, style = client.request_inputs(image, weights)
    assert (photo.name(), photo.datatype(), photo.shape()) == ("image", "FP32", [1, 3, 7, 5])
    assert (style.name(), style.datatype(), style.shape()) == ("style_weights", "FP32", [1, 3])
    sent = np.frombuffer(photo._get_binary_data(), dtype=np.float32).reshape(1, 3, 7, 5)
    for channel in range(3):  # channel c of pixel (y, x) is image[y, x, c] / 255
        np.testing.assert_allclose(sent[0, channel], image[:, :, channel] / 255.0, rtol=0, atol=1e-7)
    assert np.frombuffer(style._get_binary_data(), dtype=np.float32).tolist() == [0.0, np.float32(0.7), 0.0]


def test_single_style_request_has_the_image_only() -> None:
    (photo,) = client.request_inputs(np.zeros((5, 6, 3), dtype=np.uint8), None)
    assert photo.name() == "image" and photo.shape() == [1, 3, 5, 6]


def test_style_weights_pick_a_style_and_dose_it() -> None:
    styles = ["starry", "wave", "udnie"]
    assert client.style_weights(styles, "udnie").tolist() == [[0, 0, 1]]
    assert client.style_weights(styles, "wave", 0.25).tolist() == [[0, 0.25, 0]]
    assert client.style_weights(styles, None).tolist() == [[1, 0, 0]]
    with pytest.raises(ValueError, match="'scream' is not one of the model's: starry, wave, udnie"):
        client.style_weights(styles, "scream")


@pytest.mark.parametrize(
    "styles, identity, inputs",
    [
        (["starry"], False, [TensorSpec("image", "TYPE_FP32", (-1, 3, -1, -1))]),
        (
            ["starry", "wave"],
            True,
            [TensorSpec("image", "TYPE_FP32", (-1, 3, -1, -1)), TensorSpec("style_weights", "TYPE_FP32", (-1, 2))],
        ),
    ],
)
def test_styles_are_read_from_the_written_config(styles, identity, inputs) -> None:
    # The config as Triton's HTTP API returns it: the parsed config.pbtxt as JSON with proto field names.
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    outputs = [TensorSpec("stylized", "TYPE_FP32", (-1, 3, -1, -1))]
    text = triton_config_text("m", inputs, outputs, TritonOptions(), styles, identity)
    config = json_format.MessageToDict(
        text_format.Parse(text, model_config_pb2.ModelConfig()), preserving_proto_field_name=True
    )
    assert client.model_styles(json.loads(json.dumps(config))) == (styles, len(inputs) == 2)
