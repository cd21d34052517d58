"""Vision is necessary at the model's resolution, and scenario events become sample labels.

The synthetic world's events (lead braking, the traffic light's state, a works truck in the
lane) must be visible where the model sees them: in the JPEGs `autoe2e prepare` stores at the
demo input size (112 x 64, after H.264 4:2:0 at the source and 4:2:0 again in the JPEG). A
deliberately simple colour-count detector runs on those stored frames and must fire inside the
intervals scenario.json gives and stay quiet well outside them. The same events, copied into
the manifest, label every sample (`autoe2e.data.scenarios`), and episodes without a
scenario.json still prepare, without labels.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from episode_factory import TINY_PREPARE, write_episode
from PIL import Image
from tiny_configs import SIDE_ROAD_WORLD

from autoe2e.config import GenerateConfig, PrepareConfig
from autoe2e.data import staging
from autoe2e.data.prepare import prepare_dataset
from autoe2e.data.scenarios import (
    SCENARIO_FILE,
    SCENARIO_LABELS,
    manifest_events,
    manifest_labels,
    read_episode_events,
    sample_labels,
)
from autoe2e.synthetic import generate_episodes
from autoe2e.synthetic.traffic import side_vehicle_pixels

logger = logging.getLogger(__name__)

#: Lead vehicle + traffic light episodes (seed 2 holds three hard brakes each, the lead stops
#: for the light in one and drives on in the other), a works-truck episode and two side road
#: episodes (seed 3: a bus that crosses in front of the ego, then one that waits).
WORLDS = (
    GenerateConfig(
        num_episodes=2,
        seed=2,
        cameras=["front"],
        lead_vehicle_probability=1.0,
        stop_event_probability=1.0,
    ),
    GenerateConfig(
        num_episodes=1,
        seed=4,
        cameras=["front"],
        lead_vehicle_probability=0.0,
        junction_probability=0.0,
        obstacle_probability=1.0,
    ),
    SIDE_ROAD_WORLD,
)
#: The demo model's input size: what the cues must survive.
PREPARE = PrepareConfig(image_width=112, image_height=64)
#: A detector fires when at least this many pixels of its colour are in its region.
MIN_PIXELS = 2
#: Brake lamps are scored for leads at most this far ahead at the onset (see `_cue_masks`).
NEAR_M = 45.0
CUES = ("brake", "red_light", "green_light", "obstacle", "bus")


# ---------------------------------------------------------------------------- the detector
def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(image[..., i].astype(np.int32) for i in range(3))  # type: ignore[return-value]


def red_pixels(image: np.ndarray) -> np.ndarray:
    """Saturated red (brake lamps, the red signal): bright R, G and B both at most half of it.
    Nothing else in the world is red (body colours exclude reds, ambers and yellows)."""
    r, g, b = _channels(image)
    return (r >= 150) & (g <= 0.5 * r) & (b <= 0.5 * r)


def green_pixels(image: np.ndarray) -> np.ndarray:
    """The lit green signal: bright G well above R and B (foliage is darker and duller)."""
    r, g, b = _channels(image)
    return (g >= 150) & (g - np.maximum(r, b) >= 70)


def amber_pixels(image: np.ndarray) -> np.ndarray:
    """The works truck's amber board: bright R, G at 52-80 % of R, little B. The ratio band
    excludes the red-lamp fringes that chroma subsampling smears into orange."""
    r, g, b = _channels(image)
    return (r >= 170) & (g >= 0.52 * r) & (g <= 0.8 * r) & (b <= 0.35 * r)


#: The side road's bus (the one detector the history probe uses too).
magenta_pixels = side_vehicle_pixels


def bus_column(image: np.ndarray) -> float | None:
    """Mean image column of the bus's pixels, None when it does not show."""
    cols = np.flatnonzero(magenta_pixels(image).any(axis=0))
    return float(cols.mean()) if len(cols) >= MIN_PIXELS else None


