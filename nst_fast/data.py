"""Content images for training: any folder tree of photos (the bundled samples, COCO, your own).

Decoding, resizing and cropping happen in DataLoader worker processes. Unreadable files never stop a run:
the sample is replaced by the next readable file, and the failure travels with the batch
(``batch["skipped"]``) so that the main process can report each bad file once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nst_fast.errors import ConfigError, MissingFileError
from nst_fast.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageReadError, list_images, open_rgb

log = logging.getLogger(__name__)


def to_tensor(image: Image.Image) -> Tensor:
    """8-bit RGB PIL image -> float32 ``[3, H, W]`` in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale ``image`` (up or down, aspect kept) so that its shorter side is ``size`` pixels."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size == (width, height):
        return image
    return image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def load_style_image(path: str | os.PathLike, size: int, key: str = "style.image") -> Tensor:
    """The style image as ``[1, 3, H, W]`` in [0, 1], its shorter side scaled to ``size``.

    Raises ``MissingFileError``/``ImageReadError`` naming the config ``key`` and the path when it is missing or
    unreadable.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{key}={str(path)!r} does not exist; pass a path to a painting (jpg/png)")
    try:
        image = open_rgb(path)
    except ImageReadError as error:
        raise ImageReadError(f"{key}: {error}") from error
    return to_tensor(resize_shorter_side(image, size)).unsqueeze(0)


class ContentImages(Dataset):
    """Random ``image_size`` crops (shorter side scaled to ``image_size``, random horizontal flip) of files.

    ``samples_per_epoch``: the epoch length when larger than the number of files (files repeat), so that
    a handful of sample photos still makes epochs of useful length; ``None`` means one pass over the files.
    Items are ``{"image": [3, S, S] float in [0, 1], "skipped": ["path: reason", ...]}``.
    """

    def __init__(
        self,
        files: Sequence[Path],
        image_size: int,
        samples_per_epoch: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not files:
            raise ValueError("ContentImages needs at least one file")
        self.files = list(files)
        self.image_size = image_size
        self.samples_per_epoch = samples_per_epoch
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return max(len(self.files), self.samples_per_epoch or 0)

    def random_crop(self, image: Image.Image) -> Tensor:
        image = resize_shorter_side(image, self.image_size)
        width, height = image.size
        top = int(torch.randint(0, height - self.image_size + 1, ()).item())
        left = int(torch.randint(0, width - self.image_size + 1, ()).item())
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        if torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped: list[str] = []
        count = len(self.files)
        for attempt in range(count):
            path = self.files[(index + attempt) % count]
            try:
                image = open_rgb(path, self.max_pixels)
            except ImageReadError as error:
                skipped.append(str(error))
                continue
            return {"image": self.random_crop(image), "skipped": skipped}
        raise RuntimeError(f"none of the {count} content images is readable; first failure: {skipped[0]}")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images to ``[B, 3, S, S]``; concatenate the skipped-file reports."""
    return {
        "image": torch.stack([item["image"] for item in items]),
        "skipped": [report for item in items for report in item["skipped"]],
    }


class ContentDataModule(pl.LightningDataModule):
    """Training photos from ``root`` (recursive, common formats), shuffled random crops.

    ``image_size``: crop side in pixels; ``batch_size``: images per step and per device; ``num_workers``:
    decoding processes; ``samples_per_epoch``: see ``ContentImages``; ``max_pixels``: decompression-bomb limit.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int = 2,
        samples_per_epoch: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.max_pixels = max_pixels
        self.pin_memory = pin_memory
        self.files: list[Path] = []

    def check(self) -> None:
        """Find the images and make sure at least one decodes; raises an error naming ``data.root``
        otherwise (``ConfigError``). Cheap: stops at the first readable file."""
        if not self.root.is_dir():
            raise ConfigError(f"data.root={str(self.root)!r} is not a folder")
        self.files = list_images(self.root)
        if not self.files:
            raise ConfigError(
                f"data.root={str(self.root)!r} holds no images (looked recursively for {', '.join(IMAGE_SUFFIXES)})"
            )
        failures: list[str] = []
        for path in self.files:
            try:
                open_rgb(path, self.max_pixels)
                return
            except ImageReadError as error:
                failures.append(str(error))
        raise ConfigError(
            f"data.root={str(self.root)!r}: none of its {len(self.files)} image files is readable, e.g. {failures[0]}"
        )

    def setup(self, stage: str | None = None) -> None:
        if not self.files:
            self.check()
        self.train_set = ContentImages(self.files, self.image_size, self.samples_per_epoch, self.max_pixels)
        devices = self.trainer.world_size if self.trainer is not None else 1
        if len(self.train_set) < self.batch_size * devices:
            raise ConfigError(
                f"data.root={str(self.root)!r}: {len(self.train_set)} samples per epoch cannot fill one batch of "
                f"data.batch_size={self.batch_size} on each of {devices} device(s); set "
                f"data.samples_per_epoch={self.batch_size * devices} or more (files then repeat)"
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=collate,
        )

    def preview_images(self, count: int, size: int) -> Tensor:
        """A fixed set of up to ``count`` readable images, centre-cropped to ``size``: ``[N, 3, size, size]``."""
        if not self.files:
            self.check()
        images: list[Tensor] = []
        for path in self.files:
            if len(images) == count:
                break
            try:
                image = resize_shorter_side(open_rgb(path, self.max_pixels), size)
            except ImageReadError:
                continue
            width, height = image.size
            left, top = (width - size) // 2, (height - size) // 2
            images.append(to_tensor(image.crop((left, top, left + size, top + size))))
        return torch.stack(images)
