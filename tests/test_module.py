"""The LightningModule's step: costs logged, non-finite steps skipped, repeated ones stop the run."""

import logging

import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train_config
from torch.utils.data import DataLoader

from nst_fast.train import build_module


def loader(images: list[torch.Tensor]) -> DataLoader:
    return DataLoader([{"image": image, "skipped": []} for image in images], batch_size=None)


def make_module(*overrides: str):
    cfg = compose_train_config("experiment=smoke", *overrides)
    return build_module(cfg)


def fit(module, images: list[torch.Tensor]) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=len(images),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader(images))
    return trainer


def test_nonfinite_step_is_skipped_and_named(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    module = make_module()
    good = torch.rand(2, 3, 32, 32)
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    fit(module, [good])
    before = {k: v.clone() for k, v in module.transformer.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="nst_fast.module"):
        trainer = fit(module, [bad])
    assert "non-finite loss at step 0" in caplog.text and "style=" in caplog.text and "content=" in caplog.text
    after = module.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step leaves the weights alone"
    assert module.consecutive_nonfinite == 1 and trainer.state.finished


def test_repeated_nonfinite_steps_stop_the_run() -> None:
    module = make_module("module.max_consecutive_nonfinite=2")
    nan = torch.full((2, 3, 32, 32), float("nan"))
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss at step 1: total=nan, content=nan, style=nan.*2 such steps in a row"
    ):
        fit(module, [nan, nan, nan])


def test_costs_follow_the_configured_weights() -> None:
    torch.manual_seed(0)
    module = make_module("loss.content_weight=2.0", "loss.style_weight=3.0", "loss.tv_weight=5.0")
    costs = module.compute_costs(torch.rand(2, 3, 32, 32))
    expected = 2.0 * costs.content + 3.0 * costs.style + 5.0 * costs.total_variation
    torch.testing.assert_close(costs.total, expected)
    layers = module.loss.style_layers
    torch.testing.assert_close(costs.style, sum(layers[name] * cost for name, cost in costs.style_layers.items()))


