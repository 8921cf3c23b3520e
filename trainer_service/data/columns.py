"""Turning a table's string columns into ids, weights and names, refusing bad values with a message
that names the file, the line (or Parquet row) and the column. Everything is vectorized (pyarrow
compute and numpy); only the first offending row is reported.

Ids and weights lose surrounding ASCII whitespace (`` 7`` is ``7``); names lose surrounding
whitespace of any kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer_service.data.errors import DataError
from trainer_service.data.tables import MAX_ID_CHARS, MAX_NAME_CHARS, Table, quoted


def _fail(table: Table, row: int, column: str, message: str) -> DataError:
    return DataError(f"{table.file.shown}: {table.where(int(row))}, column {column!r}: {message}")


def _at(table: Table, column: str, rows: np.ndarray) -> pa.ChunkedArray:
    values = table.columns[column]
    return values if rows.size == len(values) else values.take(pa.array(rows))


def _byte_lengths(values: pa.ChunkedArray) -> np.ndarray:
    return pc.binary_length(values).to_numpy(zero_copy_only=False)


def _combined(values: pa.ChunkedArray) -> pa.Array:
    """``values`` as one array (64-bit offsets when 32-bit ones would not fit)."""
    if pa.types.is_string(values.type) and sum(chunk.nbytes for chunk in values.chunks) >= 2**31 - 2**20:
        values = values.cast(pa.large_string())
    return values.combine_chunks()


def _first_unparsed(text: pa.ChunkedArray) -> int:
    """The first index of ``text`` that pyarrow cannot cast to float64, given that some is (error
    path): bisection on prefixes, each cast in C++."""
    good, bad = 0, len(text)  # text[:good] casts; text[:bad] does not
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            pc.cast(text.slice(0, middle), pa.float64())
            good = middle
        except pa.ArrowInvalid:
            bad = middle
    return good


def data_rows(table: Table) -> np.ndarray:
    """(R,) int64: the rows to use: not blank (every read field empty), not a repeated header
    line. A repeated header (two files concatenated) is an error."""
    blank = np.ones(table.num_rows, dtype=bool)
    for values in table.columns.values():
        blank &= _byte_lengths(values) == 0
    if table.header is not None and not table.parquet and table.columns:
        # Cheap screen on one column, then an exact check of the few candidates.
        name, values = next(iter(table.columns.items()))
        candidates = np.flatnonzero(pc.ends_with(values, name).to_numpy(zero_copy_only=False))
        if candidates.size:
            repeated = np.ones(candidates.size, dtype=bool)
            for name, values in table.columns.items():
                found = pc.utf8_ltrim(pc.utf8_trim_whitespace(values.take(pa.array(candidates))), characters="/#")
                repeated &= np.asarray(pc.equal(found, name).to_numpy(zero_copy_only=False), dtype=bool)
            if repeated.any():
                row = int(candidates[np.flatnonzero(repeated)[0]])
                raise DataError(f"{table.file.shown}: {table.where(row)} repeats the header line "
                                "(two files concatenated?); expected data")
    return np.flatnonzero(~blank)


def ids(table: Table, column: str, rows: np.ndarray, what: str) -> pa.ChunkedArray:
    """(R,) strings: the ids in ``column`` at ``rows``, surrounding whitespace removed. Refuses an
    empty id, one longer than ``MAX_ID_CHARS`` or holding a line break, and floating-point
    Parquet columns."""
    if column in table.floating:
        raise DataError(f"{table.file.shown}: column {column!r} holds floating-point numbers; {what}s must "
                        "be integers or strings (is 1.0 the same id as 1?)")
    values = pc.ascii_trim_whitespace(_at(table, column, rows))
    lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise _fail(table, rows[empty[0]], column, f"empty {what}")
    long = np.flatnonzero(lengths > MAX_ID_CHARS)
    if long.size:
        raise _fail(table, rows[long[0]], column,
                    f"{what} is {int(lengths[long[0]]):,} characters long (at most {MAX_ID_CHARS})")
    # A line break can only come from a quoted field (or Parquet): a quote that is never closed
    # swallows the lines after it into one value.
    quoted_text = table.parquet or (table.info is not None and table.info.has_quote)
    breaks = np.flatnonzero(pc.or_(pc.match_substring(values, "\n"), pc.match_substring(values, "\r"))
                            .to_numpy(zero_copy_only=False)) if quoted_text else np.zeros(0, dtype=np.int64)
    if breaks.size:
        raise _fail(table, rows[breaks[0]], column, f"{what} {quoted(values[int(breaks[0])].as_py())} holds a "
                    "line break (a quote that is never closed?)")
    return values


def weights(table: Table, column: str, rows: np.ndarray) -> np.ndarray:
    """(R,) float64: the weights in ``column`` at ``rows``. Refuses empty, non-numeric, NaN,
    infinite and negative values; zeros are returned (the caller drops them)."""
    text = pc.ascii_trim_whitespace(_at(table, column, rows))
    unparsed = np.zeros(rows.size, dtype=bool)
    if column in table.numeric:
        values = table.numeric[column][rows]
    else:
        try:
            values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            # Some value is not a number: the first problem is there or before, so only the rows up
            # to it are checked.
            bad = _first_unparsed(text)
            values = np.append(pc.cast(text.slice(0, bad), pa.float64()).to_numpy(zero_copy_only=False), np.nan)
            unparsed = np.arange(bad + 1) == bad
    problems = [
        (unparsed, None),
        (np.isnan(values) & ~unparsed, "found {value}; expected a number"),
        (np.isinf(values), "found {value}; weights must be finite"),
        (values < 0, "negative weight {value}; play counts and ratings must be >= 0 (zero-weight rows are dropped)"),
    ]
    first = None
    for mask, message in problems:
        hits = np.flatnonzero(mask)
        if hits.size and (first is None or hits[0] < first[0]):
            first = (int(hits[0]), message)
    if first is not None:
        index, message = first
        value = text[index].as_py()
        if message is None:
            message = "empty weight; expected a number" if value == "" else f"expected a number, found {quoted(value)}"
        else:
            message = message.format(value=quoted(value))
        raise _fail(table, rows[index], column, message)
    return values


def names(table: Table, column: str, rows: np.ndarray) -> pa.ChunkedArray:
    """(R,) strings: the names in ``column`` at ``rows``, whitespace-trimmed ("" stays "").
    Refuses a name longer than ``MAX_NAME_CHARS``."""
    values = pc.utf8_trim_whitespace(_at(table, column, rows))
    lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
    long = np.flatnonzero(lengths > MAX_NAME_CHARS)
    if long.size:
        raise _fail(table, rows[long[0]], column,
                    f"name is {int(lengths[long[0]]):,} characters long (at most {MAX_NAME_CHARS})")
    return values


@dataclass(frozen=True)
class Catalog:
    """Artist names by id, one name per id: ``ids`` (C,) unique strings, ``names`` (C,) strings."""

    ids: pa.Array
    names: pa.Array

    def lookup(self, artist_ids: np.ndarray) -> np.ndarray:
        """(A,) unicode: the name of each id, "" when the catalog does not list it."""
        if len(self.ids) == 0 or artist_ids.size == 0:
            return np.full(artist_ids.shape[0], "", dtype="<U1")
        positions = pc.index_in(pa.array(artist_ids, type=self.ids.type), value_set=self.ids)
        positions = positions.fill_null(-1).to_numpy(zero_copy_only=False)
        found = positions >= 0
        catalog_names = np.asarray(self.names.to_numpy(zero_copy_only=False), dtype=str)
        result = np.full(artist_ids.shape[0], "", dtype=catalog_names.dtype)
        result[found] = catalog_names[positions[found]]
        return result


def catalog(table: Table, id_column: str, name_column: str, what: str = "artist") -> Catalog:
    """The catalog in ``table`` (of ``what``: artist or tag names). Lines repeating an (id, name)
    pair are harmless and dropped; an id listed twice with different names is refused (which
    name would be right?)."""
    rows = data_rows(table)
    artist_ids = ids(table, id_column, rows, f"{what} id")
    artist_names = names(table, name_column, rows) if name_column in table.columns else \
        pa.chunked_array([pa.array([""] * rows.size, type=pa.string())])
    artist_ids, artist_names = _combined(artist_ids), _combined(artist_names)
    id_codes = artist_ids.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    name_codes = artist_names.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # The first row of each (id, name) pair, in file order.
    _, first = np.unique(id_codes * (int(name_codes.max(initial=0)) + 1) + name_codes, return_index=True)
    kept = np.sort(first)
    kept_ids = id_codes[kept]
    clash = np.flatnonzero(np.bincount(kept_ids, minlength=int(id_codes.max(initial=-1)) + 1)[kept_ids] > 1)
    if clash.size:
        first_id = kept_ids[clash[0]]
        lines = [table.where(int(rows[r])) for r in kept[kept_ids == first_id][:2]]
        raise DataError(f"{table.file.shown}: {what} id {quoted(artist_ids[int(kept[clash[0]])].as_py())} is "
                        f"listed with different names ({lines[0]} and {lines[1]}); expected one name per id")
    take = pa.array(kept)
    return Catalog(ids=artist_ids.take(take), names=artist_names.take(take))
