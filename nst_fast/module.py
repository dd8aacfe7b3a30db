"""LightningModule: trains a ``TransformerNet`` against a ``PerceptualLoss`` for one or more style images, and
optionally the identity (one network, one condition per style: conditional instance normalisation)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from nst_fast.checkpoint import CHECKPOINT_KEY, IDENTITY_NAME, checkpoint_metadata, pin_identity_noise
from nst_fast.errors import ConfigError, NonFiniteLossError
from nst_fast.losses import perturb, stability_cost
from nst_fast.models.transformer import ConditionalInstanceNorm2d, TransformerNet, rows_per_condition
from nst_fast.perceptual import IDENTITY, Costs, PerceptualLoss

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
#: Prefix of the frozen VGG weights in the state dict; they are not stored in checkpoints (rebuilt from config).
LOSS_NETWORK_PREFIX = "loss.features."
#: ``constant``: the optimiser's learning rate throughout; ``cosine``: from it down to 0 at ``trainer.max_steps``
#: along half a cosine (Loshchilov & Hutter 2017), so that the last checkpoint is where the noise of a constant
#: rate has settled rather than wherever it left the weights.
LR_SCHEDULES = ("constant", "cosine")


class StyleTransferModule(pl.LightningModule):
    """Owns the transformation network, the frozen loss network (with its style targets set) and the
    assignment of conditions (styles, identity) to training samples.

    ``styles``: what the checkpoint records about each style of the network (name, image, size), in condition
    order; ``identity``: the network has one more condition, last, trained with the content cost only.
    ``trained_conditions``: the conditions this run trains (default: all); ``loss`` holds the style targets of
    the trained styles in that order. With fewer conditions than the network has (a new style added by
    fine-tuning), everything but the trained conditions' normalisation parameters is frozen.
    ``optimizer``: a factory ``params -> Optimizer`` (Hydra ``_partial_``); ``output_lr_scale`` multiplies its learning
    rate for the network's output layer (``TransformerNet.output_parameters``), a second parameter group.
    ``channels_last``: NHWC memory layout
    for both networks. ``max_consecutive_nonfinite``: steps with a NaN/inf loss are skipped; this many in a row
    stop the run. ``compile``: ``torch.compile`` both networks in place (state dict keys unchanged) when fitting.

    Conditions go to samples round-robin (``batch_conditions``): sample ``i`` of step ``t`` on rank ``r`` of ``R``
    trains condition ``(t R B + r B + i) mod K`` of the ``K`` trained ones, so every condition gets the same
    share of samples (exactly, every ``K`` steps) and each step's gradient on the shared convolutions mixes
    several styles instead of pulling towards one style per step.
    """

    def __init__(
        self,
        transformer: TransformerNet,
        loss: PerceptualLoss,
        optimizer: OptimizerFactory,
        styles: Sequence[dict[str, Any]],
        identity: bool = False,
        trained_conditions: Sequence[int] | None = None,
        channels_last: bool = False,
        max_consecutive_nonfinite: int = 10,
        compile: bool = False,
        output_lr_scale: float = 1.0,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.loss = loss
        self.optimizer_factory = optimizer
        self.styles = [dict(style) for style in styles]
        self.identity = identity
        self.channels_last = channels_last
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.compile_networks = compile
        self.output_lr_scale = output_lr_scale
        if lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule={lr_schedule!r} is unknown; choose one of {LR_SCHEDULES}")
        self.lr_schedule = lr_schedule
        self.consecutive_nonfinite = 0
        self.skip_update = False
        self.skipped_files: set[str] = set()
        conditions = len(self.styles) + int(identity)
        if transformer.num_conditions != conditions:
            raise ValueError(
                f"the network has {transformer.num_conditions} condition(s) but {len(self.styles)} style(s)"
                f"{' + identity' if identity else ''} were given"
            )
        trained = list(range(conditions)) if trained_conditions is None else list(trained_conditions)
        trained_styles = [c for c in trained if c < len(self.styles)]
        if loss.style is None or loss.style.num_styles != len(trained_styles):
            raise ValueError(f"the loss must hold the targets of the {len(trained_styles)} trained style(s)")
        style_index = torch.full((conditions,), IDENTITY, dtype=torch.long)
        style_index[trained_styles] = torch.arange(len(trained_styles))
        self.register_buffer("trained_conditions", torch.tensor(trained, dtype=torch.long), persistent=False)
        self.register_buffer("style_index_of_condition", style_index, persistent=False)
        # With a residual output, the identity is exact by design (zero scale and shift in the last norm): it is
        # pinned there and needs no training samples, which all go to the styles.
        self.exact_identity = identity and transformer.residual_output
        if self.exact_identity:
            pin_exact_identity(transformer, conditions - 1)
        sampled = [c for c in trained if not (self.exact_identity and c == conditions - 1)]
        self.register_buffer("sampled_conditions", torch.tensor(sampled, dtype=torch.long), persistent=False)
        if len(trained) < conditions:
            freeze_all_but(transformer, trained)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def condition_names(self) -> list[str]:
        """The network's conditions in order: style names, then ``identity`` if it has one."""
        return [style["name"] for style in self.styles] + ([IDENTITY_NAME] if self.identity else [])

    def condition_weights(self, conditions: Tensor) -> Tensor | None:
        """One-hot mixing weights ``[B, K]`` for condition indices ``[B]``; ``None`` for a one-condition network."""
        if self.transformer.num_conditions == 1:
            return None
        return torch.nn.functional.one_hot(conditions, self.transformer.num_conditions).float()

    def forward(self, content: Tensor, conditions: Tensor | None = None) -> Tensor:
        """Stylise ``[B, 3, H, W]`` images in [0, 1]; ``conditions`` ``[B]`` picks each image's condition (default 0)."""
        if conditions is None:
            conditions = torch.zeros(content.shape[0], dtype=torch.long, device=content.device)
        return self.transformer(self._layout(content), self.condition_weights(conditions))

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batch_conditions(self, batch_size: int, step: int, rank: int = 0, world_size: int = 1) -> Tensor:
        """Condition of each sample of a batch, round-robin over the trained conditions (see the class doc)."""
        first = (step * world_size + rank) * batch_size
        positions = torch.arange(first, first + batch_size, device=self.sampled_conditions.device)
        return self.sampled_conditions[positions % len(self.sampled_conditions)]

    def compute_costs(self, content: Tensor, conditions: Tensor | None = None, stability: bool = False) -> Costs:
        """Stylise a batch (each image with its condition, default the first) and measure all cost terms (used
        by training and by the benchmarks).

        ``stability``: also stylise a panned, noisy copy of the batch (``nst_fast.losses.perturb``, same
        conditions, one network pass over both halves) and add ``loss.stability_weight * J_stab`` to the total.
        """
        if conditions is None:
            conditions = self.trained_conditions[:1].expand(content.shape[0])
        content = self._layout(content)
        weights = self.condition_weights(conditions)
        style_index = self.style_index_of_condition[conditions]
        if not stability:
            generated = self.transformer(content, weights)
            seen, generated_seen = self._jittered(content, generated)
            return self.loss(self.loss.content_target(seen), generated_seen, style_index)
        perturbed, shift = perturb(content, self.loss.stability_shift, self.loss.stability_noise)
        both = torch.cat([content, self._layout(perturbed.to(content.dtype))])
        generated, generated_perturbed = self.transformer(
            both, None if weights is None else torch.cat([weights, weights])
        ).chunk(2)
        seen, generated_seen = self._jittered(content, generated)
        costs = self.loss(self.loss.content_target(seen), generated_seen, style_index)
        stability_term = stability_cost(generated_perturbed, generated, shift).mean()
        return dataclasses.replace(
            costs, total=costs.total + self.loss.stability_weight * stability_term, stability=stability_term
        )

    def _jittered(self, content: Tensor, generated: Tensor) -> tuple[Tensor, Tensor]:
        """What the loss network sees in training: photo and generated image cropped alike at a random offset of
        ``0 .. loss.jitter - 1`` px (both sides ``jitter - 1`` px smaller), so that the transformation network's
        pixel grid meets the loss network's pooling grid at a different phase each step. Unchanged when
        evaluating or with ``jitter`` <= 1."""
        jitter = self.loss.jitter
        if jitter <= 1 or not self.training:
            return content, generated
        top, left = torch.randint(0, jitter, (2,)).tolist()
        height, width = content.shape[-2] - jitter + 1, content.shape[-1] - jitter + 1
        window = (..., slice(top, top + height), slice(left, left + width))
        return content[window], generated[window]

    def configure_model(self) -> None:
        if self.compile_networks:
            self.transformer.compile()
            self.loss.features.compile()

    def on_train_start(self) -> None:
        log.info("rank %d of %d training on %s", self.global_rank, self.trainer.world_size, self.device)
        self.transformer.noise_stream = self.global_rank  # model.input_noise: each rank its own places

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self._report_skipped(batch.get("skipped", []))
        # Each micro-batch of an accumulated step continues the sequence, so an update still mixes conditions.
        accumulate = self.trainer.accumulate_grad_batches
        position = self.global_step * accumulate + batch_idx % accumulate
        conditions = self.batch_conditions(batch["image"].shape[0], position, self.global_rank, self.trainer.world_size)
        costs = self.compute_costs(batch["image"], conditions, stability=self.loss.stability_weight > 0)
        finite = bool(torch.isfinite(costs.total).item())
        # Every rank must take the same decision, or DDP's gradient all-reduce hangs.
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            return self._skip_nonfinite(costs)
        self.consecutive_nonfinite = 0
        batch_size = batch["image"].shape[0]
        metrics = {"train/content": costs.content}
        if costs.stability is not None:
            metrics["train/stability"] = costs.stability
            # What the term adds to the total: compare with style_weighted and content when choosing the weight.
            metrics["train/stability_weighted"] = self.loss.stability_weight * costs.stability
        if bool((self.style_index_of_condition[conditions] != IDENTITY).any()):  # not an identity-only batch
            metrics["train/style"] = costs.style
            metrics["train/total_variation"] = costs.total_variation
            for name, cost in costs.style_layers.items():
                metrics[f"train/style_layer/{name}"] = cost
                # What each layer adds to the total: compare these when choosing lambda_l.
                metrics[f"train/style_weighted/{name}"] = self.loss.style_weight * self.loss.style_layers[name] * cost
        if len(self.condition_names) > 1:
            metrics.update(self._per_condition_metrics(costs, conditions))
        self.log_dict(metrics, batch_size=batch_size, sync_dist=False)
        self.log("train/loss", costs.total, prog_bar=True, batch_size=batch_size)
        return costs.total

    def on_validation_epoch_start(self) -> None:
        self.validation_sums: dict[str, Tensor] = {}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Held-out photos (``data.val_root``) stylised with every trained style; sums of their costs per image
        (content, style, the training objective's total; per style when there are several), made into means by
        ``on_validation_epoch_end``. The identity condition is left out (it has no style cost)."""
        images = batch["image"]
        batch_size = images.shape[0]
        trained_styles = [c for c in self.trained_conditions.tolist() if self.style_index_of_condition[c] != IDENTITY]
        sums = self.validation_sums
        for condition in trained_styles:
            conditions = torch.full((batch_size,), condition, dtype=torch.long, device=images.device)
            costs = self.compute_costs(images, conditions)
            terms = {"val/content": costs.content, "val/style": costs.style, "val/total": costs.total}
            if len(trained_styles) > 1:
                terms[f"val/style/{self.condition_names[condition]}"] = costs.style * len(trained_styles)
            for name, value in terms.items():  # costs are batch means; the overall means divide by styles too
                sums[name] = sums.get(name, 0.0) + value.detach().double() * batch_size / len(trained_styles)
        sums["images"] = sums.get("images", 0.0) + torch.tensor(
            float(batch_size), dtype=torch.float64, device=images.device
        )

    def on_validation_epoch_end(self) -> None:
        """Log the held-out means at the global step of the weights they measure (Lightning's own ``self.log``
        would file them one step earlier during fitting), summed over DDP ranks first."""
        if self.trainer.sanity_checking or not self.validation_sums:
            return
        names = sorted(self.validation_sums)
        totals = self.trainer.strategy.reduce(torch.stack([self.validation_sums[n] for n in names]), reduce_op="sum")
        sums = dict(zip(names, totals.tolist(), strict=False))
        images = sums.pop("images")
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics({name: value / images for name, value in sums.items()}, step=self.global_step)

    def _per_condition_metrics(self, costs: Costs, conditions: Tensor) -> dict[str, Tensor]:
        """``train/style/<name>`` and ``train/content/<name>``: this batch's mean costs per condition present."""
        metrics = {}
        names = self.condition_names
        for condition in conditions.unique().tolist():
            chosen = conditions == condition
            name = names[condition]
            metrics[f"train/content/{name}"] = costs.sample_content[chosen].mean()
            if condition < len(self.styles):
                metrics[f"train/style/{name}"] = costs.sample_style[chosen].mean()
        return metrics

    def _skip_nonfinite(self, costs: Costs) -> Tensor:
        """Count and report a non-finite step; its loss still goes through backward (under DDP every rank must
        take part in the gradient all-reduce, and Lightning refuses a ``None`` there), and ``optimizer_step``
        then leaves the weights and the optimiser state alone."""
        self.consecutive_nonfinite += 1
        self.skip_update = True
        terms = ", ".join(
            f"{name}={value.item():.4g}"
            for name, value in [
                ("total", costs.total),
                ("content", costs.content),
                ("style", costs.style),
                ("total_variation", costs.total_variation),
                *costs.style_layers.items(),
                *([("stability", costs.stability)] if costs.stability is not None else []),
            ]
        )
        message = f"non-finite loss at step {self.global_step}: {terms}"
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{message}; {self.consecutive_nonfinite} such steps in a row, stopping. The checkpoints written so "
                "far are kept: resume from the last one with a lower learning rate or loss weights"
            )
        log.warning("%s; skipping this step (%d in a row)", message, self.consecutive_nonfinite)
        return costs.total

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None
    ) -> None:
        """Run the closure (training step and backward), then step the optimiser unless the step's loss was not
        finite: ``training_step`` takes that decision on all ranks together."""
        loss = optimizer_closure() if optimizer_closure is not None else None
        if self.skip_update:
            self.skip_update = False
            return
        optimizer.step(closure=lambda: loss)

    def _report_skipped(self, reports: list[str]) -> None:
        for report in reports:
            if report not in self.skipped_files:
                self.skipped_files.add(report)
                log.warning("skipped unreadable training image %s", report)
        if reports or self.skipped_files:
            self.log("data/skipped_files", float(len(self.skipped_files)), batch_size=1)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters: the body, then the output layer at ``output_lr_scale`` times the learning
        rate (one group when the scale is 1 or the output layer is frozen). The output layer's parameters are the
        network's last, so the parameter order, and with it the optimiser state's numbering, is the same either way.
        """
        output_ids = {id(p) for p in self.transformer.output_parameters()}
        body = [p for p in self.transformer.parameters() if p.requires_grad and id(p) not in output_ids]
        output = [p for p in self.transformer.output_parameters() if p.requires_grad]
        if self.output_lr_scale == 1.0 or not output:
            return [{"params": body + output}]
        # Named for TensorBoard's learning-rate curves: lr-Adam/body and lr-Adam/output.
        return [
            {"params": body, "name": "body"},
            {"params": output, "name": "output", "output_lr_scale": self.output_lr_scale},
        ]

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        groups = self.parameter_groups()
        optimizer = self.optimizer_factory(groups)
        for group, spec in zip(optimizer.param_groups, groups, strict=False):
            group["lr"] *= spec.get("output_lr_scale", 1.0)
        fine_tuning = len(self.trained_conditions) < self.transformer.num_conditions
        decay = [group.get("weight_decay", 0.0) for group in optimizer.param_groups]
        if fine_tuning and any(decay):
            # Weight decay would move the frozen rows of the norm tables, whose gradients alone are zeroed.
            raise ConfigError(
                f"optimizer weight_decay={max(decay)} would change the base network's styles while fine-tuning: "
                "set optimizer.weight_decay=0 with finetune_from"
            )
        if self.lr_schedule == "constant":
            return optimizer
        total = max(int(self.trainer.max_steps), 1)

        def cosine(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trained = [self.condition_names[c] for c in self.trained_conditions.tolist()]
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(self.transformer, self.styles, self.identity, trained)
        checkpoint["state_dict"] = {
            key: value for key, value in checkpoint["state_dict"].items() if not key.startswith(LOSS_NETWORK_PREFIX)
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen VGG weights are not in the file: take the ones this run was configured with.
        for key, value in self.loss.features.state_dict().items():
            checkpoint["state_dict"].setdefault(LOSS_NETWORK_PREFIX + key, value)
        if self.exact_identity:
            pin_identity_noise(
                checkpoint["state_dict"], "transformer.noise_scale_full", self.transformer.num_conditions
            )
        for state in checkpoint.get("optimizer_states", []):
            self._number_the_noise_table(state)
            self._match_parameter_groups(state)
            self._expand_shared_rows(state)

    def _number_the_noise_table(self, state: dict[str, Any]) -> None:
        """A fine-tuning run of a ``feature_noise`` network saved before its full-resolution noise scale learnt per
        condition (frozen then, so without an optimiser entry) resumes: the table gets its number among the
        parameters, with no moments yet (Adam starts it afresh), and the parameters after it move up by one."""
        noise = getattr(self.transformer, "noise_scale_full", None)
        if noise is None or len(self.trained_conditions) == self.transformer.num_conditions:
            return
        groups = self.parameter_groups()
        current = [p for group in groups for p in group["params"]]
        saved = state.get("param_groups", [])
        if sum(len(group["params"]) for group in saved) != len(current) - 1:
            return
        position = next((i for i, p in enumerate(current) if p is noise), None)
        if position is None:
            return
        state["state"] = {(i if i < position else i + 1): v for i, v in state.get("state", {}).items()}
        host = next(g for g, group in enumerate(groups) if any(p is noise for p in group["params"]))
        host = host if len(saved) == len(groups) else 0
        for g, group in enumerate(saved):
            numbers = [i if i < position else i + 1 for i in group["params"]]
            group["params"] = sorted(numbers + [position]) if g == host else numbers

    def _expand_shared_rows(self, state: dict[str, Any]) -> None:
        """Optimiser moments saved for a parameter that is now a table of one row per condition (``[C]`` then,
        ``[K, C]`` now: the full-resolution noise scale) go to every row, except an exact identity's, which gets
        none (moments would move its pinned row although its gradient is zero)."""
        parameters = [p for group in self.parameter_groups() for p in group["params"]]
        for index, moments in state.get("state", {}).items():
            if not isinstance(index, int) or index >= len(parameters):
                continue
            shape = parameters[index].shape
            for name, value in moments.items():
                if torch.is_tensor(value) and len(shape) == 2 and value.shape == shape[1:]:
                    moments[name] = rows_per_condition(value, shape[0], zero_last=self.exact_identity)

    def _match_parameter_groups(self, state: dict[str, Any]) -> None:
        """Resume an optimiser state saved with the other grouping (one group, from before ``output_lr_scale`` or
        with a scale of 1; or two): the parameters keep their numbers, only the groups are redrawn, each with the
        saved body learning rate times this run's scale for its group."""
        groups = self.parameter_groups()
        saved = state.get("param_groups", [])
        if len(saved) == len(groups) or not saved:
            return
        base = {key: value for key, value in saved[0].items() if key not in ("params", "name", "output_lr_scale")}
        numbers = iter(range(sum(len(group["params"]) for group in saved)))
        redrawn = []
        for group in groups:
            extra = {key: value for key, value in group.items() if key != "params"}
            redrawn.append(
                {
                    **base,
                    **extra,
                    "params": [next(numbers) for _ in group["params"]],
                    "lr": base["lr"] * group.get("output_lr_scale", 1.0),
                }
            )
        state["param_groups"] = redrawn