def test_stability_term_uses_each_samples_condition_in_both_passes() -> None:
    from nst_fast.losses import perturb, stability_cost

    torch.manual_seed(0)
    module = make_module("style=[starry,wave]", "loss.stability_weight=7.0", "loss.stability_noise=0.05")
    assert module.channels_last, "the default layout, which the term must work with"
    images, conditions = torch.rand(3, 3, 32, 32), torch.tensor([1, 0, 2])
    torch.manual_seed(1)
    costs = module.compute_costs(images, conditions, stability=True)
    plain = module.compute_costs(images, conditions)
    torch.manual_seed(1)  # the same pan and noise, drawn again
    perturbed, shift = perturb(images, max_shift=1.0, noise_std=0.05)
    with torch.no_grad():
        expected = stability_cost(module(perturbed, conditions), module(images, conditions), shift).mean()
    assert expected > 0
    torch.testing.assert_close(costs.stability, expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(costs.total, plain.total + 7.0 * expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(costs.style, plain.style)
    assert plain.stability is None


def test_stability_term_is_logged_and_trained() -> None:
    torch.manual_seed(0)
    module = make_module("loss.stability_weight=100.0")
    trainer = fit(module, [torch.rand(2, 3, 32, 32) for _ in range(2)])
    logged = trainer.callback_metrics
    assert logged["train/stability"] > 0
    torch.testing.assert_close(logged["train/stability_weighted"], 100.0 * logged["train/stability"])
    off = fit(make_module(), [torch.rand(2, 3, 32, 32)])
    assert "train/stability" not in off.callback_metrics, "weight 0 skips the second pass"


def test_nonfinite_step_with_stability_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    module = make_module("loss.stability_weight=1.0")
    bad = torch.rand(2, 3, 32, 32)
    bad[1, 2, 3, 4] = float("inf")
    before = {k: v.clone() for k, v in module.transformer.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="nst_fast.module"):
        fit(module, [bad])
    assert "non-finite loss at step 0" in caplog.text and "stability=" in caplog.text
    after = module.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_conditions_go_round_robin_to_samples_steps_and_ranks() -> None:
    module = make_module("style=[starry,wave]")  # two styles and the identity: 3 conditions
    assert module.condition_names == ["starry", "wave", "identity"]
    seen = torch.cat([module.batch_conditions(2, step) for step in range(3)])
    assert seen.tolist() == [0, 1, 2, 0, 1, 2]
    rank0, rank1 = module.batch_conditions(2, 0, 0, 2), module.batch_conditions(2, 0, 1, 2)
    assert rank0.tolist() == [0, 1] and rank1.tolist() == [2, 0], "ranks continue each other's sequence"
    counts = torch.bincount(torch.cat([module.batch_conditions(4, step) for step in range(30)]), minlength=3)
    assert counts.tolist() == [40, 40, 40], "every condition gets the same share"


def test_identity_samples_train_against_the_photo() -> None:
    torch.manual_seed(0)
    module = make_module("style=[starry,wave]")
    costs = module.compute_costs(torch.rand(3, 3, 32, 32), torch.tensor([2, 2, 2]))
    torch.testing.assert_close(costs.total, module.loss.content_weight * costs.content)
    assert costs.style == 0


@pytest.mark.parametrize("residual_output", [False, True])
def test_finetuning_freezes_everything_but_the_new_rows(residual_output: bool) -> None:
    from nst_fast.models.transformer import ConditionalInstanceNorm2d, TransformerNet
    from nst_fast.module import freeze_all_but

    torch.manual_seed(0)
    network = TransformerNet(8, 1, num_conditions=4, residual_output=residual_output)
    freeze_all_but(network, [2])
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=0.1)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    for _ in range(2):
        optimizer.zero_grad()
        network(torch.rand(2, 3, 16, 16), torch.eye(4)[[2, 2]]).square().mean().backward()
        optimizer.step()
    after = network.state_dict()
    norms = {
        f"{name}.{p}"
        for name, m in network.named_modules()
        if isinstance(m, ConditionalInstanceNorm2d)
        for p in ("weight", "bias")
    } | ({"photo_gain"} if residual_output else set())
    for key, value in before.items():
        if key in norms:
            keep = [0, 1, 3]
            assert torch.equal(value[keep], after[key][keep]), key
        else:
            assert torch.equal(value, after[key]), f"{key} is frozen"
    assert any(not torch.equal(before[key][2], after[key][2]) for key in norms)
    if residual_output:
        assert before["photo_gain"][2] != after["photo_gain"][2]  # the new style's gain learns


def test_finetuning_refuses_weight_decay_which_would_move_the_frozen_rows() -> None:
    from functools import partial

    from nst_fast.errors import ConfigError
    from nst_fast.models.transformer import TransformerNet
    from nst_fast.module import StyleTransferModule

    cfg = compose_train_config("experiment=smoke")
    from hydra.utils import instantiate

    loss = instantiate(cfg.loss)
    loss.set_styles([torch.rand(1, 3, 64, 64)])
    module = StyleTransferModule(
        TransformerNet(8, 1, num_conditions=3),
        loss,
        partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.01),
        styles=[{"name": "a"}, {"name": "b"}],
        identity=True,
        trained_conditions=[1],
    )
    with pytest.raises(ConfigError, match="weight_decay=0.01 would change the base network's styles"):
        module.configure_optimizers()
    module.optimizer_factory = partial(torch.optim.Adam, lr=1e-2)
    assert len(module.configure_optimizers().param_groups[0]["params"]) == 2 * 7  # the 7 norms' tables only


def test_output_layer_learns_at_its_own_scale() -> None:
    module = make_module("module.output_lr_scale=0.05", "module.optimizer.lr=0.002")
    body, output = module.configure_optimizers().param_groups
    last = module.transformer.decoder[-1]
    assert [id(p) for p in output["params"]] == [id(last.weight), id(last.bias)]
    assert body["lr"] == 0.002 and output["lr"] == pytest.approx(0.002 * 0.05)
    assert len(body["params"]) + 2 == len(list(module.transformer.parameters()))
    single = make_module("module.output_lr_scale=1").configure_optimizers().param_groups
    assert len(single) == 1 and single[0]["lr"] == 1e-3


def first_steps_costs(output_lr_scale: float, steps: int = 3) -> list[float]:
    """The smoke objective (random loss network) of a fresh Johnson network on fixed photos before each of
    ``steps`` Adam steps (lr 1e-3)."""
    from functools import partial

    from nst_fast.models.transformer import TransformerNet
    from nst_fast.module import StyleTransferModule

    torch.manual_seed(0)
    module = make_module()
    module = StyleTransferModule(
        TransformerNet(),
        module.loss,
        partial(torch.optim.Adam, lr=1e-3),
        styles=module.styles,
        output_lr_scale=output_lr_scale,
    )
    optimizer = module.configure_optimizers()
    photos = torch.rand(2, 3, 64, 64)
    costs = []
    for _ in range(steps):
        total = module.compute_costs(photos).total
        costs.append(total.item())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return costs


