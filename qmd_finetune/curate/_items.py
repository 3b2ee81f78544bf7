"""Flat item columns for the curate stages: one entry per output item, no group-by needed.

A frame's ``output`` (List(List(Utf8))) becomes flat ``kind``/``text`` Series plus each
row's item count. Per-row results come back with ``np.add.reduceat`` over the counts, and
new outputs are rebuilt from flat columns and counts as Arrow list offsets (zero copy).
This is what keeps the stages at millions of rows without a Python loop or a hash join.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

OUTPUT_TYPE = pl.List(pl.List(pl.Utf8))


@dataclass
class Flat:
    lengths: np.ndarray  # items per row (int64)
    row: np.ndarray  # row number of every item (int64)
    kind: pl.Series  # Utf8, "" for a missing kind
    text: pl.Series  # Utf8, "" for a missing text

    @property
    def starts(self) -> np.ndarray:
        starts = np.zeros(len(self.lengths), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=starts[1:])
        return starts


def flatten(output: pl.Series) -> Flat:
    output = output.fill_null(pl.lit([], OUTPUT_TYPE)) if output.null_count() else output
    lengths = output.list.len().cast(pl.Int64).to_numpy()
    items = output.explode(empty_as_null=False, keep_nulls=False)
    kind = items.list.get(0, null_on_oob=True).fill_null("").rename("kind")
    text = items.list.get(1, null_on_oob=True).fill_null("").rename("text")
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    return Flat(lengths=lengths, row=row, kind=kind, text=text)


def per_row_sum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of a flat numeric/boolean array per row (0 for rows without items)."""
    out = np.zeros(len(lengths), dtype=np.int64)
    nonempty = lengths > 0
    if values.size == 0 or not nonempty.any():
        return out
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    out[nonempty] = np.add.reduceat(values.astype(np.int64), starts[nonempty])
    return out


def per_row_min(values: np.ndarray, lengths: np.ndarray, empty: int) -> np.ndarray:
    out = np.full(len(lengths), empty, dtype=np.int64)
    nonempty = lengths > 0
    if values.size == 0 or not nonempty.any():
        return out
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    out[nonempty] = np.minimum.reduceat(values.astype(np.int64), starts[nonempty])
    return out


def rebuild(
    kind: pl.Series, text: pl.Series, lengths: np.ndarray, order: np.ndarray | None = None
) -> pl.Series:
    """An ``output`` Series from flat kind/text and per-row item counts.

    ``order`` (optional) is a permutation of the flat items to apply first (e.g. hyde first).
    Kind and text are interleaved with one polars ``gather`` (string views: no bytes copied)
    and wrapped in Arrow list offsets; far cheaper than ``concat_list`` at millions of items.
    """
    m = len(kind)
    positions = np.arange(m, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    interleaved = np.empty(2 * m, dtype=np.int64)
    interleaved[0::2] = positions
    interleaved[1::2] = positions + m
    values = pl.concat([kind.cast(pl.Utf8), text.cast(pl.Utf8)]).gather(interleaved)
    values = values.to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    pairs = pa.LargeListArray.from_arrays(pa.array(np.arange(0, 2 * m + 1, 2, dtype=np.int64)), values)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    array = pa.LargeListArray.from_arrays(pa.array(offsets), pairs)
    return pl.Series("output", array).cast(OUTPUT_TYPE)


def replace_rows(series: pl.Series, rows: np.ndarray, values: pl.Series) -> pl.Series:
    """``series`` with ``series[rows[i]] = values[i]`` (works for nested lists, unlike scatter)."""
    if len(rows) == 0:
        return series
    index = np.arange(len(series), dtype=np.int64)
    index[rows] = len(series) + np.arange(len(rows), dtype=np.int64)
    return pl.concat([series, values.cast(series.dtype).rename(series.name)]).gather(index)


def unique_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first occurrence of each distinct key, id of every entry's key); hash based."""
    hashes = pl.DataFrame({"h": keys})
    first = np.flatnonzero(hashes.select(pl.col("h").is_first_distinct()).to_series().to_numpy())
    ids = pl.DataFrame({"h": keys[first], "id": np.arange(len(first), dtype=np.int64)})
    inverse = hashes.join(ids, on="h", how="left", maintain_order="left")["id"].to_numpy()
    return first, inverse
