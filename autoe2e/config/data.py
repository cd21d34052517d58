"""Configs of the data stages: the synthetic world (`generate`) and `prepare`."""

from __future__ import annotations

from dataclasses import dataclass, field

from autoe2e.config._common import _require


@dataclass
class GenerateConfig:
    """Parameters of the procedural multi-camera driving world (`autoe2e generate`)."""

    num_episodes: int = 16
    duration_s: float = 24.0
    seed: int = 0
    cameras: list[str] = field(default_factory=lambda: ["front", "left", "right", "rear"])
    image_width: int = 224
    image_height: int = 128
    #: Horizontal field of view of every camera not named in `camera_fov_deg`.
    horizontal_fov_deg: float = 100.0
    #: Per-camera horizontal FOV (degrees) by camera name; names not in `cameras` are ignored.
    #: The front camera is a narrow (tele) view: at 45 deg a car 30 m ahead is ~8 px wide at the
    #: model's 112 x 64 input instead of ~3 px at 100 deg, so brake lamps, lights and obstacles
    #: survive the downscale and two rounds of 4:2:0 chroma subsampling.
    camera_fov_deg: dict[str, float] = field(default_factory=lambda: {"front": 45.0})
    camera_fps: float = 30.0
    telemetry_hz: float = 30.0
    # Scenario mix: probabilities per episode / per road segment.
    curve_probability: float = 0.55
    s_bend_probability: float = 0.25
    lead_vehicle_probability: float = 0.6
    #: Per episode with a lead vehicle, or without one and without a works truck.
    stop_event_probability: float = 0.8
    #: Per episode without a lead vehicle: a stopped works truck in the ego lane that the ego
    #: must see and stop for (it is not in the map); the truck turns off once the ego waits.
    obstacle_probability: float = 0.9
    #: Per episode without a lead vehicle: a side road from the right with a bus on it, in
    #: place of the works truck or the light. It pulls out across the ego's path (the ego
    #: yields) with `junction_pull_out_probability`, else it waits; only its motion over the
    #: last seconds tells which (a cue for the world model's 1 Hz history).
    junction_probability: float = 0.6
    junction_pull_out_probability: float = 0.6
    #: [shortest, longest] seconds between a crossing bus pulling out and the moment the ego
    #: would reach the side road had it not yielded (drawn uniformly per episode). Shorter: the
    #: ego is closer when the bus pulls out and brakes harder (up to 8 m/s^2), so the crossing
    #: and waiting futures part more within 3 s and the bus's motion, the one cue only the
    #: history shows, is worth more (`benchmarks/motion_cues.py` prices it).
    junction_pull_out_lead_s: list[float] = field(default_factory=lambda: [2.4, 3.4])
    oncoming_traffic_density: float = 0.5
    max_speed_mps: float = 20.0
    max_lateral_accel_mps2: float = 2.5
    comfortable_decel_mps2: float = 3.0
    crf: int = 23

    def validate(self) -> GenerateConfig:
        _require(self.num_episodes >= 1, "num_episodes", self.num_episodes, "use >= 1")
        _require(self.duration_s >= 12.0, "duration_s", self.duration_s, "use >= 12 s")
        _require(len(self.cameras) >= 1, "cameras", self.cameras, "name at least one camera")
        _require(len(set(self.cameras)) == len(self.cameras), "cameras", self.cameras, "unique")
        for name in ("image_width", "image_height"):
            value = getattr(self, name)
            _require(value >= 16 and value % 2 == 0, name, value, "use an even number >= 16")
        _require(self.camera_fps > 0, "camera_fps", self.camera_fps, "use > 0")
        _require(self.telemetry_hz >= 10, "telemetry_hz", self.telemetry_hz, "use >= 10")
        return self


