"""The files that ship with the package: the bundled models as a user meets them (no model path), by name, and
as a base for fine-tuning; the lookup's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from image_factory import pattern
from PIL import Image

from nst_fast.assets import (
    BUNDLED_CHECKPOINTS,
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    asset_path,
    bundled_checkpoint,
    bundled_model,
    models_folder,
)
from nst_fast.checkpoint import load_transformer
from nst_fast.errors import ConfigError, MissingFileError
from nst_fast.stylize import main
from nst_fast.stylize.models import resolve_model

#: The bundled paintings, in the order the bundled model was trained on them.
PAINTINGS = ["starry", "wave", "scream", "composition_vii", "udnie"]


def test_every_bundled_file_is_in_the_package() -> None:
    for file in [*BUNDLED_MODELS.values(), *BUNDLED_CHECKPOINTS.values(), "README.md"]:
        assert (models_folder() / file).is_file(), file


def test_unknown_names_list_the_bundled_ones() -> None:
    with pytest.raises(MissingFileError, match="no bundled model 'monet'; the bundled models are paintings"):
        bundled_model("monet")
    with pytest.raises(MissingFileError, match="fine-tune from one of paintings"):
        bundled_checkpoint("monet")
    with pytest.raises(MissingFileError, match="no bundled asset 'styles/monet.jpg'"):
        asset_path("styles/monet.jpg")


def test_no_model_path_means_the_bundled_default() -> None:
    assert resolve_model(None) == bundled_model(DEFAULT_MODEL)
    assert resolve_model("paintings-int8") == models_folder() / BUNDLED_MODELS["paintings-int8"]


def test_the_bundled_checkpoint_is_the_exported_network() -> None:
    """The ONNX file and the fine-tuning checkpoint hold the same network: equal outputs on a known image."""
    network, info = load_transformer(bundled_checkpoint("paintings"))
    assert info.style_names == PAINTINGS and info.identity
    rgb = pattern(37, 53, seed=1).astype(np.float32) / 255.0
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    weights = [0.0, 1.0, 0.0, 0.0, 0.0]
    with torch.inference_mode():
        eager = network(x, torch.tensor([weights + [0.0]])).numpy()
    session = ort.InferenceSession(str(bundled_model("paintings")), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"image": x.numpy(), "style_weights": np.array([weights], dtype=np.float32)})
    assert exported.shape == eager.shape
    assert float(np.abs(exported - eager).max()) < 1e-3


def test_a_photo_in_one_command_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``nst-stylize photo.jpg -o out.jpg --style wave``: the bundled model, each style its own picture, strength 0
    the photo itself."""
    rgb = pattern(48, 64, seed=3)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    assert (
        main([str(tmp_path / "photo.png"), "-o", str(tmp_path / "zero.png"), "--style", "wave", "--strength", "0"]) == 0
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "zero.png")), rgb)
    outputs = {}
    for style in PAINTINGS:
        assert main([str(tmp_path / "photo.png"), "-o", str(tmp_path / f"{style}.png"), "--style", style]) == 0
        outputs[style] = np.asarray(Image.open(tmp_path / f"{style}.png")).astype(np.float32)
        assert outputs[style].shape == rgb.shape
    for a in PAINTINGS:
        for b in PAINTINGS:
            if a < b:
                assert np.abs(outputs[a] - outputs[b]).mean() > 5, (a, b)
    assert main(["--list-styles"]) == 0
    assert capsys.readouterr().out.splitlines()[:5] == PAINTINGS


def test_a_sixth_style_starts_from_the_bundled_model() -> None:
    """``finetune_from=paintings model=paintings``: the bundled network with one more condition, the new one alone
    trained; ``model=paintings`` is the bundled network's architecture."""
    from helpers import compose_train_config

    from nst_fast.train import plan_network

    painting = asset_path("styles/wave.jpg")
    with pytest.raises(ConfigError, match=r"set model\.\* as the base network's \(model=paintings for the bundled"):
        plan_network(compose_train_config("style=[]", f"+style.monet.image={painting}", "finetune_from=paintings"))
    plan = plan_network(
        compose_train_config("style=[]", f"+style.monet.image={painting}", "finetune_from=paintings", "model=paintings")
    )
    assert [style["name"] for style in plan.styles] == [*PAINTINGS, "monet"] and plan.identity
    assert plan.network.num_conditions == len(PAINTINGS) + 2 and plan.trained == [len(PAINTINGS)]
