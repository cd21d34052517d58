"""`evaluate`: score a checkpoint on held-out episodes against honest baselines."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from autoe2e import storage
from autoe2e.config import EvalConfig
from autoe2e.evaluation.collect import DIAGNOSTIC_SAMPLES, Collected, collect
from autoe2e.evaluation.promotion import promote
from autoe2e.evaluation.report import build_report
from autoe2e.model import load_model
from autoe2e.training.runtime import (
    DatasetFactory,
    autocast_dtype,
    keep_freed_cpu_memory,
    shard_dataset_factory,
)

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"


class EvaluationError(ValueError):
    """Evaluation inputs do not fit together; the message names them and the fix."""


def _trained_on(what: str, extra: dict[str, Any], episodes: list[str]) -> list[str]:
    """The `episodes` a checkpoint trained on (from its stored split), logged as a warning."""
    leaked = sorted(set(episodes) & set(extra.get("split", {}).get("train", [])))
    if leaked:
        logger.warning("%s trained on episodes %s: its numbers are not held-out", what, leaked)
    return leaked


def _check_baseline_split(
    name: str,
    uri: str,
    extra: dict[str, Any],
    checkpoint_uri: str,
    episodes: list[str],
    explicit: bool,
) -> None:
    """Refuse a baseline that cannot be compared with the model on these episodes.

    On the model's own test split (the default) the baseline must hold out the same episodes,
    i.e. come from the same manifest and split seed, or it may have trained on the model's
    test episodes. On episodes the caller chose (e.g. the validation episodes of a design
    experiment) the splits need not match; a warning says when the baseline trained on some
    of them, as for the model.
    """
    split = extra.get("split", {})
    if explicit:
        _trained_on(f"trained baseline {name} ({uri})", extra, episodes)
    elif split.get("test") is not None and sorted(split["test"]) != sorted(episodes):
        raise EvaluationError(
            f"trained baseline {name} ({uri}) holds out other test episodes than "
            f"{checkpoint_uri}; train it on the same manifest with the same "
            "TrainConfig.split_seed"
        )


def evaluate(
    manifest_uri: str,
    checkpoint_uri: str,
    out_uri: str,
    eval_cfg: EvalConfig,
    episodes: list[str] | None = None,
    tracking: Any | None = None,
    dataset_factory: DatasetFactory | None = None,
) -> dict[str, Any]:
    """Write `<out_uri>/report.json` and return it. `episodes=None` = the checkpoint's test split;
    a list scores those episodes instead (e.g. validation episodes while choosing a design, so
    the test episodes stay untouched), the model and any trained baselines alike.

    With a tracker, metrics go to its run, the report is an artifact, and the checkpoint becomes
    a new version of the registered model, aliased `champion` when it passes the gate (which
    then includes beating the current champion on these samples) or `challenger`.
    """
    keep_freed_cpu_memory()
    model, extra = load_model(storage.read_bytes(checkpoint_uri), source=checkpoint_uri)
    explicit_episodes = episodes is not None
    if episodes is None:
        episodes = list(extra.get("split", {}).get("test", []))
        if not episodes:
            raise EvaluationError(
                f"{checkpoint_uri} stores no test split; pass episodes=[...] explicitly"
            )
    factory = dataset_factory or shard_dataset_factory
    dataset = factory(manifest_uri, episodes, model.cfg.use_world_model)
    trained_cameras = extra.get("cameras")
    if trained_cameras is not None and list(dataset.cameras) != list(trained_cameras):
        raise EvaluationError(
            f"camera vocabulary of {manifest_uri} {list(dataset.cameras)} differs from the one "
            f"the checkpoint was trained with {trained_cameras}; evaluate on data prepared with "
            "the same cameras"
        )
    if len(dataset) == 0:
        raise EvaluationError(f"{manifest_uri}: episodes {episodes} hold no samples")
    leaked = _trained_on(f"the evaluated model ({checkpoint_uri})", extra, episodes)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    horizons = list(eval_cfg.horizons_s)
    amp = autocast_dtype("auto", device)

    def score(candidate: torch.nn.Module, frames: bool, full: bool = False) -> Any:
        data = (
            dataset
            if frames == model.cfg.use_world_model
            else factory(manifest_uri, episodes, frames)
        )
        loader = DataLoader(data, batch_size=eval_cfg.batch_size, shuffle=False)
        return collect(
            candidate.to(device),
            loader,
            device,
            horizons,
            autocast_dtype=amp,
            ablations=full and eval_cfg.ablations,
            diagnostics=(len(data) // DIAGNOSTIC_SAMPLES + 1) if full else 0,
        )

    collected = score(model, model.cfg.use_world_model, full=True)
    trained = {}
    for name, uri in eval_cfg.baseline_checkpoints.items():
        baseline, baseline_extra = load_model(storage.read_bytes(uri), source=uri)
        _check_baseline_split(
            name, uri, baseline_extra, checkpoint_uri, episodes, explicit_episodes
        )
        trained[name] = score(baseline, baseline.cfg.use_world_model)
    labels = _scenario_labels(manifest_uri, collected)
    report = build_report(collected, eval_cfg, labels=labels, trained=trained)
    report.update(
        {
            "checkpoint_uri": checkpoint_uri,
            "manifest_uri": manifest_uri,
            "episodes": sorted(episodes),
            "held_out": not leaked,
            "trained_steps": extra.get("step"),
            "baseline_checkpoints": dict(eval_cfg.baseline_checkpoints),
            "model_config": {
                "name": model.cfg.name,
                "backbone": model.cfg.backbone,
                "use_world_model": model.cfg.use_world_model,
            },
        }
    )
    report_uri = storage.join_uri(out_uri, REPORT_NAME)
    report["report_uri"] = report_uri
    if tracking is not None:

        def score_champion(data: bytes) -> np.ndarray:
            champion, champion_extra = load_model(data, source="current champion")
            cameras = champion_extra.get("cameras")
            if cameras is not None and list(cameras) != list(dataset.cameras):
                raise EvaluationError(f"it was trained on cameras {cameras}")
            scored = score(champion, champion.cfg.use_world_model)
            return np.asarray(scored.planners["model"]["ade"], dtype=np.float64)

        _log_evaluation(tracking, report, checkpoint_uri)
        report["promotion"] = promote(
            tracking,
            report,
            eval_cfg,
            model.cfg.name,
            score_champion,
            np.asarray(collected.planners["model"]["ade"], dtype=np.float64),
            np.asarray(collected.episode_ids),
        )
        report["registered_model_version"] = report["promotion"]["version"]
        tracking.set_tags(
            {
                "gate_passed": report["gate"]["passed"],
                "stage": "evaluate",
                "promotion": report["promotion"]["alias"],
            }
        )
        tracking.log_dict(REPORT_NAME, report)
    report["report_html_uri"] = _write_page(
        report, model, dataset, labels, manifest_uri, out_uri, device, tracking
    )
    storage.write_bytes(report_uri, json.dumps(report, indent=2, sort_keys=True).encode())
    logger.info("evaluation: gate %s, report %s", report["gate"]["passed"], report_uri)
    return report


def _write_page(
    report: dict[str, Any],
    model: torch.nn.Module,
    dataset: Any,
    labels: list[tuple[str, ...]] | None,
    manifest_uri: str,
    out_uri: str,
    device: torch.device,
    tracking: Any | None,
) -> str:
    """report.html next to report.json (and in the MLflow run): tables, plots, bird's-eye
    samples per scenario. A page that cannot be drawn is a warning, never a lost evaluation."""
    from autoe2e.evaluation.html_report import REPORT_HTML_NAME, render_html
    from autoe2e.evaluation.report_page import DEFAULT_RESOLUTION_M, birdseye_section, page_sections

    uri = storage.join_uri(out_uri, REPORT_HTML_NAME)
    try:
        resolution = DEFAULT_RESOLUTION_M
        try:
            from autoe2e.data import manifest as mf

            parameters = mf.read_manifest(manifest_uri).get("parameters", {})
            resolution = float(parameters.get("map_resolution_m", resolution))
        except mf.ManifestError:
            pass
        birdseye = birdseye_section(model, dataset, labels, resolution, device)
        sections = page_sections(report, birdseye)
        page = render_html("AutoE2E evaluation", sections)
        storage.write_bytes(uri, page.encode())
        if tracking is not None:
            tracking.log_artifact_bytes(REPORT_HTML_NAME, page.encode())
            for section in sections:  # every plot also as a PNG artifact of the run
                for caption, png in section.images.items():
                    name = re.sub(r"[^A-Za-z0-9._-]+", "_", caption).strip("_")[:80] + ".png"
                    tracking.log_artifact_bytes(name, png, artifact_path="plots")
    except Exception as exc:  # noqa: BLE001 - the numbers are what matters
        logger.warning("report page %s not written: %s: %s", uri, type(exc).__name__, exc)
        return ""
    logger.info("report page -> %s", uri)
    return uri


def _scenario_labels(manifest_uri: str, collected: Collected) -> list[tuple[str, ...]] | None:
    """Per-sample scenario labels from the manifest's optional scenario events (synthetic
    worlds record them; real data without them gets no breakdown, and needs none)."""
    from autoe2e.data import manifest as mf

    try:
        manifest = mf.read_manifest(manifest_uri)
    except mf.ManifestError:
        return None  # a dataset factory without a manifest (tests, benchmarks)
    from autoe2e.data.scenarios import manifest_labels

    episodes = np.asarray(collected.episode_ids)
    times = np.asarray(collected.timestamps_s)
    labels: list[tuple[str, ...]] = [("straight",)] * len(episodes)
    for episode in dict.fromkeys(collected.episode_ids):
        rows = np.flatnonzero(episodes == episode)
        found = manifest_labels(manifest, episode, times[rows].tolist())
        if found is None:
            return None
        for row, sample_labels in zip(rows, found, strict=True):
            labels[row] = sample_labels
    return labels


def _log_evaluation(tracker: Any, report: dict[str, Any], checkpoint_uri: str) -> None:
    """Test metrics to the run, and the checkpoint as its artifact (what a version points at)."""
    metrics: dict[str, float] = {}
    entries = {"model": report["planner"]["model"], **report["planner"]["baselines"]}
    for planner, entry in entries.items():
        for key, value in entry.items():
            if key != "ci95" and value is not None:
                metrics[f"test/{planner}/{key}"] = value
    for predictor, value in report.get("world_model", {}).get("jepa_l1", {}).items():
        if value is not None:
            metrics[f"test/jepa_l1/{predictor}"] = value
    sections = {
        "ablation": report.get("ablations", {}),
        "trained": report.get("trained_baselines", {}),
    }
    for prefix, entries in sections.items():
        for name, entry in entries.items():
            for key, value in entry.items():
                if isinstance(value, float):
                    metrics[f"test/{prefix}/{name}/{key}"] = value
    for key, value in report.get("world_model_diagnostics", {}).items():
        if isinstance(value, float):
            metrics[f"test/world_model/{key}"] = value
    for row in report.get("by_scenario", []):
        for key, value in row.items():
            if isinstance(value, float):
                metrics[f"test/scenario/{row['scenario']}/{key}"] = value
    tracker.log_metrics(metrics, step=int(report.get("trained_steps") or 0))
    if not tracker.has_artifact("checkpoint"):
        name_in_run = checkpoint_uri.rstrip("/").rsplit("/", 1)[-1]
        tracker.log_artifact_bytes(name_in_run, storage.read_bytes(checkpoint_uri), "checkpoint")