def detect(image: np.ndarray) -> dict[str, bool]:
    """Per cue, whether it shows in a stored front frame. The cameras are level, so the
    horizon is the middle row: brake lamps (below 1.1 m) are always below it and signal lamps
    (above 2 m) always above it, which keeps the two reds apart."""
    horizon = image.shape[0] // 2
    red, green = red_pixels(image), green_pixels(image)
    return {
        "brake": int(red[horizon:].sum()) >= MIN_PIXELS,
        "red_light": int(red[:horizon].sum()) >= MIN_PIXELS,
        "green_light": int(green[:horizon].sum()) >= MIN_PIXELS,
        "obstacle": int(amber_pixels(image).sum()) >= MIN_PIXELS,
        "bus": int(magenta_pixels(image).sum()) >= MIN_PIXELS,
    }


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Generated raw episodes and the dataset prepared from them at 112 x 64."""
    root = tmp_path_factory.mktemp("scenarios")
    raw, out = root / "raw", root / "out"
    for config in WORLDS:
        generate_episodes(raw, config, workers=2)
    prepare_dataset(str(raw), str(out), PREPARE, max_workers=2)
    return raw, out


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _front_frames(out: Path) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """Episode id -> (frame times, decoded front JPEGs), read straight from the shards."""
    rows: dict[str, list[tuple[float, bytes]]] = {}
    for shard in _manifest(out)["shards"]:
        table = pq.read_table(
            out / shard["frames_path"], columns=["episode_id", "camera", "timestamp_s", "jpeg"]
        ).to_pydict()
        for eid, camera, t, jpeg in zip(*table.values(), strict=True):
            if camera == "front":
                rows.setdefault(eid, []).append((t, jpeg))
    frames = {}
    for eid, items in rows.items():
        items.sort(key=lambda item: item[0])
        images = [np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for _, jpeg in items]
        frames[eid] = (np.array([t for t, _ in items]), images)
    return frames


def _within(t: np.ndarray, intervals: list[tuple[float, float]], pad_s: float = 0.0) -> np.ndarray:
    mask = np.zeros(len(t), dtype=bool)
    for lo, hi in intervals:
        mask |= (t >= lo - pad_s) & (t <= hi + pad_s)
    return mask


def _span(event: dict, start: str = "start_time_s", end: str = "end_time_s") -> tuple:
    lo, hi = event.get(start), event.get(end)
    return (-np.inf if lo is None else lo, np.inf if hi is None else hi)


def _cue_masks(sc: dict, t: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per cue: frames where scenario.json says it shows (with a 0.1-0.3 s margin after each
    change, for frame timing and the lamp's first frame) and frames well away from any event
    of its kind (0.5 s for brake lamps, 1 s for the light and the truck)."""
    events = sc["events"]
    brakes = [_span(e) for e in events if e["kind"] == "lead_braking"]
    # A lead more than ~45 m ahead shows a lamp bar under 1.5 px tall at 112 x 64: real
    # events, but not ones this detector (or the model) can be asked to see.
    near = [_span(e) for e in events if e["kind"] == "lead_braking" and e["gap_m"] <= NEAR_M]
    stops = [e for e in events if e["kind"] == "stop"]
    trucks = [e for e in events if e["kind"] == "obstacle"]
    red, green = np.zeros(len(t), bool), np.zeros(len(t), bool)
    for e in stops:
        seen_from, seen_until = e["light_visible_time_s"], e["light_visible_until_s"]
        red_at = np.inf if e["red_time_s"] is None else e["red_time_s"]
        green_at = np.inf if e["green_time_s"] is None else e["green_time_s"]
        red |= _within(t, [(red_at + 0.1, min(green_at, seen_until) - 0.1)])
        green |= _within(t, [(seen_from + 0.3, red_at - 0.1), (green_at + 0.1, seen_until - 0.3)])
    shown = _within(t, [(e["appear_time_s"] + 0.3, e["pull_off_time_s"]) for e in trucks])
    quiet_light = ~_within(t, [_span(e) for e in stops], pad_s=1.0)
    buses = [e for e in events if e["kind"] in ("crossing_vehicle", "waiting_vehicle")]
    bus_seen = _within(t, [(e["appear_time_s"] + 0.6, e["visible_until_s"] - 0.3) for e in buses])
    bus_spans = [(e["appear_time_s"], max(e["end_time_s"], e["visible_until_s"])) for e in buses]
    return {
        "brake": (
            _within(t, [(lo + 0.1, hi - 0.05) for lo, hi in near]),
            ~_within(t, brakes, 0.5),
        ),
        "red_light": (red, quiet_light),
        "green_light": (green, quiet_light),
        "obstacle": (shown, ~_within(t, [_span(e) for e in trucks], pad_s=1.0)),
        "bus": (bus_seen, ~_within(t, bus_spans, pad_s=1.0)),
    }


