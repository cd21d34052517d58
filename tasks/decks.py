"""Flyte Decks for the pipeline's stages: what a person looks at instead of reading logs.

Each stage's task calls one ``*_deck`` function after its work is done. They gather what the
stage left behind (the manifest and one shard, the MLflow run's curves, ``report.json``), turn
it into `autoe2e.evaluation.html_report.Section` lists with PNG figures from
`autoe2e.evaluation.plots`, and add one `flytekit.Deck`. A Deck is a convenience, never a
result: every failure here is logged as a warning and swallowed, so a missing shard, an
unreachable MLflow server or a plotting bug can never fail (or retry) a task whose real
outputs were written.

The tasks need ``enable_deck=True`` (flytekit 1.16 renders no Deck otherwise); `DECK_FIELDS`
keeps flytekit's input/output Decks and leaves out its source-code and ``pip freeze``
dependency Decks, which say nothing about the data and cost a subprocess per task.

Importing this module stays cheap (`tasks.stages` imports it at registration): the plotting
and report modules, which pull in torch and matplotlib, are imported when a Deck is built.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from flytekit.deck import DeckField

from autoe2e import storage

if TYPE_CHECKING:
    from autoe2e.evaluation.html_report import Section

logger = logging.getLogger(__name__)

#: flytekit's own Decks kept next to ours (see the module docstring).
DECK_FIELDS: tuple[DeckField, ...] = (DeckField.INPUT, DeckField.OUTPUT)

PREPARE_DECK = "Dataset"
TRAIN_DECK = "Training"
EVALUATE_DECK = "Evaluation"

#: Samples shown per camera in the prepare Deck's frame strip.
STRIP_SAMPLES = 6
#: Shards whose frame times feed the frame-time histogram (each costs a few small range reads).
FRAME_TIME_SHARDS = 8
#: Episodes up to which samples per episode are drawn as bars (more: a histogram).
MAX_EPISODE_BARS = 40
#: MLflow metric history is read for at most this many keys (one request each).
MAX_CURVES = 16


def publish(name: str, sections: Sequence[Section] | Callable[[], Sequence[Section]]) -> bool:
    """Add a Deck `name` showing `sections` (or what the callable returns); False, with a
    warning, when building or adding it fails. Never raises."""
    import flytekit

    try:
        from autoe2e.evaluation.html_report import render_fragment

        built = sections() if callable(sections) else sections
        flytekit.Deck(name, render_fragment(list(built)))
    except Exception as exc:  # a Deck must never fail the task
        logger.warning("Deck %r not rendered: %s: %s", name, type(exc).__name__, exc, exc_info=True)
        return False
    return True


def _is_main_rank() -> bool:
    """Under Elastic every worker runs the task body; flytekit keeps rank 0's Decks only."""
    return int(os.environ.get("RANK", "0")) == 0


# --------------------------------------------------------------------------- prepare


def _reason_kind(reason: str) -> str:
    """Group quarantine reasons by what went wrong, not by which episode: drop the
    ``episode '<id>':`` prefix and the ``Fix: ...`` tail `EpisodeContractError` adds, and
    replace numbers, so "3 frames" and "5 frames" count as one kind."""
    text = re.sub(r"^episode '[^']*':\s*", "", reason)
    text = text.split(". Fix:", 1)[0]
    return re.sub(r"\d+(\.\d+)?", "#", text).strip() or "unknown"


