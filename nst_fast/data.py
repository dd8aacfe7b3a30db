"""Content images for training: any folder tree of photos (the bundled samples, COCO, your own).

Decoding, resizing and cropping happen in DataLoader worker processes. Unreadable files never stop a run:
the sample is replaced by the next readable file, and the failure travels with the batch
(``batch["skipped"]``) so that the main process can report each bad file once. Each sample's crop is drawn from
its own generator (``crop_generator``: seed, epoch, index), so crops are reproducible and a resumed run continues
with exactly the crops the uninterrupted run would have drawn. Streamed sets: ``nst_fast.stream``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.context import BaseContext
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
from nst_fast.sampling import EpochSampler, ResumableLoader, SampleKey

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


def crop_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one sample's random crop and flip: seeded from the run's ``seed``, the ``epoch`` and the
    sample's ``index``, so that every sample of every epoch has its own crop, the same whichever rank or loader
    worker draws it, and a resumed run draws exactly the crops the uninterrupted run would have drawn."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def random_crop(image: Image.Image, size: int, generator: torch.Generator) -> tuple[Tensor, str]:
    """A random ``size`` square of ``image`` (shorter side scaled to ``size`` first), flipped half of the time:
    ``[3, size, size]`` in [0, 1], and where it was taken (``left,top`` plus ``,flipped``)."""
    image = resize_shorter_side(image, size)
    width, height = image.size
    top = int(torch.randint(0, height - size + 1, (), generator=generator).item())
    left = int(torch.randint(0, width - size + 1, (), generator=generator).item())
    image = image.crop((left, top, left + size, top + size))
    flipped = bool(torch.rand((), generator=generator) < 0.5)
    if flipped:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image), f"{left},{top}" + (",flipped" if flipped else "")


class ContentImages(Dataset):
    """Random ``image_size`` crops (shorter side scaled to ``image_size``, random horizontal flip) of files.

    ``samples_per_epoch``: the epoch length when larger than the number of files (files repeat), so that
    a handful of sample photos still makes epochs of useful length; ``None`` means one pass over the files.
    Keys are sample indices or ``(epoch, index)`` (``nst_fast.sampling.EpochSampler``; a plain index is epoch 0);
    each crop is drawn from ``crop_generator(seed, epoch, index)``.
    Items are ``{"image": [3, S, S] float in [0, 1], "skipped": ["path: reason", ...], "crop": "index:name@left,top"}``.
    """

    def __init__(
        self,
        files: Sequence[Path],
        image_size: int,
        samples_per_epoch: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
    ) -> None:
        if not files:
            raise ValueError("ContentImages needs at least one file")
        self.files = list(files)
        self.image_size = image_size
        self.samples_per_epoch = samples_per_epoch
        self.max_pixels = max_pixels
        self.seed = seed

    def __len__(self) -> int:
        return max(len(self.files), self.samples_per_epoch or 0)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        skipped: list[str] = []
        count = len(self.files)
        for attempt in range(count):
            path = self.files[(index + attempt) % count]
            try:
                image = open_rgb(path, self.max_pixels)
            except ImageReadError as error:
                skipped.append(str(error))
                continue
            crop, where = random_crop(image, self.image_size, crop_generator(self.seed, epoch, index))
            return {"image": crop, "skipped": skipped, "crop": f"{index}:{path.name}@{where}"}
        raise RuntimeError(f"none of the {count} content images is readable; first failure: {skipped[0]}")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images to ``[B, 3, S, S]``; concatenate the skipped-file reports; list where each crop came from."""
    return {
        "image": torch.stack([item["image"] for item in items]),
        "skipped": [report for item in items for report in item["skipped"]],
        "crops": [item.get("crop", "?") for item in items],
    }


