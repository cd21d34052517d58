"""Write tiny raw episodes (real MP4s via PyAV, ego.parquet, optional map.parquet) for tests.

Independent of the synthetic world so data-preparation tests pin down exact inputs: each camera
is a solid colour (so decoded pixels can be checked), frame times can be jittered or dropped
(VFR-like files, gaps), and the ego drives a straight line or a circle with known geometry.
"""

from __future__ import annotations

import contextlib
import math
import socket
import urllib.request
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoe2e.config import PrepareConfig
from autoe2e.contract import (
    CAMERA_DIR,
    EGO_FILE,
    EPISODE_JSON,
    MAP_FILE,
    CameraInfo,
    EpisodeMeta,
    ego_schema,
    map_schema,
)

#: Solid RGB colour per camera name (others get grey).
CAMERA_COLOURS: dict[str, tuple[int, int, int]] = {
    "front": (220, 40, 40),
    "left": (40, 200, 60),
    "right": (40, 60, 220),
    "rear": (230, 210, 40),
}
TIME_BASE = Fraction(1, 90000)


def frame_times(
    duration_s: float,
    fps: float = 30.0,
    jitter_s: float = 0.0,
    drop: Sequence[tuple] = (),
    seed: int = 0,
) -> np.ndarray:
    """Presentation times (s): regular at ``fps`` plus uniform jitter, minus dropped spans."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fps))
    t = np.arange(n) / fps
    if jitter_s > 0:
        t = t + rng.uniform(-jitter_s, jitter_s, size=n)
        t[0] = 0.0
        t = np.maximum.accumulate(t + np.arange(n) * 1e-6)
    keep = np.ones(n, dtype=bool)
    for lo, hi in drop:
        keep &= ~((t >= lo) & (t < hi))
    return t[keep]


def write_video(
    path: Path,
    times_s: np.ndarray,
    colour: tuple[int, int, int],
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    time_base: Fraction = TIME_BASE,
) -> Path:
    """MP4 (H.264 unless ``codec`` says otherwise) whose frame k has pts = times_s[k] (90 kHz
    time base) and a solid colour.

    A small bright square moves with time so consecutive frames differ like real video.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if options is not None:
            stream.options = options
        elif codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        base = np.empty((height, width, 3), dtype=np.uint8)
        base[:] = colour
        for i, t in enumerate(times_s):
            image = base.copy()
            x = (i * 2) % max(1, width - 8)
            image[2:8, x : x + 6] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = int(round(float(t) / time_base))
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def path_states(
    kind: str, t: np.ndarray, speed: float = 10.0, heading: float = 0.3, radius: float = 40.0
) -> dict[str, np.ndarray]:
    """Ego telemetry for a straight line (constant ``heading``) or a left circle of ``radius``."""
    if kind == "straight":
        x = speed * t * math.cos(heading)
        y = speed * t * math.sin(heading)
        yaw = np.full_like(t, heading)
        yaw_rate = np.zeros_like(t)
        curvature = np.zeros_like(t)
    elif kind == "circle":
        # Start at the origin heading +x, turning left around (0, radius).
        theta = speed * t / radius
        x = radius * np.sin(theta)
        y = radius * (1 - np.cos(theta))
        yaw = np.angle(np.exp(1j * theta))  # wrapped to (-pi, pi] like real telemetry
        yaw_rate = np.full_like(t, speed / radius)
        curvature = np.full_like(t, 1 / radius)
    else:
        raise ValueError(kind)
    return {
        "timestamp_s": t,
        "x_m": x,
        "y_m": y,
        "yaw_rad": yaw,
        "speed_mps": np.full_like(t, speed),
        "accel_mps2": np.zeros_like(t),
        "yaw_rate_rps": yaw_rate,
        "curvature_1pm": curvature,
    }


