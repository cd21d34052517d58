"""Figures as PNG bytes, for MLflow artifacts, Flyte Decks and the self-contained report.html.

Every function takes plain numbers/arrays and returns the bytes of one small PNG, so the same
figure can go to any sink and tests can check it without a display. Figures are built as
`matplotlib.figure.Figure` objects with an explicit Agg canvas instead of through `pyplot`:
no global figure registry (nothing to leak when a caller forgets to close, safe in threads),
no dependence on the MPLBACKEND of the machine, and the figure is released explicitly after
saving. Output is deterministic for the same input (fixed sizes, colours, bins and no
timestamp/version metadata in the PNG), so a re-run produces identical artifacts.

Bird's-eye geometry follows `autoe2e.data.map_raster` exactly: the raster is heading-up, ego x
(forward) points up the image and ego y (left) points left; the ego sits in the centre column,
`EGO_FROM_BOTTOM` (1/4) of the raster height above the bottom edge, so pixel
``(row, col) = (R * (1 - EGO_FROM_BOTTOM) - x / res, R / 2 - y / res)``. Trajectories are drawn
in those pixel coordinates, on top of the raster as the model saw it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoe2e.data.map_raster import EGO_FROM_BOTTOM

#: Resolution of every figure; with the figure sizes below PNGs stay around 20-80 kB.
DPI = 80

#: Fixed colours for the trajectories a report shows, so a planner has the same colour in
#: every figure; saturated so they stand out on the muted map raster.
TRAJECTORY_COLOURS: dict[str, str] = {
    "ground_truth": "#00e676",
    "model": "#ff1744",
    "constant_velocity": "#2979ff",
    "ctrv": "#ffab00",
}
#: Colours for names outside `TRAJECTORY_COLOURS`, taken in order of appearance.
_PALETTE = ("#d500f9", "#00e5ff", "#ff6d00", "#76ff03", "#f50057", "#651fff")

#: Map channel colours (RGB 0..1) in MAP_KINDS order: road_edge, lane_line, centerline. Kept
#: dim (<= 0.6) so the trajectories on top remain the brightest thing in the panel.
MAP_CHANNEL_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.60, 0.60, 0.60),
    (0.60, 0.52, 0.20),
    (0.40, 0.30, 0.55),
)

#: Longest bar label before it is shortened (quarantine reasons can be whole sentences).
MAX_LABEL_CHARS = 48


def _figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    """Render and release the figure. ``Software: None`` drops matplotlib's version stamp,
    which would make the bytes differ between environments for the same picture."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        figure.clear()
    return buffer.getvalue()