class PhotoDataModule(pl.LightningDataModule):
    """What every source of training photos shares: batch sizes, loader settings, the held-out photos of
    ``val_root`` for Lightning's validation loop, and the log of where each batch's crops came from.

    ``image_size``: crop side in pixels; ``batch_size``: images per step and per device; ``num_workers``:
    decoding processes; ``max_pixels``: decompression-bomb limit. ``val_root``: held-out photos (``None``: no
    validation), each resized to ``val_size`` on its shorter side and centre-cropped to a square.
    """

    def __init__(
        self,
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pin_memory: bool = True,
        val_root: str | os.PathLike | None = None,
        val_size: int = 256,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        self.pin_memory = pin_memory
        self.val_root = Path(val_root).expanduser() if val_root else None
        self.val_size = val_size
        self.val_images: Tensor | None = None
        self._first_batch_logged = True

    @property
    def rank(self) -> int:
        """This process's global rank (0 without a trainer)."""
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def world_size(self) -> int:
        """The number of ranks training together (1 without a trainer)."""
        return self.trainer.world_size if self.trainer is not None else 1

    def worker_context(self) -> BaseContext | None:
        """How this rank's loader workers start: forked from it (PyTorch's default) in a single process; under DDP
        forked from a fork server, a clean process each rank starts once with the data module's code imported.

        Forking a DDP rank is unsafe: its communication threads (gloo's) enter Python, and on Python 3.11 a fork
        made while such a thread holds the interpreter's thread-state lock leaves the child waiting on that lock
        forever (``PyOS_AfterFork_Child``; seen as a two-rank streamed run that hung at an epoch's start, one
        loader worker stuck in ``os.fork``). The fork server has no such threads."""
        if self.num_workers == 0 or self.world_size == 1:
            return None
        if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: spawn, PyTorch's default there
            return multiprocessing.get_context("spawn")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(sorted({__name__, type(self).__module__} - {"__main__"}))
        return context

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Log where the first batch's crops came from, per rank (shows that ranks train on different crops), and
        each training batch's at debug level (``hydra.verbose=nst_fast.data``), with the step it goes into."""
        if not isinstance(batch, dict) or "crops" not in batch:
            return batch
        crops = "; ".join(batch["crops"])
        if not self._first_batch_logged:
            self._first_batch_logged = True
            log.info("rank %d first batch (index:file@left,top): %s", self.rank, crops)
        if self.trainer is not None and self.trainer.training and log.isEnabledFor(logging.DEBUG):
            log.debug("rank %d step %d batch: %s", self.rank, self.trainer.global_step + 1, crops)
        return batch

    def held_out_images(self) -> Tensor:
        """Every readable image under ``val_root``, centre-cropped to ``val_size``: ``[N, 3, S, S]`` in [0, 1].
        Raises ``ConfigError`` naming ``data.val_root`` when it is not a folder or holds no readable image, or
        when it shares photos with the training data (``check_held_out``)."""
        assert self.val_root is not None
        if not self.val_root.is_dir():
            raise ConfigError(f"data.val_root={str(self.val_root)!r} is not a folder")
        files = list_images(self.val_root)
        images = _centre_crops(files, self.val_size, self.max_pixels) if files else None
        if images is None or len(images) == 0:
            raise ConfigError(
                f"data.val_root={str(self.val_root)!r} holds no readable images (looked recursively for "
                f"{', '.join(IMAGE_SUFFIXES)})"
            )
        self.check_held_out(files)
        return images

    def check_held_out(self, files: list[Path]) -> None:
        """Raise ``ConfigError`` when the held-out ``files`` are training photos (where that can be told)."""

    def val_dataloader(self) -> DataLoader | list:
        """The held-out photos in order, ``batch_size`` at a time (an empty list when ``val_root`` is unset,
        which Lightning takes as no validation)."""
        if self.val_root is None:
            return []
        if self.val_images is None:
            self.val_images = self.held_out_images()
        items = [{"image": image, "skipped": [], "crop": f"val:{index}"} for index, image in enumerate(self.val_images)]
        return DataLoader(items, batch_size=self.batch_size, shuffle=False, collate_fn=collate)


class ContentDataModule(PhotoDataModule):
    """Training photos from ``root`` (recursive, common formats), shuffled random crops.

    ``samples_per_epoch``: see ``ContentImages``; the other settings: ``PhotoDataModule``. The loader's position
    (epoch, batches taken) is saved in checkpoints, so a resumed run continues the epoch with the crops the
    uninterrupted run would have drawn (``nst_fast.sampling``).
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
        val_root: str | os.PathLike | None = None,
        val_size: int = 256,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, max_pixels, pin_memory, val_root, val_size)
        self.root = Path(root).expanduser()
        self.samples_per_epoch = samples_per_epoch
        self.files: list[Path] = []

    def check(self) -> None:
        """Find the images and make sure at least one decodes; raises an error naming ``data.root``
        otherwise (``ConfigError``). Cheap: stops at the first readable file. Loads the held-out photos of
        ``val_root``, if set (a handful, checked the same way)."""
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
            except ImageReadError as error:
                failures.append(str(error))
                continue
            if self.val_root is not None:
                self.val_images = self.held_out_images()
            return
        raise ConfigError(
            f"data.root={str(self.root)!r}: none of its {len(self.files)} image files is readable, e.g. {failures[0]}"
        )

    def check_batches(self, devices: int) -> None:
        """Raise ``ConfigError`` when an epoch cannot fill one batch on each of ``devices`` (needs ``check()``
        first; cheap, so that training can check it before the loss network loads)."""
        samples = max(len(self.files), self.samples_per_epoch or 0)
        if samples < self.batch_size * devices:
            raise ConfigError(
                f"data.root={str(self.root)!r}: {samples} samples per epoch cannot fill one batch of "
                f"data.batch_size={self.batch_size} on each of {devices} device(s); set "
                f"data.samples_per_epoch={self.batch_size * devices} or more (files then repeat)"
            )

    def setup(self, stage: str | None = None) -> None:
        if not self.files:
            self.check()
        self.check_batches(self.world_size)
        self.train_set = ContentImages(self.files, self.image_size, self.samples_per_epoch, self.max_pixels)
        if self.val_root is not None and self.val_images is None:
            self.val_images = self.held_out_images()

    def train_dataloader(self) -> ResumableLoader:
        """This rank's share of each epoch (``EpochSampler``: under DDP each rank trains on other photos), shuffled
        and cropped from the run's seed (``torch.initial_seed()``, set by ``seed_everything``)."""
        seed = torch.initial_seed()
        self.train_set.seed = seed
        self._first_batch_logged = False
        return ResumableLoader(
            self.train_set,
            EpochSampler(self.train_set, num_replicas=self.world_size, rank=self.rank, seed=seed),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=self.worker_context(),
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=collate,
        )

    def preview_images(self, count: int, size: int) -> Tensor:
        """A fixed set of up to ``count`` readable images, centre-cropped to ``size``: ``[N, 3, size, size]``."""
        if not self.files:
            self.check()
        return _centre_crops(self.files, size, self.max_pixels, count)

    def check_held_out(self, files: list[Path]) -> None:
        training = {path.resolve() for path in self.files}
        if any(path.resolve() in training for path in files):
            raise ConfigError(
                f"data.val_root={str(self.val_root)!r} shares photos with data.root={str(self.root)!r}: "
                "validation must be on held-out photos"
            )


def _centre_crops(files: list[Path], size: int, max_pixels: int, count: int | None = None) -> Tensor:
    """Up to ``count`` (all when ``None``) of ``files`` that read, shorter side resized to ``size`` and
    centre-cropped to a square: ``[N, 3, size, size]`` (``N`` may be 0)."""
    images: list[Tensor] = []
    for path in files:
        if count is not None and len(images) == count:
            break
        try:
            image = resize_shorter_side(open_rgb(path, max_pixels), size)
        except ImageReadError:
            continue
        width, height = image.size
        left, top = (width - size) // 2, (height - size) // 2
        images.append(to_tensor(image.crop((left, top, left + size, top + size))))
    return torch.stack(images) if images else torch.empty(0, 3, size, size)