# ---------------------------------------------------------------------------- vision tests
def test_cues_show_in_the_stored_frames_exactly_when_scenario_json_says(
    prepared: tuple[Path, Path],
) -> None:
    """Recall >= 0.9 inside the intervals, false-positive rate <= 0.05 well outside them
    (measured over 48 default episodes: recall 0.99-1.00, false positives <= 0.003)."""
    raw, out = prepared
    fired: dict[str, list[bool]] = {cue: [] for cue in CUES}
    quiet: dict[str, list[bool]] = {cue: [] for cue in CUES}
    for eid, (t, images) in _front_frames(out).items():
        assert images[0].shape == (64, 112, 3)
        sc = json.loads((raw / eid / SCENARIO_FILE).read_text())
        hits = [detect(image) for image in images]
        for cue, (inside, outside) in _cue_masks(sc, t).items():
            seen = np.array([h[cue] for h in hits])
            fired[cue] += seen[inside].tolist()
            quiet[cue] += seen[outside].tolist()
    for cue in CUES:
        assert len(fired[cue]) >= 20 and len(quiet[cue]) >= 100, (cue, len(fired[cue]))
    recall = {cue: float(np.mean(fired[cue])) for cue in CUES}
    false_pos = {cue: float(np.mean(quiet[cue])) for cue in CUES}
    logger.info("stored 112x64 front frames: recall %s, false positives %s", recall, false_pos)
    assert min(recall.values()) >= 0.9, recall
    assert max(false_pos.values()) <= 0.05, false_pos


def test_cues_precede_the_egos_reaction(prepared: tuple[Path, Path]) -> None:
    """The map shows none of these: the cameras must, before the ego state does."""
    raw, _ = prepared
    checked = {"lead_braking": 0, "stop": 0, "obstacle": 0, "crossing_vehicle": 0}
    for episode in sorted(raw.iterdir()):
        for e in json.loads((episode / SCENARIO_FILE).read_text())["events"]:
            if e["kind"] == "lead_braking" and None not in (
                e["start_time_s"],
                e["ego_brake_time_s"],
            ):
                # The ego may already be braking (a curve, the light); else it reacts later.
                assert e["ego_brake_time_s"] >= e["start_time_s"]
                checked["lead_braking"] += e["ego_brake_time_s"] > e["start_time_s"] + 0.3
            elif e["kind"] == "stop":
                assert e["light_visible_time_s"] <= e["red_time_s"] < e["ego_brake_time_s"]
                assert e["green_time_s"] < e["ego_go_time_s"]
                checked["stop"] += 1
            elif e["kind"] == "obstacle":
                assert e["ego_brake_time_s"] - e["appear_time_s"] >= 1.0
                assert e["ego_stop_time_s"] < e["clear_time_s"] < e["ego_go_time_s"]
                checked["obstacle"] += 1
            elif e["kind"] == "crossing_vehicle":
                # In view, approaching, for >= 2 s (two 1 Hz history frames) before the ego
                # reacts: only its motion tells it will not wait.
                assert e["appear_time_s"] < e["pull_out_time_s"] < e["ego_brake_time_s"]
                assert e["ego_brake_time_s"] - e["appear_time_s"] >= 2.0
                assert e["clear_time_s"] < e["ego_go_time_s"]
                checked["crossing_vehicle"] += 1
    assert checked["lead_braking"] >= 1 and checked["stop"] == 2 and checked["obstacle"] == 1
    assert checked["crossing_vehicle"] == 1


