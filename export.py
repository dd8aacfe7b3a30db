"""Export a checkpoint to verified ONNX and TorchScript files: `python export.py ckpt_path=RUN/checkpoints/last.ckpt`;
the same as `nst-export`. Settings: nst_fast/conf/export.yaml; logic: nst_fast.export."""

from nst_fast.commands import export_command

if __name__ == "__main__":
    export_command()
