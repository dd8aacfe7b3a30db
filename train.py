"""Train a style: `python train.py style=starry` (see README). Logic lives in nst_fast.train."""

import signal
import sys

import hydra
from omegaconf import DictConfig

from nst_fast.config import register_resolvers
from nst_fast.errors import EXIT_NONFINITE, EXIT_USAGE, NonFiniteLossError, NstFastError, run_hydra_entry_point
from nst_fast.train import train

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
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
        stop_for_signal(signal.SIGINT, f"stopped at once by a second Ctrl-C during step {result.global_step + 1}, "
                                       f"not saved{resume}")
    if result.interrupted_by is not None:
        stop_for_signal(result.interrupted_by,
                        f"interrupted at step {result.global_step}; resume with ckpt_path={result.last_checkpoint}")


def stop_for_signal(signum: int, message: str) -> None:
    """Exit with status 128 + ``signum`` after saying why. Further Ctrl-C are ignored from here on: the run is
    already over, and one landing while Python shuts down would otherwise kill it with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr)
    sys.exit(128 + signum)


if __name__ == "__main__":
    run_hydra_entry_point(main)