def write_episode(
    root: Path,
    episode_id: str,
    *,
    cameras: Sequence[str] = ("front", "left"),
    duration_s: float = 10.0,
    fps: float = 30.0,
    width: int = 64,
    height: int = 48,
    ego_hz: float = 20.0,
    ego_duration_s: float | None = None,
    path_kind: str = "straight",
    speed: float = 10.0,
    heading: float = 0.3,
    radius: float = 40.0,
    start_times: dict[str, float] | None = None,
    jitter_s: float = 0.0,
    drop: dict[str, Sequence[tuple]] | None = None,
    with_map: bool = True,
) -> Path:
    """Write one episode folder following `autoe2e.contract` and return its path."""
    folder = root / episode_id
    start_times = start_times or {}
    info = {name: CameraInfo(start_time_s=start_times[name]) for name in start_times}
    meta = EpisodeMeta(
        episode_id=episode_id, cameras=list(cameras), camera_fps=fps, camera_info=info
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EPISODE_JSON).write_text(meta.to_json())
    for i, name in enumerate(cameras):
        times = frame_times(duration_s, fps, jitter_s, (drop or {}).get(name, ()), seed=i)
        colour = CAMERA_COLOURS.get(name, (128, 128, 128))
        write_video(folder / CAMERA_DIR / f"{name}.mp4", times, colour, width, height)
    span = duration_s if ego_duration_s is None else ego_duration_s
    t = np.arange(int(round(span * ego_hz)) + 1) / ego_hz
    states = path_states(path_kind, t, speed=speed, heading=heading, radius=radius)
    pq.write_table(pa.table(states, schema=ego_schema()), folder / EGO_FILE)
    if with_map:
        write_map(folder / MAP_FILE, path_kind, speed * span, heading, radius)
    return folder


def write_map(
    path: Path, path_kind: str, length_m: float, heading: float, radius: float = 40.0
) -> None:
    """Road edges 3.5 m either side of the ego path plus its centreline."""
    s = np.linspace(-20.0, length_m + 80.0, 400)
    states = path_states(path_kind, s / 10.0, speed=10.0, heading=heading, radius=radius)
    x, y, yaw = states["x_m"], states["y_m"], states["yaw_rad"]
    nx, ny = -np.sin(yaw), np.cos(yaw)
    rows = [
        (0, "centerline", x, y),
        (1, "road_edge", x + 3.5 * nx, y + 3.5 * ny),
        (2, "road_edge", x - 3.5 * nx, y - 3.5 * ny),
    ]
    table = pa.table(
        {
            "polyline_id": [r[0] for r in rows],
            "kind": [r[1] for r in rows],
            "x_m": [r[2].tolist() for r in rows],
            "y_m": [r[3].tolist() for r in rows],
        },
        schema=map_schema(),
    )
    pq.write_table(table, path)


@contextlib.contextmanager
def moto_s3(monkeypatch: Any, bucket: str = "autoe2e-test") -> Iterator[str]:
    """A real S3-protocol endpoint on 127.0.0.1 (moto server mode) with one bucket.

    AWS_ENDPOINT_URL and dummy credentials are set through ``monkeypatch`` (undone at test
    teardown); the server stops when the context exits. Yields ``s3://<bucket>``.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        # moto keeps its backends per process, not per server: start every test empty.
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}"
    finally:
        server.stop()


def moto_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server at `endpoint` with the fixture's dummy keys."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def upload_tree(local: Path, uri: str) -> None:
    """Copy a local folder to an s3:// prefix through autoe2e.storage."""
    from autoe2e import storage

    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.write_bytes(
            storage.join_uri(uri, path.relative_to(local).as_posix()), path.read_bytes()
        )


#: PrepareConfig for the tiny factory episodes (a few seconds long, 32x24 frames, short windows)
#: shared by the prepare, staging and bad-input tests.
TINY_PREPARE = PrepareConfig(
    image_width=32,
    image_height=24,
    history_offsets_s=[-1.0, 0.0],
    future_offsets_s=[1.0, 2.0],
    ego_history_steps=10,
    trajectory_steps=20,
    map_raster_size=32,
    map_resolution_m=1.0,
    shard_target_bytes=1 << 20,
)
