"""The config layout: one source per setting (schema defaults equal the YAML's), the style template, and renamed
settings that old command lines may still use."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nst_fast.config import CONFIG_DIR, compose, translate_overrides
from nst_fast.config.schemas import (
    DataSchema,
    ExportSchema,
    LossSchema,
    ModelSchema,
    ModuleSchema,
    StyleSchema,
    TrainSchema,
)


def _leaves(node, prefix: str = "") -> dict[str, object]:
    """Every leaf value of a plain nested dict, by dotted key."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            result.update(_leaves(value, f"{prefix}{key}."))
        return result
    return {prefix[:-1]: node}


def _schema_defaults(schema) -> dict[str, object]:
    return _leaves(OmegaConf.to_container(OmegaConf.structured(schema), resolve=False))


@pytest.mark.parametrize(
    ("group", "schema"),
    [
        ("model", ModelSchema),
        ("loss", LossSchema),
        ("data", DataSchema),
        ("module", ModuleSchema),
    ],
)
def test_each_groups_default_yaml_equals_its_schema_defaults(group: str, schema) -> None:
    """The default option of each group sets exactly its schema's defaults (the YAML documents them; nothing
    else may silently differ)."""
    cfg = compose("train")
    yaml = _leaves(OmegaConf.to_container(cfg[group], resolve=False))
    assert yaml == _schema_defaults(schema)


def test_top_level_train_settings_and_export_yaml_equal_their_schemas() -> None:
    cfg = compose("train")
    schema = OmegaConf.structured(TrainSchema)
    for key in ("seed", "ckpt_path", "style_size", "identity", "finetune_from"):
        assert cfg[key] == schema[key], key
    export = compose("export")
    assert _leaves(OmegaConf.to_container(export, resolve=False)) == _schema_defaults(ExportSchema)


def test_export_settings_classes_default_to_their_schemas() -> None:
    """Int8Settings and TritonOptions (what export and tests build without Hydra) hold the same defaults as the
    export.int8 / export.triton schemas (which have ``enabled`` besides)."""
    from dataclasses import asdict

    from nst_fast.config.schemas import Int8Schema, TritonSchema
    from nst_fast.export.int8 import Int8Settings
    from nst_fast.export.triton import TritonOptions

    for settings, schema in ((Int8Settings(), Int8Schema), (TritonOptions(), TritonSchema)):
        defaults = _schema_defaults(schema)
        del defaults["enabled"]
        assert asdict(settings) == defaults, schema.__name__


def test_every_bundled_style_is_the_template_with_its_own_painting() -> None:
    cfg = compose("train", ["style=[starry,wave,scream,composition_vii,udnie]"])
    template = _schema_defaults(StyleSchema)
    for name, style in cfg.style.items():
        values = _leaves(OmegaConf.to_container(style, resolve=False))
        assert {key: value for key, value in values.items() if key != "image"} == {
            key: value for key, value in template.items() if key != "image"
        }, name
        assert style.image.endswith(".jpg") and style.size == cfg.style_size


def test_a_style_takes_only_the_templates_keys() -> None:
    from nst_fast.config import style_specs
    from nst_fast.errors import ConfigError

    with pytest.raises(ConfigError, match=r"style.starry has unknown key\(s\) \['colour'\]"):
        style_specs(compose("train", ["+style.starry.colour=1"]))


def test_the_config_folder_is_inside_the_package() -> None:
    assert CONFIG_DIR.parent.name == "nst_fast" and (CONFIG_DIR / "train.yaml").is_file()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("optimizer.lr=0.01", "module.optimizer.lr=0.01"),
        ("+optimizer.weight_decay=1e-4", "+module.optimizer.weight_decay=1e-4"),
        ("output_lr_scale=1", "module.output_lr_scale=1"),
        ("channels_last=false", "module.channels_last=false"),
        ("compile=true", "module.compile=true"),
        ("max_consecutive_nonfinite=3", "module.max_consecutive_nonfinite=3"),
        ("loss.weights=none", "loss.weights=random"),
        ("export.int8=true", "export.int8.enabled=true"),
        ("export.int8_calibration_photos=8", "export.int8.photos=8"),
        ("export.int8_min_psnr=27", "export.int8.min_psnr=27"),
        ("export.triton=true", "export.triton.enabled=true"),
        ("export.triton_instance_kind=KIND_CPU", "export.triton.instance_kind=KIND_CPU"),
    ],
)
def test_old_command_lines_are_translated_with_a_note(old: str, new: str) -> None:
    notes: list[str] = []
    assert translate_overrides([old], notes.append) == [new]
    assert notes and all("now" in note for note in notes)


@pytest.mark.parametrize(
    "current",
    [
        "module.optimizer.lr=0.01",
        "export.int8.enabled=true",
        "export.int8.photos=8",
        "export.triton.enabled=true",
        "loss.weights=/path/none",
        "style=starry",
        "-m",
        "hydra.run.dir=/tmp/x",
        "trainer.max_steps=5",
    ],
)
def test_current_keys_are_left_alone(current: str) -> None:
    notes: list[str] = []
    assert translate_overrides([current], notes.append) == [current]
    assert notes == []


def test_translated_old_keys_compose() -> None:
    overrides = translate_overrides(["optimizer.lr=0.01", "compile=true", "loss.weights=none"], lambda note: None)
    cfg = compose("train", overrides)
    assert cfg.module.optimizer.lr == 0.01 and cfg.module.compile is True and cfg.loss.weights == "random"
