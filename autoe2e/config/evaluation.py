"""Evaluation and promotion settings (`autoe2e evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autoe2e.config._common import _require

#: The trained baselines the pipeline knows (values of ModelConfig.input_ablation).
TRAINED_BASELINES = ("ego_only", "no_camera")


@dataclass
class EvalConfig:
    """Evaluation on held-out episodes (`autoe2e evaluate`)."""

    batch_size: int = 64
    #: Horizons (seconds) at which displacement errors are reported.
    horizons_s: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 6.4])
    #: Promotion gate (upstream used ADE < 2.0 m and FDE < 4.0 m).
    max_ade_m: float = 2.0
    max_fde_m: float = 4.0
    #: The model must beat constant velocity: the upper end of the 95% episode-bootstrap CI of
    #: (model - constant velocity) ADE must be below -cv_margin_m.
    cv_margin_m: float = 0.0
    #: ... and the current champion, the same way on the same samples: (model - champion) ADE
    #: CI upper end below -champion_margin_m.
    champion_margin_m: float = 0.0
    #: Registered model every evaluated checkpoint becomes a version of (with a tracker);
    #: empty = "autoe2e-<ModelConfig.name>". The alias `champion` marks the promoted version,
    #: `challenger` the latest one that was not promoted.
    registered_model: str = ""
    #: Trained baselines scored on the same samples and reported next to the model:
    #: name -> checkpoint path/URI (e.g. {"ego_only": ".../best.pt", "no_camera": ...}, models
    #: trained with ModelConfig.input_ablation). Empty = only the analytic baselines.
    baseline_checkpoints: dict[str, str] = field(default_factory=dict)
    #: Camera-free baselines the pipeline (CLI `run`/`demo` and the Flyte workflow) trains
    #: beside the model, for the model's number of steps, and scores here: "ego_only" (ego
    #: history alone) and/or "no_camera" (ego + map). Empty = train none.
    trained_baselines: list[str] = field(default_factory=lambda: list(TRAINED_BASELINES))
    #: Test-time ablations of the model (cameras blanked / shuffled, world-model history
    #: zeroed) and world-model diagnostics; each ablation costs one more pass of the planner.
    ablations: bool = True

    def validate(self) -> EvalConfig:
        unknown = sorted(set(self.trained_baselines) - set(TRAINED_BASELINES))
        _require(
            not unknown,
            "trained_baselines",
            self.trained_baselines,
            f"unknown {unknown}; choose from {list(TRAINED_BASELINES)} (or [] for none)",
        )
        _require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        return self
