"""Decode one camera video onto a fixed-rate time grid.

Why this shape: P/B frames depend on their predecessors, so every frame must be decoded, but
colour conversion + resize is the expensive part and only the frames that land on the grid need
it. Frames are matched to grid ticks by their presentation time (``pts * time_base`` plus the
camera's ``start_time_s``), never by frame index, so variable-frame-rate files and cameras that
start late are handled correctly. A tick with no frame within ``tolerance_s`` is a gap; it is
reported (absent from the result), never filled with a neighbour.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

logger = logging.getLogger(__name__)


#: Converted frames encoded per batch: big enough to keep the encoder's code and tables in cache,
#: small enough that the waiting RGB arrays stay around 1 MiB at model resolution.
ENCODE_BATCH = 48


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; the message names the file."""


@dataclass
class GridFrames:
    """Frames chosen for grid ticks of one camera.

    ``frames`` maps grid index k (time k / rate_hz) to (frame_time_s, payload), where payload
    is whatever the ``encode`` callback returned for the converted RGB frame.
    """

    path: str
    rate_hz: float
    frames: dict[int, tuple[float, Any]] = field(default_factory=dict)
    num_decoded: int = 0
    first_time_s: float = math.nan
    last_time_s: float = math.nan

    def gap_ticks(self) -> list[int]:
        """Ticks between the first and last chosen tick that have no frame."""
        if not self.frames:
            return []
        lo, hi = min(self.frames), max(self.frames)
        return [k for k in range(lo, hi + 1) if k not in self.frames]


def decode_on_grid(
    path: str | Path,
    *,
    rate_hz: float,
    width: int,
    height: int,
    start_time_s: float = 0.0,
    tolerance_s: float | None = None,
    encode: Callable[[np.ndarray], Any] | None = None,
    threads: int = 0,
    convert_ticks: tuple[int, int] | None = None,
) -> GridFrames:
    """Decode ``path`` once, keep the frame nearest to each tick k / rate_hz within tolerance.

    ``tolerance_s`` defaults to half the stream's nominal frame period. Only chosen frames are
    converted (to rgb24 at width x height, resized inside libswscale) and passed to
    ``encode`` (e.g. a JPEG encoder) so memory stays bounded by the encoded size.
    ``convert_ticks`` = (lo, hi) limits conversion to ticks lo..hi: ticks outside are still
    matched (so gaps are found) but carry payload None, for callers that know no sample can
    use them.
    Raises `VideoDecodeError` for a missing, truncated or corrupt file.
    """
    name = str(path)
    encode = encode or (lambda image: image)
    result = GridFrames(path=name, rate_hz=rate_hz)
    if Path(name).is_file() and Path(name).stat().st_size == 0:
        raise VideoDecodeError(f"{name}: the file is empty (0 bytes); re-export it")
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{name}: no video stream; write an H.264 MP4 per camera")
            stream = container.streams.video[0]
            if threads > 0:
                # Must be set before the codec opens; explicit counts keep parallel
                # per-camera decodes from oversubscribing the CPU.
                stream.thread_type = "AUTO"
                stream.thread_count = threads
            tol = tolerance_s
            if tol is None:
                rate = stream.average_rate or stream.guessed_rate or 30
                tol = 0.5 / float(rate)
            indexed = stream.frames  # frame count from the container index (0 = unknown)
            seen = [0]  # every frame out of the decoder, including ones _select skips

            def counted(frames: Any) -> Any:
                for frame in frames:
                    seen[0] += 1
                    yield frame

            _select(
                counted(container.decode(stream)),
                stream,
                result,
                start_time_s,
                tol,
                width,
                height,
                encode,
                convert_ticks,
            )
    except av.error.FileNotFoundError as exc:
        raise VideoDecodeError(f"{name}: file does not exist") from exc
    except av.error.DecoderNotFoundError as exc:
        raise VideoDecodeError(
            f"{name}: no decoder for its video codec in this FFmpeg build (unknown codec); "
            "re-encode it with a common codec such as H.264"
        ) from exc
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(
            f"{name}: cannot decode ({type(exc).__name__}: {exc}); the file is truncated, "
            "lacks its index (moov), is corrupt or is not a video, re-export it"
        ) from exc
    if result.num_decoded == 0:
        raise VideoDecodeError(f"{name}: the video holds no decodable frames; re-export it")
    if indexed and seen[0] < indexed:
        # FFmpeg stops quietly at a clean cut (e.g. a faststart file truncated at a packet
        # boundary) and may drop undecodable packets; the index still lists every frame.
        raise VideoDecodeError(
            f"{name}: decoded {seen[0]} of the {indexed} frames its index lists "
            "(truncated or corrupt packets); re-export it"
        )
    return result


