import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from nst_fast.models import VGGFeatures
from nst_fast.models import vgg as vgg_module


def torchvision_vgg(arch: str) -> nn.Module:
    """torchvision's whole model (``models.vgg16()`` or ``vgg19()``), built on the meta device, with random features
    on the CPU (seeded by the caller). The 120M-parameter classifier stays on the meta device: initialising it is
    most of the time a plain build takes, and no test here runs it."""
    with torch.device("meta"):
        model = getattr(models, arch)()
    model.features.to_empty(device="cpu")
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    return model.eval()


def test_layer_names_follow_torchvision_indices() -> None:
    names = vgg_module.layer_names("vgg16")
    assert len(names) == len(torchvision_vgg("vgg16").features)
    assert names.index("relu1_2") == 3 and names.index("relu2_2") == 8
    assert names.index("relu3_3") == 15 and names.index("relu4_3") == 22 and names.index("relu5_1") == 25
    names19 = vgg_module.layer_names("vgg19")
    assert len(names19) == len(torchvision_vgg("vgg19").features) and names19.index("relu4_4") == 26


def test_features_match_torchvision_slices(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision_vgg("vgg16").features
    path = tmp_path / "features.pth"
    torch.save(reference.state_dict(), path)
    net = VGGFeatures(["relu2_2", "relu1_2"], weights=path)
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - torch.tensor(vgg_module.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        vgg_module.IMAGENET_STD
    ).view(1, 3, 1, 1)
    out = net(x)
    with torch.no_grad():
        torch.testing.assert_close(out["relu1_2"], reference[:4](normalised))
        torch.testing.assert_close(out["relu2_2"], reference[:9](normalised))
    assert len(net.body) == 9  # truncated after relu2_2


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_pooling_reduces_each_2x2_window(pooling: str) -> None:
    torch.manual_seed(2)
    net = VGGFeatures(["relu1_2", "pool1", "relu2_1"], weights="random", pooling=pooling)
    out = net(torch.rand(1, 3, 16, 12))
    windows = out["relu1_2"].reshape(1, 64, 8, 2, 6, 2)
    by_hand = windows.amax(dim=(3, 5)) if pooling == "max" else windows.mean(dim=(3, 5))
    torch.testing.assert_close(out["pool1"], by_hand)
    # The convolutions are the same either way: relu2_1 is conv2_1 of the pooled activations.
    conv2_1 = net.body[net.names.index("conv2_1")]
    torch.testing.assert_close(out["relu2_1"], torch.relu(conv2_1(by_hand)))


def test_unknown_pooling_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"loss.pooling='min'.*'max', 'average'"):
        VGGFeatures(["relu1_2"], weights="random", pooling="min")


def test_requested_conv_output_is_not_overwritten_by_its_relu() -> None:
    # ReLUs run in place except after a requested conv layer, whose pre-activation values must survive.
    torch.manual_seed(1)
    net = VGGFeatures(["conv1_2", "relu1_2", "relu2_1"], weights="random")
    out = net(torch.rand(1, 3, 16, 16))
    assert (out["conv1_2"] < 0).any()
    torch.testing.assert_close(out["relu1_2"], out["conv1_2"].clamp_min(0))
    relus = [m for m in net.body if isinstance(m, torch.nn.ReLU)]
    assert [m.inplace for m in relus] == [True, False, True]


def test_frozen_and_always_eval() -> None:
    net = VGGFeatures(["relu1_2"], weights="random")
    net.train()
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert net.min_input_size == 2
    assert VGGFeatures(["relu4_3"], weights="random").min_input_size == 16


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown vgg16 layer.*relu9_9.*relu1_1"):
        VGGFeatures(["relu9_9"], weights="random")


def test_whole_model_state_dict_accepted(tmp_path: Path) -> None:
    """A state dict of the whole model (features.*, classifier.*) loads its features: the activations are those of
    torchvision's own network with those weights, on ImageNet-normalised input."""
    from nst_fast.models.vgg import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    whole = torchvision_vgg("vgg19")
    path = tmp_path / "vgg19_full.pth"
    # The whole model's keys; the classifier's values are placeholders (loading ignores them).
    classifier = {f"classifier.{key}": torch.zeros(1) for key in whole.classifier.state_dict()}
    torch.save({**{f"features.{k}": v for k, v in whole.features.state_dict().items()}, **classifier}, path)
    net = VGGFeatures(["relu5_1"], arch="vgg19", weights=path)
    x = torch.rand(1, 3, 32, 32)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = whole.features[:30](normalised)  # relu5_1 is the 30th module of vgg19().features
        torch.testing.assert_close(net(x)["relu5_1"], expected)


def test_wrong_state_dict_names_the_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "vgg19_features.pth"
    torch.save(torchvision_vgg("vgg19").features.state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected keys .*'28\.weight'|shape mismatches"):
        VGGFeatures(["relu1_2"], arch="vgg16", weights=path)
    state = torchvision_vgg("vgg16").features.state_dict()
    state["0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"0\.weight: file \(64, 1, 3, 3\) vs vgg16 \(64, 3, 3, 3\)"):
        VGGFeatures(["relu1_2"], weights=path)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VGGFeatures(["relu1_2"], weights=tmp_path / "nope.pth")


def test_offline_imagenet_download_says_how_to_pass_local_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(vgg_module.models, "vgg16", offline)
    with pytest.raises(RuntimeError, match=r"offline.*loss\.weights=/path/to/vgg16_features\.pth"):
        VGGFeatures(["relu1_2"], weights="imagenet")


def test_offline_hed_file_loads(hed_weights: Path) -> None:
    net = VGGFeatures(["relu1_2", "relu4_3"], weights=hed_weights)
    out = net(torch.rand(1, 3, 32, 32))
    assert out["relu4_3"].shape == (1, 512, 4, 4)
    assert out["relu1_2"].abs().mean() > 1.0  # Caffe-scale activations, see ../shared/README.md