@dataclass
class PrepareConfig:
    """How raw episodes become training samples (`autoe2e prepare`)."""

    image_width: int = 112
    image_height: int = 64
    jpeg_quality: int = 90
    reactive_hz: float = 10.0
    #: 1 Hz world-model window offsets in seconds (history ends at the sample time).
    history_offsets_s: list[float] = field(default_factory=lambda: [-3.0, -2.0, -1.0, 0.0])
    future_offsets_s: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0])
    ego_history_steps: int = 64
    trajectory_steps: int = 64
    trajectory_dt_s: float = 0.1
    map_raster_size: int = 64
    map_resolution_m: float = 1.5
    #: Keep every n-th 10 Hz tick as a sample (1 = every tick).
    sample_stride: int = 1
    #: False: a sample whose windows are incomplete (episode edges, camera gaps, telemetry
    #: holes) is dropped and counted. True: it is kept when its current frames, its telemetry
    #: at the sample time and the first trajectory step exist; missing world-model frames get
    #: id -1, and history/future/ego/trajectory steps are flagged in the *_valid masks.
    pad_incomplete_windows: bool = False
    #: Max distance between a grid time and the chosen frame; None = half a source frame period.
    tolerance_s: float | None = None
    #: Longest hole (s) in one camera's grid before the episode is quarantined. Shorter gaps only
    #: drop (and count) the samples whose windows touch them; a longer one means the camera lost
    #: its stream, which a 1 s world-model step cannot straddle, so the recording is suspect.
    max_gap_s: float = 1.0
    #: Cameras to export, in this order; empty = the episode's own list.
    cameras: list[str] = field(default_factory=list)
    shard_target_bytes: int = 256 * 1024 * 1024
    row_group_target_bytes: int = 64 * 1024 * 1024
    #: FFmpeg threads per camera decoder (0 = FFmpeg's default for the codec).
    decode_threads: int = 0
    #: Cameras of one episode decoded concurrently in threads (PyAV and libswscale release the
    #: GIL: 4 cameras in 2 threads ran 1.85x faster on 2 cores). 0 = the CPU cores left per
    #: episode: cores / episodes prepared at once.
    camera_threads: int = 0
    #: Episodes prepared in parallel processes (0 = one per CPU core).
    workers: int = 0

    def validate(self) -> PrepareConfig:
        for name in ("image_width", "image_height"):
            value = getattr(self, name)
            _require(value >= 16, name, value, "use >= 16 pixels")
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", self.jpeg_quality, "use 1..100")
        _require(self.reactive_hz > 0, "reactive_hz", self.reactive_hz, "use > 0")
        for name in ("history_offsets_s", "future_offsets_s"):
            offsets = getattr(self, name)
            _require(len(offsets) >= 1, name, offsets, "give at least one offset")
            _require(offsets == sorted(offsets), name, offsets, "sort offsets ascending")
            for off in offsets:
                ticks = off * self.reactive_hz
                _require(
                    abs(ticks - round(ticks)) < 1e-6, name, offsets, "offsets on the 10 Hz grid"
                )
        _require(
            self.history_offsets_s[-1] == 0.0,
            "history_offsets_s",
            self.history_offsets_s,
            "end the history window at 0.0 (the sample time)",
        )
        _require(
            self.future_offsets_s[0] > 0,
            "future_offsets_s",
            self.future_offsets_s,
            "future offsets must be > 0",
        )
        _require(self.ego_history_steps >= 2, "ego_history_steps", self.ego_history_steps, ">= 2")
        _require(self.trajectory_steps >= 1, "trajectory_steps", self.trajectory_steps, ">= 1")
        _require(self.map_raster_size >= 8, "map_raster_size", self.map_raster_size, ">= 8")
        _require(self.sample_stride >= 1, "sample_stride", self.sample_stride, ">= 1")
        for name in ("decode_threads", "camera_threads", "workers"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "use >= 0 (0 = auto)")
        _require(self.max_gap_s > 0, "max_gap_s", self.max_gap_s, "use a positive number of s")
        _require(
            self.tolerance_s is None or self.tolerance_s > 0,
            "tolerance_s",
            self.tolerance_s,
            "use a positive number of seconds or null",
        )
        for name in ("shard_target_bytes", "row_group_target_bytes"):
            value = getattr(self, name)
            _require(value >= 1 << 16, name, value, ">= 64 KiB (defaults: 256 MiB and 64 MiB)")
        return self
