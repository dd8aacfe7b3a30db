"""Exact tiled inference: a photo of any size stylised in memory bounded by the tile, with the whole-image result.

Every instance norm normalises each channel with its mean and spread over the whole image, so tiles stylised on
their own would differ (seams, colour shifts). The export cuts the network at its norms into passes
(``NAME.tiles.zip``, ``nst_fast.export.tiles``); here each pass runs tile by tile, with a halo as wide as the
pass's receptive field, and accumulates the per-channel sum and sum of squares of its norm's input over all tiles;
the next pass normalises with those whole-image statistics. Reduced-resolution tensors that later passes read go to
scratch files (read back by region through short-lived memory maps: page cache, not resident memory).

ONNX Runtime and NumPy only (no torch, no onnx).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nst_fast.conventions import (
    INPUT_NAME,
    OUTPUT_NAME,
    TILE_CROP_ENDS,
    TILE_CROP_STARTS,
    TILE_NOISE_OFFSET,
    TILE_SQUARES,
    TILE_SUM,
    TILES_PLAN,
    TILES_READABLE_FORMATS,
    WEIGHTS_NAME,
    tiles_name,
)
from nst_fast.errors import StylizeError
from nst_fast.images import preserve_color, to_uint8

#: Default tile side (pixels): a peak of about 0.8 GB for the default network, whatever the photo's size
#: (docs/tiling.md); 1024-pixel tiles peak at about 1.5-2.5 GB.
DEFAULT_TILE_SIZE = 512
#: ``--tile auto`` tiles images above this many pixels (the whole-image pass needs ~420 bytes per pixel: 1.7 GB).
TILE_ABOVE_PIXELS = 4_000_000
TILE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Tiling:
    """When and how to tile: ``mode`` ``auto`` (above ``above_pixels``), ``on`` (always, for models that can) or
    ``off``; ``tile_size`` in pixels. The stored intermediate tensors go to the temporary folder (``TMPDIR``)."""

    mode: str = "auto"
    tile_size: int = DEFAULT_TILE_SIZE
    above_pixels: int = TILE_ABOVE_PIXELS

    def __post_init__(self) -> None:
        if self.mode not in TILE_MODES:
            raise StylizeError(f"tiling mode {self.mode!r} is unknown; choose one of {', '.join(TILE_MODES)}")

    def wanted(self, height: int, width: int) -> bool:
        """Whether an image of this size should be tiled (before asking whether the model can)."""
        return self.mode == "on" or (self.mode == "auto" and height * width > self.above_pixels)


class ScratchTensor:
    """A tensor ``[C, H, W]`` stored in a scratch file by tile columns (column ``j``: ``[C, H, width_j]``, so that a
    tile's block is one contiguous run per channel, written and read with ``pwrite``/``preadv``), its pages in the
    page cache rather than in this process's memory; the ``strip`` columns at each side of every tile column are
    also kept in memory (about 5% of the tensor with 512-pixel tiles), for the halos of the next pass's tiles."""

    def __init__(self, path: Path, height: int, width: int, channels: int, dtype: str, column: int, strip: int) -> None:
        self.path, self.height, self.channels, self.dtype = path, height, channels, np.dtype(dtype)
        self.starts = list(range(0, width, column))
        self.widths = [min(column, width - start) for start in self.starts]
        self.offsets = [0]
        for column_width in self.widths:
            self.offsets.append(self.offsets[-1] + channels * height * column_width * self.dtype.itemsize)
        self.strip = min(strip, min(self.widths))
        self.left = [np.empty((channels, height, self.strip), self.dtype) for _ in self.widths]
        self.right = [np.empty((channels, height, self.strip), self.dtype) for _ in self.widths]
        self.file = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.file, self.offsets[-1])

    def _channel_offset(self, index: int, channel: int, row: int) -> int:
        width = self.widths[index]
        return self.offsets[index] + ((channel * self.height + row) * width) * self.dtype.itemsize

    def write(self, y0: int, x0: int, block: np.ndarray) -> None:
        """Store ``block`` ``[1, C, h, w]``, one tile column wide, at rows ``y0:y0 + h`` of the column at ``x0``."""
        index = self.starts.index(x0)
        data = np.ascontiguousarray(block[0], dtype=self.dtype)
        if data.shape[2] != self.widths[index]:
            raise ValueError(f"a block {data.shape[2]} wide does not fill tile column {index} ({self.widths[index]})")
        for channel in range(self.channels):
            os.pwrite(self.file, memoryview(data[channel]).cast("B"), self._channel_offset(index, channel, y0))
        self.left[index][:, y0 : y0 + data.shape[1]] = data[:, :, : self.strip]
        self.right[index][:, y0 : y0 + data.shape[1]] = data[:, :, data.shape[2] - self.strip :]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` as a ``[1, C, h, w]`` array."""
        out = np.empty((1, self.channels, y1 - y0, x1 - x0), self.dtype)
        for index, (start, width) in enumerate(zip(self.starts, self.widths, strict=True)):
            a, b = max(x0, start) - start, min(x1, start + width) - start  # this column's part, in its coordinates
            if a >= b:
                continue
            target = out[0, :, :, start + a - x0 : start + b - x0]
            if b <= self.strip:
                target[...] = self.left[index][:, y0:y1, a:b]
            elif a >= width - self.strip:
                target[...] = self.right[index][:, y0:y1, a - (width - self.strip) : b - (width - self.strip)]
            else:
                rows = np.empty((self.channels, y1 - y0, width), self.dtype)
                for channel in range(self.channels):
                    os.preadv(
                        self.file, [memoryview(rows[channel]).cast("B")], self._channel_offset(index, channel, y0)
                    )
                target[...] = rows[:, :, a:b]
        return out

    def remove(self) -> None:
        os.close(self.file)
        self.path.unlink(missing_ok=True)


class NormStatistics:
    """Per-channel mean and variance of one norm's input over the whole image, from per-row sums of ``x`` and
    ``x^2`` (the pass computes them over the tile's valid part) added up in float64."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels)
        self.squares = np.zeros(channels)
        self.count = 0

    def add(self, total: np.ndarray, squares: np.ndarray, count: int) -> None:
        """Add one tile's sums ``[C, rows]`` (per row: float32 over a few hundred pixels) over ``count`` pixels."""
        self.total += total.sum(axis=1, dtype=np.float64)
        self.squares += squares.sum(axis=1, dtype=np.float64)
        self.count += count

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the biased variance (as ``InstanceNormalization`` computes them), float64 ``[C]``."""
        mean = self.total / self.count
        return mean, np.maximum(self.squares / self.count - mean**2, 0.0)


class StagedModel:
    """``NAME.tiles.zip`` loaded: one ONNX Runtime session per pass (``make_session`` builds one from a serialized
    model) and the plan. ``model(rgb, weights, tiling, keep_color)`` stylises one uint8 image ``[H, W, 3]``."""

    def __init__(self, path: Path, make_session: Callable[[bytes], Any]) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                plan = json.loads(archive.read(TILES_PLAN))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise StylizeError(f"{path}: not a readable tiles file ({type(error).__name__}: {error})") from error
        if plan.get("format") not in TILES_READABLE_FORMATS:
            raise StylizeError(
                f"{path}: tiles format {plan.get('format')!r}; this version reads {', '.join(TILES_READABLE_FORMATS)}: "
                "update nst-fast, or export the model again with this version"
            )
        self.path, self.plan, self.make_session = path, plan, make_session
        self.align: int = plan["align"]
        self.halo: int = max(step["halo"] for step in plan["passes"])
        self._sessions: list[Any] | None = None
        self._shared: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _load(self) -> list[Any]:
        """Make one ONNX Runtime session per pass and read the shared tensors, once (a model that never tiles never
        loads them)."""
        with self._lock:
            if self._sessions is None:
                with zipfile.ZipFile(self.path) as archive:
                    try:
                        self._shared = {
                            name: np.load(io.BytesIO(archive.read(file)), allow_pickle=False)
                            for name, file in self.plan.get("shared", {}).items()
                        }
                    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
                        raise StylizeError(
                            f"{self.path}: a tensor its passes share is missing or damaged ({error}): export the "
                            "model again"
                        ) from error
                    self._sessions = [self.make_session(archive.read(step["file"])) for step in self.plan["passes"]]
            return self._sessions

    @property
    def sessions(self) -> list[Any]:
        """One ONNX Runtime session per pass, made on first use."""
        return self._load()

    @property
    def shared(self) -> dict[str, np.ndarray]:
        """The tensors stored once for the passes that read them (the noise pattern), by input name."""
        self._load()
        return self._shared

    def check_tile_size(self, tile_size: int) -> None:
        """``StylizeError`` for a tile side below the widest halo or not a multiple of the alignment."""
        if tile_size < self.halo or tile_size % self.align:
            smallest = math.ceil(max(tile_size, self.halo) / self.align) * self.align
            raise StylizeError(
                f"tile size {tile_size} is unusable for {self.path.name}: it must be a multiple of {self.align} and "
                f"at least the network's halo of {self.halo} pixels (the overlap recomputed on each side of a tile); "
                f"use --tile-size {smallest} or more (default {DEFAULT_TILE_SIZE})"
            )

    def __call__(
        self, rgb: np.ndarray, weights: np.ndarray | None, tiling: Tiling, keep_color: bool = False
    ) -> np.ndarray:
        """Stylise uint8 ``[H, W, 3]`` with ``tiling.tile_size`` tiles -> uint8 ``[H, W, 3]`` (rounded like
        ``save_image``), equal to the whole-image pass up to float rounding."""
        self.check_tile_size(tiling.tile_size)
        height, width = rgb.shape[:2]
        padded_height, padded_width = (math.ceil(side / self.align) * self.align for side in (height, width))
        image = rgb
        if (padded_height, padded_width) != (height, width):  # as the network pads: reflection, bottom and right
            image = np.pad(rgb, ((0, padded_height - height), (0, padded_width - width), (0, 0)), mode="reflect")
        with tempfile.TemporaryDirectory(prefix="nst-tiles-") as scratch:
            run = _Run(self, image, weights, tiling, keep_color, (height, width), Path(scratch))
            try:
                for index in range(len(self.sessions)):
                    run.run_pass(index)
            finally:
                run.close()
        return run.result


class _Run:
    """The state of one tiled stylisation: the padded image, stored tensors, statistics found so far, the result."""

    def __init__(
        self,
        model: StagedModel,
        image: np.ndarray,
        weights: np.ndarray | None,
        tiling: Tiling,
        keep_color: bool,
        size: tuple[int, int],
        scratch: Path,
    ) -> None:
        self.model, self.image, self.tiling, self.keep_color, self.size = model, image, tiling, keep_color, size
        self.plan = model.plan
        self.weights = None
        if weights is not None:
            self.weights = np.asarray(weights, dtype=np.float32).reshape(self.plan["weights_shape"])
        self.shared = model.shared
        self.stats: dict[str, np.ndarray] = {}
        self.stored: dict[str, ScratchTensor] = {}
        self.scratch = scratch
        self.result = np.empty((*size, 3), dtype=np.uint8)

    def close(self) -> None:
        """Close and remove the stored tensors' scratch files."""
        for tensor in self.stored.values():
            tensor.remove()
        self.stored.clear()

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` of every tile of the padded image, row by row."""
        side = self.tiling.tile_size
        height, width = self.image.shape[:2]
        return [
            (y0, min(y0 + side, height), x0, min(x0 + side, width))
            for y0 in range(0, height, side)
            for x0 in range(0, width, side)
        ]

    def feeds(self, inputs: list[str], region: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
        y0, y1, x0, x1 = region
        feeds = {}
        for name in inputs:
            if name in (TILE_CROP_STARTS, TILE_CROP_ENDS):  # set by run_pass
                continue
            if name == INPUT_NAME:
                tile = self.image[y0:y1, x0:x1]
                if self.plan["tensors"][name]["layout"] == "hwc":
                    feeds[name] = np.ascontiguousarray(tile)
                else:
                    feeds[name] = (tile.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)
            elif name == TILE_NOISE_OFFSET:
                feeds[name] = np.array([y0, x0], dtype=np.int64)
            elif name == WEIGHTS_NAME:
                if self.weights is None:
                    raise StylizeError("this model blends styles: pass style weights")
                feeds[name] = self.weights
            elif name in self.stats:
                feeds[name] = self.stats[name]
            elif name in self.shared:
                feeds[name] = self.shared[name]
            else:
                scale = self.plan["tensors"][name]["scale"]
                feeds[name] = self.stored[name].read(*(round(v * scale) for v in region))
        return feeds

    def run_pass(self, index: int) -> None:
        step = self.plan["passes"][index]
        session = self.model.sessions[index]
        halo = step["halo"]
        later = {name for other in self.plan["passes"][index + 1 :] for name in other["inputs"]}
        height, width = self.image.shape[:2]
        norm = self.plan["norms"][step["norm"]] if step["norm"] is not None else None
        statistics = NormStatistics(norm["channels"]) if norm is not None else None
        for name in step["outputs"]:
            if name in later:
                info = self.plan["tensors"][name]
                h, w, column = (round(side * info["scale"]) for side in (height, width, self.tiling.tile_size))
                strip = math.ceil(self.model.halo * info["scale"])
                self.stored[name] = ScratchTensor(
                    self.scratch / f"{name}.bin", h, w, info["channels"], info["dtype"], column, strip
                )
        for y0, y1, x0, x1 in self.tiles():
            region = (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo))
            feeds = self.feeds(step["inputs"], region)
            if norm is not None:
                scale = self.plan["tensors"][norm["input"]]["scale"]
                top, left = round((y0 - region[0]) * scale), round((x0 - region[2]) * scale)
                rows, columns = round((y1 - y0) * scale), round((x1 - x0) * scale)
                feeds[TILE_CROP_STARTS] = np.array([top, left], dtype=np.int64)
                feeds[TILE_CROP_ENDS] = np.array([top + rows, left + columns], dtype=np.int64)
            try:
                outputs = dict(zip(step["outputs"], session.run(step["outputs"], feeds), strict=True))
            except Exception as error:  # onnxruntime's own exception types (e.g. out of memory)
                raise StylizeError(f"ONNX Runtime failed on tile {region} of pass {index} ({error})") from error
            if statistics is not None:
                statistics.add(outputs.pop(TILE_SUM), outputs.pop(TILE_SQUARES), rows * columns)
            for name, value in outputs.items():
                scale = self.plan["tensors"][name]["scale"]
                top, left = round((y0 - region[0]) * scale), round((x0 - region[2]) * scale)
                rows, columns = round((y1 - y0) * scale), round((x1 - x0) * scale)
                if name == OUTPUT_NAME:
                    self.place_output(value, (top, left, rows, columns), (y0, x0))
                else:
                    block = value[:, :, top : top + rows, left : left + columns]
                    self.stored[name].write(round(y0 * scale), round(x0 * scale), block)
        if norm is not None:
            mean, variance = statistics.mean_var()
            dtype = np.dtype(self.plan["stats_dtype"][norm["mean"]])
            self.stats[norm["mean"]], self.stats[norm["var"]] = mean.astype(dtype), variance.astype(dtype)
        for name in [name for name in self.stored if name not in later]:
            self.stored.pop(name).remove()

    def place_output(self, value: np.ndarray, crop: tuple[int, int, int, int], origin: tuple[int, int]) -> None:
        """Write the valid part of a final-pass output (float32 NCHW or uint8 HWC) into the uint8 result."""
        top, left, rows, columns = crop
        y0, x0 = origin
        rows, columns = min(rows, self.size[0] - y0), min(columns, self.size[1] - x0)
        if rows <= 0 or columns <= 0:
            return
        if self.plan["tensors"][OUTPUT_NAME]["layout"] == "hwc":
            tile = value[top : top + rows, left : left + columns]
            if self.keep_color:
                tile = tile.astype(np.float32) / 255.0
        else:
            tile = value[0, :, top : top + rows, left : left + columns].transpose(1, 2, 0)
        if self.keep_color:
            content = self.image[y0 : y0 + rows, x0 : x0 + columns].astype(np.float32) / 255.0
            tile = preserve_color(content, tile)
        self.result[y0 : y0 + rows, x0 : x0 + columns] = tile if tile.dtype == np.uint8 else to_uint8(tile)


def load_staged(onnx_path: Path, make_session: Callable[[bytes], Any]) -> StagedModel | None:
    """The staged model beside ``onnx_path`` (``NAME.tiles.zip``), or ``None`` when there is none."""
    path = onnx_path.with_name(tiles_name(onnx_path.name))
    return StagedModel(path, make_session) if path.is_file() else None
