"""Bad input: every broken episode is quarantined with a clear reason, nothing valid is lost.

One `prepare_dataset` run covers an episodes root holding two exportable episodes and one broken
episode per case of the issue, each built as real files (PyAV-written MP4s, Parquet telemetry)
and then damaged at the byte level. Storage problems (missing root, unwritable output, missing
bucket, missing credentials) must fail fast, before any decoding, naming the location.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from episode_factory import TINY_PREPARE, moto_s3, write_episode

from autoe2e import storage
from autoe2e.data.prepare import PrepareError, prepare_dataset

CONFIG = TINY_PREPARE
SHORT = 5.0  # seconds; long enough for samples, so only the damage can reject an episode


def _camera(folder: Path, name: str = "left") -> Path:
    return folder / "cameras" / f"{name}.mp4"


def _edit_ego(folder: Path, edit) -> None:
    path = folder / "ego.parquet"
    table = pq.read_table(path)
    columns = table.to_pydict()
    edit(columns)
    pq.write_table(pa.table(columns, schema=table.schema), path)


def _mdat_span(data: bytes) -> tuple[int, int]:
    """Byte range of the mdat payload (the encoded frames) of a single-mdat MP4."""
    start = data.index(b"mdat") + 4
    size = int.from_bytes(data[start - 8 : start - 4], "big")
    return start, start - 8 + size


def _remux_faststart(path: Path) -> list[int]:
    """Rewrite ``path`` with the index (moov) in front; returns each packet's end offset."""
    tmp = path.with_suffix(".tmp.mp4")
    with (
        av.open(str(path)) as src,
        av.open(str(tmp), "w", options={"movflags": "faststart"}) as dst,
    ):
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = out
            dst.mux(packet)
    tmp.replace(path)
    with av.open(str(path)) as container:
        return [p.pos + p.size for p in container.demux(video=0) if p.size]


