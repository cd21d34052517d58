"""Does the world model's history tell more about the side-road bus than one frame? Minutes.

    .venv/bin/python benchmarks/history_probe.py KEEP_DIR [--checkpoint PT] [--threads N]
        [--out FILE.json]

KEEP_DIR is a `benchmarks/quality.py --keep` folder of a world with side roads (the benchmark's
own world has them, `quality.BENCHMARK_WORLD`); the checkpoint defaults to its trained model
(`runs/model/best.pt`).
Whether a waiting bus stays put or a crossing one pulls out is the one thing in these worlds
that only motion is meant to tell (`autoe2e.synthetic.motion_cues`). This script asks each
representation on the way from the pixels to the planner how well it tells the two apart, on
the samples from the bus coming into the front camera's view to 2.5 s later (or its pull-out,
if sooner; scenario.json), in the train and val episodes (test untouched):

* a logistic-regression probe per representation, 5-fold cross-validated by episode (no
  episode on both sides), scored as AUC, best of three regularisation strengths;
* the same question answered from the world's plans: one frame's exact geometry (where the bus
  stands, how far the ego is from the side road) through `motion_cues`' single-frame posterior,
  and a perfect history (how far the bus moved in the last second, too);
* and from the pixels by hand: where the bus's colour blob is in the front view, now and how it
  moved in the last second (boosted trees): how much of the motion the frames at the model's
  resolution hold, whatever the model makes of them.

If the world model's history probes no better than one frame, the planner cannot get from it
what Q4 asks of it, whatever the planner does; a world-model change that should read motion can
be judged here in minutes, before a ~35 min training per seed on the benchmark. Why a probe and
not the planner: the planner's ADE mixes everything; the probe isolates what the features hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from autoe2e import storage
from autoe2e.config import GenerateConfig
from autoe2e.data.dataset import ShardDataset
from autoe2e.model import AutoE2E, load_model
from autoe2e.synthetic.generate import episode_index
from autoe2e.synthetic.motion_cues import frame_geometry, reference_posterior
from autoe2e.synthetic.plan import plan_episode
from autoe2e.synthetic.traffic import side_vehicle_pixels

logger = logging.getLogger("history_probe")

#: Seconds after the bus comes into view that are probed (a crossing bus pulls out 2.6-4 s after).
WINDOW_S = 2.5
FOLDS = 5
STRENGTHS = (0.001, 0.01, 0.1)
#: Views whose raw pixels are probed: the side road's arm is ahead on the right.
PIXEL_VIEWS = ("front", "right")
#: Grey pixel grid the raw-pixel probe sees per view (height, width).
PIXEL_GRID = (16, 28)


def bus_windows(episodes_dir: Path, episodes: list[str]) -> dict[str, tuple[float, float, bool]]:
    """Episode id -> (from, to, crossing) for the episodes with a side-road bus, from their
    scenario.json: the bus in view, up to `WINDOW_S` later or its pull-out if sooner."""
    windows = {}
    for eid in episodes:
        scenario = json.loads((episodes_dir / eid / "scenario.json").read_text())
        for event in scenario["events"]:
            if event["kind"] not in ("crossing_vehicle", "waiting_vehicle"):
                continue
            start = event["appear_time_s"]
            end = min(start + WINDOW_S, event.get("pull_out_time_s", np.inf))
            windows[eid] = (start, end, event["kind"] == "crossing_vehicle")
    return windows


def grouped_auc(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, boosted: bool = False
) -> float:
    """Cross-validated AUC of a logistic-regression probe (`boosted`: gradient-boosted trees,
    for a few hand-made features whose relation to the outcome is not linear); folds never
    split a group (episode), so a probe cannot score by recognising an episode it was fitted
    on, and each fold holds both outcomes (the held-out scores of all folds are ranked
    together)."""
    best = 0.0
    folds = StratifiedGroupKFold(min(FOLDS, _episodes_per_outcome(labels, groups)))
    for strength in (None,) if boosted else STRENGTHS:
        scores = np.zeros(len(labels))
        for fit, held in folds.split(features, labels, groups):
            if strength is None:
                trees = HistGradientBoostingClassifier(max_iter=200, random_state=0)
                trees.fit(features[fit], labels[fit])
                scores[held] = trees.predict_proba(features[held])[:, 1]
                continue
            scale = StandardScaler().fit(features[fit])
            probe = LogisticRegression(C=strength, max_iter=3000)
            probe.fit(scale.transform(features[fit]), labels[fit])
            scores[held] = probe.predict_proba(scale.transform(features[held]))[:, 1]
        best = max(best, float(roc_auc_score(labels, scores)))
    return best


#: Representations scored with boosted trees rather than a linear probe (see `bus_blob`).
BOOSTED_PREFIX = "pixels, the bus's colour blob"


def bus_blob(image: torch.Tensor) -> np.ndarray:
    """One stored frame `[3, H, W]` uint8 -> (shows, centre column, centre row, width, height,
    pixels) of the bus's colour in it (`traffic.side_vehicle_pixels`), zeros where it does
    not show. A hand-made reader of the frames at the model's resolution: how much of the
    bus's motion the pixels hold, whatever the model makes of them (scored nonlinearly: a
    crossing bus moves towards the road, a waiting one drifts outwards as the ego nears)."""
    mask = side_vehicle_pixels(image.permute(1, 2, 0).numpy())
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return np.zeros(6, np.float32)
    extent = (np.ptp(cols) + 1, np.ptp(rows) + 1)
    return np.array([1, cols.mean(), rows.mean(), *extent, len(rows)], np.float32)


def _episodes_per_outcome(labels: np.ndarray, groups: np.ndarray) -> int:
    """Episodes of the rarer outcome; refuses fewer than two (nothing to cross-validate)."""
    fewest = min(len(set(groups[labels == outcome])) for outcome in (True, False))
    if fewest < 2:
        raise ValueError(
            f"{fewest} episode(s) of one outcome (crossing / waiting bus): the probe needs two "
            "or more of each; use a world with more side roads (quality.py --world "
            "junction_probability=0.85 --world junction_pull_out_probability=0.5)"
        )
    return fewest


@torch.no_grad()
def representations(model: AutoE2E, item: dict[str, Any], views: list[int]) -> dict[str, Any]:
    """What each stage holds of one sample's 1 Hz window (oldest frame first)."""
    history = item["history_images"]  # [H, V, 3, h, w] uint8
    last, read = model.feature_maps(history)  # [H, V, C, h, w]: the planner's, the world model's
    pooled = last.mean(dim=(-2, -1))  # [H, V, C], the planner's view of each frame
    cells = last[:, views].flatten(1)  # [H, ...], where things stand in the side road's views
    # The map the world model reads (`world_model_stage`): whether the bus is in its input at
    # all, apart from whether the world model keeps it (the planner's last map may not say).
    read_cells = read[:, views].flatten(1)
    index = item["camera_index"][None]
    visual = model.world_model.encode_history(read[None], index, item["history_valid"][None])
    frames = visual.view(len(pooled), -1)  # [H, E], one embedding per frame
    grey = F.adaptive_avg_pool2d(history[:, views].float().mean(2) / 255.0, PIXEL_GRID)
    # The change over the last second is spelt out: a linear probe on the concatenated frames
    # can miss a difference of two strongly correlated inputs (the regularised fit shrinks it).
    blobs = [bus_blob(frame) for frame in history[:, views[0]]]  # the front view
    return {
        f"{BOOSTED_PREFIX} (front), current frame": blobs[-1],
        f"{BOOSTED_PREFIX} (front), current frame + change in 1 s": np.concatenate(
            [blobs[-1], blobs[-1] - blobs[-2]]
        ),
        "pixels, current frame": grey[-1].flatten(),
        "pixels, 4 frames": grey.flatten(),
        "backbone, current frame (pooled, all views)": pooled[-1].flatten(),
        "backbone, 4 frames": pooled.flatten(),
        "backbone, current frame + change in 1 s": torch.cat(
            [pooled[-1].flatten(), (pooled[-1] - pooled[-2]).flatten()]
        ),
        "backbone cells (front, right), current frame": cells[-1],
        "backbone cells (front, right), current frame + change in 1 s": torch.cat(
            [cells[-1], cells[-1] - cells[-2]]
        ),
        "backbone cells the world model reads (front, right), current frame": read_cells[-1],
        "world model, current frame's embedding": frames[-1],
        "world model, visual history (planner input)": visual[0],
        "world model, current embedding + change in 1 s": torch.cat(
            [frames[-1], frames[-1] - frames[-2]]
        ),
        "ego history": item["ego_history"].float().flatten(),
    }


