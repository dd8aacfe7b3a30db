"""The training and export commands (``nst-train``, ``nst-export``, and the top-level ``train.py``/``export.py``):
Hydra entry points around ``nst_fast.train.train`` and ``nst_fast.export.run``, with the exit statuses of the
docs ("Exit status") and renamed settings translated first (``nst_fast.config.renames``)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from nst_fast.config import CONFIG_DIR, register_resolvers, translate_overrides
from nst_fast.errors import EXIT_NONFINITE, EXIT_USAGE, NonFiniteLossError, NstFastError, run_hydra_entry_point

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _train(cfg: DictConfig) -> None:
    from nst_fast.train import train

    try:
        result = train(cfg)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_NONFINITE)
    except NstFastError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:  # a second Ctrl-C after training had returned
        stop_for_signal(signal.SIGINT, "stopped at once by a second Ctrl-C")
    if result.stopped_at_once:
        resume = f"; resume with ckpt_path={result.last_checkpoint}" if result.last_checkpoint else ""
        stop_for_signal(
            signal.SIGINT, f"stopped at once by a second Ctrl-C during step {result.global_step + 1}, not saved{resume}"
        )
    if result.interrupted_by is not None:
        stop_for_signal(
            result.interrupted_by,
            f"interrupted at step {result.global_step}; resume with ckpt_path={result.last_checkpoint}",
        )
    if result.last_checkpoint is not None:
        print(next_steps(str(result.last_checkpoint)), file=sys.stderr)


def next_steps(checkpoint: str) -> str:
    """What to do with a finished run's checkpoint: the exact commands."""
    return (
        f"\ndone: {checkpoint}\n"
        f"  stylise a photo:  nst-stylize --model {checkpoint} photo.jpg -o photo_stylised.jpg\n"
        f"  export for deployment:  nst-export ckpt_path={checkpoint}   (or: python export.py ckpt_path=...)"
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def _export(cfg: DictConfig) -> None:
    from nst_fast.export import run

    if cfg.ckpt_path:
        cfg.ckpt_path = to_absolute_path(str(cfg.ckpt_path))
    if cfg.export.out_dir:
        cfg.export.out_dir = to_absolute_path(str(cfg.export.out_dir))
    status = run(cfg)
    if status:
        sys.exit(status)


def stop_for_signal(signum: int, message: str) -> None:
    """Exit with status 128 + ``signum`` after saying why. Further Ctrl-C are ignored from here on: the run is
    already over, and one landing while Python shuts down would otherwise kill it with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr)
    sys.exit(128 + signum)


def _run(main: Callable[[], None]) -> None:
    """Translate renamed settings in ``sys.argv`` (in place, so that re-launched DDP ranks see the new keys), then run
    the Hydra entry point."""
    sys.argv[1:] = translate_overrides(sys.argv[1:], lambda note: print(note, file=sys.stderr))
    run_hydra_entry_point(main)


def train_command() -> None:
    """``nst-train``: ``python train.py`` from an installed package."""
    _run(_train)


def export_command() -> None:
    """``nst-export``: ``python export.py`` from an installed package."""
    _run(_export)
