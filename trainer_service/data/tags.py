"""The artists' tags a data source carries, as ``model_store.artifacts.ArtistTags`` aligned with
the artist rows of its ``Interactions``.

- HetRec 2011 Last.fm: ``tags.dat`` (tagID, tagValue) and ``user_taggedartists.dat`` (userID,
  artistID, tagID, day, month, year), tab-separated, header optional. An artist's tag weighs the
  number of distinct listeners who applied it (tags whose names differ only in case or surrounding
  spaces are one tag); each artist keeps its 20 heaviest.
- A table source: an optional ``tags.csv``, ``tags.tsv`` or ``tags.parquet`` beside the table
  file, with the table's artist column, ``tag`` and an optional ``weight`` (every row weighs 1
  without it; rows repeating a pair add up; weight-0 rows are dropped, like plays).
- The synthetic generator: each artist's planted genre, weight 1.

The notebook's files carry none. Tags of artists the interactions do not have (nobody listened)
are left out, as catalog names are; artists without tags have none. A source whose tags leave
no artist tagged has no tags (None), like a source without tag files.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model_store.artifacts import ArtistTags, tag_key
from trainer_service.data import columns
from trainer_service.data.errors import DataError
from trainer_service.data.tables import Table, quoted

#: The tags files looked for beside a table source, in this order (at most one may exist).
TABLE_TAG_FILES = ("tags.csv", "tags.tsv", "tags.parquet")
TAG_COLUMN = "tag"
WEIGHT_COLUMN = "weight"
#: HetRec's tag files, and their columns by position.
HETREC_TAG_NAMES = ("tags.dat", ("tagID", "tagValue"))
HETREC_TAG_APPLIED = ("user_taggedartists.dat", ("userID", "artistID", "tagID", "day", "month", "year"))


def _rows_of(artist_ids: np.ndarray, tag_artist_ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(R,) int64: the row in ``artist_ids`` of each id, -1 where the interactions lack it."""
    if len(tag_artist_ids) == 0 or artist_ids.size == 0:
        return np.full(len(tag_artist_ids), -1, dtype=np.int64)
    positions = pc.index_in(tag_artist_ids, value_set=pa.array(artist_ids, type=pa.string()))
    return positions.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _build(num_artists: int, rows: np.ndarray, names, weights: np.ndarray) -> ArtistTags | None:
    """``ArtistTags`` of the triples whose row is known (>= 0); None when none is."""
    known = np.flatnonzero(rows >= 0)
    if known.size == 0:
        return None
    names = np.asarray(names, dtype=str)
    return ArtistTags.from_triples(num_artists, rows[known], names[known].tolist(), weights[known])


def tag_names(table: Table, column: str, rows: np.ndarray) -> pa.ChunkedArray:
    """(R,) strings: the tag names in ``column`` at ``rows`` (trimmed; at most
    ``tables.MAX_NAME_CHARS``). Refuses an empty name, naming its line."""
    values = columns.names(table, column, rows)
    empty = np.flatnonzero(pc.equal(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False))
    if empty.size:
        raise DataError(f"{table.file.shown}: {table.where(int(rows[empty[0]]))}, column {column!r}: "
                        "empty tag; expected a tag name")
    return values


def table_tags(table: Table, artist_column: str, artist_ids: np.ndarray) -> ArtistTags | None:
    """The tags in a tags file beside a table source (see the module docstring), for the artist
    rows of ``artist_ids`` (A,). Raises ``DataError`` naming the line of a bad value."""
    rows = columns.data_rows(table)
    ids = columns.ids(table, artist_column, rows, "artist id")
    names = tag_names(table, TAG_COLUMN, rows)
    if WEIGHT_COLUMN in table.columns:
        weights = columns.weights(table, WEIGHT_COLUMN, rows)
    else:
        weights = np.ones(rows.size, dtype=np.float64)
    artist_rows = _rows_of(artist_ids, ids)
    artist_rows[weights == 0] = -1
    return _build(artist_ids.size, artist_rows, names.to_numpy(zero_copy_only=False), weights)