def collect(
    manifest: str,
    windows: dict[str, tuple[float, float, bool]],
    extract: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Features per representation, labels, episode ids and sample times of the window samples
    (those with all four history frames)."""
    dataset = ShardDataset(manifest, episodes=sorted(windows))
    features: dict[str, list[np.ndarray]] = {}
    labels, groups, times = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        start, end, crossing = windows[item["episode_id"]]
        t = float(item["timestamp_s"])
        if not start <= t <= end or not bool(item["history_valid"].all()):
            continue
        for name, value in extract(item).items():
            features.setdefault(name, []).append(np.asarray(value, np.float32))
        labels.append(crossing)
        groups.append(item["episode_id"])
        times.append(t)
    stacked = {name: np.stack(rows) for name, rows in features.items()}
    return stacked, np.array(labels), np.array(groups), np.array(times)


def world_of(keep: Path) -> GenerateConfig:
    """The generated world's config, from the benchmark's completion marker."""
    markers = sorted((keep / "episodes").glob(".complete-seed-*-n-*"))
    if not markers:
        raise SystemExit(f"{keep}: no benchmarks/quality.py completion marker in episodes/")
    _, seed, _, n = markers[0].name.rsplit("-", 3)
    text = markers[0].read_text().strip()
    overrides = {} if text == "ok" else json.loads(text)
    return GenerateConfig(num_episodes=int(n), seed=int(seed), **overrides)


def geometry_scores(
    config: GenerateConfig, labels: np.ndarray, groups: np.ndarray, times: np.ndarray
) -> dict[str, float]:
    """The same question from the plans: one exact frame (motion_cues' posterior, AUC with no
    fit) and a perfect history (the frame's geometry and the bus's motion over the last second,
    probed)."""
    posterior = reference_posterior(config)
    frame, motion = np.zeros((len(times), 2)), np.zeros((len(times), 3))
    for eid in sorted(set(groups)):
        rows = groups == eid
        plan = plan_episode(np.random.default_rng([config.seed, episode_index(eid)]), config)
        now = frame_geometry(plan, times[rows])
        frame[rows] = now
        moved = now[:, 0] - frame_geometry(plan, times[rows] - 1.0)[:, 0]
        motion[rows] = np.column_stack([now, moved])
    return {
        "plans: one frame's exact geometry (motion_cues posterior)": float(
            roc_auc_score(labels, posterior(frame))
        ),
        "plans: perfect history (geometry + bus motion in 1 s)": grouped_auc(
            motion, labels, groups
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keep", type=Path, help="a benchmarks/quality.py --keep folder")
    parser.add_argument("--checkpoint", help="default: KEEP/runs/model/best.pt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    config = world_of(args.keep)
    checkpoint = args.checkpoint or str(args.keep / "runs" / "model" / "best.pt")
    model, extra = load_model(storage.read_bytes(checkpoint), source=checkpoint)
    model.eval()
    manifest = str(args.keep / "data" / "manifest.json")
    cameras = list(json.loads(Path(manifest).read_text())["cameras"])
    views = [cameras.index(v) for v in PIXEL_VIEWS if v in cameras] or list(range(len(cameras)))
    seen = list(extra["split"]["train"]) + list(extra["split"]["val"])
    windows = bus_windows(args.keep / "episodes", seen)
    if not windows:
        raise SystemExit(f"{args.keep}: no side-road bus in its train/val episodes to probe")
    features, labels, groups, times = collect(
        manifest, windows, lambda item: representations(model, item, views)
    )
    crossing = len(set(groups[labels]))
    if min(crossing, len(set(groups)) - crossing) < 10:
        logger.warning("fewer than 10 episodes of one outcome: expect AUCs to swing by ~0.1")
    logger.info(
        "%d samples of %d episodes (%d with a crossing bus), %.0f%% crossing",
        len(labels), len(set(groups)), crossing, 100 * labels.mean(),
    )  # fmt: skip
    try:
        scores = {
            name: grouped_auc(x, labels, groups, boosted=name.startswith(BOOSTED_PREFIX))
            for name, x in features.items()
        }
    except ValueError as exc:  # too few episodes of an outcome: say which folder and why
        raise SystemExit(f"{args.keep}: {exc}") from exc
    scores.update(geometry_scores(config, labels, groups, times))
    for name, auc in scores.items():
        logger.info("%-58s AUC %.3f", name, auc)
    logger.info("%.0f s", time.monotonic() - start)
    if args.out:
        result = {"checkpoint": checkpoint, "samples": len(labels), "auc": scores}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