def test_first_adam_step_no_longer_makes_the_loss_jump() -> None:
    """The first-step spike: Adam's first update moves every weight by about lr whatever its gradient, and the
    2592 weights into each output channel (no normalisation after them) move together, so the image jumps.
    With one learning rate the cost doubles at step 1 here; with the output layer at 1/100 it goes down."""
    plain, scaled = first_steps_costs(1.0), first_steps_costs(0.01)
    assert plain[1] > 1.5 * plain[0], plain
    assert scaled[1] < scaled[0] and scaled[2] < scaled[0], scaled


def test_resume_redraws_the_parameter_groups_of_an_older_optimiser_state() -> None:
    module = make_module()  # output_lr_scale 0.01: two groups
    old = make_module("module.output_lr_scale=1")  # one group, as checkpoints from before the output scale
    old_optimizer = old.configure_optimizers()
    old.transformer(torch.rand(1, 3, 32, 32)).mean().backward()
    old_optimizer.step()
    state = old_optimizer.state_dict()
    module._match_parameter_groups(state)
    optimizer = module.configure_optimizers()
    optimizer.load_state_dict(state)
    body, output = optimizer.param_groups
    count = len(list(module.transformer.parameters()))
    assert [len(body["params"]), len(output["params"])] == [count - 2, 2]
    assert body["lr"] == 1e-3 and output["lr"] == pytest.approx(1e-5)
    assert optimizer.state[output["params"][0]]["exp_avg"].shape == module.transformer.decoder[-1].weight.shape


def test_jitter_crops_photo_and_output_alike_in_training_only() -> None:
    torch.manual_seed(0)
    module = make_module("loss.jitter=4")
    content, generated = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    module.train()
    seen, generated_seen = module._jittered(content, generated)
    assert seen.shape == generated_seen.shape == (2, 3, 29, 29)
    offsets = set()
    for _ in range(40):
        seen, generated_seen = module._jittered(content, generated)
        # the same window of both: find it by value
        top = next(
            t for t in range(4) for left in range(4) if torch.equal(seen, content[..., t : t + 29, left : left + 29])
        )
        left = next(x for x in range(4) if torch.equal(seen, content[..., top : top + 29, x : x + 29]))
        assert torch.equal(generated_seen, generated[..., top : top + 29, left : left + 29])
        offsets.add((top, left))
    assert len(offsets) > 4, "the offset changes from step to step"
    module.eval()
    assert module._jittered(content, generated)[0] is content  # validation sees the whole image


def test_cosine_schedule_decays_the_learning_rate_to_zero_at_max_steps() -> None:
    module = make_module("module.lr_schedule=cosine", "module.optimizer.lr=0.01", "module.output_lr_scale=1")
    trainer = fit(module, [torch.rand(2, 3, 32, 32) for _ in range(4)])
    group = trainer.optimizers[0].param_groups[0]
    assert group["lr"] == pytest.approx(0.0, abs=1e-12)  # 4 of 4 steps done: cos(pi) -> 0
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert [scheduler.lr_lambdas[0](step) for step in (0, 2, 4)] == pytest.approx([1.0, 0.5, 0.0])


def test_unknown_lr_schedule_is_refused() -> None:
    from nst_fast.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_schedule='linear' is unknown"):
        make_module("module.lr_schedule=linear")


