"""A procedural multi-camera driving world that writes episodes in the raw-episode contract.

Why it exists: no public driving data is reachable from here, and tests need ground truth. The
world is small but built so that *vision is necessary* at the model's input resolution and the
future is partly predictable:

* Road (`road.py`): a two-lane road (3.5 m lanes, right-hand traffic) made of straights, curves
  and S-bends with clothoid ramps, so curvature and yaw rate are continuous. Map polylines
  (road edges, dashed centre line, lane centres) go to ``map.parquet``; lights and obstacles
  are not in the map.
* Traffic (`traffic.py`): a lead vehicle in the ego lane that brakes hard every few seconds
  (a full-width brake-lamp bar lights up), a platoon of oncoming vehicles, a traffic light that
  turns red once the ego can see it and green a few seconds after it has stopped, and, in
  episodes without a lead, a works truck with an amber board stopped in the ego lane that turns
  off the road once the ego waits behind it.
* Ego (`ego.py`): jerk-limited longitudinal control along the lane centre: a curve speed limit
  sqrt(a_lat / |kappa|) applied seconds ahead of each curve, IDM car following with a human
  perception delay, stops at red lights and behind the truck with reaction delays, and delayed
  starts. So the cameras show each cause (a curve 50+ m ahead, brake lamps, a light change, the
  truck 1-2 s before the ego brakes) before the ego state does.
* Rendering (`world.py`, `render.py`): level pinhole cameras on the ego (front/left/right/rear
  by default, or any names spread evenly in yaw) with a per-camera FOV (a 45 deg front camera,
  so cues stay several pixels wide after `prepare` shrinks frames to 112 x 64), a mip-mapped
  top-down ground texture sampled per pixel, distance haze, a skyline that turns with the ego,
  and depth-sorted boxes and billboards for vehicles, posts, trees and the traffic light. Cues
  are oversized, saturated blocks that also change luminance, because colour alone does not
  survive two rounds of 4:2:0 chroma subsampling (H.264 here, JPEG in `prepare`). Encoded to
  H.264 MP4 at exact 1 / fps timestamps (`autoe2e.video.encode`).
* Plan (`plan.py`), scene at time t (`scene.py`), annotations (`annotations.py`): the road,
  events and simulated drive of one episode; the light state, truck and vehicles each frame
  shows; the ground-truth events.
* Writer (`generate.py`): one directory per episode (``episode.json`` with camera intrinsics and
  extrinsics, ``cameras/<name>.mp4``, ``ego.parquet``, ``map.parquet``) plus ``scenario.json``
  with the ground-truth events (kind curve / lead_braking / stop / obstacle, start and end
  times, and the times of each cue and reaction), which `prepare` copies into the manifest for
  per-scenario labels (`autoe2e.data.scenarios`). Episode ``ep{seed:04d}_{index:04d}`` depends
  only on (config, index): same seed, same bytes.
"""

from autoe2e.synthetic.generate import (
    SCENARIO_FILE,
    check_config,
    episode_id,
    episode_index,
    generate_episode,
    generate_episodes,
)

__all__ = [
    "SCENARIO_FILE",
    "check_config",
    "episode_id",
    "episode_index",
    "generate_episode",
    "generate_episodes",
]
