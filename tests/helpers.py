"""Helpers shared by the training tests: run train.py, read TensorBoard event files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_fast.models import TransformerNet

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python train.py OVERRIDES`` from ``cwd`` (not the repo: nothing may depend on the current directory).

    A run past ``timeout`` seconds (keep it under pytest's own timeout) is killed with every process it started
    (DDP ranks, loader workers: its own session) and fails the test with the end of its output, so that a hang
    says where it stopped; a test stopped otherwise (pytest's timeout, Ctrl-C) kills it too."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, str(REPO_ROOT / "train.py"), *overrides]
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=60)
            raise AssertionError(
                f"train.py ran past {timeout} s and was killed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
            ) from None
        except BaseException:  # pytest-timeout's signal, Ctrl-C: no run outlives its test
            os.killpg(process.pid, signal.SIGKILL)
            raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def events(run_dir: Path) -> EventAccumulator:
    """The TensorBoard events of a run, loaded (all scalars and images kept)."""
    accumulator = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def compose_train_config(*overrides: str):
    """The training config as ``train.py`` would see it (without Hydra's runtime section)."""
    from nst_fast.config import compose

    return compose("train", overrides)


def small_network(seed: int = 0, num_conditions: int = 1, separable: bool = False) -> TransformerNet:
    """TransformerNet(8, 1) with random instance-norm affine parameters too (they start at 1 and 0); with
    ``num_conditions > 1`` every condition's row is random, so the conditions differ; ``separable``: the light
    network's depthwise-separable blocks (``model=light``)."""
    from nst_fast.models.transformer import ConditionalInstanceNorm2d

    torch.manual_seed(seed)
    network = TransformerNet(8, 1, num_conditions=num_conditions, separable=separable)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (torch.nn.InstanceNorm2d, ConditionalInstanceNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return network.eval()


def load_example_client():
    """``examples/triton_client.py`` as a module (examples/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("triton_client", REPO_ROOT / "examples" / "triton_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def logged_batches(run_dir: Path) -> dict[tuple[int, int], list[str]]:
    """``(rank, step) -> ["index:file@left,top", ...]``: every training batch's crops, from the run's logs (rank N > 0
    logs to ``train_ddp_process_N.log``) as ``hydra.verbose=nst_fast.data`` writes them."""
    import re

    batches: dict[tuple[int, int], list[str]] = {}
    for log in sorted(run_dir.glob("train*.log")):
        for rank, step, crops in re.findall(r"rank (\d+) step (\d+) batch: (.*)", log.read_text()):
            batches[int(rank), int(step)] = crops.split("; ")
    return batches


def train_in_process(run_dir: Path, *overrides: str):
    """``nst_fast.train.train`` on the composed config, in this process, with Hydra's runtime set as ``train.py``
    sets it (the run folder ``run_dir``): config and data mistakes raise here as they would exit ``train.py``, without
    the few seconds of a new interpreter. Hydra's own composition errors raise from the composition."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from nst_fast.config import CONFIG_DIR, register_resolvers, translate_overrides
    from nst_fast.train import train

    register_resolvers()
    overrides = (*translate_overrides(list(overrides), lambda note: None), f"hydra.run.dir={run_dir}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return train(cfg)
