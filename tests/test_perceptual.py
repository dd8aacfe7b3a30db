"""The objective with the default config equals the PyTorch example's loss (divided by 1e5)."""

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from helpers import compose_train_config

from nst_fast.perceptual import PerceptualLoss


def example_gram(y: torch.Tensor) -> torch.Tensor:
    """pytorch/examples fast_neural_style utils.gram_matrix."""
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def test_default_weights_are_the_pytorch_example_divided_by_1e5() -> None:
    torch.manual_seed(0)
    cfg = compose_train_config("loss.weights=none")
    loss: PerceptualLoss = instantiate(cfg.loss)
    style_image = torch.rand(1, 3, 48, 40)
    loss.set_style(style_image)
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
