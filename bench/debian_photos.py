"""Build the 25-photo training set of the quality study (docs/quality.md, run D31_S350) from Debian packages.

    python bench/debian_photos.py DEST [--size 384]

Downloads three Debian wallpaper packages with ``apt-get download`` (a Debian or Ubuntu machine with the package
lists; no root needed), keeps the 25 photographs listed in ``PHOTOS`` (the packages also hold drawings and
abstract art), scales each to ``--size`` pixels on its shorter side and writes them as JPEG into ``DEST`` with
``CREDITS.md``: file, photographer, licence and package of each, as the packages' copyright files state them.
Add the six bundled sample photos (``nst_fast/assets/content``) for the 31 of the study, then train with
``data.root=DEST``. The held-out photos (``../shared/photos``, from ``plasma-workspace-wallpapers``) are not
among them: never train on those.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

#: package -> {file inside /usr/share/backgrounds: (photographer, licence)}, from each package's copyright file.
PHOTOS: dict[str, dict[str, tuple[str, str]]] = {
    "lomiri-wallpapers-16.04": {
        "aitzgorri_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "Bridge_by_Sander_Klootwijk.jpg": ("Sander Klootwijk", "CC-BY-SA-4.0"),
        "Dragonfly_by_Bolly.jpg": ("Bolly", "CC-BY-SA-4.0"),
        "free_by_Peter_Nerlich.jpg": ("Peter Nerlich", "CC-BY-SA-4.0"),
        "friends_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "life_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "picosdeeuropa_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "Picture_0B_by_freespace.jpg": ("Trevor Freespace", "CC-BY-4.0"),
        "Picture_1A_by_freespace.jpg": ("Trevor Freespace", "CC-BY-4.0"),
        "seeding_by_Clements_Engelhardt.jpg": ("Clemens Engelhardt", "CC0-1.0"),
        "sunset_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        "Wine_by_Jakkub_Mede.jpg": ("Jakub Mede", "CC-BY-4.0"),
    },
    "lomiri-wallpapers-20.04": {
        "Kleiber_by_Lukas_Baubkus.jpg": ("Lukas Baubkus", "CC-BY-SA-3.0"),
    },
    "mate-backgrounds": {
        "mate/nature/Aqua.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/Blinds.jpg": ("Lennart Poettering", "GPL-2+"),
        "mate/nature/Dune.jpg": ("Marco Cogoni", "GPL-2+"),
        "mate/nature/FreshFlower.jpg": ("Jens Ansorg", "GPL-2+"),
        "mate/nature/Garden.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/GreenMeadow.jpg": ("Timothy Schellhase", "GPL-2+"),
        "mate/nature/LadyBird.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/RainDrops.jpg": ("blackcombwhistler07", "GPL-2+"),
        "mate/nature/Storm.jpg": ("Sergey Nazarov", "GPL-2+"),
        "mate/nature/TwoWings.jpg": ("Charles Barbin", "GPL-2+"),
        "mate/nature/Wood.jpg": ("Jean-François Fortin Tam", "GPL-2+"),
        "mate/nature/YellowFlower.jpg": ("Charles Barbin", "GPL-2+"),
    },
}


def output_name(member: str) -> str:
    """``Bridge_by_Sander_Klootwijk.jpg`` -> ``bridge_by_sander_klootwijk.jpg``."""
    return re.sub(r"[^a-z0-9]+", "_", Path(member).stem.lower()).strip("_") + ".jpg"


def unpack(package: str, folder: Path) -> Path:
    """``apt-get download`` ``package`` into ``folder`` and extract it there; returns its backgrounds folder."""
    subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
    archive = next(folder.glob(f"{package}_*.deb"))
    root = folder / package
    subprocess.run(["dpkg-deb", "-x", str(archive), str(root)], check=True)
    return root / "usr" / "share" / "backgrounds"


def build(dest: Path, size: int) -> list[str]:
    """Write the photos and ``CREDITS.md`` into ``dest``; returns the credit lines."""
    dest.mkdir(parents=True, exist_ok=True)
    credits = []
    with tempfile.TemporaryDirectory(prefix="nst-debian-photos-") as scratch:
        for package, photos in PHOTOS.items():
            backgrounds = unpack(package, Path(scratch))
            for member, (author, licence) in photos.items():
                with Image.open(backgrounds / member) as image:
                    image = image.convert("RGB")
                    scale = size / min(image.size)
                    if scale < 1:
                        image = image.resize(
                            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
                        )
                    image.save(dest / output_name(member), quality=90)
                credits.append(f"| {output_name(member)} | {author} | {licence} | Debian `{package}` ({member}) |")
    header = ["# Credits", "", "| file | photographer | licence | source |", "| --- | --- | --- | --- |"]
    (dest / "CREDITS.md").write_text("\n".join([*header, *credits]) + "\n", encoding="utf-8")
    return credits


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="folder to write the photos and CREDITS.md into")
    parser.add_argument("--size", type=int, default=384, help="shorter side in pixels (default 384)")
    args = parser.parse_args(argv)
    try:
        credits = build(args.dest, args.size)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        print(f"debian_photos: {error} {detail.decode(errors='replace').strip()}", file=sys.stderr)
        return 1
    print(f"debian_photos: wrote {len(credits)} photos and CREDITS.md to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
