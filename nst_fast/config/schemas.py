"""Typed schemas of the config groups, registered in Hydra's ConfigStore on import.

The YAML files of ``nst_fast/conf/`` name these in their defaults lists, so an unknown key or a value of the wrong
type is rejected by Hydra itself, with its own message, before anything runs. Each schema's defaults are the values
of its group's default YAML file (``tests/test_config.py`` compares them), so that code reading a config never needs
a fallback of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class StyleSchema:
    """``conf/style/NAME.yaml`` (``style.NAME.*``): one painting, its Gram size and its own weight multipliers.

    ``size``: shorter side in pixels at which the painting's Gram targets are computed (default: the top-level
    ``style_size``); ``style_weight``, ``content_weight``: multipliers of ``loss.style_weight`` (beta) and
    ``loss.content_weight`` (alpha) for this style."""

    image: str = MISSING
    size: int = "${style_size}"  # type: ignore[assignment]  # an interpolation, resolved to an int
    style_weight: float = 1.0
    content_weight: float = 1.0


@dataclass
class ModelSchema:
    """``conf/model/*``: the transformation network (``nst_fast.models.TransformerNet``)."""

    _target_: str = "nst_fast.models.TransformerNet"
    base_channels: int = 32
    residual_blocks: int = 5
    separable: bool = False
    residual_output: bool = False
    upsample: str = "nearest"
    input_noise: float = 0.0
    feature_noise: bool = False


@dataclass
class LossSchema:
    """``conf/loss/*``: loss network and cost weights (``nst_fast.perceptual.PerceptualLoss``).

    ``weights``: ``imagenet`` (torchvision's, downloaded once), a path to a state dict of ``vgg16().features``, or
    ``random`` (random weights: for tests only)."""

    _target_: str = "nst_fast.perceptual.PerceptualLoss"
    network: str = "vgg16"
    weights: str = "imagenet"
    pooling: str = "max"
    content_layer: str = "relu2_2"
    content_weight: float = 1.0
    style_weight: float = 1.0
    style_layers: dict[str, float] = field(
        default_factory=lambda: {"relu1_2": 97.66, "relu2_2": 24.41, "relu3_3": 6.104, "relu4_3": 1.526}
    )
    style_normalisation: str = "reference"
    content_normalisation: str = "reference"
    tv_weight: float = 1.0
    stability_weight: float = 0.0
    stability_shift: float = 1.0
    stability_noise: float = 0.02
    jitter: int = 0


@dataclass
class DataSchema:
    """``conf/data/*``: content photos (``nst_fast.data.ContentDataModule``)."""

    _target_: str = "nst_fast.data.ContentDataModule"
    root: str = "${asset:content}"
    image_size: int = 256
    batch_size: int = 4
    num_workers: int = 2
    samples_per_epoch: Optional[int] = 1000  # noqa: UP045 - OmegaConf needs Optional, not "int | None"
    max_pixels: int = 16384 * 16384
    pin_memory: bool = True
    val_root: Optional[str] = None  # noqa: UP045
    val_size: int = 256


@dataclass
class StreamDataSchema:
    """``conf/data/stream.yaml``: photos streamed from a converted set (``nst_fast.stream.data.StreamDataModule``)."""

    _target_: str = "nst_fast.stream.data.StreamDataModule"
    url: str = MISSING
    endpoint_url: Optional[str] = None  # noqa: UP045
    cache_dir: Optional[str] = None  # noqa: UP045
    max_cache_size: str = "50GB"
    image_size: int = 256
    batch_size: int = 4
    num_workers: int = 4
    pin_memory: bool = True
    val_root: Optional[str] = None  # noqa: UP045
    val_size: int = 256
    max_pixels: int = 16384 * 16384


@dataclass
class ModuleSchema:
    """``conf/module/*``: the LightningModule (``nst_fast.module.StyleTransferModule``): the optimiser and how the
    networks are trained."""

    _target_: str = "nst_fast.module.StyleTransferModule"
    optimizer: Any = field(default_factory=lambda: {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3})
    output_lr_scale: float = 0.01
    lr_schedule: str = "constant"
    channels_last: bool = True
    compile: bool = False
    max_consecutive_nonfinite: int = 10


@dataclass
class TrainSchema:
    """Top level of ``conf/train.yaml``: run settings; the groups carry their own schemas."""

    style: Any = None  # name -> style (conf/style/*.yaml); several with 'style=[starry,wave]'
    model: Any = MISSING
    loss: Any = MISSING
    data: Any = MISSING
    module: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    seed: int = 0
    ckpt_path: Optional[str] = None  # noqa: UP045
    style_size: int = 512
    identity: Optional[bool] = None  # noqa: UP045
    finetune_from: Optional[str] = None  # noqa: UP045


@dataclass
class Int8Schema:
    """``export.int8.*``: ``NAME.int8.onnx`` (``nst_fast.export.int8.Int8Settings`` without ``enabled``)."""

    enabled: bool = False
    calibration: Optional[str] = None  # noqa: UP045
    photos: int = 16
    size: int = 512
    method: str = "percentile"
    min_psnr: float = 30.0


@dataclass
class TritonSchema:
    """``export.triton.*``: a Triton model repository (``nst_fast.export.triton.TritonOptions`` without ``enabled``)."""

    enabled: bool = False
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    instance_kind: str = "KIND_GPU"
    tensorrt: bool = False
    trt_opt_side: int = 512
    trt_max_side: int = 1024


@dataclass
class ExportSettingsSchema:
    """``export.*`` of ``conf/export.yaml``."""

    out_dir: Optional[str] = None  # noqa: UP045
    name: Optional[str] = None  # noqa: UP045
    torchscript: bool = True
    fp16: bool = False
    uint8: bool = False
    int8: Int8Schema = field(default_factory=Int8Schema)
    triton: TritonSchema = field(default_factory=TritonSchema)
    web: bool = False
    tiles: bool = True
    opset: int = 18
    tolerance: float = 1e-3
    fp16_tolerance: float = 1e-2
    uint8_tolerance: float = 2.0


@dataclass
class ExportSchema:
    """Top level of ``conf/export.yaml``."""

    ckpt_path: Optional[str] = None  # noqa: UP045
    export: ExportSettingsSchema = field(default_factory=ExportSettingsSchema)


#: (group, name, schema) as registered. The style template is ``/schema/style``, outside the ``style`` group, so
#: that it is not offered as a style.
SCHEMAS = (
    (None, "train_schema", TrainSchema),
    (None, "export_schema", ExportSchema),
    ("schema", "style", StyleSchema),
    ("model", "model_schema", ModelSchema),
    ("loss", "loss_schema", LossSchema),
    ("data", "data_schema", DataSchema),
    ("data", "stream_data_schema", StreamDataSchema),
    ("module", "module_schema", ModuleSchema),
)


def store_schemas() -> None:
    """Register every schema in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node)


store_schemas()
