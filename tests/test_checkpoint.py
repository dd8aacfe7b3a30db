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


def test_a_shared_noise_row_loads_per_condition_with_the_identity_exact(tmp_path: Path) -> None:
    """A checkpoint from before the per-condition full-resolution noise scale (one row ``[C]``): the styles load
    unchanged, the exact identity (``residual_output``) gets a zero row and gives back the photo."""
    from nst_fast.module import pin_exact_identity

    torch.manual_seed(0)
    network = TransformerNet(8, 1, num_conditions=3, residual_output=True, feature_noise=True).eval()
    pin_exact_identity(network, 2)
    row = torch.rand(8) + 0.5
    with torch.no_grad():
        for parameter in (network.noise_scale_half, network.output_norm.weight[:2], network.output_norm.bias[:2]):
            parameter.uniform_(-1, 1)
    styles = [{"name": name, "image": f"{name}.jpg", "size": 64} for name in ("starry", "wave")]
    old = save(tmp_path / "old.ckpt", network, checkpoint_metadata(network, styles, identity=True))
    checkpoint = torch.load(old, weights_only=True)
    checkpoint["state_dict"]["transformer.noise_scale_full"] = row
    torch.save(checkpoint, old)
    loaded, info = load_transformer(old)
    assert info.condition_names == ["starry", "wave", "identity"]
    assert torch.equal(loaded.noise_scale_full, torch.stack([row, row, torch.zeros(8)]))
    photo = torch.randint(0, 256, (1, 3, 21, 30)) / 255.0
    with torch.no_grad():
        assert torch.equal((loaded(photo, torch.tensor([[0.0, 0.0, 1.0]])) * 255).round(), (photo * 255).round())
        network.noise_scale_full.copy_(row.expand(3, -1))
        styled = torch.tensor([[0.3, 0.7, 0.0]])
        torch.testing.assert_close(loaded(photo, styled), network(photo, styled), rtol=0, atol=0)
