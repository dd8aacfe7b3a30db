"""Frozen VGG loss network with layers addressed by name (``relu1_2``, ``relu4_3``, ...)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models import vgg as vgg_models

from nst_fast.errors import ConfigError, MissingFileError, OfflineError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Convolutions per block; a max-pool follows each block.
_BLOCKS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_DOWNLOAD_TIMEOUT_S = 30.0
#: How the loss network halves its resolution between blocks: VGG's own max-pooling, or average pooling over the same
#: 2x2 windows (Gatys, Ecker & Bethge 2016: smoother gradients, "slightly more appealing results").
POOLINGS = ("max", "average")


def layer_names(arch: str) -> list[str]:
    """Names of the modules of ``torchvision.models.<arch>().features``, in order:
    ``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...``."""
    if arch not in _BLOCKS:
        raise ConfigError(f"unknown loss network {arch!r}; choose one of {sorted(_BLOCKS)}")
    names: list[str] = []
    for block, convs in enumerate(_BLOCKS[arch], start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


def downsampling_factor(arch: str, layer: str) -> int:
    """How many times smaller than the input ``layer``'s activations are (2 per pool before it)."""
    names = layer_names(arch)
    return 2 ** sum(1 for name in names[: names.index(layer)] if name.startswith("pool"))


#: torchvision's layer configurations of the VGG variants (``torchvision.models.vgg.cfgs``).
_VGG_CONFIGS = {"vgg16": "D", "vgg19": "E"}


def _features(arch: str) -> nn.Sequential:
    """``torchvision.models.<arch>().features`` (same modules, indices and state-dict keys), randomly initialised,
    built without the 120M-parameter classifier that the whole model would allocate and initialise first."""
    return vgg_models.make_layers(vgg_models.cfgs[_VGG_CONFIGS[arch]], batch_norm=False)


def _load_imagenet(arch: str) -> nn.Sequential:
    weights_enum = {"vgg16": models.VGG16_Weights.IMAGENET1K_V1, "vgg19": models.VGG19_Weights.IMAGENET1K_V1}[arch]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        return getattr(models, arch)(weights=weights_enum).features
    except (OSError, RuntimeError, ValueError) as error:
        raise OfflineError(
            f"could not load ImageNet weights for {arch} ({type(error).__name__}: {error}). torchvision "
            f"downloads them once from the internet into {torch.hub.get_dir()}; this machine seems offline. "
            f"Pass a local state dict of torchvision's {arch}().features instead: loss.weights=/path/to/{arch}_features.pth"
        ) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _load_state_dict_file(arch: str, path: Path) -> nn.Sequential:
    if not path.is_file():
        raise MissingFileError(
            f"loss network weights file {str(path)!r} does not exist; pass a state dict of torchvision's "
            f"{arch}().features (keys 0.weight ... ), or loss.weights=imagenet to download torchvision's"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a state dict we can read"
        raise ConfigError(f"could not read loss network weights {str(path)!r}: {error}") from error
    if not isinstance(state, Mapping):
        raise ConfigError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict of {arch}().features")
    # A whole-model state dict (features.*, classifier.*) is accepted too.
    if any(key.startswith("features.") for key in state):
        state = {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}
    features = _features(arch)
    expected = features.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shapes = [
        f"{key}: file {tuple(state[key].shape)} vs {arch} {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong_shapes:
        raise ConfigError(
            f"{str(path)!r} is not a state dict of torchvision's {arch}().features: "
            f"missing keys {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected keys {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}, "
            f"shape mismatches {wrong_shapes[:6]}. Is it a state dict of the other VGG (loss.network=vgg16/vgg19)?"
        )
    features.load_state_dict(state)
    return features


class VGGFeatures(nn.Module):
    """Frozen VGG-16/19 feature extractor returning the activations of named layers.

    Input: RGB in [0, 1], ``[B, 3, H, W]``; ImageNet mean/std are applied inside. Output: layer name ->
    activations ``[B, C, H/f, W/f]``. The network is truncated after the deepest requested layer, kept in
    eval mode, and no parameter requires grad.

    ``weights``: ``"imagenet"`` (torchvision's ImageNet weights, downloaded once to torch's cache), a path to
    a state dict of ``<arch>().features``, or ``"random"`` (random init: for tests only).

    ``pooling``: ``"max"`` (VGG as trained) or ``"average"`` (each max-pool replaced by a 2x2 stride-2 average pool,
    as Gatys et al. 2016 did for style transfer; the convolutions are unchanged).
    """

    def __init__(
        self,
        layers: Iterable[str],
        arch: str = "vgg16",
        weights: str | os.PathLike = "imagenet",
        pooling: str = "max",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"loss.pooling={pooling!r} is unknown; choose one of {POOLINGS}")
        names = layer_names(arch)
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ValueError("VGGFeatures needs at least one layer name")
        unknown = [layer for layer in self.layers if layer not in names]
        if unknown:
            raise ConfigError(f"unknown {arch} layer(s) {unknown}; valid names are {names}")
        self.arch = arch
        weights_str = str(weights)
        if weights_str == "imagenet":
            features = _load_imagenet(arch)
        elif weights_str == "random":
            log.warning(
                "loss network %s has random weights (loss.weights=random): results will not look stylised", arch
            )
            features = _features(arch)
        else:
            features = _load_state_dict_file(arch, Path(weights_str).expanduser())
        depth = max(names.index(layer) for layer in self.layers) + 1
        self.names = names[:depth]
        modules = list(features.children())[:depth]
        if pooling == "average":
            modules = [nn.AvgPool2d(2, 2) if isinstance(module, nn.MaxPool2d) else module for module in modules]
        self.body = nn.Sequential(*modules)
        # A ReLU may overwrite its input (saving a copy of the activations) unless that input, a conv
        # output, is one of the requested layers.
        for previous, module in zip(self.names, list(self.body)[1:], strict=False):
            if isinstance(module, nn.ReLU):
                module.inplace = previous not in self.layers
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always stays in eval mode: the loss network is frozen."""
        return super().train(False)

    @property
    def min_input_size(self) -> int:
        """Smallest input side for which the deepest layer still has 2x2 activations."""
        return 2 * downsampling_factor(self.arch, self.names[-1])

    def forward(self, x: Tensor, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Activations of ``layers`` (default: all the layers this network was built for). The pass stops
        at the deepest one asked for, so a shallow content target costs only the first few convolutions."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W] in [0, 1], got shape {tuple(x.shape)}")
        wanted = set(self.layers if layers is None else layers)
        unknown = wanted - set(self.layers)
        if unknown:
            raise ValueError(f"layers {sorted(unknown)} were not requested when building the network ({self.layers})")
        depth = max(self.names.index(layer) for layer in wanted) + 1
        h = (x - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for name, module in zip(self.names[:depth], self.body, strict=False):
            h = module(h)
            if name in wanted:
                out[name] = h
        return out
