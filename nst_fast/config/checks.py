"""Checks of a training config that types cannot express: ranges, the selected styles, and the loss network's
layers against the crop and style sizes. All run before anything is built or any weights load, and name the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nst_fast.errors import ConfigError
from nst_fast.models.vgg import downsampling_factor, layer_names

#: Keys of one style (``style.NAME.*``) and their defaults; ``size`` defaults to the top-level ``style_size``.
STYLE_KEYS = {"image": None, "size": None, "style_weight": 1.0, "content_weight": 1.0}


@dataclass(frozen=True)
class StyleSpec:
    """One style of a run: ``name`` (the config key), ``image`` path, ``size`` (shorter side in pixels at which
    its Gram targets are computed), and its own multipliers of ``loss.style_weight`` and ``loss.content_weight``."""

    name: str
    image: str
    size: int
    style_weight: float = 1.0
    content_weight: float = 1.0

    def record(self) -> dict[str, Any]:
        """What a checkpoint records about this style."""
        return {"name": self.name, "image": self.image, "size": self.size}


def style_specs(cfg: DictConfig) -> list[StyleSpec]:
    """The run's styles in the order selected (``style=[starry,wave]`` -> starry, wave), checked.

    Raises ``ConfigError`` naming the key for no style, an unknown key, a missing image or a bad value.
    """
    styles = cfg.get("style")
    if not styles:
        raise ConfigError(
            "no style selected: pass style=NAME, 'style=[NAME,NAME,...]' or a painting of your own with "
            "'style=[]' +style.NAME.image=/path/to/painting.jpg"
        )
    if not isinstance(styles, DictConfig):
        raise ConfigError(f"style={styles!r} must map style names to their settings (the style/ config group)")
    specs = []
    for name, node in styles.items():
        if not isinstance(node, DictConfig):
            raise ConfigError(
                f"style.{name}={node!r} must be a mapping with at least an image, e.g. +style.{name}.image=PATH"
            )
        if name == "identity":
            raise ConfigError("style.identity: 'identity' names the identity condition; give the style another name")
        unknown = sorted(set(node) - set(STYLE_KEYS))
        if unknown:
            raise ConfigError(f"style.{name} has unknown key(s) {unknown}; valid keys are {sorted(STYLE_KEYS)}")
        if not node.get("image"):
            raise ConfigError(f"style.{name}.image is missing: pass +style.{name}.image=/path/to/painting.jpg")
        settings = {key: node.get(key, default) for key, default in STYLE_KEYS.items()}
        if settings["size"] is None:
            settings["size"] = cfg.style_size
        view = OmegaConf.create({"style": {name: settings}})
        _check_number(view, f"style.{name}.size", 0, integer=True, exclusive=True)
        for key in ("style_weight", "content_weight"):
            _check_number(view, f"style.{name}.{key}", 0)
        specs.append(
            StyleSpec(
                name=str(name),
                image=str(settings["image"]),
                size=int(settings["size"]),
                style_weight=float(settings["style_weight"]),
                content_weight=float(settings["content_weight"]),
            )
        )
    return specs


def uses_identity(cfg: DictConfig, num_styles: int) -> bool:
    """Whether the network also learns the identity condition: ``identity`` if set, else with several styles."""
    return bool(cfg.identity) if cfg.get("identity") is not None else num_styles > 1


def _check_number(
    cfg: DictConfig, key: str, minimum: float, *, integer: bool = False, exclusive: bool = False, optional: bool = False
) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(f"{key}={value!r} has the wrong type: it must be {kind}")
    if value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        raise ConfigError(f"{key}={value!r} is out of range: it must be {kind} {bound}")


def validate_train_config(cfg: DictConfig) -> None:
    """Reject wrongly typed or out-of-range values before anything is built, naming the key."""
    for key in (
        "content_weight",
        "style_weight",
        "tv_weight",
        "stability_weight",
        "stability_shift",
        "stability_noise",
    ):
        _check_number(cfg, f"loss.{key}", 0)
    _check_number(cfg, "loss.jitter", 0, integer=True)
    if not cfg.loss.style_layers:
        raise ConfigError("loss.style_layers is empty: it must map at least one layer name to its weight lambda_l")
    for name in cfg.loss.style_layers:
        _check_number(cfg, f"loss.style_layers.{name}", 0)
    _check_number(cfg, "style_size", 0, integer=True, exclusive=True)
    style_specs(cfg)
    _check_number(cfg, "data.image_size", 0, integer=True, exclusive=True)
    _check_number(cfg, "data.batch_size", 1, integer=True)
    _check_number(cfg, "data.num_workers", 0, integer=True)
    _check_number(cfg, "data.samples_per_epoch", 1, integer=True, optional=True)
    _check_number(cfg, "data.val_size", 0, integer=True, exclusive=True)
    _check_number(cfg, "trainer.max_steps", 0, integer=True, exclusive=True)
    _check_number(cfg, "module.optimizer.lr", 0, exclusive=True)
    _check_number(cfg, "module.output_lr_scale", 0, exclusive=True)
    _check_number(cfg, "module.max_consecutive_nonfinite", 1, integer=True)
    _check_number(cfg, "trainer.log_every_n_steps", 1, integer=True, optional=True)
    _check_number(cfg, "model.base_channels", 1, integer=True)
    _check_number(cfg, "model.residual_blocks", 0, integer=True)
    _check_loss_layers(cfg)


def _check_loss_layers(cfg: DictConfig) -> None:
    """Layer names exist in the loss network, and crops and style image are large enough for the deepest one
    (at least 2x2 activations there): checked before any weights are loaded or downloaded."""
    network = cfg.loss.network
    names = layer_names(network)
    layers = [*cfg.loss.style_layers, cfg.loss.content_layer]
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ConfigError(f"loss layers {unknown} do not exist in {network}; valid names are {names}")
    deepest = max(layers, key=names.index)
    minimum = 2 * downsampling_factor(network, deepest)
    sizes = {"data.image_size": cfg.data.image_size, **{f"style.{s.name}.size": s.size for s in style_specs(cfg)}}
    for key, value in sizes.items():
        if value < minimum:
            raise ConfigError(
                f"{key}={value} is too small for the deepest loss layer {deepest} of {network}: "
                f"it needs at least {minimum} pixels"
            )
