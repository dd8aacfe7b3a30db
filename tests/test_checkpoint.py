"""Reading nst-fast checkpoints back without Lightning: good files load, bad ones are CheckpointErrors."""

from pathlib import Path

import pytest
import torch

from nst_fast.checkpoint import CheckpointError, checkpoint_metadata, load_transformer
from nst_fast.models import TransformerNet


def save(path: Path, network: TransformerNet, meta: object) -> Path:
    state = {f"transformer.{key}": value for key, value in network.state_dict().items()}
    state["loss.style.gram_relu1_2"] = torch.zeros(1, 64, 64)
    torch.save({"state_dict": state, "global_step": 12, "nst_fast": meta}, path)
    return path


def test_round_trip_rebuilds_the_same_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = TransformerNet(8, 1).eval()
    path = save(
        tmp_path / "a.ckpt", network, checkpoint_metadata(network, {"name": "wave", "image": "w.jpg", "size": 64})
    )
    loaded, info = load_transformer(path)
    x = torch.rand(1, 3, 21, 30)
    torch.testing.assert_close(loaded(x), network(x), rtol=0, atol=0)
    assert info.global_step == 12 and info.style["name"] == "wave" and info.transformer["base_channels"] == 8


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("not a dict", "checkpoint format 'str'"),
        ({"format": 99}, "checkpoint format 99"),
        ({"format": 1, "transformer": {"width": 8}}, "do not fit a TransformerNet"),
        ({"format": 1, "transformer": {"base_channels": 16, "residual_blocks": 1}}, "do not fit a TransformerNet"),
        ({"format": 1}, "do not fit a TransformerNet"),
    ],
)
def test_bad_metadata_is_a_checkpoint_error(tmp_path: Path, meta: object, message: str) -> None:
    path = save(tmp_path / "bad.ckpt", TransformerNet(8, 1), meta)
    with pytest.raises(CheckpointError, match=message):
        load_transformer(path)
