"""Why prepare converts frames the way it does, measured on the same frames.

    .venv/bin/python benchmarks/frame_convert.py [--video FILE.mp4] [--frames N]

For every 3rd decoded frame (30 FPS -> 10 Hz) of a 1280x720 clip (generated with the synthetic
world unless --video is given), resized to the default 112x64 model input:

(1) ms per frame and PSNR against an exact box average of the full-resolution RGB frame (PIL
    BOX), for BILINEAR (PyAV's default) and AREA (what prepare uses). The two filters run in
    alternation over the same frames, best of 3 passes.
(2) JPEG encode time per converted frame when each frame is encoded right after it is decoded
    (caches cold: a 720p decode ran in between) vs in batches of `ENCODE_BATCH` after the
    decodes (what `decode_on_grid` does). Only the encode calls are timed; 3 passes each,
    alternating, best pass.

Prints figures; asserts nothing.
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

from autoe2e.data.episode import jpeg_encoder
from autoe2e.video.decode import ENCODE_BATCH

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
            print(f"(1) {name:8s}: {timings[name]:.3f} ms/frame, PSNR vs exact box {psnr:.1f} dB")
        print(f"(1) AREA / BILINEAR time: {timings['AREA'] / timings['BILINEAR']:.2f}")

        jpeg_in_loop_vs_batched(video)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def jpeg_in_loop_vs_batched(video: Path) -> None:
    encode = jpeg_encoder(90)
    best = {"in the decode loop": float("inf"), "batched": float("inf")}
    for _ in range(3):
        for mode in best:
            reformatter, waiting, spent, count = VideoReformatter(), [], 0.0, 0
            with av.open(str(video)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i % 3:
                        continue
                    rgb = reformatter.reformat(
                        frame, width=WIDTH, height=HEIGHT, format="rgb24", interpolation="AREA"
                    ).to_ndarray()
                    waiting.append(rgb)
                    if mode == "batched" and len(waiting) < ENCODE_BATCH:
                        continue
                    start = time.perf_counter()
                    for image in waiting:
                        encode(image)
                    spent += time.perf_counter() - start
                    count += len(waiting)
                    waiting = []
            start = time.perf_counter()
            for image in waiting:
                encode(image)
            spent += time.perf_counter() - start
            best[mode] = min(best[mode], spent / (count + len(waiting)) * 1e3)
    loop, batched = best["in the decode loop"], best["batched"]
    print(
        f"(2) JPEG per 112x64 frame: {loop:.3f} ms in the decode loop vs {batched:.3f} ms "
        f"batched by {ENCODE_BATCH}: {loop / batched:.1f}x"
    )


if __name__ == "__main__":
    main()
