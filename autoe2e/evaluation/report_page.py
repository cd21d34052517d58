"""report.html: the evaluation as a page for a person who would rather look than read.

The tables and summary plots come from report.json (`html_report.report_sections`); added here
are the bird's-eye overlays, which need the samples themselves: for a few samples of each
scenario label, the map raster with the model's plan, the ground truth and constant velocity,
next to the front camera frame.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from autoe2e.evaluation.collect import to_device
from autoe2e.evaluation.html_report import Section, report_sections
from autoe2e.evaluation.metrics import constant_velocity

logger = logging.getLogger(__name__)

#: samples drawn per scenario label (spread over the label's samples)
PER_SCENARIO = 2
#: map resolution when the manifest does not say (PrepareConfig's default)
DEFAULT_RESOLUTION_M = 1.5


def _picks(labels: list[tuple[str, ...]] | None, n: int) -> dict[str, list[int]]:
    if labels is None:
        return {"all samples": sorted({0, n // 2, n - 1})[: PER_SCENARIO + 1]}
    out: dict[str, list[int]] = {}
    for name in sorted({label for sample in labels for label in sample}):
        hits = [i for i, sample in enumerate(labels) if name in sample]
        out[name] = sorted(
            {hits[len(hits) * (k + 1) // (PER_SCENARIO + 1)] for k in range(PER_SCENARIO)}
        )
    return out


@torch.no_grad()
def birdseye_section(
    model: Any,
    dataset: Any,
    labels: list[tuple[str, ...]] | None,
    resolution_m: float,
    device: torch.device,
) -> Section:
    from autoe2e.evaluation.plots import birdseye_png

    cfg = model.cfg
    cameras = list(dataset.cameras)
    front = cameras.index("front") if "front" in cameras else 0
    images: dict[str, bytes] = {}
    was_training = model.training
    model.eval()
    try:
        for scenario, indices in _picks(labels, len(dataset)).items():
            for i in indices:
                item = dataset[i]
                batch = to_device(default_collate([item]), device)
                plan = model(batch).trajectory.float()[0].cpu().numpy()
                ego = batch["ego_history"].float().cpu()
                cv = constant_velocity(ego, cfg.trajectory_steps, cfg.trajectory_dt_s)[0].numpy()
                valid = item["trajectory_valid"].numpy().astype(bool)
                truth = item["future_trajectory"].numpy()[valid]
                views = item["camera_index"].tolist()
                view = views.index(front) if front in views else 0
                title = f"{scenario}: {item['episode_id']} t={item['timestamp_s']:.1f} s"
                images[title] = birdseye_png(
                    item["map_raster"].numpy(),
                    resolution_m,
                    item["images"][view].numpy().astype(np.uint8),
                    {"ground_truth": truth, "model": plan, "constant_velocity": cv},
                    title,
                )
    finally:
        model.train(was_training)
    return Section(
        heading="Bird's-eye samples per scenario",
        paragraphs=[
            "Map raster around the ego (heading up) with the ground truth, the model's plan and "
            "constant velocity; the front camera frame the model saw on the right."
        ],
        images=images,
    )


def page_sections(report: dict[str, Any], birdseye: Section | None) -> list[Section]:
    sections = report_sections(report)
    if birdseye is not None and birdseye.images:
        sections.insert(1, birdseye)
    return sections
