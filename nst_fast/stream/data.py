"""``data=stream``: training crops from a streamed set (``nst-convert-photos``) in a local folder or ``s3://``.

litdata's ``StreamingDataset`` gives each DDP rank and each loader worker its own share of the chunks, shuffled
per epoch from the run's seed, downloads chunks ahead into a local cache of bounded size, and its
``StreamingDataLoader`` has a ``state_dict`` that Lightning stores in checkpoints: a resumed run continues the
epoch where it stopped. Each sample's crop comes from ``nst_fast.data.crop_generator`` (seed, epoch, index), so
the crops after a resume are those the uninterrupted run would have drawn.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from nst_fast.data import PhotoDataModule, collate, crop_generator, random_crop, resize_shorter_side, to_tensor
from nst_fast.errors import ConfigError
from nst_fast.images import DEFAULT_MAX_PIXELS
from nst_fast.stream import storage

storage.require("litdata")  # a clear message for data=stream without the stream extra
from litdata import StreamingDataLoader, StreamingDataset  # noqa: E402
from litdata.streaming.sampler import ChunkedIndex  # noqa: E402

log = logging.getLogger(__name__)
storage.allow_plain_http_endpoints()  # here too: spawned loader workers import this module to unpickle the set


class StreamedPhotos(StreamingDataset):
    """A converted set as random ``image_size`` crops: items as ``nst_fast.data.ContentImages``'s, with the
    stored relative path as the file name. ``seed`` shuffles the chunks and draws the crops."""

    def __init__(
        self, url: str, image_size: int, seed: int, cache_dir: str | None, max_cache_size: str, options: dict[str, Any]
    ) -> None:
        super().__init__(
            input_dir=url,
            cache_dir=cache_dir,
            shuffle=True,
            drop_last=True,
            seed=seed,
            max_cache_size=max_cache_size,
            storage_options=options,
        )
        self.image_size = image_size

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        if not isinstance(index, (ChunkedIndex, int)):
            return item
        position = index.index if isinstance(index, ChunkedIndex) else index
        image = Image.open(io.BytesIO(item["image"])).convert("RGB")
        crop, where = random_crop(image, self.image_size, crop_generator(self.seed, self.current_epoch, position))
        return {"image": crop, "skipped": [], "crop": f"{position}:{item['name']}@{where}"}


class StreamLoader(StreamingDataLoader):
    """litdata's loader, which leaves its restore mode (after ``load_state_dict``) once the resumed epoch's last
    batch is out. litdata leaves it only when its iterator is exhausted, but Lightning stops an epoch after
    ``len(loader)`` batches without exhausting it; the next epoch then replayed the restored position (a
    resumed run trained the epoch's last batch twice)."""

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if self.restore and self._num_samples_yielded_streaming >= len(self) * self.batch_size:
                self.restore = False
            yield batch

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's position after checking that it is one of this set, seed, batch size and
        number of ranks (``ConfigError`` otherwise; litdata itself would fail later in a loader worker). The
        chunk cache's location is not part of the position: it is this run's, so a run resumes on other machines
        or with another ``data.cache_dir``. Another ``data.num_workers`` resumes too (litdata's elastic resume:
        no photo repeated or skipped, in another order)."""
        saved = state.get("dataset", {}) if isinstance(state, dict) else {}
        if not {"input_dir_url", "input_dir_path", "seed", "batch_size", "world_size"} <= set(saved):
            raise ConfigError(
                "the checkpoint's data position was not saved by a streamed set's loader: resume with the data the "
                "run was trained on (data=folder or data=sample for photo folders)"
            )
        dataset: StreamedPhotos = self.dataset  # type: ignore[assignment]
        here = dataset.input_dir.url or dataset.input_dir.path
        there = saved["input_dir_url"] or saved["input_dir_path"]
        found = (there, saved["seed"], saved["batch_size"], saved["world_size"])
        expected = (here, dataset.seed, self.batch_size, dataset.distributed_env.world_size)
        if found != expected:
            raise ConfigError(
                f"the checkpoint's data position is in the set {there} with seed={saved['seed']}, "
                f"data.batch_size={saved['batch_size']} on {saved['world_size']} device(s); this run streams {here} "
                f"with seed={dataset.seed}, data.batch_size={self.batch_size} on {expected[3]}: resume with the "
                "same data.url, seed, batch size and number of devices to continue its epoch"
            )
        if dataset.input_dir.url:
            saved = {**saved, "input_dir_path": dataset.input_dir.path, "cache_dir_path": dataset.cache_dir.path}
        super().load_state_dict({**state, "dataset": saved})


class StreamDataModule(PhotoDataModule):
    """Training photos streamed from ``url`` (``s3://bucket/prefix`` or a local folder) converted by
    ``nst-convert-photos``.

    ``endpoint_url``: an S3-compatible server (default: ``AWS_ENDPOINT_URL`` or AWS itself; credentials only
    from AWS's environment variables and files). ``cache_dir``: where downloaded chunks are kept (default:
    litdata's, ``~/.lightning/chunks``); ``max_cache_size``: its limit (``"50GB"``), oldest chunks evicted. The
    other settings: ``PhotoDataModule``.
    """

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        cache_dir: str | None = None,
        max_cache_size: str = "50GB",
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int = 4,
        pin_memory: bool = True,
        val_root: str | os.PathLike | None = None,
        val_size: int = 256,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers, max_pixels, pin_memory, val_root, val_size)
        self.url = storage.check_url(url, "data.url")
        self.endpoint_url = endpoint_url
        self.cache_dir = str(os.path.expanduser(cache_dir)) if cache_dir else None
        if not re.fullmatch(r"\d+(\.\d+)?\s*[kmgt]?b?", str(max_cache_size).strip(), re.IGNORECASE):
            raise ConfigError(f"data.max_cache_size={max_cache_size!r} is not a size: write e.g. 50GB or 500MB")
        self.max_cache_size = str(max_cache_size)
        self.photos = 0

    def check(self) -> None:
        """Make sure ``url`` holds a finished conversion (``ConfigError`` naming ``data.url`` otherwise, or saying
        why the storage cannot be reached); warn when its photos are smaller than the crops. Loads the held-out
        photos of ``val_root``, if set."""
        try:
            metadata = storage.read_metadata(self.url, self.endpoint_url)
        except ConfigError as error:
            raise ConfigError(f"data.url: {error}") from None
        if metadata is None:
            raise ConfigError(
                f"data.url={self.url!r} holds no converted photo set ({storage.METADATA_FILE} is missing): convert "
                f"a folder first with `nst-convert-photos /path/to/photos {self.url}`"
            )
        if not metadata.get("complete"):
            raise ConfigError(
                f"data.url={self.url!r}: its conversion was interrupted; run the same nst-convert-photos command "
                "again to finish it"
            )
        self.photos = int(metadata["photos"])
        if metadata["size"] < self.image_size:
            log.warning(
                "data.url=%r stores photos at %d px (shorter side at most); data.image_size=%d crops are "
                "upscaled: convert with --size %d for sharper crops",
                self.url,
                metadata["size"],
                self.image_size,
                self.image_size,
            )
        if self.val_root is not None:
            self.val_images = self.held_out_images()

    def check_batches(self, devices: int) -> None:
        """Raise ``ConfigError`` when the set cannot give every loader worker of ``devices`` ranks one batch."""
        if not self.photos:
            self.check()
        needed = self.batch_size * devices * max(1, self.num_workers)
        if self.photos < needed:
            raise ConfigError(
                f"data.url={self.url!r} holds {self.photos} photos, too few for one batch of data.batch_size="
                f"{self.batch_size} per loader worker (data.num_workers={self.num_workers}) on each of {devices} "
                f"device(s): {needed} are needed"
            )

    def setup(self, stage: str | None = None) -> None:
        if not self.photos:
            self.check()
        self.check_batches(self.world_size)

    def dataset(self, seed: int) -> StreamedPhotos:
        """The set as this rank streams it (create it once the process group exists: litdata reads the ranks)."""
        return StreamedPhotos(
            self.url,
            self.image_size,
            seed,
            self.cache_dir,
            self.max_cache_size,
            storage.storage_options(self.endpoint_url),
        )

    def train_dataloader(self) -> StreamLoader:
        """This rank's share of the set, ``batch_size`` crops at a time from ``num_workers`` processes, shuffled
        and cropped from the run's seed (``torch.initial_seed()``, set by ``seed_everything``)."""
        self._first_batch_logged = False
        return StreamLoader(
            self.dataset(torch.initial_seed()),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            multiprocessing_context=self.worker_context(),
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=collate,
            drop_last=True,
        )

    def preview_images(self, count: int, size: int) -> Tensor:
        """The set's first ``count`` photos (in stored order), centre-cropped to ``size``: ``[N, 3, size, size]``."""
        streamed = StreamingDataset(
            self.url,
            cache_dir=self.cache_dir,
            max_cache_size=self.max_cache_size,
            storage_options=storage.storage_options(self.endpoint_url),
        )
        images = []
        for index in range(min(count, len(streamed))):
            image = resize_shorter_side(Image.open(io.BytesIO(streamed[index]["image"])).convert("RGB"), size)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            images.append(to_tensor(image.crop((left, top, left + size, top + size))))
        return torch.stack(images) if images else torch.empty(0, 3, size, size)