def test_only_motion_tells_a_crossing_bus_from_a_waiting_one(prepared: tuple[Path, Path]) -> None:
    """In the stored frames one second apart (the world model's 1 Hz history), the bus that
    will cross moves towards the image centre (it drives towards the road faster than the
    ego's approach turns it outwards) while the waiting one drifts outwards. Both stand on the
    right-hand arm until the crossing one reaches the give-way line, so neither one frame nor
    the map tells which is which."""
    raw, out = prepared
    frames = _front_frames(out)
    drifts: dict[str, list[float]] = {"crossing_vehicle": [], "waiting_vehicle": []}
    for eid, (t, images) in frames.items():
        for e in json.loads((raw / eid / SCENARIO_FILE).read_text())["events"]:
            if e["kind"] not in drifts:
                continue
            until = e.get("ego_brake_time_s") or e["visible_until_s"]
            for t0 in np.arange(e["appear_time_s"] + 0.3, until - 1.0, 0.5):
                a, b = (int(np.argmin(np.abs(t - x))) for x in (t0, t0 + 1.0))
                ca, cb = bus_column(images[a]), bus_column(images[b])
                if ca is not None and cb is not None:
                    drifts[e["kind"]].append(cb - ca)
    logger.info(
        "bus drift per second (px): %s", {k: np.round(v, 1).tolist() for k, v in drifts.items()}
    )
    assert len(drifts["crossing_vehicle"]) >= 2 and len(drifts["waiting_vehicle"]) >= 2
    assert max(drifts["crossing_vehicle"]) < -1.0, "moves towards the centre"
    assert min(drifts["waiting_vehicle"]) > 0.0, "drifts outwards"


# ---------------------------------------------------------------------------- labels
def test_sample_labels_come_from_events_overlapping_the_future_window() -> None:
    events = [
        {"kind": "curve", "start_time_s": 10.0, "end_time_s": 12.0},
        {"kind": "lead_braking", "start_time_s": None, "end_time_s": 1.0},
        {"kind": "stop", "start_time_s": 20.0, "end_time_s": None},
        {"kind": "obstacle", "start_time_s": 30.0, "end_time_s": 31.0},
        {"kind": "roundabout", "start_time_s": 0.0, "end_time_s": 50.0},  # no label: ignored
    ]
    got = sample_labels(events, [0.0, 1.0, 1.5, 6.9, 7.0, 12.0, 12.5, 17.0, 25.0, 27.5, 31.0])
    assert got == [
        ("lead_braking",),
        ("lead_braking",),  # the window starts at the sample: touching counts
        ("straight",),
        ("straight",),
        ("curve",),  # 7 + 3 s reaches the curve's start
        ("curve",),
        ("straight",),
        ("stop_start",),  # 17 + 3 s reaches the stop, which lasts past the episode
        ("stop_start",),
        ("stop_start", "obstacle"),  # in SCENARIO_LABELS order
        ("stop_start", "obstacle"),
    ]
    assert sample_labels(events, [7.0], horizon_s=0.0) == [("straight",)]
    assert sample_labels([], [1.0, 2.0]) == [("straight",), ("straight",)]
    assert set(SCENARIO_LABELS) == {
        "straight",
        "curve",
        "lead_braking",
        "stop_start",
        "obstacle",
        "crossing_vehicle",
        "waiting_vehicle",
    }
    with pytest.raises(ValueError, match="horizon_s"):
        sample_labels(events, [0.0], horizon_s=-1.0)