def test_exact_identity_gives_back_the_photo_and_gets_no_training_samples() -> None:
    torch.manual_seed(0)
    module = make_module("style=[starry,wave]", "model.residual_output=true")
    assert module.exact_identity and module.condition_names == ["starry", "wave", "identity"]
    conditions = module.batch_conditions(6, step=0)
    assert conditions.tolist() == [0, 1, 0, 1, 0, 1]  # round robin over the styles only
    photo = torch.randint(0, 256, (1, 3, 37, 41)) / 255.0
    fit(module, [torch.rand(2, 3, 32, 32) for _ in range(2)])  # the identity row stays pinned through training
    with torch.no_grad():
        identity = module.transformer(photo, torch.tensor([[0.0, 0.0, 1.0]]))
        styled = module.transformer(photo, torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.equal((identity * 255).round(), (photo * 255).round())
    assert float((styled - photo).abs().mean()) > 1e-3
    gains = module.transformer.photo_gain.detach()
    assert gains[2] == 1.0 and bool((gains[:2] != 0.0).all())  # the styles' gains learn from 0, the identity's stays


def test_exact_identity_with_feature_noise_is_the_photo_and_its_noise_row_stays_zero() -> None:
    """The full-resolution noise enters after the last norm: the identity's row of its scale table is zero and gets
    no gradient, even from a blend with a style (the photo comes back exactly), while the styles' rows learn."""
    torch.manual_seed(0)
    module = make_module("style=[starry,wave]", "model.residual_output=true", "model.feature_noise=true")
    scale = module.transformer.noise_scale_full
    assert scale.shape == (3, module.transformer.output_norm.num_features) and bool((scale[2] == 0).all())
    with torch.no_grad():
        scale[:2].uniform_(-1, 1)  # the styles' rows as training would leave them
        module.transformer.output_norm.weight[:2].uniform_(0.5, 1.5)
    module.transformer(torch.rand(1, 3, 32, 32), torch.tensor([[0.5, 0.0, 0.5]])).sum().backward()
    assert bool((scale.grad[2] == 0).all()) and bool((scale.grad[0] != 0).any())
    before = scale.detach().clone()
    fit(module, [torch.rand(2, 3, 32, 32) for _ in range(2)])
    photo = torch.randint(0, 256, (1, 3, 37, 41)) / 255.0
    with torch.no_grad():
        identity = module.transformer.eval()(photo, torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.equal((identity * 255).round(), (photo * 255).round())
    assert bool((scale[2] == 0).all()) and not torch.equal(scale[:2], before[:2])


def test_resuming_a_checkpoint_with_one_shared_noise_row_pins_the_identity_and_keeps_the_moments() -> None:
    """Checkpoints from before the per-condition table: the shared row ``[C]`` goes to every style, 0 to the exact
    identity; Adam's moments ``[C]`` go to every row."""
    module = make_module("style=[starry,wave]", "model.residual_output=true", "model.feature_noise=true")
    channels = module.transformer.output_norm.num_features
    row = torch.linspace(-1, 1, channels)
    parameters = [p for group in module.parameter_groups() for p in group["params"]]
    index = next(i for i, p in enumerate(parameters) if p is module.transformer.noise_scale_full)
    moments = {"step": torch.tensor(5.0), "exp_avg": row * 0.1, "exp_avg_sq": row**2}
    state_dict = {f"transformer.{k}": v for k, v in module.transformer.state_dict().items()}
    state_dict["transformer.noise_scale_full"] = row.clone()
    configured = module.configure_optimizers()
    configured = configured["optimizer"] if isinstance(configured, dict) else configured
    optimizer = {**configured.state_dict(), "state": {index: dict(moments)}}
    checkpoint = {"state_dict": state_dict, "optimizer_states": [optimizer]}
    module.on_load_checkpoint(checkpoint)
    assert torch.equal(state_dict["transformer.noise_scale_full"], torch.stack([row, row, torch.zeros(channels)]))
    saved = optimizer["state"][index]
    zero = torch.zeros(1, channels)
    assert torch.equal(saved["exp_avg"], torch.cat([(row * 0.1).expand(2, -1), zero]))
    assert torch.equal(saved["exp_avg_sq"], torch.cat([(row**2).expand(2, -1), zero]))
    assert torch.equal(saved["step"], torch.tensor(5.0))
    configured.load_state_dict(optimizer)  # and Adam takes it


def test_a_fine_tuning_run_saved_while_the_noise_table_was_frozen_resumes() -> None:
    """Fine-tuning runs from before the per-condition noise table had no optimiser entry for it (frozen): on resume
    it gets its number, the parameters after it move up with their moments, and Adam loads the state."""
    from nst_fast.assets import asset_path

    painting = asset_path("styles/wave.jpg")
    base = ("finetune_from=paintings", "model=paintings", "model.base_channels=32", "model.residual_blocks=5")
    module = make_module("style=[]", f"+style.monet.image={painting}", *base)
    parameters = [p for group in module.parameter_groups() for p in group["params"]]
    position = next(i for i, p in enumerate(parameters) if p is module.transformer.noise_scale_full)
    configured = module.configure_optimizers()
    configured = configured["optimizer"] if isinstance(configured, dict) else configured
    current = configured.state_dict()
    old_numbers = [i for i in range(len(parameters)) if i != position]  # the old run's parameters, renumbered
    old_state = {new: {"marker": torch.tensor(float(i))} for new, i in enumerate(old_numbers)}
    old_groups, taken = [], 0
    for group in current["param_groups"]:
        size = len(group["params"]) - int(position in group["params"])
        old_groups.append({**group, "params": list(range(taken, taken + size))})
        taken += size
    state = {"state": old_state, "param_groups": old_groups}
    module.on_load_checkpoint({"state_dict": {}, "optimizer_states": [state]})
    assert sorted(state["state"]) == old_numbers and position not in state["state"]
    assert all(float(moments["marker"]) == index for index, moments in state["state"].items())
    assert [group["params"] for group in state["param_groups"]] == [g["params"] for g in current["param_groups"]]
