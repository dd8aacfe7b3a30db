"""Train a style: `python train.py style=starry` (see README). Logic lives in nst_fast.train."""

import sys

import hydra
from omegaconf import DictConfig

from nst_fast.config import register_resolvers
from nst_fast.errors import NstFastError
from nst_fast.train import train

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        result = train(cfg)
    except NstFastError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if result.interrupted_by is not None:
        print(f"interrupted at step {result.global_step}; resume with ckpt_path={result.last_checkpoint}", file=sys.stderr)
        sys.exit(128 + result.interrupted_by)


if __name__ == "__main__":
    main()
