"""H.264 MP4 writing with PyAV (libx264, yuv420p, constant frame rate).

Why a dedicated writer: the raw-episode contract derives frame times from pts, so every frame
gets an exact pts of ``index`` in a time base of ``1 / fps`` (a rational, so 29.97 stays exact)
and the container never has to guess a rate. Encoding is single-threaded by default because
callers parallelise over episodes, and one x264 thread also keeps the bitstream deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

logger = logging.getLogger(__name__)

#: Default x264 speed/quality trade-off; "veryfast" is ~2x "medium" speed at small frame sizes.
DEFAULT_PRESET = "veryfast"


def fps_fraction(fps: float) -> Fraction:
    """Exact rational frame rate (30 -> 30/1, 29.97 -> 30000/1001)."""
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps={fps!r} is not a positive number; use e.g. 30")
    return Fraction(fps).limit_denominator(1001)


class Mp4Writer:
    """Append RGB(A) frames (H, W, 3|4) uint8 to an H.264 MP4 at a constant frame rate.

    Use as a context manager; `close()` flushes the encoder and writes the index.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        crf: int = 23,
        preset: str = DEFAULT_PRESET,
        threads: int = 1,
        gop_s: float = 2.0,
    ) -> None:
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(
                f"frame size {width}x{height} cannot be encoded as yuv420p; use even sizes >= 2"
            )
        if not 0 <= crf <= 51:
            raise ValueError(f"crf={crf} is out of range; use 0 (lossless) .. 51 (worst)")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.rate = fps_fraction(fps)
        # Frames are stamped in 1/fps units; the MP4 muxer rescales them exactly (e.g. 1/15360).
        self._time_base = 1 / self.rate
        self.frames_written = 0
        self._container = av.open(str(self.path), mode="w", format="mp4")
        try:
            gop = max(1, round(float(self.rate) * gop_s))
            stream = self._container.add_stream(
                "libx264",
                rate=self.rate,
                options={"crf": str(crf), "preset": preset, "g": str(gop)},
            )
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = threads
            self._stream = stream
        except Exception:
            self._container.close()
            raise

    def write(self, image: np.ndarray) -> None:
        """Encode one (H, W, 3) RGB or (H, W, 4) RGBA uint8 frame; pts = frames written so far."""
        if (
            image.ndim != 3
            or image.shape[:2] != (self.height, self.width)
            or image.shape[2] not in (3, 4)
            or image.dtype != np.uint8
        ):
            raise ValueError(
                f"{self.path.name}: frame {self.frames_written} has shape {image.shape} "
                f"dtype {image.dtype}; expected ({self.height}, {self.width}, 3 or 4) uint8"
            )
        fmt = "rgb24" if image.shape[2] == 3 else "rgba"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        frame.pts = self.frames_written
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush delayed frames (B-frames) and finalise the MP4 index."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None  # type: ignore[assignment]
        logger.debug("wrote %s: %d frames", self.path, self.frames_written)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_mp4(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 23,
    preset: str = DEFAULT_PRESET,
) -> int:
    """Encode an iterable of equally sized RGB frames; returns the number of frames written."""
    iterator = iter(frames)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError(f"{path}: no frames to encode; pass at least one frame") from None
    if first.ndim != 3:
        raise ValueError(f"{path}: frames must be (H, W, 3) RGB arrays, got shape {first.shape}")
    height, width = first.shape[:2]
    with Mp4Writer(path, width, height, fps, crf=crf, preset=preset) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
        return writer.frames_written