def hetrec_tags(names_table: Table, applied_table: Table, artist_ids: np.ndarray) -> ArtistTags | None:
    """HetRec's tags (see the module docstring) for the artist rows of ``artist_ids`` (A,).
    ``names_table``: tags.dat; ``applied_table``: user_taggedartists.dat. Raises ``DataError``
    for a bad line, a tag id listed twice with different names, or one tags.dat lacks."""
    id_column, name_column = HETREC_TAG_NAMES[1]
    tag_names(names_table, name_column, columns.data_rows(names_table))
    catalog = columns.catalog(names_table, id_column, name_column, what="tag")
    rows = columns.data_rows(applied_table)
    users = columns.ids(applied_table, "userID", rows, "user id")
    artists = columns.ids(applied_table, "artistID", rows, "artist id")
    tag_ids = columns.ids(applied_table, "tagID", rows, "tag id")
    positions = pc.index_in(tag_ids, value_set=catalog.ids).fill_null(-1).to_numpy(zero_copy_only=False)
    unknown = np.flatnonzero(positions < 0)
    if unknown.size:
        first = int(unknown[0])
        raise DataError(f"{applied_table.file.shown}: {applied_table.where(int(rows[first]))}, column 'tagID': "
                        f"tag id {quoted(tag_ids[first].as_py())} is not in {HETREC_TAG_NAMES[0]}")
    # Names that differ only in case or spaces are one tag: code each catalog entry by its key.
    keys = np.array([tag_key(name) for name in catalog.names.to_pylist()] or [""], dtype=str)
    vocabulary, key_codes = np.unique(keys, return_inverse=True)
    row_keys = key_codes.reshape(-1)[positions]
    artist_rows = _rows_of(artist_ids, artists)
    user_codes = pc.dictionary_encode(users).combine_chunks().indices.to_numpy(zero_copy_only=False)
    # One vote per listener for each (artist, tag), however often they applied it: count the
    # distinct (artist, tag, listener) triples of each pair, coded as one int64 each so that
    # numpy sorts integers (not rows), and hand over one weighted triple per pair.
    listened = artist_rows >= 0
    num_keys, num_users = max(vocabulary.size, 1), int(user_codes.max(initial=0)) + 1
    if artist_ids.size * num_keys * num_users >= 2**62:
        raise DataError(f"{applied_table.file.shown}: too many artists x tags x users to count")
    codes = (artist_rows[listened] * num_keys + row_keys[listened]) * num_users + user_codes[listened]
    pairs, votes = np.unique(np.unique(codes) // num_users, return_counts=True)
    if pairs.size == 0:
        return None
    # The names the pairs use, as from_triples would have coded them (same order, same width).
    used, pair_codes = np.unique(pairs % num_keys, return_inverse=True)
    names = np.array(vocabulary[used].tolist(), dtype=str)
    return ArtistTags.from_codes(artist_ids.size, pairs // num_keys, pair_codes, names, votes.astype(np.float64))


def genre_tags(artist_genres: np.ndarray, genre_names: np.ndarray) -> ArtistTags:
    """The synthetic generator's planted genres as tags: artist a carries
    ``genre_names[artist_genres[a]]`` with weight 1."""
    count = artist_genres.shape[0]
    return ArtistTags.from_triples(count, np.arange(count), genre_names[artist_genres].tolist(), np.ones(count))


def carry_tags(tags: ArtistTags | None, old_ids: np.ndarray, new_ids: np.ndarray) -> ArtistTags | None:
    """``tags`` (rows of ``old_ids``) re-aligned with the rows of ``new_ids``: artists kept keep
    their tags and weights, artists only ``new_ids`` has carry none."""
    if tags is None:
        return None
    old_rows = np.repeat(np.arange(tags.num_artists), np.diff(tags.indptr))
    rows = _rows_of(new_ids, pa.array(old_ids[old_rows], type=pa.string()))
    return _build(new_ids.size, rows, tags.names[tags.indices], tags.weights.astype(np.float64))
