"""Video files: decode with PyAV, stylise frames in batches, encode, copy audio."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nst_fast.errors import StylizeError
from nst_fast.stylize.core import check_size, stylize_array
from nst_fast.stylize.jobs import VIDEO_CODECS
from nst_fast.stylize.models import StyleModel
from nst_fast.stylize.temporal import TemporalBlender, require_opencv

#: Encoders that take ``--crf`` (libvpx-vp9 as crf + 13).
CRF_ENCODERS = ("libx264", "libvpx-vp9")


def video_encoder(target: Path) -> str | None:
    """The encoder used for a video written to ``target``: the first one of ``VIDEO_CODECS`` this PyAV build has."""
    import av

    return next(
        (c for c in VIDEO_CODECS.get(target.suffix.lower(), ("libx264", "mpeg4")) if c in av.codecs_available), None
    )


#: Encoders whose 4:2:0 output needs even sides: H.264 codes chroma in 2x2 blocks and its frame cropping
#: counts in chroma samples, so an odd-sized 4:2:0 H.264 stream cannot exist. VP9 and MPEG-4 code odd sides.
EVEN_SIDED_ENCODERS = ("libx264", "h264")


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def output_size(encoder: str, width: int, height: int) -> tuple[int, int]:
    """The size frames of ``width`` x ``height`` are written at by ``encoder``, always in yuv420p (4:2:0), which
    every player decodes: H.264 drops the last column and/or row of an odd side; other encoders keep the size."""
    if encoder in EVEN_SIDED_ENCODERS:
        return width - width % 2, height - height % 2
    return width, height


class FrameWriter:
    """Stylises decoded frames in batches of ``batch_size`` (then, with ``blend``, frame by frame along the optical
    flow) and muxes them into ``video_out``."""

    def __init__(
        self,
        model: StyleModel,
        output: Any,
        video_out: Any,
        *,
        keep_color: bool,
        weights: np.ndarray | None,
        batch_size: int,
        blend: TemporalBlender | None,
        progress: Any,
    ) -> None:
        self.model, self.output, self.video_out = model, output, video_out
        self.keep_color, self.weights, self.batch_size = keep_color, weights, batch_size
        self.blend, self.progress = blend, progress
        self.pending: list[tuple[np.ndarray, int | None, object]] = []
        self.frames = 0

    def add(self, array: np.ndarray, pts: int | None, time_base: object) -> None:
        self.pending.append((array, pts, time_base))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        import av

        if not self.pending:
            return
        batch = np.stack([array for array, _, _ in self.pending])
        styled = stylize_array(self.model, batch, self.keep_color, self.weights)
        for (array, pts, time_base), frame_rgb in zip(self.pending, styled, strict=False):
            if self.blend is not None:
                frame_rgb = self.blend(array, frame_rgb)
            frame = av.VideoFrame.from_ndarray((np.clip(frame_rgb, 0, 1) * 255 + 0.5).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            self.output.mux(self.video_out.encode(frame))
            self.frames += 1
            if self.progress is not None:
                self.progress.update(1)
        self.pending.clear()


def _frame_sizes(video_in: Any, source: Path, target: Path, max_size: int | None) -> tuple[str, int, int, int, int]:
    """The encoder for ``target``, the decoded frame size (downscaled to ``max_size`` with even sides) and the
    encoded size (``output_size``); ``StylizeError`` for sizes the network or the encoder cannot take."""
    width, height = video_in.codec_context.width, video_in.codec_context.height
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = _even(width * scale), _even(height * scale)
    check_size(width, height, str(source))
    codec = video_encoder(target)
    if codec is None:
        raise StylizeError(f"{target}: this PyAV build has no encoder for {target.suffix}")
    out_width, out_height = output_size(codec, width, height)
    check_size(out_width, out_height, f"{source} (cropped to even sides for {codec})")
    return codec, width, height, out_width, out_height


def _add_video_stream(output: Any, video_in: Any, codec: str, size: tuple[int, int], crf: int) -> Any:
    rate = video_in.average_rate or video_in.guessed_rate or 25
    video_out = output.add_stream(codec, rate=rate)
    video_out.width, video_out.height = size
    video_out.pix_fmt = "yuv420p"  # what every player and browser decodes (not High 4:4:4, not VP9 profile 1)
    if codec in CRF_ENCODERS:
        video_out.options = {"crf": str(crf)} if codec == "libx264" else {"crf": str(crf + 13), "b": "0"}
    video_out.time_base = video_in.time_base
    return video_out


def _add_audio_streams(output: Any, audio_in: list, source: Path, target: Path) -> tuple[dict, dict]:
    """Audio is copied packet by packet; a codec the output container cannot hold (e.g. AAC into .webm) is
    re-encoded with the container's default audio codec instead. Returns (copied streams, re-encoders) by index."""
    import av

    audio_map, audio_encoders = {}, {}
    for stream in audio_in:
        try:
            audio_map[stream.index] = output.add_stream_from_template(stream)
        except (av.FFmpegError, ValueError) as error:
            codec_name = output.default_audio_codec
            if not codec_name or codec_name == "none":
                raise StylizeError(
                    f"{source}: cannot store audio stream {stream.index} in {target.suffix} ({error})"
                ) from error
            encoder = output.add_stream(codec_name, rate=48000 if "opus" in codec_name else stream.rate)
            encoder.layout = stream.layout
            audio_encoders[stream.index] = encoder
    return audio_map, audio_encoders