def pin_exact_identity(network: TransformerNet, condition: int) -> None:
    """Make ``condition`` of a ``residual_output`` network give back the photo exactly, and keep it so: its scale and
    shift in the last instance norm and its full-resolution noise scale (``feature_noise``) are set to zero, its
    photo gain to one, and their gradients zeroed (``TransformerNet``)."""
    norm = network.output_norm
    if not isinstance(norm, ConditionalInstanceNorm2d):
        raise ValueError("an exact identity needs a network with conditional instance norms (two or more conditions)")
    row = torch.ones(network.num_conditions, 1)
    row[condition] = 0.0
    tables = [norm.weight, norm.bias, *([network.noise_scale_full] if network.feature_noise else [])]
    with torch.no_grad():
        for table in tables:
            table[condition] = 0.0
        network.photo_gain[condition] = 1.0
    for parameter in tables:
        parameter.register_hook(lambda grad, mask=row: grad * mask.to(grad))
    gain_row = row.flatten()
    network.photo_gain.register_hook(lambda grad, mask=gain_row: grad * mask.to(grad))


def freeze_all_but(network: TransformerNet, conditions: Sequence[int]) -> None:
    """Fine-tuning: only the given conditions' rows of the conditional norms' scale and shift tables (and of the
    photo gain of a ``residual_output`` network and the full-resolution noise scale of a ``feature_noise`` one)
    learn; every convolution and every other row is frozen (no gradient computed for the convolutions; the other
    rows' gradients are zeroed, so Adam leaves them exactly as they are)."""
    rows = torch.zeros(network.num_conditions, 1)
    rows[list(conditions)] = 1.0
    gain_rows = rows.flatten()
    for module in network.modules():
        for parameter in module.parameters(recurse=False):
            if isinstance(module, ConditionalInstanceNorm2d) or (
                network.feature_noise and parameter is network.noise_scale_full
            ):
                parameter.register_hook(lambda grad, mask=rows: grad * mask.to(grad))
            elif network.residual_output and parameter is network.photo_gain:
                parameter.register_hook(lambda grad, mask=gain_rows: grad * mask.to(grad))
            else:
                parameter.requires_grad_(False)
