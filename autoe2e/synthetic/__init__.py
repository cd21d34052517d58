"""A procedural multi-camera driving world that writes episodes in the raw-episode contract.

Why it exists: no public driving data is reachable from here, and tests need ground truth. The
world is small but built so that *vision is necessary* and the future is partly predictable:

* Road (`road.py`): a two-lane road (3.5 m lanes, right-hand traffic) made of straights, curves
  and S-bends with clothoid ramps, so curvature and yaw rate are continuous. Map polylines
  (road edges, dashed centre line, lane centres) go to ``map.parquet``.
* Traffic (`traffic.py`): a lead vehicle in the ego lane that brakes hard at random times (its
  brake lights turn bright red), a platoon of oncoming vehicles, and stop events: a stop line
  plus a traffic light that is red while the ego approaches and turns green a few seconds after
  it has stopped.
* Ego (`ego.py`): jerk-limited longitudinal control along the lane centre: a curve speed limit
  sqrt(a_lat / |kappa|) applied seconds ahead of each curve, IDM car following with a human
  perception delay, smooth stops at red lights and a delayed start on green. So the cameras
  show each cause (a curve 50+ m ahead, brake lights, a light change) before the ego state does.
* Rendering (`world.py`, `render.py`): level pinhole cameras on the ego (front/left/right/rear
  by default, or any names spread evenly in yaw), a mip-mapped top-down ground texture sampled
  per pixel, distance haze, a skyline that turns with the ego, and depth-sorted boxes and
  billboards for vehicles, posts, trees and the traffic light. Encoded to H.264 MP4 at exact
  1 / fps timestamps (`autoe2e.video.encode`).
* Writer (`generate.py`): one directory per episode (``episode.json`` with camera intrinsics and
  extrinsics, ``cameras/<name>.mp4``, ``ego.parquet``, ``map.parquet``) plus ``scenario.json``
  with the ground-truth event times (curves, lead braking, stops) for per-scenario evaluation.
  Episode ``ep{seed:04d}_{index:04d}`` depends only on (config, index): same seed, same bytes.
"""

from autoe2e.synthetic.generate import (
    SCENARIO_FILE,
    check_config,
    episode_id,
    generate_episode,
    generate_episodes,
)

__all__ = [
    "SCENARIO_FILE",
    "check_config",
    "episode_id",
    "generate_episode",
    "generate_episodes",
]
