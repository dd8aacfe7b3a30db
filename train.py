"""Train a style: `python train.py style=starry` (see README); the same as `nst-train`. Logic: nst_fast.train."""

from nst_fast.commands import train_command

if __name__ == "__main__":
    train_command()