def test_manifest_carries_each_episodes_events_and_labels_its_samples(
    prepared: tuple[Path, Path],
) -> None:
    raw, out = prepared
    manifest = _manifest(out)
    times: dict[str, list[float]] = {}
    for shard in manifest["shards"]:
        table = pq.read_table(out / shard["path"], columns=["episode_id", "timestamp_s"])
        for eid, t in zip(*table.to_pydict().values(), strict=True):
            times.setdefault(eid, []).append(t)
    seen: set[str] = set()
    for entry in manifest["episodes"]:
        eid = entry["episode_id"]
        scenario = json.loads((raw / eid / SCENARIO_FILE).read_text())
        assert entry["events"] == manifest_events(scenario)
        for copied, original in zip(entry["events"], scenario["events"], strict=True):
            assert set(copied) <= {"kind", "start_time_s", "end_time_s", "detail"}
            assert copied["kind"] == original["kind"]
            assert copied["detail"].get("ego_brake_time_s") == original.get("ego_brake_time_s")
        labels = manifest_labels(manifest, eid, times[eid])
        assert labels is not None and len(labels) == len(times[eid])
        assert labels == sample_labels(entry["events"], times[eid], horizon_s=3.0)
        for t, sample in zip(times[eid], labels, strict=True):
            assert sample and set(sample) <= set(SCENARIO_LABELS)
            for e in scenario["events"]:
                if e["kind"] == "obstacle" and e["ego_stop_time_s"] <= t <= e["ego_go_time_s"]:
                    assert "obstacle" in sample  # waiting behind the truck
                if e["kind"] == "stop" and e["ego_stop_time_s"] <= t <= e["green_time_s"]:
                    assert "stop_start" in sample  # waiting at the red light
        seen.update(label for sample in labels for label in sample)
    assert {"lead_braking", "stop_start", "obstacle"} <= seen
    assert manifest_labels(manifest, "not-an-episode", [1.0]) is None


def test_staged_preparation_carries_the_same_events(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, out = prepared
    listing = staging.list_episodes(str(raw))
    result = staging.prepare_staged(
        listing,
        str(tmp_path / "staged"),
        PREPARE,
        staging_uri=str(tmp_path / "staging"),
        episodes_uri=str(raw),
    )
    staged = json.loads(Path(result.manifest_uri).read_text())
    direct = {e["episode_id"]: e for e in _manifest(out)["episodes"]}
    assert [e for e in staged["episodes"]] == [direct[e["episode_id"]] for e in staged["episodes"]]


def test_episodes_without_a_scenario_file_prepare_without_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = tmp_path / "raw"
    write_episode(raw, "plain", cameras=("front",), with_map=False)
    broken = write_episode(raw, "broken", cameras=("front",), with_map=False)
    (broken / SCENARIO_FILE).write_text('{"events": [{"kind": "stop", "start_time_s": "soon"}]}')
    labelled = write_episode(raw, "labelled", cameras=("front",), with_map=False)
    (labelled / SCENARIO_FILE).write_text(json.dumps({"events": []}))
    with caplog.at_level(logging.WARNING):
        result = prepare_dataset(str(raw), str(tmp_path / "out"), TINY_PREPARE)
    assert result.num_episodes == 3 and not result.quarantined
    assert "broken" in caplog.text and "soon" in caplog.text  # ignored, with the reason
    manifest = _manifest(tmp_path / "out")
    entries = {e["episode_id"]: e for e in manifest["episodes"]}
    assert "events" not in entries["plain"] and "events" not in entries["broken"]
    assert entries["labelled"]["events"] == []
    assert manifest_labels(manifest, "plain", [1.0]) is None
    assert manifest_labels(manifest, "labelled", [1.0]) == [("straight",)]
    assert read_episode_events(str(raw / "plain")) is None


def test_old_scenario_kinds_are_still_understood(tmp_path: Path) -> None:
    """scenario.json files written before the kinds were unified ("s_bend", "lead_brake")."""
    folder = tmp_path / "old"
    folder.mkdir()
    old = {
        "events": [
            {"kind": "s_bend", "start_time_s": 2, "end_time_s": 4, "direction": "left-right"},
            {"kind": "lead_brake", "start_time_s": 9.0, "end_time_s": 9.5, "nested": {"a": 1}},
        ]
    }
    (folder / SCENARIO_FILE).write_text(json.dumps(old))
    events = read_episode_events(str(folder))
    assert events == [
        {
            "kind": "s_bend",
            "start_time_s": 2.0,
            "end_time_s": 4.0,
            "detail": {"direction": "left-right"},
        },
        {"kind": "lead_brake", "start_time_s": 9.0, "end_time_s": 9.5},  # nested values dropped
    ]
    assert sample_labels(events, [0.0, 7.0]) == [("curve",), ("lead_braking",)]
    shutil.rmtree(folder)
    assert read_episode_events(str(folder)) is None