def _frame_time_errors_ms(manifest: Mapping[str, Any], root: str) -> np.ndarray:
    """(decoded frame time - grid time) in ms for every frame of the first shards.

    Only the two float columns are fetched: the footer and those column chunks by ranged
    reads into a sparse buffer, never the JPEG column that makes up nearly all of a frames
    file. Shards prepared before per-row-group parts were recorded are skipped. The ranges are
    not checked against the manifest's hashes (those cover whole row groups): this is a
    picture of the data, not an input to training.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = ("timestamp_s", "frame_time_s")
    out: list[np.ndarray] = []
    for info in manifest["shards"][:FRAME_TIME_SHARDS]:
        parts = info.get("frames_parts")
        if not parts:
            continue
        uri = storage.join_uri(root, info["frames_path"])
        footer = parts["footer"]
        buffer = bytearray(int(footer["offset"]) + int(footer["length"]))  # lazily zeroed

        def fill(offset: int, length: int, uri: str = uri, buffer: bytearray = buffer) -> None:
            buffer[offset : offset + length] = storage.read_range(uri, offset, length)

        fill(int(footer["offset"]), int(footer["length"]))
        parquet = pq.ParquetFile(pa.BufferReader(pa.py_buffer(buffer)))
        names = parquet.schema_arrow.names
        for g in range(parquet.metadata.num_row_groups):
            group = parquet.metadata.row_group(g)
            for name in wanted:
                column = group.column(names.index(name))
                start = (
                    column.dictionary_page_offset
                    if column.has_dictionary_page
                    else column.data_page_offset
                )
                fill(int(start), int(column.total_compressed_size))
        table = parquet.read(columns=list(wanted))
        grid = table.column("timestamp_s").to_numpy()
        frame = table.column("frame_time_s").to_numpy()
        out.append((frame - grid) * 1000.0)
    return np.concatenate(out) if out else np.zeros(0)


def _frame_strip(manifest: Mapping[str, Any], root: str) -> dict[str, list[np.ndarray]]:
    """Current frames of `STRIP_SAMPLES` samples spread over the first row group of the
    first shard, per camera (only that row group and the frames it references are read)."""
    from autoe2e.data.shard_reader import ShardReader

    reader = ShardReader(dict(manifest), root, decoded_cache_bytes=0)
    loaded = reader.load(0, row_groups=[0] if reader.can_split(0) else None)
    rows = np.unique(np.linspace(0, loaded.num_rows - 1, STRIP_SAMPLES).round().astype(int))
    vocabulary = list(manifest["cameras"])
    strip: dict[str, list[np.ndarray]] = {camera: [] for camera in vocabulary}
    for row in rows.tolist():
        item = loaded.item(row, vocabulary, world_model_frames=False)
        images = item["images"].numpy()
        for camera, image in zip(loaded.cameras[row], images, strict=True):
            strip[camera].append(image)
    return {camera: frames for camera, frames in strip.items() if frames}


def prepare_sections(manifest_uri: str) -> list[Section]:
    """What the published data set holds: samples per episode, why episodes were quarantined
    and samples dropped, how far decoded frames sit from the 10 Hz grid, and a strip of
    frames per camera. Everything but the histogram and the strip comes from the manifest.
    Each part is built on its own, so one that fails leaves a note instead of the rest."""
    from autoe2e.data import manifest as mf
    from autoe2e.evaluation import plots
    from autoe2e.evaluation.html_report import Section

    manifest = mf.read_manifest(manifest_uri)
    root = storage.parent_uri(manifest_uri)
    episodes = manifest["episodes"]
    quarantined = manifest.get("quarantined", [])
    overview = Section(
        "Dataset",
        paragraphs=[
            f"{manifest.get('num_samples', '?')} samples from {len(episodes)} episodes "
            f"({len(quarantined)} quarantined) in {len(manifest['shards'])} shards; cameras "
            f"{', '.join(manifest['cameras'])}; images {manifest.get('image_size')}",
            f"manifest: {manifest_uri}",
        ],
    )
    counts = {e["episode_id"]: float(e["num_samples"]) for e in episodes}
    if len(counts) <= MAX_EPISODE_BARS:
        overview.images["samples per episode"] = plots.bar_png(counts, "samples per episode")
    else:
        overview.images["samples per episode"] = plots.histogram_png(
            list(counts.values()), "samples per episode", "samples"
        )
    dropped: Counter[str] = Counter()
    for e in episodes:
        dropped.update({k: int(v) for k, v in (e.get("drop_reasons") or {}).items()})
    if dropped:
        overview.images["samples dropped by reason"] = plots.bar_png(
            dict(dropped.most_common()), "samples dropped by reason"
        )
    sections = [overview]

    quarantine = Section("Quarantine")
    if quarantined:
        kinds = Counter(_reason_kind(str(q.get("reason", ""))) for q in quarantined)
        quarantine.images["quarantine reasons"] = plots.bar_png(
            dict(kinds.most_common()), "quarantined episodes by reason"
        )
        quarantine.tables.append([dict(q) for q in quarantined])
    else:
        quarantine.paragraphs.append("no episode was quarantined")
    sections.append(quarantine)

    parts: list[tuple[str, Callable[[], Section]]] = [
        ("frame times", lambda: _frame_time_section(manifest, root)),
        ("sample frames", lambda: _strip_section(manifest, root)),
    ]
    for what, build in parts:
        try:
            sections.append(build())
        except Exception as exc:
            logger.warning("prepare Deck: %s left out (%s: %s)", what, type(exc).__name__, exc)
            sections.append(Section(what.capitalize(), paragraphs=[f"not available: {exc}"]))
    rows = [{k: v for k, v in e.items() if _is_flat(v)} for e in episodes]
    sections.append(Section("Episodes", tables=[rows]))
    return sections


def _is_flat(value: Any) -> bool:
    """A value that fits a table cell: scalars, lists of scalars, one level of mapping (drop
    reasons). Nested records (e.g. an episode's scenario events) would fill the page."""
    if isinstance(value, Mapping):
        return all(not isinstance(v, (Mapping, list, tuple)) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(not isinstance(v, (Mapping, list, tuple)) for v in value)
    return True


def _frame_time_section(manifest: Mapping[str, Any], root: str) -> Section:
    from autoe2e.evaluation import plots
    from autoe2e.evaluation.html_report import Section

    errors = _frame_time_errors_ms(manifest, root)
    section = Section("Frame times")
    shards = min(len(manifest["shards"]), FRAME_TIME_SHARDS)
    if errors.size:
        section.paragraphs.append(
            f"decoded frame time minus 10 Hz grid time over {errors.size} frames of "
            f"{shards} shard(s): median {np.median(errors):.1f} ms, max |error| "
            f"{np.abs(errors).max():.1f} ms"
        )
    section.images["frame-time error"] = plots.histogram_png(
        errors.tolist(), "frame time - grid time", "ms"
    )
    return section


def _strip_section(manifest: Mapping[str, Any], root: str) -> Section:
    from autoe2e.evaluation import plots
    from autoe2e.evaluation.html_report import Section

    strip = _frame_strip(manifest, root)
    return Section(
        "Sample frames",
        paragraphs=["current frames of samples spread over the start of the first shard"],
        images={"frames per camera": plots.frame_strip_png(strip)},
    )


def prepare_deck(manifest_uri: str) -> bool:
    return publish(PREPARE_DECK, lambda: prepare_sections(manifest_uri))


# --------------------------------------------------------------------------- train


def _tracking_candidates(out_uri: str) -> list[str]:
    """Stores that may hold the training run, in the order `pipeline.open_tracker` chooses
    them: MLFLOW_TRACKING_URI or the embedded store under a local OUT_URI, then the local
    fallback stores an outage would have used. Embedded stores are listed only if they exist
    (opening a missing sqlite file would create an empty one)."""
    from autoe2e import pipeline
    from autoe2e.tracking import DEFAULT_FALLBACK_DIR

    out: list[str] = []
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        out.append(env)
    local = not storage.is_s3(out_uri)
    folders = [storage.join_uri(out_uri, pipeline.MLFLOW_DIR)] if local and not env else []
    folders.append(
        storage.join_uri(out_uri, pipeline.MLFLOW_FALLBACK_DIR) if local else DEFAULT_FALLBACK_DIR
    )
    for folder in folders:
        db = os.path.abspath(os.path.join(folder, "mlflow.db"))
        if os.path.isfile(db):
            out.append(f"sqlite:///{db}")
    return out


def training_curves(out_uri: str, run_id: str) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """(tracking URI, metric key -> [(step, value)]) of the run's train/ and val/ metrics,
    from the first store that knows the run. Read from MLflow because only the run has the
    curves: train_summary.json keeps the final values. ("", {}) when no store answers."""
    from mlflow import MlflowClient

    from autoe2e.tracking_server import probe_server

    for uri in _tracking_candidates(out_uri):
        if uri.lower().startswith(("http://", "https://")) and probe_server(uri) is not None:
            logger.warning("training Deck: MLflow at %s unreachable; trying the next store", uri)
            continue
        client = MlflowClient(tracking_uri=uri)
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            logger.info("training Deck: run %s not at %s (%s)", run_id, uri, type(exc).__name__)
            continue
        keys = sorted(k for k in run.data.metrics if k.startswith(("train/", "val/")))
        curves: dict[str, list[tuple[int, float]]] = {}
        selected = keys if len(keys) <= MAX_CURVES else _curve_keys(keys)
        for key in selected:
            history = client.get_metric_history(run_id, key)
            curves[key] = [(int(m.step), float(m.value)) for m in history]
        return uri, curves
    return "", {}


#: The train Deck's figures: title -> which metric keys it draws.
CURVE_GROUPS: dict[str, Callable[[str], bool]] = {
    "training loss": lambda k: k.startswith("train/") and "loss" in k,
    "validation error (m)": lambda k: k.startswith("val/") and k.endswith("_m"),
    "validation JEPA L1": lambda k: k.startswith("val/jepa"),
}


def _curve_keys(keys: list[str]) -> list[str]:
    """The curves worth a request when a run has many metrics: losses and validation errors."""
    chosen = [k for k in keys if "loss" in k or (k.startswith("val/") and k.endswith("_m"))]
    return chosen[:MAX_CURVES]


def train_sections(out_uri: str, run_id: str, metrics: Mapping[str, float]) -> list[Section]:
    """Loss and validation curves of the run, and the final/best numbers training returned."""
    from autoe2e.evaluation import plots
    from autoe2e.evaluation.html_report import Section

    uri, curves = training_curves(out_uri, run_id)
    sections: list[Section] = []
    curve_section = Section("Curves")
    if curves:
        curve_section.paragraphs.append(f"MLflow run {run_id} at {uri}")
        for title, belongs in CURVE_GROUPS.items():
            series = {k: v for k, v in curves.items() if belongs(k)}
            if any(series.values()):
                curve_section.images[title] = plots.curves_png(series, title)
    else:
        curve_section.paragraphs.append(
            f"no MLflow store reachable from here holds run {run_id}; curves not shown"
        )
    sections.append(curve_section)
    if metrics:
        rows = [{"metric": k, "value": v} for k, v in sorted(metrics.items())]
        sections.append(Section("Final metrics", tables=[rows]))
    return sections


def train_deck(out_uri: str, run_id: str, metrics: Mapping[str, float]) -> bool:
    if not _is_main_rank():
        return False
    return publish(TRAIN_DECK, lambda: train_sections(out_uri, run_id, metrics))


# --------------------------------------------------------------------------- evaluate


def _html_uri(report_uri: str) -> str:
    from autoe2e.evaluation.html_report import REPORT_HTML_NAME

    return storage.join_uri(storage.parent_uri(report_uri), REPORT_HTML_NAME)


def evaluate_sections(report_uri: str) -> list[Section]:
    """The sections of the report at `report_uri` (`html_report.report_sections`)."""
    from autoe2e.evaluation.html_report import report_sections

    return report_sections(json.loads(storage.read_bytes(report_uri)))


def evaluate_deck(
    report_uri: str,
    tracking_uri: str = "",
    run_id: str = "",
    sections: Sequence[Section] | None = None,
) -> bool:
    """The evaluation Deck: `sections` when evaluation hands them over, else what report.json
    holds. The same page is kept as report.html next to report.json (and logged to the
    MLflow run) unless evaluation already wrote one there: then that richer page stands."""

    page = _page_body(report_uri) if sections is None else None
    if page is not None:  # evaluate wrote the full page (with the bird's-eye samples): show it
        import flytekit

        try:
            flytekit.Deck(EVALUATE_DECK, page)
        except Exception as exc:  # a Deck must never fail the task
            logger.warning("Deck %r not rendered: %s: %s", EVALUATE_DECK, type(exc).__name__, exc)
            return False
        return True

    def build() -> list[Section]:
        built = list(sections) if sections is not None else evaluate_sections(report_uri)
        _keep_report_html(report_uri, built, tracking_uri, run_id)
        return built

    return publish(EVALUATE_DECK, build)


def _page_body(report_uri: str) -> str | None:
    """The <body> of the report.html next to `report_uri`, or None when there is none."""
    uri = _html_uri(report_uri)
    try:
        if not storage.exists(uri):
            return None
        text = storage.read_bytes(uri).decode()
    except (storage.StorageError, UnicodeDecodeError) as exc:
        logger.warning("%s unreadable for the Deck: %s", uri, exc)
        return None
    start, end = text.find("<body"), text.rfind("</body>")
    if start < 0 or end < 0:
        return text
    styles = "".join(re.findall(r"<style.*?</style>", text[:start], flags=re.S))
    return styles + text[text.index(">", start) + 1 : end]


def _keep_report_html(
    report_uri: str, sections: Sequence[Section], tracking_uri: str, run_id: str
) -> None:
    from autoe2e.evaluation.html_report import REPORT_HTML_NAME, render_html, write_report_html

    uri = _html_uri(report_uri)
    try:
        if storage.exists(uri):
            return
        page = render_html("AutoE2E evaluation", sections)
        write_report_html(uri, page)
        if tracking_uri and run_id:
            from mlflow import MlflowClient

            MlflowClient(tracking_uri=tracking_uri).log_text(run_id, page, REPORT_HTML_NAME)
    except Exception as exc:  # the Deck itself can still be shown
        logger.warning("%s not written: %s: %s", uri, type(exc).__name__, exc)
