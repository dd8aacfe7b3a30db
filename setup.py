"""Build-time only: the package index's description is README.md with its repository-relative links and pictures
made plain text, since a package index cannot resolve them (everything else is in pyproject.toml)."""

import re
from pathlib import Path

from setuptools import setup


def package_description() -> str:
    """README.md, with ``![alt](docs/x.jpg)`` and ``[text](docs/x.md)`` (no scheme) turned into text naming the file."""
    text = Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    text = re.sub(r"!\[([^\]]*)\]\((?![a-z]+:)([^)]+)\)", r"*(\1: `\2` in the source repository)*", text)
    return re.sub(r"\[([^\]]+)\]\((?![a-z]+:|#)([^)]+)\)", r"\1 (`\2` in the source repository)", text)


if __name__ == "__main__":
    setup(long_description=package_description(), long_description_content_type="text/markdown")
