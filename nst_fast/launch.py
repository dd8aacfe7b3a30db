"""The console scripts. Each checks that the optional dependencies its command needs are installed, and says which
extra to install when they are not (one line, exit status 2), before importing anything heavy: a deployment
install (``pip install nst-fast``) has no torch, Lightning or Hydra, and no server unless ``[serve]``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from nst_fast.errors import EXIT_USAGE

#: What each extra brings that a command imports (import names).
EXTRAS = {
    "train": ("torch", "torchvision", "pytorch_lightning", "hydra", "omegaconf", "tensorboard", "onnx", "onnxscript"),
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "stream": ("litdata", "boto3"),
}


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_extra(extra: str, command: str) -> None:
    """Exit with a one-line hint when a module of ``extra`` is missing."""
    missing = missing_modules(EXTRAS[extra])
    if missing:
        print(
            f"{command}: error: this command needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install 'nst-fast[{extra}]'",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)


def train() -> None:
    """``nst-train``."""
    require_extra("train", "nst-train")
    from nst_fast.commands import train_command

    train_command()


def export() -> None:
    """``nst-export``."""
    require_extra("train", "nst-export")
    from nst_fast.commands import export_command

    export_command()


def serve() -> None:
    """``nst-serve``."""
    require_extra("serve", "nst-serve")
    from nst_fast.serve.cli import main

    sys.exit(main())


def convert_photos() -> None:
    """``nst-convert-photos``: a photo folder to a streaming dataset (``data=stream``)."""
    require_extra("stream", "nst-convert-photos")
    from nst_fast.stream.convert import main

    sys.exit(main())


def stylize() -> None:
    """``nst-stylize`` (base install: ONNX models; ``.ckpt``/TorchScript models need the [train] extra)."""
    from nst_fast.stylize.cli import main

    sys.exit(main())