def _build_root(root: Path) -> None:
    write_episode(root, "good")
    # 0.3 s without left frames: ticks 50-52 have no frame within tolerance, so the samples whose
    # windows (k-10, k, k+10, k+20) touch them are dropped and counted, the episode is kept.
    write_episode(root, "short_gap", drop={"left": [(5.0, 5.3)]})

    _camera(write_episode(root, "zero_byte", duration_s=SHORT)).write_bytes(b"")

    video = _camera(write_episode(root, "truncated_moov_end", duration_s=SHORT))
    data = video.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")  # index at the end: lost by the cut
    video.write_bytes(data[: len(data) // 2])

    # Index in front, cut cleanly after a packet: FFmpeg decodes the rest without any error,
    # only the frame count the index promises exposes the truncation.
    video = _camera(write_episode(root, "truncated_faststart", duration_s=SHORT))
    ends = _remux_faststart(video)
    data = video.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    video.write_bytes(data[: ends[len(ends) // 2]])

    video = _camera(write_episode(root, "corrupt_packets", duration_s=SHORT))
    data = bytearray(video.read_bytes())
    lo, hi = _mdat_span(bytes(data))
    mid = (lo + hi) // 2
    data[mid : mid + 1500] = bytes((i * 37 + 11) % 251 for i in range(1500))
    video.write_bytes(bytes(data))

    (write_episode(root, "missing_camera", duration_s=SHORT) / "cameras" / "front.mp4").unlink()

    folder = write_episode(root, "extra_camera", duration_s=SHORT)
    _camera(folder, "rear").write_bytes(_camera(folder).read_bytes())

    # A real MP4 whose sample entry names a codec no FFmpeg decoder knows.
    video = _camera(write_episode(root, "unknown_codec", duration_s=SHORT))
    video.write_bytes(video.read_bytes().replace(b"avc1", b"zzzz"))

    video = _camera(write_episode(root, "not_a_video", duration_s=SHORT))
    video.write_bytes(b"timestamp,speed\n0.0,1.0\n" * 200)

    write_episode(root, "long_gap", duration_s=8.0, drop={"left": [(3.0, 5.0)]})

    def nan_speed(c):
        c["speed_mps"][7] = float("nan")

    def swap_times(c):
        c["timestamp_s"][10], c["timestamp_s"][11] = c["timestamp_s"][11], c["timestamp_s"][10]

    def repeat_time(c):
        c["timestamp_s"][11] = c["timestamp_s"][10]

    _edit_ego(write_episode(root, "nan_ego", duration_s=SHORT), nan_speed)
    _edit_ego(write_episode(root, "non_monotonic", duration_s=SHORT), swap_times)
    _edit_ego(write_episode(root, "duplicated_time", duration_s=SHORT), repeat_time)
    write_episode(root, "short_ego", duration_s=SHORT, ego_duration_s=3.0)
    write_episode(root, "too_short", duration_s=2.5)
    (write_episode(root, "bad_json", duration_s=SHORT) / "episode.json").write_text('{"episode')


#: Quarantined episode -> fragments its reason must contain (the problem and the file).
EXPECTED = {
    "zero_byte": ["left.mp4", "empty (0 bytes)"],
    "truncated_moov_end": ["left.mp4", "cannot decode", "truncated"],
    "truncated_faststart": ["left.mp4", "frames its index lists", "truncated"],
    "corrupt_packets": ["left.mp4", "corrupt"],
    "missing_camera": ["cameras/front.mp4 is missing"],
    "extra_camera": ["rear.mp4", "episode.json lists cameras ['front', 'left']"],
    "unknown_codec": ["left.mp4", "unknown codec"],
    "not_a_video": ["left.mp4", "cannot decode", "not a video"],
    "long_gap": ["left.mp4", "no frame for 2.0 s", "gap longer than"],
    "nan_ego": ["ego.parquet", "speed_mps", "NaN", "row 7"],
    "non_monotonic": ["ego.parquet", "non-monotonic at row 11"],
    "duplicated_time": ["ego.parquet", "duplicated at row 11"],
    "short_ego": ["ego.parquet", "shorter than the video"],
    "too_short": ["too short for one sample window"],
    "bad_json": ["episode.json is not valid JSON"],
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("episodes")
    _build_root(root)
    out = tmp_path_factory.mktemp("dataset")
    handler = _Records()
    logger = logging.getLogger("autoe2e")
    logger.addHandler(handler)
    try:
        result = prepare_dataset(str(root), str(out), CONFIG)
    finally:
        logger.removeHandler(handler)
    manifest = json.loads((out / "manifest.json").read_text())
    return result, manifest, handler.messages


def test_each_broken_episode_is_quarantined_with_a_reason(run) -> None:
    result, manifest, _ = run
    reasons = {q["episode_id"]: q["reason"] for q in result.quarantined}
    assert sorted(reasons) == sorted(EXPECTED)
    for episode, fragments in EXPECTED.items():
        for fragment in fragments:
            assert fragment in reasons[episode], (episode, fragment, reasons[episode])
        assert "Fix:" in reasons[episode], reasons[episode]
    assert {q["episode_id"]: q["reason"] for q in manifest["quarantined"]} == reasons


def test_valid_episodes_are_exported_in_full(run) -> None:
    result, manifest, _ = run
    episodes = {e["episode_id"]: e for e in manifest["episodes"]}
    assert sorted(episodes) == ["good", "short_gap"]
    # 10 s at 30 fps -> ticks 0..99; windows need 1 s before and 2 s after: ticks 10..79.
    assert episodes["good"]["num_samples"] == 70
    # short_gap loses the 12 samples whose windows touch ticks 50-52 (k in 30-32, 40-42,
    # 50-52, 60-62), counted as frames_missing next to the 30 edge ticks.
    assert episodes["short_gap"]["num_samples"] == 58
    assert episodes["short_gap"]["drop_reasons"] == {"frames_missing": 42}
    assert manifest["num_samples"] == result.num_samples == 128
    assert result.num_episodes == 2 and result.published


def test_log_warns_once_per_quarantined_episode(run) -> None:
    _, _, messages = run
    quarantine = [m for m in messages if m.startswith("quarantined ")]
    assert len(quarantine) == len(EXPECTED)
    for episode, fragments in EXPECTED.items():
        assert any(f"episode {episode!r}" in m and fragments[0] in m for m in quarantine), episode


def test_missing_root_and_unwritable_output_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"episodes root .*nowhere is unreadable"):
        prepare_dataset(str(tmp_path / "nowhere"), str(tmp_path / "out"), CONFIG)
    root = tmp_path / "episodes"
    (root / "ep").mkdir(parents=True)  # never decoded: the output check comes first
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PrepareError, match=r"output location .*a_file/out is not writable"):
        prepare_dataset(str(root), str(blocker / "out"), CONFIG)


def test_missing_bucket_fails_fast_naming_it(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "episodes"
    (root / "ep").mkdir(parents=True)
    with moto_s3(monkeypatch):
        with pytest.raises(PrepareError, match=r"s3://no-such-bucket/out.*'no-such-bucket' does"):
            prepare_dataset(str(root), "s3://no-such-bucket/out", CONFIG)
        with pytest.raises(
            PrepareError, match=r"episodes root s3://no-such-bucket/raw is unreadable.*not exist"
        ):
            prepare_dataset("s3://no-such-bucket/raw", str(tmp_path / "out"), CONFIG)


def test_missing_credentials_fail_fast_naming_the_uri(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "episodes"
    (root / "ep").mkdir(parents=True)
    with moto_s3(monkeypatch) as bucket:
        for name in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        storage.set_endpoint_url(None)  # drop cached clients that still hold credentials
        try:
            with pytest.raises(PrepareError, match=rf"{bucket}/out.*no AWS credentials"):
                prepare_dataset(str(root), f"{bucket}/out", CONFIG)
            with pytest.raises(PrepareError, match=rf"{bucket}/raw.*no AWS credentials"):
                prepare_dataset(f"{bucket}/raw", str(tmp_path / "out"), CONFIG)
        finally:
            storage.set_endpoint_url(None)
