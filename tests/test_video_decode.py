"""Grid selection by presentation time on real H.264 files written with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from episode_factory import TIME_BASE, frame_times, write_video

from autoe2e.video.decode import VideoDecodeError, decode_on_grid

TOL = 1 / 60


def _decode(path: Path, **kwargs):
    return decode_on_grid(path, rate_hz=10.0, width=32, height=24, tolerance_s=TOL, **kwargs)


def test_vfr_file_selects_nearest_frame_by_pts(tmp_path: Path) -> None:
    # 2 s at ~30 fps with jitter, then 2 s at ~25 fps: frame index % 3 is wrong after 2 s.
    rng = np.random.default_rng(3)
    times = np.concatenate([np.arange(60) / 30, 2.0 + np.arange(50) / 25])
    times[1:] += rng.uniform(-0.004, 0.004, size=len(times) - 1)
    path = write_video(tmp_path / "vfr.mp4", times, (200, 30, 30))
    tol = 0.021
    grid = decode_on_grid(path, rate_hz=10.0, width=32, height=24, tolerance_s=tol)
    assert grid.num_decoded == len(times)
    by_index = 0
    for k in range(0, 40):
        g = k / 10
        nearest = int(np.argmin(np.abs(times - g)))
        if abs(times[nearest] - g) <= tol:
            assert k in grid.frames, f"tick {k} has frame {times[nearest]:.4f} within tolerance"
            assert grid.frames[k][0] == pytest.approx(times[nearest], abs=2e-5)
            by_index += nearest != 3 * k
        else:
            assert k not in grid.frames, f"tick {k} must be a gap, nearest is {times[nearest]}"
    assert by_index >= 15  # the file really is VFR: index-based selection would be wrong


def test_camera_start_time_offset_shifts_frame_times(tmp_path: Path) -> None:
    times = frame_times(3.0)
    path = write_video(tmp_path / "late.mp4", times, (30, 200, 30))
    grid = _decode(path, start_time_s=1 / 30)
    assert grid.first_time_s == pytest.approx(1 / 30, abs=1e-5)
    assert 0 not in grid.frames  # nearest frame (1/30 s) is outside the 1/60 s tolerance
    for k in range(1, 30):
        frame_time = grid.frames[k][0]
        assert frame_time == pytest.approx(k / 10, abs=1e-4)


def test_dropped_span_is_a_gap_not_filled(tmp_path: Path) -> None:
    times = frame_times(3.0, drop=[(1.0, 1.5)])
    path = write_video(tmp_path / "gap.mp4", times, (30, 30, 200))
    grid = _decode(path)
    assert grid.gap_ticks() == [10, 11, 12, 13, 14]
    assert sorted(grid.frames) == [k for k in range(30) if not 10 <= k <= 14]


def test_decoded_pixels_keep_the_source_colour(tmp_path: Path) -> None:
    colour = (40, 200, 60)
    path = write_video(tmp_path / "green.mp4", frame_times(1.0), colour, width=64, height=48)
    grid = decode_on_grid(path, rate_hz=10.0, width=32, height=24)
    image = grid.frames[5][1]
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    # Bottom half has no moving white square: plain colour up to codec error.
    np.testing.assert_allclose(image[14:].reshape(-1, 3).mean(0), colour, atol=8)


def test_encode_callback_runs_only_for_chosen_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "c.mp4", frame_times(2.0), (100, 100, 100))
    calls = []
    grid = _decode(path, encode=lambda image: calls.append(1) or image.sum())
    assert len(calls) == len(grid.frames) == 20  # 60 decoded frames, 20 converted


def test_truncated_and_missing_files_raise_naming_the_file(tmp_path: Path) -> None:
    path = write_video(tmp_path / "full.mp4", frame_times(2.0), (10, 10, 10))
    data = path.read_bytes()
    for name, payload in (
        ("head.mp4", data[: len(data) // 2]),
        ("noise.mp4", data[:48] + bytes(np.random.default_rng(0).integers(0, 255, 4000, np.uint8))),
    ):
        bad = tmp_path / name
        bad.write_bytes(payload)
        with pytest.raises(VideoDecodeError, match=name):
            _decode(bad)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        _decode(tmp_path / "absent.mp4")


def test_convert_ticks_limits_conversion_but_not_matching(tmp_path: Path) -> None:
    path = write_video(tmp_path / "c.mp4", frame_times(2.0), (100, 100, 100))
    calls = []
    grid = _decode(path, encode=lambda image: calls.append(1) or image.sum(), convert_ticks=(5, 9))
    assert sorted(grid.frames) == list(range(20)) and len(calls) == 5
    assert [k for k, (_, payload) in grid.frames.items() if payload is not None] == [5, 6, 7, 8, 9]


@pytest.mark.parametrize(
    ("codec", "options"),
    [
        ("mpeg4", {}),
        ("libx265", {"preset": "ultrafast", "x265-params": "log-level=error"}),
        # B-frames: decode order differs from presentation order; selection must follow pts.
        ("libx264", {"preset": "medium", "bf": "3", "crf": "18"}),
    ],
)
def test_other_codecs_and_b_frames_give_the_same_grid(
    tmp_path: Path, codec: str, options: dict[str, str]
) -> None:
    colour = (200, 40, 40)
    times = frame_times(2.0)
    # 16:9 source resized to the 4:3 model input, as a wide camera would be.
    # MPEG-4 Part 2 caps the time base denominator at 65535.
    time_base = Fraction(1, 30000) if codec == "mpeg4" else TIME_BASE
    path = write_video(
        tmp_path / f"{codec}.mp4",
        times,
        colour,
        width=96,
        height=54,
        codec=codec,
        options=options,
        time_base=time_base,
    )
    grid = _decode(path)
    assert sorted(grid.frames) == list(range(20)) and grid.num_decoded == len(times)
    for k, (frame_time, image) in grid.frames.items():
        assert abs(frame_time - k / 10) <= TOL and image.shape == (24, 32, 3)
        np.testing.assert_allclose(image[14:].reshape(-1, 3).mean(0), colour, atol=12)