def _select(
    frames: Any,
    stream: Any,
    result: GridFrames,
    start_time_s: float,
    tol: float,
    width: int,
    height: int,
    encode: Callable[[np.ndarray], Any],
    convert_ticks: tuple[int, int] | None = None,
) -> None:
    """Streaming nearest-frame selection with a one-frame look-back.

    For consecutive frames at times p < c, every tick g in (p, c] is nearest to p or c; the
    first frame also owns ticks in [c - tol, c] and the last one ticks in (p, p + tol].
    Each frame is converted at most once, only if some tick chooses it.
    """
    hz = result.rate_hz
    # pts * num / den is Python's correctly rounded int division: the same float as
    # float(pts * Fraction(num, den)) without building a Fraction per frame.
    tb_num, tb_den = stream.time_base.numerator, stream.time_base.denominator
    prev: list[Any] | None = None  # [time, frame, rgb array, encoded payload]
    # One reformatter for the whole stream: `frame.to_ndarray(width=, height=)` builds a new
    # libswscale context per frame, which measured ~17x slower (1.2 ms vs 0.07 ms per 224x128
    # frame) than reusing one context.
    reformatter = VideoReformatter()
    # Converted frames wait here (model resolution, ~21 kB each) and are encoded in batches.
    # Encoding each one between two 720p decodes runs with cold caches: 0.49 ms per 112x64
    # JPEG inside the decode loop against 0.15 ms in batches (benchmarks/frame_convert.py).
    pending: list[tuple[int, list[Any]]] = []

    def convert(entry: list[Any]) -> None:
        if entry[2] is None and entry[3] is None:
            # AREA averages the source pixels under each output pixel: for these ~10x
            # downscales it is both faster than swscale's default BILINEAR and closer to an
            # exact box filter (benchmarks/frame_convert.py, 720p -> 112x64: 0.59-0.71x the
            # time per frame over three runs, PSNR 43.4 vs 36.8 dB).
            rgb = reformatter.reformat(
                entry[1], width=width, height=height, format="rgb24", interpolation="AREA"
            )
            entry[2] = rgb.to_ndarray()
            entry[1] = None  # release the full-resolution frame now

    def flush() -> None:
        for k, entry in pending:
            if entry[3] is None:
                entry[3], entry[2] = encode(entry[2]), None
            result.frames[k] = (entry[0], entry[3])
        pending.clear()

    lo, hi = convert_ticks if convert_ticks is not None else (-math.inf, math.inf)

    def assign(k: int, entry: list[Any]) -> None:
        if not lo <= k <= hi:
            result.frames[k] = (entry[0], None)
            return
        convert(entry)
        pending.append((k, entry))
        if len(pending) >= ENCODE_BATCH:
            flush()

    for frame in frames:
        if frame.pts is None:
            logger.warning("%s: frame without pts skipped", result.path)
            continue
        t = frame.pts * tb_num / tb_den + start_time_s
        result.num_decoded += 1
        cur = [t, frame, None, None]
        if prev is None:
            result.first_time_s = t
            for k in range(math.ceil((t - tol) * hz - 1e-9), math.floor(t * hz + 1e-9) + 1):
                if abs(k / hz - t) <= tol + 1e-9:
                    assign(k, cur)
        else:
            p = prev[0]
            if t <= p:
                logger.warning(
                    "%s: non-increasing frame time %.6f after %.6f skipped", result.path, t, p
                )
                result.num_decoded -= 1
                continue
            for k in range(math.floor(p * hz) - 1, math.floor(t * hz) + 2):
                g = k / hz
                if not p < g <= t:
                    continue
                best = prev if (g - p) <= (t - g) else cur
                if abs(g - best[0]) <= tol + 1e-9:
                    assign(k, best)
        prev = cur  # the older frame can no longer be the nearest to any later tick
    if prev is not None:
        p = prev[0]
        result.last_time_s = p
        for k in range(math.floor(p * hz) + 1, math.floor((p + tol) * hz + 1e-9) + 1):
            g = k / hz
            if p < g <= p + tol + 1e-9:
                assign(k, prev)
    flush()