def _colours(names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    spare = iter(_PALETTE * (1 + len(names) // len(_PALETTE)))
    for name in names:
        out[name] = TRAJECTORY_COLOURS.get(name) or next(spare)
    return out


def _label(name: str) -> str:
    return name.replace("_", " ")


def _shorten(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _no_data(axes: Axes, text: str = "no data") -> None:
    """An empty panel that says so: a blank plot would look like a rendering bug."""
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """float array with None as NaN (reports write None for undefined means)."""
    return np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def raster_rgb(map_raster: np.ndarray) -> np.ndarray:
    """[C, R, R] floats 0..1 -> [R, R, 3] RGB: each channel painted in its colour, the
    brightest channel winning where lines overlap (a sum would saturate to white)."""
    raster = np.clip(np.asarray(map_raster, dtype=np.float64), 0.0, 1.0)
    if raster.ndim != 3:
        raise ValueError(f"map raster must be [C, R, R], got shape {raster.shape}")
    rgb = np.zeros((*raster.shape[1:], 3), dtype=np.float64)
    for c in range(raster.shape[0]):
        colour = np.asarray(MAP_CHANNEL_COLOURS[c % len(MAP_CHANNEL_COLOURS)])
        rgb = np.maximum(rgb, raster[c][..., None] * colour)
    return rgb


def ego_to_pixel(xy: np.ndarray, size: int, resolution_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame (x forward, y left) metres [T, 2] -> (col, row) raster pixel coordinates,
    the transform `map_raster.render_raster` applies to map points."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    col = size / 2.0 - xy[:, 1] / resolution_m
    row = size * (1.0 - EGO_FROM_BOTTOM) - xy[:, 0] / resolution_m
    return col, row


def birdseye_png(
    map_raster: np.ndarray,
    resolution_m: float,
    front_image: np.ndarray,
    trajectories: Mapping[str, np.ndarray],
    title: str,
) -> bytes:
    """The map raster with trajectories overlaid (left) next to the front camera frame (right).

    ``map_raster`` is [C, R, R] floats 0..1 as the loader yields it; ``front_image`` is
    [3, H, W] uint8; each trajectory is [T, 2] metres in the ego frame (x forward, y left).
    Points outside the raster are clipped by the panel; the legend sits below the panels so
    it never hides the map. The white triangle is the ego, pointing forward (up).
    """
    rgb = raster_rgb(map_raster)
    size = rgb.shape[0]
    image = np.asarray(front_image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"front image must be [3, H, W], got shape {image.shape}")
    height, width = image.shape[1:]
    aspect = width / max(height, 1)
    figure = _figure(3.2 + 3.2 * aspect, 3.9)
    grid = figure.add_gridspec(1, 2, width_ratios=[1.0, aspect], wspace=0.05)
    bev = figure.add_subplot(grid[0, 0])
    cam = figure.add_subplot(grid[0, 1])
    bev.imshow(rgb, interpolation="nearest")
    colours = _colours(list(trajectories))
    handles = []
    for name, xy in trajectories.items():
        col, row = ego_to_pixel(xy, size, resolution_m)
        (line,) = bev.plot(col, row, color=colours[name], linewidth=2.0, label=_label(name))
        bev.plot(col, row, "o", color=colours[name], markersize=2.5)
        handles.append(line)
    ego_col, ego_row = size / 2.0, size * (1.0 - EGO_FROM_BOTTOM)
    bev.plot([ego_col], [ego_row], marker="^", color="white", markersize=7, linestyle="none")
    bev.set_xlim(-0.5, size - 0.5)
    bev.set_ylim(size - 0.5, -0.5)
    bev.set_axis_off()
    bev.set_title(f"map, {size * resolution_m:g} m wide", fontsize=9)
    cam.imshow(image.transpose(1, 2, 0), interpolation="bilinear")
    cam.set_axis_off()
    cam.set_title("front camera", fontsize=9)
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.12)
    return _png(figure)


def error_vs_horizon_png(
    curves: Mapping[str, Sequence[float | None]],
    dt_s: float,
    ylabel: str = "L2 (m)",
    horizons_s: Sequence[float] | None = None,
) -> bytes:
    """One line per planner: error at each future step, step i at time (i + 1) * dt_s.

    ``horizons_s`` gives the times explicitly instead (a report's horizons such as
    1, 2, 3, 6.4 s are not evenly spaced). None/NaN values are gaps, not zeros.
    """
    figure = _figure(5.6, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    colours = _colours(list(curves))
    drawn = False
    for name, values in curves.items():
        y = _finite(values)
        if horizons_s is not None:
            if len(horizons_s) != len(y):
                raise ValueError(f"{name}: {len(y)} values for {len(horizons_s)} horizons")
            x = np.asarray(horizons_s, dtype=np.float64)
        else:
            x = (np.arange(len(y)) + 1) * dt_s
        if np.isfinite(y).any():
            axes.plot(x, y, marker="o", markersize=3, color=colours[name], label=_label(name))
            drawn = True
    if drawn:
        axes.set_xlabel("horizon (s)")
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    else:
        _no_data(axes)
    axes.set_title("error vs horizon", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def jepa_horizons_png(
    per_horizon: Mapping[str, Sequence[float | None]],
    horizon_labels: Sequence[str] | None = None,
) -> bytes:
    """Grouped bars: for each future step, the world model's JEPA L1 next to the null
    predictors (copy the last frame, predict the mean target, zeros); lower is better, and a
    model bar above a null bar means the model learned nothing useful at that horizon."""
    names = list(per_horizon)
    steps = max((len(v) for v in per_horizon.values()), default=0)
    default = [f"h{k + 1}" for k in range(steps)]
    labels = default if horizon_labels is None else list(horizon_labels)
    if len(labels) != steps:
        raise ValueError(f"{len(labels)} horizon labels for {steps} horizons")
    figure = _figure(6.6, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    if not names or steps == 0:
        _no_data(axes)
    else:
        colours = _colours(names)
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            y = _finite(per_horizon[name])
            y = np.concatenate([y, np.full(steps - len(y), math.nan)])
            x = np.arange(steps) - 0.4 + width * (i + 0.5)
            bars = np.nan_to_num(y, nan=0.0)
            axes.bar(x, bars, width=width, color=colours[name], label=_label(name))
        axes.set_xticks(np.arange(steps), labels)
        axes.set_xlabel("future step")
        axes.set_ylabel("JEPA L1")
        axes.grid(True, axis="y", alpha=0.3)
        # outside the axes: bars fill the panel up to its top, a legend inside would hide one
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.set_title("world model vs null predictors", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def curves_png(series: Mapping[str, Sequence[tuple[int, float]]], title: str) -> bytes:
    """Training/validation curves: one line per metric over its (step, value) points."""
    figure = _figure(5.6, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    colours = _colours(list(series))
    drawn = False
    for name, points in series.items():
        pts = sorted((int(s), float(v)) for s, v in points)
        if not pts:
            continue
        steps, values = zip(*pts, strict=True)
        style = "o-" if len(pts) < 30 else "-"
        axes.plot(steps, values, style, markersize=3, color=colours[name], label=name)
        drawn = True
    if drawn:
        axes.set_xlabel("step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    else:
        _no_data(axes)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def histogram_png(values: Sequence[float], title: str, xlabel: str, bins: int = 40) -> bytes:
    """Histogram with a fixed bin count over the finite values' range (deterministic)."""
    data = _finite(values)
    data = data[np.isfinite(data)]
    figure = _figure(5.6, 3.2)
    axes = figure.add_subplot(1, 1, 1)
    if data.size == 0:
        _no_data(axes)
    else:
        axes.hist(data, bins=bins, color="#2979ff", edgecolor="white", linewidth=0.5)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("count")
        axes.grid(True, axis="y", alpha=0.3)
    axes.set_title(f"{title} (n={data.size})", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def bar_png(counts: Mapping[str, float], title: str, max_bars: int = 40) -> bytes:
    """Horizontal bars (labels may be long sentences), in the given order; beyond
    ``max_bars`` only the largest are drawn and the title says how many of how many."""
    items = list(counts.items())
    if len(items) > max_bars:
        keep = sorted(range(len(items)), key=lambda i: (-float(items[i][1]), i))[:max_bars]
        title = f"{title} (largest {max_bars} of {len(items)})"
        items = [items[i] for i in sorted(keep)]
    figure = _figure(6.4, 1.0 + 0.24 * max(len(items), 3))
    axes = figure.add_subplot(1, 1, 1)
    if not items:
        _no_data(axes)
    else:
        labels = [_shorten(str(k)) for k, _ in items]
        values = [float(v) for _, v in items]
        positions = np.arange(len(items))
        axes.barh(positions, values, color="#2979ff")
        axes.set_yticks(positions, labels, fontsize=7)
        axes.invert_yaxis()
        axes.grid(True, axis="x", alpha=0.3)
        for y, v in zip(positions, values, strict=True):
            axes.text(v, y, f" {v:g}", va="center", fontsize=7)
        axes.set_xlim(0, max(max(values), 1.0) * 1.12)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def frame_strip_png(frames: Mapping[str, Sequence[np.ndarray]]) -> bytes:
    """One row per camera, one column per sample: [3, H, W] uint8 frames side by side.

    Rows may have different lengths (a camera missing from a sample); empty cells stay blank.
    """
    cameras = list(frames)
    columns = max((len(v) for v in frames.values()), default=0)
    if not cameras or columns == 0:
        figure = _figure(4.0, 1.5)
        _no_data(figure.add_subplot(1, 1, 1), "no frames")
        return _png(figure)
    first = next(np.asarray(f) for row in frames.values() for f in row)
    height, width = first.shape[1:]
    cell_w = 1.8
    cell_h = cell_w * height / max(width, 1)
    figure = _figure(0.9 + cell_w * columns, 0.3 + cell_h * len(cameras))
    grid = figure.add_gridspec(len(cameras), columns, wspace=0.03, hspace=0.06)
    for r, camera in enumerate(cameras):
        for c in range(columns):
            axes = figure.add_subplot(grid[r, c])
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_visible(False)
            if c < len(frames[camera]):
                axes.imshow(np.asarray(frames[camera][c]).transpose(1, 2, 0))
            if c == 0:
                axes.set_ylabel(camera, fontsize=8)
    figure.subplots_adjust(left=0.9 / figure.get_figwidth(), right=0.99, top=0.97, bottom=0.03)
    return _png(figure)
