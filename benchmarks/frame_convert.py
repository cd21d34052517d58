"""Why prepare resizes frames with libswscale's AREA filter, measured on the same frames.

    .venv/bin/python benchmarks/frame_convert.py [--video FILE.mp4] [--frames N]

For every 3rd decoded frame (30 FPS -> 10 Hz) of a 1280x720 clip (generated with the synthetic
world unless --video is given), resized to the default 112x64 model input:

ms per frame and PSNR against an exact box average of the full-resolution RGB frame (PIL BOX),
for BILINEAR (PyAV's default) and AREA (what prepare uses). The two filters run in alternation
over the same frames, best of 3 passes. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

WIDTH, HEIGHT = 112, 64


def _clip(work: Path) -> Path:
    from autoe2e.config import GenerateConfig
    from autoe2e.synthetic import generate_episodes

    config = GenerateConfig(
        num_episodes=1, duration_s=12.0, cameras=["front"], image_width=1280, image_height=720
    )
    generate_episodes(work, config, workers=1)
    return next(work.glob("*/cameras/front.mp4"))


def _frames(video: Path, count: int) -> list[av.VideoFrame]:
    frames = []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 3 == 0:
                frames.append(frame)
            if len(frames) == count:
                break
    return frames


def _ms_per_frame(fn, frames: list[av.VideoFrame]) -> float:
    start = time.perf_counter()
    for frame in frames:
        fn(frame)
    return (time.perf_counter() - start) / len(frames) * 1e3


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / mse)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autoe2e-convert-"))
    try:
        video = args.video or _clip(work)
        frames = _frames(video, args.frames)
        print(f"{len(frames)} frames of {frames[0].width}x{frames[0].height} from {video}")
        references = [
            np.asarray(
                Image.fromarray(f.to_ndarray(format="rgb24")).resize(
                    (WIDTH, HEIGHT), Image.Resampling.BOX
                )
            )
            for f in frames
        ]
        # One reformatter (one cached libswscale context) per filter, as prepare keeps one.
        reformatters = {name: VideoReformatter() for name in ("BILINEAR", "AREA")}

        def resize(interpolation: str):
            return lambda f: reformatters[interpolation].reformat(
                f, width=WIDTH, height=HEIGHT, format="rgb24", interpolation=interpolation
            )

        timings: dict[str, float] = {}
        for _ in range(3):
            for name in ("BILINEAR", "AREA"):
                ms = _ms_per_frame(resize(name), frames)
                timings[name] = min(ms, timings.get(name, ms))
        for name in ("BILINEAR", "AREA"):
            psnr = np.mean(
                [
                    _psnr(resize(name)(f).to_ndarray(), r)
                    for f, r in zip(frames, references, strict=True)
                ]
            )
            print(f"{name:8s}: {timings[name]:.3f} ms/frame, PSNR vs exact box {psnr:.1f} dB")
        print(f"AREA / BILINEAR time: {timings['AREA'] / timings['BILINEAR']:.2f}")

    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
