"""The objective with the default config equals the PyTorch example's loss (divided by 1e5)."""

import torch
import torch.nn.functional as F
from helpers import compose_train_config
from hydra.utils import instantiate

from nst_fast.perceptual import PerceptualLoss


def example_gram(y: torch.Tensor) -> torch.Tensor:
    """pytorch/examples fast_neural_style utils.gram_matrix."""
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def test_default_weights_are_the_pytorch_example_divided_by_1e5() -> None:
    torch.manual_seed(0)
    cfg = compose_train_config("loss.weights=random")
    loss: PerceptualLoss = instantiate(cfg.loss)
    style_image = torch.rand(1, 3, 48, 40)
    loss.set_styles([style_image])
    content, generated = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    ours = loss(loss.content_target(content), generated)
    with torch.no_grad():
        features_y = loss.features(generated)
        features_x = loss.features(content)
        features_s = loss.features(style_image)
        content_loss = 1e5 * F.mse_loss(features_y["relu2_2"], features_x["relu2_2"])
        style_loss = sum(
            F.mse_loss(example_gram(features_y[name]), example_gram(features_s[name]).expand(2, -1, -1))
            for name in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
        )
        example_total = content_loss + 1e10 * style_loss
    ours_without_tv = ours.total - loss.tv_weight * ours.total_variation
    torch.testing.assert_close(ours_without_tv * 1e5, example_total, rtol=2e-4, atol=0)
    torch.testing.assert_close(ours.content * 1e5, content_loss, rtol=1e-5, atol=0)


def test_identity_samples_cost_content_only_and_styles_have_their_own_weights() -> None:
    from nst_fast.losses import content_cost, style_cost, total_variation
    from nst_fast.perceptual import IDENTITY

    torch.manual_seed(1)
    cfg = compose_train_config(
        "loss.weights=random", "loss.content_weight=2.0", "loss.style_weight=3.0", "loss.tv_weight=5.0"
    )
    loss: PerceptualLoss = instantiate(cfg.loss)
    styles = [torch.rand(1, 3, 48, 40), torch.rand(1, 3, 36, 44)]
    loss.set_styles(styles, style_weights=[1.0, 10.0], content_weights=[1.0, 0.5])
    content, generated = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    index = torch.tensor([1, IDENTITY, 0])
    costs = loss(loss.content_target(content), generated, index)
    with torch.no_grad():
        features = loss.features(generated)
        target = loss.features(content)["relu2_2"]
        layers = loss.style_layers
        expected = []
        for sample, style in enumerate(index.tolist()):
            c = content_cost(target[sample : sample + 1], features["relu2_2"][sample : sample + 1])
            if style == IDENTITY:
                expected.append(2.0 * c)
                continue
            grams = {name: loss.style.style_grams()[name][style : style + 1] for name in layers}
            s, _ = style_cost(grams, {n: f[sample : sample + 1] for n, f in features.items()}, layers, "reference")
            tv = total_variation(generated[sample : sample + 1])
            expected.append(2.0 * [1.0, 0.5][style] * c + 3.0 * [1.0, 10.0][style] * s + 5.0 * tv)
    torch.testing.assert_close(costs.total, torch.cat(expected).mean())
    assert costs.sample_style[1] == 0
    torch.testing.assert_close(costs.style, costs.sample_style[[0, 2]].mean())


def test_energy_content_normalisation_is_the_relative_content_error() -> None:
    """``loss.content_normalisation=energy`` trains on what docs/quality.md measures: ``nst_fast.quality``'s
    relative content error, per sample."""
    import pytest

    from nst_fast.errors import ConfigError
    from nst_fast.quality import relative_content_error

    torch.manual_seed(2)
    cfg = compose_train_config("loss.weights=random", "loss.content_normalisation=energy", "loss.content_weight=7.0")
    loss: PerceptualLoss = instantiate(cfg.loss)
    loss.set_styles([torch.rand(1, 3, 40, 40)])
    content, generated = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    costs = loss(loss.content_target(content), generated)
    with torch.no_grad():
        target, output = loss.features(content)["relu2_2"], loss.features(generated)["relu2_2"]
        expected = relative_content_error(target, output).float()
    torch.testing.assert_close(costs.sample_content, expected)
    with pytest.raises(ConfigError, match="loss.content_normalisation='relative' is unknown"):
        PerceptualLoss({"relu1_2": 1.0}, weights="random", content_normalisation="relative")  # type: ignore[arg-type]
