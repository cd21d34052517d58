"""Shard validation derived from `autoe2e.data.schema` (pandera, pyarrow backend).

Why pandera's pyarrow backend: shards are Arrow tables already, so validation needs no pandas
copy of the JPEG column. That backend cannot declare binary or list dtypes, so those columns
are checked with vectorised Arrow compute checks instead (magic bytes, list lengths from the
symbolic shapes), and the exact Arrow types are compared against the declared schema.
Everything is collected lazily so one error lists every failure.
"""

from __future__ import annotations

import math

import numpy as np
import pandera.pyarrow as ppa
import pyarrow as pa
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from autoe2e.data.schema import (
    FRAME_FIELDS,
    FRAME_SCHEMA,
    SAMPLE_FIELDS,
    SAMPLE_SCHEMA,
    FieldSpec,
)

#: Leading bytes every binary column must start with.
MAGIC_BYTES: dict[str, bytes] = {"jpeg": b"\xff\xd8\xff", "map_raster_png": b"\x89PNG\r\n\x1a\n"}


class ShardValidationError(ValueError):
    """A shard does not match the declared schema; the message lists every failure."""


def _binary_check(spec: FieldSpec) -> ppa.Check:
    magic = MAGIC_BYTES[spec.name]

    def starts_with_magic(data: ppa.PyArrowData) -> pa.Array:
        column = data.table[data.key]
        head = pc.binary_slice(column, 0, len(magic))
        return pc.equal(head, pa.scalar(magic, pa.binary()))

    return ppa.Check(starts_with_magic, name=f"{spec.name}_magic_bytes")


def _length_check(spec: FieldSpec, dims: dict[str, int]) -> ppa.Check:
    """Each list's length = product of the resolved shape; 'V' comes from the row's cameras."""
    fixed = math.prod(d if isinstance(d, int) else dims[d] for d in spec.shape if d != "V")
    per_view = "V" in spec.shape

    def length_matches(data: ppa.PyArrowData) -> pa.Array:
        lengths = pc.list_value_length(data.table[data.key])
        if per_view:
            views = pc.list_value_length(data.table["cameras"])
            expected = pc.multiply(views, pa.scalar(fixed, pa.int32()))
        else:
            expected = pa.scalar(fixed, pa.int32())
        return pc.equal(lengths, expected)

    return ppa.Check(length_matches, name=f"{spec.name}_length")


def pandera_schema(fields: tuple[FieldSpec, ...], dims: dict[str, int]) -> ppa.DataFrameSchema:
    """pandera schema for a FieldSpec list; ``dims`` resolves H, F, E, T, R (V is per row)."""
    columns: dict[str, ppa.Column] = {}
    for spec in fields:
        if pa.types.is_binary(spec.arrow_type):
            columns[spec.name] = ppa.Column(None, _binary_check(spec), nullable=False)
        elif pa.types.is_list(spec.arrow_type):
            columns[spec.name] = ppa.Column(None, _length_check(spec, dims), nullable=False)
        else:
            columns[spec.name] = ppa.Column(spec.arrow_type, nullable=False)
    return ppa.DataFrameSchema(columns, strict=True, ordered=True)


def _type_failures(table: pa.Table, schema: pa.Schema, label: str) -> list[str]:
    failures = []
    for expected in schema:
        if expected.name in table.column_names:
            actual = table.schema.field(expected.name).type
            if actual != expected.type:
                failures.append(f"{label}.{expected.name}: type {actual}, expected {expected.type}")
    return failures


def _reference_failures(frames: pa.Table, samples: pa.Table) -> list[str]:
    """Every frame id a sample references (>= 0) must exist in the frames table, once."""
    ids = np.asarray(frames.column("frame_id").to_numpy())
    failures = []
    if len(np.unique(ids)) != len(ids):
        failures.append("frames.frame_id: duplicate ids")
    for name in ("current_frame_ids", "history_frame_ids", "future_frame_ids"):
        refs = np.asarray(pc.list_flatten(samples.column(name)).to_numpy())
        refs = refs[refs >= 0]
        unknown = np.setdiff1d(refs, ids)
        if unknown.size:
            failures.append(
                f"samples.{name}: {unknown.size} ids not in frames (e.g. {unknown[:5]})"
            )
    failures += _mask_failures(samples)
    return failures


def _step_ids_agree(ids: pa.ChunkedArray, valid: pa.ChunkedArray) -> int:
    """Number of window steps whose frame ids disagree with their valid flag. The camera count
    V may differ between episodes of one shard, so rows are grouped by list length."""
    steps = len(valid[0]) if len(valid) else 0
    valid_np = np.asarray(pc.list_flatten(valid).to_numpy(zero_copy_only=False)).reshape(-1, steps)
    lengths = np.asarray(pc.list_value_length(ids).to_numpy())
    ids = ids.combine_chunks()
    bad = 0
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        chosen = pc.list_flatten(ids.take(pa.array(rows))).to_numpy()
        step_ids = np.asarray(chosen).reshape(len(rows), steps, -1)
        agree = np.where(valid_np[rows], (step_ids >= 0).all(axis=-1), (step_ids < 0).all(axis=-1))
        bad += int((~agree).sum())
    return bad


def _mask_failures(samples: pa.Table) -> list[str]:
    """Ids and masks agree: current frames always exist; a window step is valid exactly when
    all its frame ids are >= 0, and an invalid step references no frame."""
    if samples.num_rows == 0:
        return []
    failures = []
    current = np.asarray(pc.list_flatten(samples.column("current_frame_ids")).to_numpy())
    if (current < 0).any():
        failures.append(f"samples.current_frame_ids: {(current < 0).sum()} missing (-1) ids")
    for ids_name, valid_name in (
        ("history_frame_ids", "history_valid"),
        ("future_frame_ids", "future_valid"),
    ):
        bad = _step_ids_agree(samples.column(ids_name), samples.column(valid_name))
        if bad:
            failures.append(
                f"samples.{ids_name}: {bad} steps disagree with {valid_name} "
                "(valid steps need every frame id, invalid steps must hold -1)"
            )
    return failures


def validate_shard(frames: pa.Table, samples: pa.Table, dims: dict[str, int], label: str) -> None:
    """Validate one shard pair; raise `ShardValidationError` listing every failure."""
    failures: list[str] = []
    failures += _type_failures(frames, FRAME_SCHEMA, "frames")
    failures += _type_failures(samples, SAMPLE_SCHEMA, "samples")
    for table, fields, part in (
        (frames, FRAME_FIELDS, "frames"),
        (samples, SAMPLE_FIELDS, "samples"),
    ):
        try:
            pandera_schema(fields, dims).validate(table, lazy=True)
        except SchemaErrors as exc:
            cases = exc.failure_cases.to_pylist()
            for case in cases[:20]:
                failures.append(
                    f"{part}.{case.get('column')}: check {case.get('check')} failed at row "
                    f"{case.get('index')} ({str(case.get('failure_case'))[:60]})"
                )
            if len(cases) > 20:
                failures.append(f"{part}: ... {len(cases) - 20} more failures")
    if not failures:
        failures += _reference_failures(frames, samples)
    if failures:
        raise ShardValidationError(f"shard {label} failed validation:\n  " + "\n  ".join(failures))
