"""Export a training checkpoint to verified ONNX and TorchScript files.

    python export.py ckpt_path=runs/starry/checkpoints/last.ckpt [export.fp16=true] [export.uint8=true]

Settings: conf/export.yaml; the work is done by ``nst_fast.export.export_checkpoint``.
"""

import sys

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from nst_fast.errors import run_hydra_entry_point
from nst_fast.export import run


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    if cfg.ckpt_path:
        cfg.ckpt_path = to_absolute_path(str(cfg.ckpt_path))
    if cfg.export.out_dir:
        cfg.export.out_dir = to_absolute_path(str(cfg.export.out_dir))
    status = run(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_hydra_entry_point(main)
