"""Shared fixtures: paths to the optional ../shared folder and small helpers."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
HED_WEIGHTS = SHARED / "weights" / "vgg16_features_hed.pth"


@pytest.fixture
def hed_weights() -> Path:
    """The offline VGG-16 stand-in from ../shared; tests using it skip where it is absent."""
    if not HED_WEIGHTS.is_file():
        pytest.skip(f"{HED_WEIGHTS} not present (../shared is optional)")
    return HED_WEIGHTS
