"""End-to-end training: the smoke experiment, TensorBoard contents, checkpoints, resume, bad input."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import events, run_train, train_in_process
from hydra.errors import ConfigCompositionException, MissingConfigException

from nst_fast.checkpoint import load_transformer
from nst_fast.errors import NstFastError


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("smoke")
    result = run_train("experiment=smoke", f"hydra.run.dir={run_dir}", cwd=tmp_path_factory.mktemp("cwd"))
    return run_dir, result


@pytest.fixture(scope="module")
def smoke_run(smoke: tuple[Path, subprocess.CompletedProcess]) -> Path:
    return smoke[0]


@pytest.mark.slow
def test_smoke_prints_no_warning_about_our_configuration(smoke: tuple[Path, subprocess.CompletedProcess]) -> None:
    _, result = smoke
    output = result.stdout + result.stderr
    assert "module(s) in eval mode" not in output, "the frozen loss network is in eval mode on purpose"
    ours = [line for line in output.splitlines() if "][WARNING]" in line]
    assert len(ours) == 1 and "random weights (loss.weights=random)" in ours[0], ours  # what the smoke config asks for


@pytest.mark.slow
def test_smoke_writes_checkpoints(smoke_run: Path) -> None:
    checkpoints = smoke_run / "checkpoints"
    assert {p.name for p in checkpoints.glob("*.ckpt")} == {"step_000003.ckpt", "step_000006.ckpt", "last.ckpt"}
    assert not list(checkpoints.glob("*.tmp")), "no temporary checkpoint files may be left behind"
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 6
    assert checkpoint["optimizer_states"][0]["state"][0]["step"].item() == 6
    assert not any(key.startswith("loss.features.") for key in checkpoint["state_dict"]), "VGG weights are not stored"
    network, info = load_transformer(checkpoints / "last.ckpt")
    assert info.transformer == {"base_channels": 8, "residual_blocks": 1}
    assert info.style["name"] == "starry" and info.global_step == 6
    assert network(torch.rand(1, 3, 33, 35)).shape == (1, 3, 33, 35)


@pytest.mark.slow
def test_smoke_logs_scalars_images_and_config(smoke_run: Path) -> None:
    accumulator = events(smoke_run)
    scalars = set(accumulator.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/content",
        "train/style",
        "train/total_variation",
        "lr-Adam/body",
        "lr-Adam/output",
        "perf/images_per_s",
        "train/style_layer/relu1_2",
        "train/style_layer/relu4_3",
        "train/style_weighted/relu3_3",
    }
    assert expected <= scalars
    losses = accumulator.Scalars("train/loss")
    assert [event.step for event in losses][-1] >= 5 and all(torch.isfinite(torch.tensor(e.value)) for e in losses)
    assert "preview" in accumulator.Tags()["images"] and "style" in accumulator.Tags()["images"]
    previews = accumulator.Images("preview")
    assert [image.step for image in previews] == [3, 6]
    # Two content images above their stylised versions: 2 rows of 32 px plus padding.
    assert previews[0].height == 2 * 32 + 3 * 2 and previews[0].width == 2 * 32 + 3 * 2
    assert any("config" in tag for tag in accumulator.Tags()["tensors"])
    assert (smoke_run / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_resume_continues_global_step_and_optimiser(smoke_run: Path, tmp_path: Path) -> None:
    start = smoke_run / "checkpoints" / "step_000003.ckpt"
    run_train(
        "experiment=smoke",
        f"ckpt_path={start}",
        "trainer.max_steps=8",
        f"hydra.run.dir={tmp_path / 'resumed'}",
        cwd=tmp_path,
    )
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8
    assert checkpoint["optimizer_states"][0]["state"][0]["step"].item() == 8
    losses = events(tmp_path / "resumed").Scalars("train/loss")
    assert min(event.step for event in losses) >= 3, "a resumed run starts from the checkpoint's step"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["style=monet"], "Available options in 'style'"),
        (
            ["style.starry.image=/nonexistent/painting.jpg"],
            "style.starry.image='/nonexistent/painting.jpg' does not exist",
        ),
        (["data.image_size=8"], "data.image_size=8 is too small for the deepest loss layer relu4_3 of vgg16"),
        (["style.starry.size=4"], "style.starry.size=4 is too small"),
        (["style_size=4"], "style.starry.size=4 is too small"),
        (["+style.starry.colour=1"], "style.starry has unknown key(s) ['colour']"),
        (["style=[]"], "no style selected"),
        (["style=[]", "+style.monet.size=256"], "style.monet.image is missing"),
        (["+style.identity.image=x.jpg"], "'identity' names the identity condition"),
        (["style.starry.style_weight=-2"], "style.starry.style_weight=-2.0 is out of range"),
        (["loss.content_layer=relu9_1"], "loss layers ['relu9_1'] do not exist in vgg16"),
        (["loss.weights=/nonexistent/vgg.pth"], "loss network weights file '/nonexistent/vgg.pth' does not exist"),
        (["loss.style_normalisation=gatys"], "loss.style_normalisation='gatys' is unknown"),
        (["model.base_channels=0"], "model.base_channels=0 is out of range"),
        (["callbacks.images.every_n_steps=0"], "callbacks.images: every_n_steps=0"),
        (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is out of range"),
        (["data.batch_size=0"], "data.batch_size=0 is out of range"),
        (["loss.style_weight=-1"], "loss.style_weight=-1.0 is out of range"),
        (["loss.stability_weight=-1e5"], "loss.stability_weight=-100000.0 is out of range"),
        (["data.batch_size=four"], "Value 'four' of type 'str' could not be converted to Integer"),
        (["trainer.max_steps=many"], "trainer.max_steps='many' has the wrong type: it must be an integer"),
        (["loss.no_such_key=1"], "Could not override 'loss.no_such_key'"),
        (["ckpt_path=/nonexistent.ckpt"], "ckpt_path='/nonexistent.ckpt' does not exist"),
    ],
)
def test_bad_input_fails_before_training(tmp_path: Path, overrides: list[str], message: str) -> None:
    """In process: the message a user sees (Hydra's own for composition, ours for the rest), and nothing written."""
    with pytest.raises((NstFastError, ConfigCompositionException, MissingConfigException)) as caught:
        train_in_process(tmp_path / "run", "experiment=smoke", *overrides)
    assert message in f"{caught.value} {caught.value.__cause__}"  # Hydra keeps OmegaConf's reason as the cause
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["style.starry.style_weight=-2"], "style.starry.style_weight=-2.0 is out of range"),  # ours
        (["loss.no_such_key=1"], "Could not override 'loss.no_such_key'"),  # Hydra's
    ],
)
def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = run_train("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", *overrides, cwd=tmp_path, check=False)
    assert result.returncode == 2, "a usage error, whether Hydra or our checks find it"
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_resume_refuses_another_style(smoke_run: Path, tmp_path: Path) -> None:
    last = smoke_run / "checkpoints" / "last.ckpt"
    result = run_train(
        "experiment=smoke",
        "style=wave",
        f"ckpt_path={last}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "was trained for the styles ['starry@64'], but this run is configured for ['wave@64']" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_too_few_samples_for_a_batch_is_an_error(tmp_path: Path) -> None:
    result = run_train(
        "experiment=smoke",
        "data.samples_per_epoch=null",
        "data.batch_size=7",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "6 samples per epoch cannot fill one batch of data.batch_size=7" in result.stderr


@pytest.mark.slow
def test_empty_data_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    result = run_train(
        "experiment=smoke",
        "data=folder",
        f"data.root={tmp_path / 'photos'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "holds no images" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_broken_training_files_are_skipped_and_counted(tmp_path: Path) -> None:
    from image_factory import write_bad_images, write_good_images

    write_good_images(tmp_path / "photos")
    bad = write_bad_images(tmp_path / "photos" / "broken")
    run_dir = tmp_path / "run"
    result = run_train(
        "experiment=smoke",
        "data=folder",
        f"data.root={tmp_path / 'photos'}",
        "data.samples_per_epoch=24",
        "trainer.max_steps=12",
        "data.max_pixels=100000000",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    log = (run_dir / "train.log").read_text()
    for path in bad.values():
        assert log.count(f"skipped unreadable training image {path}") == 1, "each bad file is reported once"
    skipped = events(run_dir).Scalars("data/skipped_files")
    assert skipped[-1].value == len(bad)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    result = run_train(
        "experiment=smoke", f"ckpt_path={bogus}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "is corrupt or not a PyTorch file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_resume_accepts_the_same_style_at_another_path(smoke_run: Path, tmp_path: Path) -> None:
    import shutil

    from nst_fast.assets import asset_path

    moved = tmp_path / "elsewhere" / "starry_night.jpg"
    moved.parent.mkdir()
    shutil.copy(asset_path("styles/starry_night.jpg"), moved)
    last = smoke_run / "checkpoints" / "last.ckpt"
    run_train(
        "experiment=smoke",
        f"style.starry.image={moved}",
        f"ckpt_path={last}",
        "trainer.max_steps=7",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7


# --- Several styles in one network ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("multi")
    run_train(
        "experiment=smoke", "style=[wave,starry,udnie]", f"hydra.run.dir={run_dir}", cwd=tmp_path_factory.mktemp("cwd")
    )
    return run_dir


@pytest.mark.slow
def test_several_styles_train_one_network_with_identity(multi_run: Path) -> None:
    network, info = load_transformer(multi_run / "checkpoints" / "last.ckpt")
    assert info.style_names == ["wave", "starry", "udnie"] and info.identity
    assert [style["size"] for style in info.styles] == [64, 64, 64]
    assert info.transformer == {"base_channels": 8, "residual_blocks": 1, "num_conditions": 4}
    x = torch.rand(2, 3, 33, 35)
    outputs = [network(x, torch.eye(4)[[k, k]]) for k in range(4)]
    assert all(out.shape == x.shape for out in outputs)
    assert min((a - b).abs().max() for i, a in enumerate(outputs) for b in outputs[i + 1 :]) > 0, "conditions differ"


@pytest.mark.slow
def test_several_styles_log_per_style_costs_and_a_row_per_condition(multi_run: Path) -> None:
    accumulator = events(multi_run)
    scalars = set(accumulator.Tags()["scalars"])
    for name in ("wave", "starry", "udnie"):
        assert {f"train/style/{name}", f"train/content/{name}"} <= scalars
    assert "train/content/identity" in scalars and "train/style/identity" not in scalars
    assert {"style/wave", "style/starry", "style/udnie"} <= set(accumulator.Tags()["images"])
    preview = accumulator.Images("preview")[-1]
    # The photos, then one row per style and one for the identity: 5 rows of 32 px plus padding.
    assert preview.height == 5 * 32 + 6 * 2 and preview.width == 2 * 32 + 3 * 2


@pytest.mark.slow
def test_resume_several_styles_and_refuse_another_list(multi_run: Path, tmp_path: Path) -> None:
    start = multi_run / "checkpoints" / "step_000003.ckpt"
    run_train(
        "experiment=smoke",
        "style=[wave,starry,udnie]",
        f"ckpt_path={start}",
        "trainer.max_steps=7",
        f"hydra.run.dir={tmp_path / 'resumed'}",
        cwd=tmp_path,
    )
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7
    result = run_train(
        "experiment=smoke",
        "style=[starry,wave,udnie]",
        f"ckpt_path={start}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "trained for the styles ['wave@64', 'starry@64', 'udnie@64', 'identity'], but this run is configured "
        "for ['starry@64', 'wave@64', 'udnie@64', 'identity']"
    ) in result.stderr


@pytest.mark.slow
def test_finetune_adds_a_style_and_trains_only_its_norm_rows(multi_run: Path, tmp_path: Path) -> None:
    from nst_fast.assets import asset_path

    base = multi_run / "checkpoints" / "last.ckpt"
    run_train(
        "experiment=smoke",
        "style=[]",
        f"+style.monet.image={asset_path('styles/composition_vii.jpg')}",
        f"finetune_from={base}",
        f"hydra.run.dir={tmp_path / 'tuned'}",
        cwd=tmp_path,
    )
    before, _ = load_transformer(base)
    after, info = load_transformer(tmp_path / "tuned" / "checkpoints" / "last.ckpt")
    assert info.condition_names == ["wave", "starry", "udnie", "monet", "identity"]
    old, new = before.state_dict(), after.state_dict()
    changed_rows = 0
    for key, value in old.items():
        if value.shape == new[key].shape:
            assert torch.equal(value, new[key]), f"{key} is shared and frozen"
        else:  # a conditional norm's table: the old rows kept, the new one (index 3) trained
            assert torch.equal(value[:3], new[key][:3]) and torch.equal(value[3:], new[key][4:]), key
            changed_rows += int(not torch.allclose(new[key][3], value[:3].mean(dim=0)))
    assert changed_rows > 0, "the new style's scale and shift rows learn"
    result = run_train(
        "experiment=smoke",
        "style=[starry]",
        f"finetune_from={base}",
        f"hydra.run.dir={tmp_path / 'again'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2 and "already has style(s) ['starry']" in result.stderr
    # Resuming the fine-tuned checkpoint as a full run (no finetune_from) would train what was frozen: refused.
    tuned = tmp_path / "tuned" / "checkpoints" / "last.ckpt"
    result = run_train(
        "experiment=smoke",
        "style=[wave,starry,udnie]",
        f"+style.monet.image={asset_path('styles/composition_vii.jpg')}",
        f"ckpt_path={tuned}",
        f"hydra.run.dir={tmp_path / 'full'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2 and "trained the conditions ['monet'], but this run would train" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.samples_per_epoch=null", "data.batch_size=7"], "6 samples per epoch cannot fill one batch"),
        (
            [
                "data.samples_per_epoch=null",
                "data.batch_size=4",
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
            ],
            "6 samples per epoch cannot fill one batch of data.batch_size=4 on each of 2 device(s)",
        ),
        (["callbacks.images.every_n_steps=0"], "callbacks.images: every_n_steps=0"),
    ],
)
def test_config_errors_come_before_the_loss_network_loads(tmp_path: Path, overrides: list[str], message: str) -> None:
    # Weights that cannot be read: if they were loaded first, their error would be the one reported.
    unreadable = tmp_path / "vgg16.pth"
    unreadable.write_text("not a state dict")
    with pytest.raises(NstFastError) as caught:
        train_in_process(tmp_path / "run", "experiment=smoke", f"loss.weights={unreadable}", *overrides)
    assert message in str(caught.value) and "could not read loss network weights" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.base_channels=16", "was trained with transformer {'base_channels': 8, 'residual_blocks': 1}"),
        ("model.residual_blocks=2", "was trained with transformer {'base_channels': 8, 'residual_blocks': 1}"),
        (
            "style.starry.size=128",
            "trained for the styles ['starry@64'], but this run is configured for ['starry@128']",
        ),
    ],
)
def test_resume_refuses_another_network_or_style_size(
    smoke_run: Path, tmp_path: Path, override: str, message: str
) -> None:
    last = smoke_run / "checkpoints" / "last.ckpt"
    result = run_train(
        "experiment=smoke",
        override,
        f"ckpt_path={last}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_nonfinite_losses_stop_with_their_own_status_and_keep_checkpoints(tmp_path: Path) -> None:
    # A huge learning rate: the first steps are finite, their updates blow the weights up, later losses are NaN/inf.
    run_dir = tmp_path / "run"
    result = run_train(
        "experiment=smoke",
        "module.optimizer.lr=1e30",
        "trainer.max_steps=50",
        "module.max_consecutive_nonfinite=3",
        "callbacks.checkpoint.every_n_train_steps=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "3 such steps in a row, stopping" in errors[0] and "Traceback" not in result.stderr
    steps = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.ckpt"))
    assert steps and steps == list(range(1, steps[-1] + 1)), "every finite step's checkpoint is kept"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps[-1]
    assert f"non-finite loss at step {steps[-1]}:" in errors[0], "skipped steps do not advance the step"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three photos that are not training photos (random noise and flat colours), one of them not square."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("held_out")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / "noise.png")
    Image.new("RGB", (40, 40), (200, 30, 90)).save(folder / "red.jpg")
    Image.new("RGB", (64, 40), (20, 160, 90)).save(folder / "green_wide.png")
    return folder


@pytest.mark.slow
def test_validation_logs_held_out_costs_and_preview(held_out: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(
        "experiment=smoke",
        "style=[wave,starry]",
        f"data.val_root={held_out}",
        "data.val_size=32",
        "trainer.val_check_interval=3",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    accumulator = events(run_dir)
    for tag in ("val/content", "val/style", "val/total", "val/style/wave", "val/style/starry"):
        values = accumulator.Scalars(tag)
        assert [event.step for event in values] == [3, 6], tag
        assert all(np.isfinite(event.value) and event.value > 0 for event in values), tag
    total, content, style = (accumulator.Scalars(t)[-1].value for t in ("val/total", "val/content", "val/style"))
    assert total > content and total > 0
    styles = [accumulator.Scalars(f"val/style/{name}")[-1].value for name in ("wave", "starry")]
    assert style == pytest.approx(sum(styles) / 2, rel=1e-4), "val/style averages the styles"
    previews = accumulator.Images("val/preview")
    assert [image.step for image in previews] == [3, 6]
    # Two held-out photos (num_images=2) above one row per style and the identity: 4 rows of 32 px.
    assert previews[0].height == 4 * 32 + 5 * 2 and previews[0].width == 2 * 32 + 3 * 2


@pytest.mark.parametrize("case", ["missing", "training photos"])
def test_validation_folder_mistakes_name_the_key(case: str, tmp_path: Path) -> None:
    from nst_fast.assets import asset_path

    folder = tmp_path / "nowhere" if case == "missing" else Path(asset_path("content"))
    with pytest.raises(NstFastError) as caught:
        train_in_process(tmp_path / "run", "experiment=smoke", f"data.val_root={folder}")
    expected = "is not a folder" if case == "missing" else "shares photos with data.root"
    assert f"data.val_root={str(folder)!r}" in str(caught.value) and expected in str(caught.value)


def test_finetune_needs_the_base_networks_architecture(tmp_path: Path) -> None:
    from helpers import compose_train_config

    from nst_fast.checkpoint import checkpoint_metadata
    from nst_fast.errors import ConfigError
    from nst_fast.models import TransformerNet
    from nst_fast.train import plan_network

    base = TransformerNet(16, 5, num_conditions=2, separable=True)
    styles = [{"name": "wave", "image": "wave.jpg", "size": 64}]
    path = tmp_path / "base.ckpt"
    torch.save(
        {
            "state_dict": {f"transformer.{k}": v for k, v in base.state_dict().items()},
            "global_step": 3,
            "nst_fast": checkpoint_metadata(base, styles, True),
        },
        path,
    )
    with pytest.raises(
        ConfigError,
        match=r"is a TransformerNet\{'base_channels': 16, 'residual_blocks': 5, "
        r"'separable': True\}, but this run is configured for \{'base_channels': 32",
    ):
        plan_network(compose_train_config("style=[starry]", f"finetune_from={path}"))
    plan = plan_network(compose_train_config("model=light", "style=[starry]", f"finetune_from={path}"))
    assert plan.network.config["separable"] and plan.trained == [1]
