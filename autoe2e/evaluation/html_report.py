"""A self-contained HTML page (or Deck fragment) of headed sections: text, tables and images.

One structure, `Section`, feeds both the Flyte Decks and the ``report.html`` written next to
``report.json``, so what a person sees in the Flyte console and in the stored report is the
same. Images are embedded as base64 data URIs: the file opens anywhere (a browser on a
downloaded artifact, the MLflow UI, an S3 console preview) without the PNGs next to it. Every
piece of text is HTML-escaped (episode ids, quarantine reasons and config values come from
data, not from us). Plain string building with `html.escape` rather than a template engine:
jinja2 is only present transitively, and the markup here is a few elements.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoe2e import storage

REPORT_HTML_NAME = "report.html"

#: Rows drawn per table; beyond this a note says how many were left out (a per-episode table
#: of a large data set would otherwise make a page of megabytes).
MAX_TABLE_ROWS = 500

#: Columns that name a row; dict-row tables show them first.
NAME_COLUMNS = ("planner", "predictor", "name", "scenario", "episode", "episode_id", "alias")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"

#: Scoped to `.autoe2e-report` so the fragment does not restyle the Flyte Deck page around it.
_STYLE = """
.autoe2e-report { font-family: system-ui, sans-serif; color: #222; max-width: 1200px; }
.autoe2e-report h1 { font-size: 1.5em; }
.autoe2e-report h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
.autoe2e-report table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
.autoe2e-report caption { text-align: left; font-weight: 600; padding: 2px 0; }
.autoe2e-report th, .autoe2e-report td { border: 1px solid #ccc; padding: 2px 8px; }
.autoe2e-report th { background: #f3f3f3; text-align: left; }
.autoe2e-report td.num { text-align: right; font-variant-numeric: tabular-nums; }
.autoe2e-report figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
.autoe2e-report figcaption { font-size: 0.8em; color: #555; }
.autoe2e-report img { max-width: 100%; }
.autoe2e-report .note { color: #666; font-size: 0.85em; }
"""


@dataclass
class Table:
    """A header and rows of cells; cells may be numbers, None, bools, strings or lists."""

    header: list[str]
    rows: list[list[Any]]
    caption: str = ""

    @classmethod
    def transposed(cls, values: Mapping[str, Any], caption: str = "") -> Table:
        """One row per key: a single record with many fields reads better down than across."""
        return cls(
            header=["name", "value"], rows=[[k, v] for k, v in values.items()], caption=caption
        )

    @classmethod
    def from_dicts(
        cls, rows: Sequence[Mapping[str, Any]], caption: str = "", leading: Sequence[str] = ()
    ) -> Table:
        """Columns in order of first appearance over all rows (rows may lack some keys), after
        the ``leading`` ones that are present (report.json is written with sorted keys, which
        would put a row's name anywhere)."""
        present = {str(k) for row in rows for k in row}
        header: list[str] = [k for k in leading if k in present]
        for row in rows:
            header += [str(k) for k in row if str(k) not in header]
        body = [[row.get(k) for k in header] for row in rows]
        return cls(header=header, rows=body, caption=caption)


@dataclass
class Section:
    """One headed part of a report/Deck.

    ``tables`` holds `Table` objects or lists of dict rows (turned into tables); ``images``
    maps a caption to PNG (or JPEG) bytes, embedded in the page in insertion order.
    """

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table | Sequence[Mapping[str, Any]]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)


def format_cell(value: Any) -> str:
    """Readable cell text: 4 significant digits for floats, "n/a" for None/NaN (reports use
    None for undefined means), lists joined with commas."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {format_cell(v)}" for k, v in value.items())
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def image_data_uri(data: bytes) -> str:
    """``data:`` URI for PNG/JPEG bytes; anything else raises rather than embedding a picture
    the browser will show as broken."""
    if data.startswith(_PNG_SIGNATURE):
        mime = "image/png"
    elif data.startswith(_JPEG_SIGNATURE):
        mime = "image/jpeg"
    else:
        raise ValueError("image bytes are neither PNG nor JPEG")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _table_html(table: Table) -> str:
    esc = html.escape
    parts = ["<table>"]
    if table.caption:
        parts.append(f"<caption>{esc(table.caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header) + "</tr>")
    parts.append("</thead><tbody>")
    for row in table.rows[:MAX_TABLE_ROWS]:
        cells = []
        for value in row:
            css = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{css}>{esc(format_cell(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    if len(table.rows) > MAX_TABLE_ROWS:
        left_out = len(table.rows) - MAX_TABLE_ROWS
        parts.append(f'<p class="note">{left_out} more rows not shown</p>')
    return "".join(parts)


def _section_html(section: Section) -> str:
    esc = html.escape
    parts = [f"<section><h2>{esc(section.heading)}</h2>"]
    parts += [f"<p>{esc(text)}</p>" for text in section.paragraphs]
    for table in section.tables:
        if not isinstance(table, Table):
            table = Table.from_dicts(table, leading=NAME_COLUMNS)
        parts.append(_table_html(table))
    for name, data in section.images.items():
        parts.append(
            f'<figure><img src="{image_data_uri(data)}" alt="{esc(name, quote=True)}">'
            f"<figcaption>{esc(name)}</figcaption></figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def render_fragment(sections: Sequence[Section], title: str = "") -> str:
    """The sections as one ``<div>`` with its own scoped style: what a Flyte Deck embeds."""
    head = f"<h1>{html.escape(title)}</h1>\n" if title else ""
    body = "\n".join(_section_html(s) for s in sections)
    return f'<div class="autoe2e-report"><style>{_STYLE}</style>\n{head}{body}\n</div>'


def render_html(title: str, sections: Sequence[Section]) -> str:
    """A complete, self-contained HTML document (UTF-8) of the sections."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>\n"
        f"<body>\n{render_fragment(sections, title)}\n</body></html>\n"
    )


def write_report_html(uri: str, html_text: str) -> None:
    """Write the page to a local path or ``s3://`` URI (atomically locally, like all outputs)."""
    storage.write_bytes(uri, html_text.encode("utf-8"))


# --------------------------------------------------------------------------- report.json


def _horizon_key(horizon_s: float) -> str:
    """The report's per-horizon metric name (`collect` names them ``l2_{h:g}s``)."""
    return f"l2_{horizon_s:g}s_m"


def report_sections(report: Mapping[str, Any]) -> list[Section]:
    """Sections for what a ``report.json`` holds: the gate, planner metrics with error vs
    horizon, the world model's JEPA error against its null predictors, speed bins and
    episodes. Parts the report lacks are left out, so older and newer reports both render."""
    from autoe2e.evaluation import plots

    sections: list[Section] = []
    gate = report.get("gate") or {}
    if gate:
        verdict = "passed" if gate.get("passed") else "failed"
        sections.append(
            Section(
                heading=f"Promotion gate: {verdict}",
                paragraphs=[str(r) for r in gate.get("reasons", [])]
                + [
                    f"{report.get('num_episodes', '?')} held-out episodes, "
                    f"{report.get('num_samples', '?')} samples"
                ],
            )
        )

    planner = report.get("planner") or {}
    entries: dict[str, Mapping[str, Any]] = {}
    if "model" in planner:
        entries["model"] = planner["model"]
    entries.update(planner.get("baselines") or {})
    if entries:
        horizons = [float(h) for h in report.get("horizons_s", [])]
        metric_keys = ["ade_m", "fde_m"] + [_horizon_key(h) for h in horizons]
        rows = [
            {
                "planner": name,
                **{key: entry.get(key) for key in metric_keys},
                # metrics newer reports add (e.g. ADE@3s) after the standard ones
                **{key: value for key, value in entry.items() if key != "ci95"},
                "ADE 95% CI": (entry.get("ci95") or {}).get("ade_m"),
            }
            for name, entry in entries.items()
        ]
        images: dict[str, bytes] = {}
        curves = {name: [e.get(_horizon_key(h)) for h in horizons] for name, e in entries.items()}
        if horizons and any(v is not None for c in curves.values() for v in c):
            images["L2 error vs horizon"] = plots.error_vs_horizon_png(
                curves, dt_s=1.0, horizons_s=horizons
            )
        tables: list[Table | Sequence[Mapping[str, Any]]] = [
            Table.from_dicts(rows, caption="held-out metrics (metres)")
        ]
        comparisons = report.get("comparisons") or {}
        if comparisons:
            tables.append(Table.transposed(comparisons, caption="paired differences (metres)"))
        convention = [str(report["convention"])] if report.get("convention") else []
        sections.append(
            Section("Planner vs baselines", paragraphs=convention, tables=tables, images=images)
        )

    world = report.get("world_model") or {}
    diagnostics = report.get("world_model_diagnostics") or {}
    if world.get("jepa_l1") or diagnostics:
        sections.append(_world_model_section(world, diagnostics))

    for key, heading in (("ablations", "Ablations"), ("trained_baselines", "Trained baselines")):
        entries = report.get(key) or {}
        if entries:
            rows = [
                {"name": name, **{k: v for k, v in entry.items() if k != "ci95"}}
                for name, entry in entries.items()
            ]
            sections.append(Section(heading, tables=[rows]))
    if report.get("by_scenario"):
        sections.append(Section("By scenario", tables=[list(report["by_scenario"])]))
    if report.get("by_speed"):
        sections.append(Section(heading="By speed", tables=[list(report["by_speed"])]))
    per_episode = report.get("per_episode") or {}
    if per_episode:
        rows = [{"episode": name, **values} for name, values in per_episode.items()]
        sections.append(Section(heading="Per episode", tables=[rows]))
    promotion = report.get("promotion")
    if promotion:
        sections.append(Section(heading="Registry", tables=[Table.transposed(dict(promotion))]))
    return sections


def _world_model_section(world: Mapping[str, Any], diagnostics: Mapping[str, Any]) -> Section:
    """JEPA error of the world model next to the null predictors: per horizon as grouped bars
    when the report has per-horizon numbers (``world_model_diagnostics.per_horizon``), the
    overall means as a table, and the collapse indicators (RankMe, feature std) as a table."""
    from autoe2e.evaluation import plots

    section = Section("World model")
    per_horizon = diagnostics.get("per_horizon") or {}
    for metric, title in (("l1", "JEPA L1 per horizon"), ("cosine", "JEPA cosine per horizon")):
        # the model first: it gets the model colour and the first bar of each group
        found = per_horizon.get(metric) or {}
        curves = {**({"model": found["model"]} if "model" in found else {}), **found}
        if curves and metric == "l1":
            section.images[title] = plots.jepa_horizons_png(curves)
        if curves:
            steps = max(len(v) for v in curves.values())
            rows = [
                {"predictor": name, **{f"h{k + 1}": v for k, v in enumerate(values)}}
                for name, values in curves.items()
            ]
            section.tables.append(Table.from_dicts(rows, caption=f"{title} ({steps} steps)"))
    jepa = world.get("jepa_l1") or {}
    if jepa:
        rows = [{"predictor": k, "JEPA L1 (all horizons)": v} for k, v in jepa.items()]
        section.tables.append(Table.from_dicts(rows, caption="mean over horizons"))
    flags = {k: v for src in (world, diagnostics) for k, v in src.items() if k.startswith("beats_")}
    if flags:
        section.paragraphs.append(
            "; ".join(f"{k.replace('_', ' ')}: {format_cell(v)}" for k, v in flags.items())
        )
    scalars = {
        k: v
        for k, v in diagnostics.items()
        if k != "per_horizon" and not k.startswith("beats_") and not isinstance(v, Mapping)
    }
    if scalars:
        section.tables.append(Table.transposed(scalars, caption="collapse indicators"))
    return section