def _transcode(
    container: Any,
    output: Any,
    video_in: Any,
    audio_in: list,
    writer: FrameWriter,
    sizes: tuple[int, int, int, int],
    audio: tuple[dict, dict],
) -> None:
    """Demux ``container``: video frames to ``writer``, audio copied or re-encoded; then flush every encoder."""
    width, height, out_width, out_height = sizes
    audio_map, audio_encoders = audio
    rate = video_in.average_rate or video_in.guessed_rate or 25
    next_pts = 0
    for packet in container.demux(video_in, *audio_in):
        if packet.stream.index == video_in.index:
            for frame in packet.decode():
                array = frame.to_ndarray(format="rgb24", width=width, height=height)[:out_height, :out_width]
                pts = frame.pts
                if pts is None:  # keep a regular clock for streams without timestamps
                    pts = int(next_pts / (rate * video_in.time_base))
                next_pts += 1
                writer.add(array, pts, video_in.time_base)
        elif packet.stream.index in audio_encoders:
            encoder = audio_encoders[packet.stream.index]
            for frame in packet.decode():  # the empty packet at the end flushes the decoder
                frame.pts = None  # the encoder counts samples at its own rate
                output.mux(encoder.encode(frame))
        elif packet.dts is not None:
            packet.stream = audio_map[packet.stream.index]
            output.mux(packet)
    writer.flush()  # demux ends with an empty packet per stream, whose decode() flushed the decoder above
    output.mux(writer.video_out.encode(None))
    for encoder in audio_encoders.values():
        output.mux(encoder.encode(None))


def _open_video(source: Path) -> Any:
    """``source`` opened by PyAV; ``StylizeError`` when it is not a readable video."""
    import av

    try:
        return av.open(str(source))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise StylizeError(f"{source}: not a readable video ({error})") from error


def _video_stream(container: Any, source: Path, progress: Any) -> Any:
    """The first video stream of ``container`` (decoded with threads), the ``progress`` bar's total set to its
    frame count when the container knows it; ``StylizeError`` when there is none."""
    if not container.streams.video:
        raise StylizeError(f"{source}: no video stream")
    video_in = container.streams.video[0]
    video_in.thread_type = "AUTO"
    if progress is not None and video_in.frames:
        progress.total = video_in.frames
        progress.refresh()
    return video_in


def _write_output(
    source: Path,
    partial: Path,
    container: Any,
    streams: tuple[Any, list[Any]],
    codec: str,
    sizes: tuple[int, int, int, int],
    crf: int,
    frame_writer: Callable[[Any, Any], FrameWriter],
) -> FrameWriter:
    """Transcode the video and audio streams (``streams``) of ``container`` (the file ``source``) into the file
    ``partial``, the frames stylised by the ``FrameWriter`` that ``frame_writer(output, video_out)`` makes;
    returns that writer.
    ``sizes``: input width and height, output width and height."""
    import av

    video_in, audio_in = streams
    output = av.open(str(partial), "w")
    try:
        video_out = _add_video_stream(output, video_in, codec, sizes[2:], crf)
        audio = _add_audio_streams(output, audio_in, source, partial)
        writer = frame_writer(output, video_out)
        _transcode(container, output, video_in, audio_in, writer, sizes, audio)
    finally:
        output.close()
    return writer


def stylize_video(
    model: StyleModel,
    source: Path,
    target: Path,
    *,
    keep_color: bool = False,
    max_size: int | None = None,
    batch_size: int = 4,
    crf: int = 18,
    progress: Any = None,
    weights: np.ndarray | None = None,
    temporal_weight: float | None = None,
) -> int:
    """Stylise every frame of ``source``'s first video stream into ``target`` in yuv420p (same frame rate,
    timestamps and size, or downscaled to ``max_size`` with even sides; H.264 crops odd sides to even, see
    ``output_size``); audio streams are copied (re-encoded where the output container cannot hold their codec).
    Returns the number of frames.
    ``temporal_weight``: blend each frame with the previous output along the optical flow
    (``nst_fast.stylize.temporal``; the network still runs in batches, the blending follows frame by frame).
    ``progress``: a tqdm bar (its total is set from the stream's frame count when the container knows it)."""
    import av

    if temporal_weight is not None:
        require_opencv()
    container = _open_video(source)
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        video_in = _video_stream(container, source, progress)
        codec, width, height, out_width, out_height = _frame_sizes(video_in, source, target, max_size)
        target.parent.mkdir(parents=True, exist_ok=True)
        frame_writer = functools.partial(
            FrameWriter,
            model,
            keep_color=keep_color,
            weights=weights,
            batch_size=batch_size,
            blend=TemporalBlender(temporal_weight) if temporal_weight is not None else None,
            progress=progress,
        )
        streams = (video_in, list(container.streams.audio))
        sizes = (width, height, out_width, out_height)
        writer = _write_output(source, partial, container, streams, codec, sizes, crf, frame_writer)
        if writer.frames == 0:
            raise StylizeError(f"{source}: no video frames could be decoded")
        os.replace(partial, target)
    except av.FFmpegError as error:
        raise StylizeError(f"{source}: video error ({error})") from error
    finally:
        container.close()
        partial.unlink(missing_ok=True)
    return writer.frames
