"""The report figures: valid, small, deterministic PNGs, and a bird's-eye view that puts
trajectories where the map raster's geometry says they are."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from autoe2e.data.map_raster import EGO_FROM_BOTTOM, MapPolylines, render_raster
from autoe2e.evaluation import plots

R = 64
RES_M = 1.5


def _open(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        assert 100 <= image.width <= 2000 and 100 <= image.height <= 2000, image.size
        return np.asarray(image.convert("RGB")).astype(np.int16)


def _camera() -> np.ndarray:
    """A mid-grey frame with a gradient: nothing in it is black or trajectory-coloured."""
    image = np.full((3, 64, 112), 128, dtype=np.uint8)
    image[0] += np.linspace(0, 60, 112, dtype=np.uint8)[None, :]
    return image


def _straight(length_m: float, lateral_m: float = 0.0) -> np.ndarray:
    x = np.linspace(1.0, length_m, 30)
    return np.stack([x, np.full_like(x, lateral_m)], axis=1)


CASES = {
    "birdseye": lambda: plots.birdseye_png(
        np.zeros((3, R, R)),
        RES_M,
        _camera(),
        {
            "ground_truth": _straight(30),
            "model": _straight(28, 2),
            "constant_velocity": _straight(25),
        },
        "episode-0 t=4.0 s",
    ),
    "error_vs_horizon": lambda: plots.error_vs_horizon_png(
        {"model": [0.2, 0.5, 0.9, None], "constant_velocity": [0.3, 0.8, 1.5, 3.0]},
        dt_s=1.0,
        horizons_s=[1.0, 2.0, 3.0, 6.4],
    ),
    "error_vs_step": lambda: plots.error_vs_horizon_png(
        {"model": list(np.linspace(0.1, 2.0, 64))}, dt_s=0.1
    ),
    "jepa": lambda: plots.jepa_horizons_png(
        {
            "model": [0.1, 0.2, 0.3, 0.4],
            "copy_last_frame": [0.2, 0.3, 0.4, 0.5],
            "mean_target": [0.3] * 4,
        }
    ),
    "curves": lambda: plots.curves_png(
        {"train/loss": [(s, 1.0 / s) for s in range(1, 200)], "val/ade_m": [(50, 2.0), (100, 1.4)]},
        "training loss",
    ),
    "histogram": lambda: plots.histogram_png(
        np.random.default_rng(0).normal(0.0, 12.0, 500).tolist(), "frame time - grid time", "ms"
    ),
    "bar": lambda: plots.bar_png({"episode-a": 40, "episode-b": 12, "x" * 200: 3}, "samples"),
    "strip": lambda: plots.frame_strip_png({"front": [_camera()] * 4, "rear": [_camera()] * 3}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_figure_is_a_small_deterministic_png(name: str) -> None:
    first, second = CASES[name](), CASES[name]()
    _open(first)
    assert len(first) < 200_000, f"{name}: {len(first)} bytes"
    assert first == second, f"{name}: two renders of the same input differ"


def test_empty_inputs_still_give_a_picture() -> None:
    for data in (
        plots.curves_png({}, "nothing logged"),
        plots.histogram_png([], "no frames", "ms"),
        plots.bar_png({}, "nothing quarantined"),
        plots.jepa_horizons_png({}),
        plots.error_vs_horizon_png({"model": [None, None]}, dt_s=1.0),
    ):
        _open(data)
    with Image.open(io.BytesIO(plots.frame_strip_png({}))) as image:
        assert image.width > 0


def test_mismatched_horizons_are_refused() -> None:
    with pytest.raises(ValueError, match="horizons"):
        plots.error_vs_horizon_png({"model": [1.0, 2.0]}, dt_s=1.0, horizons_s=[1.0])


def test_trajectory_pixels_follow_the_map_raster_convention() -> None:
    """A map line 6 m to the left, straight ahead, is rendered by `render_raster` exactly in
    the column `ego_to_pixel` computes for the same points, and ahead means up."""
    x = np.linspace(-10.0, 60.0, 50)
    line = np.stack([x, np.full_like(x, 6.0)], axis=1)
    polylines = MapPolylines(points=line, starts=np.array([0]), channels=np.array([1]))
    raster = render_raster(polylines, 0.0, 0.0, 0.0, R, RES_M)
    col, row = plots.ego_to_pixel(np.array([[0.0, 6.0], [30.0, 6.0]]), R, RES_M)
    assert col[0] == col[1] == R / 2 - 6.0 / RES_M  # left of the centre column
    assert row[1] < row[0] == R * (1 - EGO_FROM_BOTTOM)  # further ahead = higher up
    lit_columns = np.flatnonzero(raster[1].max(axis=0))
    assert lit_columns.tolist() == [int(col[0])]


def _map_panel(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the black map panel (an empty raster)."""
    black = (image < 8).all(axis=2)
    # text is black too: the panel is where whole runs of black pixels are
    rows = np.flatnonzero(black.sum(axis=1) > 50)
    cols = np.flatnonzero(black.sum(axis=0) > 50)
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _colour_pixels(image: np.ndarray, colour: str, panel: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = panel
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    close = (np.abs(image - rgb).max(axis=2) < 40)[top : bottom + 1, left : right + 1]
    ys, xs = np.nonzero(close)
    return np.stack([ys + top, xs + left], axis=1)


@pytest.mark.parametrize("lateral_m", [0.0, 9.0])
def test_birdseye_draws_ground_truth_where_the_raster_geometry_puts_it(lateral_m: float) -> None:
    length_m = 30.0
    trajectories = {"ground_truth": _straight(length_m, lateral_m)}
    image = _open(plots.birdseye_png(np.zeros((3, R, R)), RES_M, _camera(), trajectories, "t"))
    top, bottom, left, right = panel = _map_panel(image)
    width, height = right - left + 1, bottom - top + 1
    assert abs(width - height) <= 2, "the map panel is square"
    pixels = _colour_pixels(image, plots.TRAJECTORY_COLOURS["ground_truth"], panel)
    assert len(pixels) > 20, "ground truth not drawn on the map"

    # raster pixel coordinate c spans [c - 0.5, c + 0.5] of the axes' [-0.5, R - 0.5]
    def to_image(col: float, row: float) -> tuple[float, float]:
        return left + (col + 0.5) / R * width, top + (row + 0.5) / R * height

    expected_x, ego_y = to_image(R / 2 - lateral_m / RES_M, R * (1 - EGO_FROM_BOTTOM))
    _, far_y = to_image(0, R * (1 - EGO_FROM_BOTTOM) - length_m / RES_M)
    xs, ys = pixels[:, 1], pixels[:, 0]
    tolerance = 3.5  # line width and antialiasing
    assert np.abs(xs - expected_x).max() <= tolerance, (xs.min(), xs.max(), expected_x)
    assert ys.max() <= ego_y + tolerance, "drawn behind the ego"
    assert ys.min() <= far_y + tolerance and ys.min() >= far_y - tolerance, (ys.min(), far_y)
