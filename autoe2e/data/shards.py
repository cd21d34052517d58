"""Group prepared episodes into shard pairs and serialise them as Parquet bytes.

Whole episodes go into one shard (never split), so a reader can select episodes by shard and
history/future frame references never cross files. JPEG/PNG columns are written uncompressed
(compression gains nothing on them) and numeric columns with zstd; pyarrow has no byte-based
row-group limit, so the row count per group is derived from the average row size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autoe2e.data.episode import EpisodeSamples
from autoe2e.data.schema import FRAME_FIELDS, SAMPLE_FIELDS, FieldSpec, uncompressed_columns


class _Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


E = TypeVar("E", bound=_Sized)

FRAME_ID_COLUMNS = ("current_frame_ids", "history_frame_ids", "future_frame_ids")


@dataclass
class ShardBytes:
    """One serialised shard pair, ready to publish."""

    index: int
    samples_key: str
    frames_key: str
    samples_bytes: bytes
    frames_bytes: bytes
    num_rows: int
    num_frames: int
    episodes: list[str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.samples_bytes).hexdigest()

    @property
    def frames_sha256(self) -> str:
        return hashlib.sha256(self.frames_bytes).hexdigest()


def shard_keys(index: int) -> tuple[str, str]:
    """Deterministic (samples, frames) keys relative to the dataset root."""
    stem = f"shards/shard-{index:05d}"
    return f"{stem}.samples.parquet", f"{stem}.frames.parquet"


def plan_shards(episodes: Sequence[E], target_bytes: int) -> list[list[E]]:
    """Greedy grouping by ``nbytes`` in the given order; a shard closes before it would exceed
    the target. Only sizes are read, so episodes may still be on storage."""
    groups: list[list[E]] = []
    current: list[E] = []
    size = 0
    for episode in episodes:
        if current and size + episode.nbytes > target_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(episode)
        size += episode.nbytes
    if current:
        groups.append(current)
    return groups


def _shift_ids(column: pa.ChunkedArray, offset: int) -> pa.Array:
    """Add ``offset`` to every non-negative id inside a list<int64> column."""
    array = column.combine_chunks()
    values = np.asarray(array.values.to_numpy())
    shifted = np.where(values >= 0, values + offset, values)
    return pa.ListArray.from_arrays(array.offsets, pa.array(shifted, pa.int64()), type=array.type)


def combine(group: list[EpisodeSamples]) -> tuple[pa.Table, pa.Table]:
    """Concatenate episodes into one (frames, samples) pair with shard-unique frame ids."""
    frames_parts, samples_parts = [], []
    offset = 0
    for episode in group:
        frames = episode.frames.set_column(
            0, "frame_id", pc.add(episode.frames.column("frame_id"), pa.scalar(offset, pa.int64()))
        )
        samples = episode.samples
        for name in FRAME_ID_COLUMNS:
            index = samples.schema.get_field_index(name)
            samples = samples.set_column(
                index, samples.schema.field(index), _shift_ids(samples.column(name), offset)
            )
        frames_parts.append(frames)
        samples_parts.append(samples)
        offset += episode.frames.num_rows
    return (
        pa.concat_tables(frames_parts).combine_chunks(),
        pa.concat_tables(samples_parts).combine_chunks(),
    )


def to_parquet_bytes(
    table: pa.Table, fields: tuple[FieldSpec, ...], row_group_target_bytes: int
) -> bytes:
    """Parquet bytes: raw binary columns uncompressed, the rest zstd, row groups by size."""
    raw = set(uncompressed_columns(fields))
    compression = {f.name: ("NONE" if f.name in raw else "ZSTD") for f in fields}
    dictionary = [f.name for f in fields if pa.types.is_string(f.arrow_type)]
    bytes_per_row = max(1, table.nbytes // max(1, table.num_rows))
    rows = max(1, row_group_target_bytes // bytes_per_row)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=compression,
        use_dictionary=dictionary,
        row_group_size=rows,
    )
    return sink.getvalue().to_pybytes()


def serialise(index: int, group: list[EpisodeSamples], row_group_target_bytes: int) -> ShardBytes:
    frames, samples = combine(group)
    samples_key, frames_key = shard_keys(index)
    return ShardBytes(
        index=index,
        samples_key=samples_key,
        frames_key=frames_key,
        samples_bytes=to_parquet_bytes(samples, SAMPLE_FIELDS, row_group_target_bytes),
        frames_bytes=to_parquet_bytes(frames, FRAME_FIELDS, row_group_target_bytes),
        num_rows=samples.num_rows,
        num_frames=frames.num_rows,
        episodes=[episode.episode_id for episode in group],
    )


def read_parquet_bytes(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def file_parts(data: bytes, id_column: str | None = None) -> dict[str, Any]:
    """Byte ranges and sha256 of each row group and of the footer of one Parquet file.

    The manifest records them so that a reader can fetch and verify a single row group (a
    ranged read of its bytes plus the footer) instead of the whole file: that is what lets the
    streaming loader split a shard between workers when there are fewer shards than workers.
    With ``id_column``, each row group also records that column's [min, max] (frames files:
    which frame ids it holds).
    """
    metadata = pq.read_metadata(pa.BufferReader(data))
    footer_length = struct.unpack("<I", data[-8:-4])[0]
    footer_offset = len(data) - 8 - footer_length
    groups = []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        starts, ends = [], []
        for c in range(group.num_columns):
            column = group.column(c)
            start = (
                column.dictionary_page_offset
                if column.has_dictionary_page
                else column.data_page_offset
            )
            starts.append(start)
            ends.append(start + column.total_compressed_size)
        offset, end = min(starts), max(ends)
        entry: dict[str, Any] = {
            "offset": offset,
            "length": end - offset,
            "rows": group.num_rows,
            "sha256": hashlib.sha256(data[offset:end]).hexdigest(),
        }
        if id_column is not None:
            index = metadata.schema.to_arrow_schema().get_field_index(id_column)
            stats = group.column(index).statistics
            entry["ids"] = [int(stats.min), int(stats.max)]
        groups.append(entry)
    footer = {
        "offset": footer_offset,
        "length": len(data) - footer_offset,
        "sha256": hashlib.sha256(data[footer_offset:]).hexdigest(),
    }
    return {"row_groups": groups, "footer": footer}
