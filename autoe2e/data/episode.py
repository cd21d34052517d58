"""One raw episode -> frame and sample tables (the per-episode unit of `prepare`).

This is the piece a Flyte ``map_task`` fans out: it reads one episode folder (local or S3),
decodes each camera once onto the 10 Hz grid, interpolates telemetry, renders the map raster and
keeps only samples whose whole windows are present (with
`PrepareConfig.pad_incomplete_windows` it keeps incomplete windows and flags the missing steps
in the *_valid masks instead). Frame ids in the returned tables are local to the episode
(0..n-1); the shard writer re-bases them. Any contract violation raises `EpisodeContractError`
so the caller can quarantine just this episode.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from autoe2e import storage
from autoe2e.config import PrepareConfig
from autoe2e.contract import (
    CAMERA_DIR,
    EGO_FILE,
    EPISODE_JSON,
    MAP_FILE,
    MIN_EGO_RATE_HZ,
    EpisodeContractError,
    EpisodeMeta,
    check_ego_table,
)
from autoe2e.data.map_raster import MapPolylines, encode_png, load_map, render_raster
from autoe2e.data.schema import FRAME_SCHEMA, SAMPLE_SCHEMA
from autoe2e.data.telemetry import EgoTrack, future_trajectory
from autoe2e.video.decode import GridFrames, VideoDecodeError, decode_on_grid

logger = logging.getLogger(__name__)


@dataclass
class EpisodeSamples:
    """Prepared tables of one episode plus the bookkeeping the manifest reports."""

    episode_id: str
    cameras: list[str]
    frames: pa.Table
    samples: pa.Table
    num_candidates: int
    drop_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_samples(self) -> int:
        return self.samples.num_rows

    @property
    def num_dropped(self) -> int:
        return self.num_candidates - self.num_samples

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.samples.nbytes

    def load(self) -> EpisodeSamples:
        """Already in memory (`autoe2e.data.staging.StagedEpisode` loads from storage)."""
        return self


def jpeg_encoder(quality: int):
    """Callback for `decode_on_grid` turning an RGB array into JPEG bytes."""

    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    return encode


def _episode_name(uri: str) -> str:
    return uri.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def _read_meta(folder: Path, name: str) -> EpisodeMeta:
    path = folder / EPISODE_JSON
    if not path.is_file():
        raise EpisodeContractError(
            name, f"{EPISODE_JSON} is missing", f"write {EPISODE_JSON} with episode_id and cameras"
        )
    return EpisodeMeta.from_json(path.read_bytes(), source=name)


def _read_ego(folder: Path, episode_id: str) -> EgoTrack:
    path = folder / EGO_FILE
    if not path.is_file():
        raise EpisodeContractError(episode_id, f"{EGO_FILE} is missing", "export ego telemetry")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise EpisodeContractError(
            episode_id, f"{EGO_FILE} is unreadable ({exc})", "rewrite it as Parquet"
        ) from exc
    check_ego_table(table, episode_id)
    return EgoTrack.from_table(table)


def _check_camera_files(folder: Path, meta: EpisodeMeta) -> None:
    """Every file in cameras/ must be a camera listed in episode.json (no silent extras)."""
    camera_dir = folder / CAMERA_DIR
    if not camera_dir.is_dir():
        return  # the per-camera check names each missing file
    extra = sorted(
        p.name
        for p in camera_dir.iterdir()
        if not p.name.startswith(".") and p.stem not in meta.cameras
    )
    if extra:
        raise EpisodeContractError(
            meta.episode_id,
            f"{CAMERA_DIR}/ holds {extra} but {EPISODE_JSON} lists cameras {meta.cameras}",
            f"add those cameras to {EPISODE_JSON} or remove the files",
        )


def _check_gaps(
    decoded: dict[str, GridFrames], episode_id: str, hz: float, max_gap_s: float
) -> None:
    """Quarantine when one camera has a hole longer than `PrepareConfig.max_gap_s`."""
    for name, grid in decoded.items():
        gaps = grid.gap_ticks()
        runs: list[list[int]] = []
        for k in gaps:
            if runs and k == runs[-1][-1] + 1:
                runs[-1].append(k)
            else:
                runs.append([k])
        longest = max(runs, key=len, default=[])
        if len(longest) / hz > max_gap_s:
            raise EpisodeContractError(
                episode_id,
                f"{CAMERA_DIR}/{name}.mp4 has no frame for {len(longest) / hz:.1f} s "
                f"({longest[0] / hz:.1f}..{(longest[-1] + 1) / hz:.1f} s), a gap longer than "
                f"{max_gap_s:.1f} s ({len(gaps)} grid ticks missing in total)",
                "re-export the camera without dropped frames",
            )


def usable_ticks(track: EgoTrack, config: PrepareConfig) -> tuple[int, int]:
    """Grid ticks any sample of this telemetry could reference (a superset, one tick of margin).

    Samples need telemetry around them (the ego history and trajectory windows, or with padding
    just now and one step ahead), so ticks near the ends of the recording are referenced by
    none; their frames need no conversion. On 20 s episodes that skipped ~28% of conversions.
    """
    hz = config.reactive_hz
    if config.pad_incomplete_windows:
        before, after = 0.0, config.trajectory_dt_s
    else:
        before = (config.ego_history_steps - 1) / hz
        after = config.trajectory_steps * config.trajectory_dt_s
    first_sample = math.floor((track.start_s + before) * hz) - 1
    last_sample = math.ceil((track.end_s - after) * hz) + 1
    return (
        first_sample + round(config.history_offsets_s[0] * hz),
        last_sample + round(config.future_offsets_s[-1] * hz),
    )


def _decode_cameras(
    folder: Path,
    meta: EpisodeMeta,
    cameras: list[str],
    config: PrepareConfig,
    convert_ticks: tuple[int, int],
) -> dict[str, GridFrames]:
    """Decode every camera onto the grid, `config.camera_threads` cameras at a time."""
    tolerance = config.tolerance_s if config.tolerance_s is not None else 0.5 / meta.camera_fps
    encode = jpeg_encoder(config.jpeg_quality)
    for name in cameras:  # name the first missing file before any decoding starts
        if not (folder / CAMERA_DIR / f"{name}.mp4").is_file():
            raise EpisodeContractError(
                meta.episode_id,
                f"camera {name!r} is listed in {EPISODE_JSON} but {CAMERA_DIR}/{name}.mp4 is "
                "missing",
                "export that camera's MP4 or remove it from the cameras list",
            )

    def decode(name: str) -> GridFrames:
        try:
            return decode_on_grid(
                folder / CAMERA_DIR / f"{name}.mp4",
                rate_hz=config.reactive_hz,
                width=config.image_width,
                height=config.image_height,
                start_time_s=meta.start_time_s(name),
                tolerance_s=tolerance,
                encode=encode,
                threads=config.decode_threads,
                convert_ticks=convert_ticks,
            )
        except VideoDecodeError as exc:
            raise EpisodeContractError(
                meta.episode_id,
                f"{CAMERA_DIR}/{name}.mp4 is unusable ({exc})",
                "re-export a complete MP4 with a codec FFmpeg decodes (e.g. H.264)",
            ) from exc

    threads = min(len(cameras), config.camera_threads or os.cpu_count() or 1)
    if threads <= 1:
        return {name: decode(name) for name in cameras}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        # map() yields in camera order, so the first unusable camera is the one reported.
        return dict(zip(cameras, pool.map(decode, cameras), strict=True))


def _check_telemetry_span(track: EgoTrack, decoded: dict[str, GridFrames], episode_id: str):
    """Telemetry must cover the video (one contract period of slack at either end)."""
    video_start = min(g.first_time_s for g in decoded.values())
    video_end = max(g.last_time_s for g in decoded.values())
    slack = 1.0 / MIN_EGO_RATE_HZ
    if track.start_s > video_start + slack or track.end_s < video_end - slack:
        raise EpisodeContractError(
            episode_id,
            f"{EGO_FILE} covers {track.start_s:.2f}..{track.end_s:.2f} s but the video covers "
            f"{video_start:.2f}..{video_end:.2f} s (telemetry shorter than the video)",
            "export telemetry for the whole recording",
        )


def _fixed_list(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """[N, W] numpy -> Arrow list array with W items per row (zero-copy offsets)."""
    rows, width = values.shape[0], int(np.prod(values.shape[1:], dtype=np.int64))
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width, pa.int32())
    flat = pa.array(values.reshape(-1), type=arrow_type.value_type)
    return pa.ListArray.from_arrays(offsets, flat, type=arrow_type)


def prepare_episode(episode_uri: str, config: PrepareConfig) -> EpisodeSamples:
    """Decode, sample and tabulate one episode; raises `EpisodeContractError` on bad input."""
    config.validate()
    started = time.perf_counter()
    name = _episode_name(episode_uri)
    try:
        with storage.local_copy(episode_uri) as folder:
            meta = _read_meta(folder, name)
            cameras = list(config.cameras) or list(meta.cameras)
            missing = [c for c in cameras if c not in meta.cameras]
            if missing:
                raise EpisodeContractError(
                    meta.episode_id,
                    f"cameras {missing} requested by PrepareConfig.cameras are not in "
                    f"{EPISODE_JSON} (has {meta.cameras})",
                    "record those cameras or drop them from PrepareConfig.cameras",
                )
            _check_camera_files(folder, meta)
            track = _read_ego(folder, meta.episode_id)
            polylines = (
                load_map(str(folder / MAP_FILE), meta.episode_id)
                if (folder / MAP_FILE).is_file()
                else None
            )
            decoded = _decode_cameras(folder, meta, cameras, config, usable_ticks(track, config))
    except storage.StorageError as exc:
        raise EpisodeContractError(name, f"cannot read the episode ({exc})", "check it") from exc
    _check_gaps(decoded, meta.episode_id, config.reactive_hz, config.max_gap_s)
    _check_telemetry_span(track, decoded, meta.episode_id)
    result = _build_tables(meta.episode_id, cameras, decoded, track, polylines, config)
    result.seconds = time.perf_counter() - started
    if result.num_samples == 0:
        window = (
            -config.history_offsets_s[0] + config.future_offsets_s[-1],
            (config.ego_history_steps - 1) / config.reactive_hz
            + config.trajectory_steps * config.trajectory_dt_s,
        )
        raise EpisodeContractError(
            meta.episode_id,
            f"too short for one sample window (needs {window[0]:.1f} s of gap-free video and "
            f"{window[1]:.1f} s of telemetry; dropped {dict(result.drop_reasons)})",
            "export longer episodes or shorten the windows in PrepareConfig",
        )
    logger.info(
        "episode %s: %d samples, %d frames, %d dropped in %.2f s",
        meta.episode_id,
        result.num_samples,
        result.frames.num_rows,
        result.num_dropped,
        result.seconds,
    )
    return result


def _build_tables(
    episode_id: str,
    cameras: list[str],
    decoded: dict[str, GridFrames],
    track: EgoTrack,
    polylines: MapPolylines | None,
    config: PrepareConfig,
) -> EpisodeSamples:
    hz = config.reactive_hz
    hist_off = [round(o * hz) for o in config.history_offsets_s]
    fut_off = [round(o * hz) for o in config.future_offsets_s]
    first = (
        min(min(g.frames) for g in decoded.values() if g.frames)
        if any(g.frames for g in decoded.values())
        else 0
    )
    last = max((max(g.frames) for g in decoded.values() if g.frames), default=-1)
    stride = config.sample_stride
    candidates = [k for k in range(first, last + 1) if k % stride == 0]
    present = {k for k in range(first, last + 1) if all(k in g.frames for g in decoded.values())}

    reasons: Counter[str] = Counter()
    kept: list[int] = []
    ego_steps = np.arange(-(config.ego_history_steps - 1), 1) / hz
    traj_steps = config.trajectory_dt_s * np.arange(1, config.trajectory_steps + 1)
    window = [*hist_off, 0, *fut_off]
    # Telemetry coverage of every candidate's windows in one vectorised pass.
    candidate_times = np.asarray(candidates, dtype=np.float64)[:, None] / hz
    if config.pad_incomplete_windows:
        # Only what the planner cannot do without: this tick's views, the ego state now and at
        # least the first future step to learn from.
        telemetry_ok = track.covers(candidate_times + np.array([0.0, traj_steps[0]])).all(axis=1)
    else:
        telemetry_ok = track.covers(candidate_times + ego_steps).all(axis=1) & track.covers(
            candidate_times + traj_steps
        ).all(axis=1)
    for k, covered in zip(candidates, telemetry_ok.tolist(), strict=True):
        if config.pad_incomplete_windows:
            frames_ok, missing = k in present, "current_frames_missing"
        else:
            frames_ok, missing = all(k + o in present for o in window), "frames_missing"
        if not frames_ok:
            reasons[missing] += 1
        elif not covered:
            reasons["telemetry_window"] += 1
        else:
            kept.append(k)
    if not kept:
        return EpisodeSamples(
            episode_id,
            list(cameras),
            FRAME_SCHEMA.empty_table(),
            SAMPLE_SCHEMA.empty_table(),
            len(candidates),
            dict(reasons),
        )

    # A window step is usable only when every camera has its frame; only frames of usable
    # steps are stored.
    referenced = sorted({k + o for k in kept for o in window if k + o in present})
    frame_ids: dict[tuple[str, int], int] = {}
    frame_rows: dict[str, list] = {f.name: [] for f in FRAME_SCHEMA}
    for tick in referenced:
        for cam in cameras:
            frame_time, jpeg = decoded[cam].frames[tick]
            if jpeg is None:  # usable_ticks() must cover every referenced tick
                raise RuntimeError(f"{episode_id}: tick {tick} of {cam} was not converted")
            frame_ids[(cam, tick)] = len(frame_ids)
            frame_rows["frame_id"].append(frame_ids[(cam, tick)])
            frame_rows["episode_id"].append(episode_id)
            frame_rows["camera"].append(cam)
            frame_rows["grid_index"].append(tick)
            frame_rows["timestamp_s"].append(tick / hz)
            frame_rows["frame_time_s"].append(frame_time)
            frame_rows["jpeg"].append(jpeg)
    frames = pa.table(frame_rows, schema=FRAME_SCHEMA)

    n = len(kept)
    ks = np.asarray(kept, dtype=np.int64)
    times = ks / hz

    def ids(offsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frame ids [n, len(offsets), V] (-1 for unusable steps) and step validity."""
        out = np.full((n, len(offsets), len(cameras)), -1, dtype=np.int64)
        valid = np.zeros((n, len(offsets)), dtype=bool)
        for i, k in enumerate(kept):
            for j, o in enumerate(offsets):
                if k + o in present:
                    valid[i, j] = True
                    out[i, j] = [frame_ids[(cam, k + o)] for cam in cameras]
        return out, valid

    current_ids, _ = ids([0])
    history_ids, history_valid = ids(hist_off)
    future_ids, future_valid = ids(fut_off)
    ego_times = times[:, None] + ego_steps[None, :]
    traj_times = times[:, None] + traj_steps[None, :]
    # Padded ego steps hold the nearest recorded state (np.interp clamps at the ends).
    ego_valid = track.covers(ego_times)
    trajectory_valid = track.covers(traj_times)
    ego = track.ego_history(ego_times).astype(np.float32)
    traj = (
        np.stack(
            [
                future_trajectory(track, t, config.trajectory_steps, config.trajectory_dt_s)
                for t in times
            ]
        ).astype(np.float32)
        if n
        else np.zeros((0, config.trajectory_steps, 2), np.float32)
    )
    traj[~trajectory_valid] = 0.0
    px, py, pyaw = track.pose(times)
    pngs = [
        encode_png(
            render_raster(
                polylines, px[i], py[i], pyaw[i], config.map_raster_size, config.map_resolution_m
            )
        )
        for i in range(n)
    ]
    schema = SAMPLE_SCHEMA
    columns = {
        "episode_id": pa.array([episode_id] * n, pa.string()),
        "grid_index": pa.array(ks.astype(np.int32), pa.int32()),
        "timestamp_s": pa.array(times, pa.float64()),
        "cameras": pa.array([list(cameras)] * n, schema.field("cameras").type),
        "current_frame_ids": _fixed_list(current_ids, schema.field("current_frame_ids").type),
        "history_frame_ids": _fixed_list(history_ids, schema.field("history_frame_ids").type),
        "history_valid": _fixed_list(history_valid, schema.field("history_valid").type),
        "future_frame_ids": _fixed_list(future_ids, schema.field("future_frame_ids").type),
        "future_valid": _fixed_list(future_valid, schema.field("future_valid").type),
        "ego_history": _fixed_list(ego, schema.field("ego_history").type),
        "ego_history_valid": _fixed_list(ego_valid, schema.field("ego_history_valid").type),
        "future_trajectory": _fixed_list(traj, schema.field("future_trajectory").type),
        "trajectory_valid": _fixed_list(trajectory_valid, schema.field("trajectory_valid").type),
        "map_raster_png": pa.array(pngs, pa.binary()),
        "map_valid": pa.array([polylines is not None] * n, pa.bool_()),
    }
    samples = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    return EpisodeSamples(
        episode_id=episode_id,
        cameras=list(cameras),
        frames=frames,
        samples=samples,
        num_candidates=len(candidates),
        drop_reasons=dict(reasons),
    )
