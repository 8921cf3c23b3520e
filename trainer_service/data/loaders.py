"""Loaders of interaction files on disk; each returns ``Interactions``.

Formats (the proto's ``DataFormat``):

- ``notebook``: the original notebook's ``lastfm_play.csv`` (user_id,artist_id,plays) and
  ``lastfm_artist.csv`` (artist_id,artist_name); ``lastfm_user.csv``, if present, is only checked
  to be a readable text file.
- ``hetrec``: HetRec 2011 Last.fm ``user_artists.dat`` (userID, artistID, weight) and
  ``artists.dat`` (id, name, url, pictureURL), tab-separated; a header line is optional (it may
  start with ``//`` or ``#``).
- ``movielens``: ``ratings.csv`` (userId, movieId, rating) and ``movies.csv`` (movieId, title);
  every rating is an interaction weighing the rating.
- ``table``: one CSV, TSV or Parquet file with named user, artist and (optional) weight columns,
  and an optional catalog file with artist id and name columns. The delimiter comes from the
  extension (``.csv`` comma, ``.tsv``/``.tab`` tab; ``.gz`` allowed) or is sniffed from the
  header; Parquet from ``.parquet``/``.pq`` or the file's magic bytes.
- ``auto``: a directory's format from the files present; a file is a ``table``.

Tags (``trainer_service.data.tags``): HetRec's ``tags.dat`` and ``user_taggedartists.dat`` when
present (both or neither), and a ``tags.csv`` / ``tags.tsv`` / ``tags.parquet`` beside a table
file; the other formats carry none.

Rows weighing 0 are dropped; duplicates of a (user, artist) pair are summed; catalog artists that
nobody listened to are left out (every artist of ``Interactions`` has an interaction). Anything
malformed raises ``DataError`` naming the file, line and column.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import numpy as np

from trainer_service.data import columns, tags
from trainer_service.data.coding import build_interactions
from trainer_service.data.errors import DataError
from trainer_service.data.interactions import Interactions
from trainer_service.data.paths import DataFile, DataRoot
from trainer_service.data.tables import Table, inspect_text, read_magic, read_parquet_table, read_text_table

log = logging.getLogger(__name__)

FORMATS = ("auto", "notebook", "hetrec", "movielens", "table")
#: The file whose presence identifies each directory format.
MARKER_FILES = {"notebook": "lastfm_play.csv", "hetrec": "user_artists.dat", "movielens": "ratings.csv"}
_TEXT_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _directory(path: str | os.PathLike[str], root: DataRoot | None) -> tuple[DataRoot, DataFile]:
    root = root or DataRoot(None)
    directory = root.resolve(path)
    if not os.path.isdir(directory.path):
        if os.path.exists(directory.path):
            raise DataError(f"{directory.shown}: is a file, expected a directory of data files")
        raise DataError(f"{directory.shown}: directory not found")
    return root, directory


def _required_file(root: DataRoot, directory: DataFile, name: str, fmt: str) -> DataFile:
    file = root.child(directory, name)
    if not os.path.isfile(file.path):
        layout = _DIRECTORY_FORMATS[fmt]
        needed = f"{layout.interactions[0]} and {layout.catalog[0]}"
        raise DataError(f"{file.shown}: file not found (the {layout.title} format needs {needed})")
    return file


def detect_format(path: str | os.PathLike[str], *, root: DataRoot | None = None) -> str:
    """The format of ``path``: "table" for a file; for a directory "notebook", "hetrec" or
    "movielens" from the marker file present (see ``MARKER_FILES``). ``DataError`` when a
    directory has none of them, or several."""
    root = root or DataRoot(None)
    target = root.resolve(path)
    if os.path.isfile(target.path):
        return "table"
    _, directory = _directory(path, root)
    found = [fmt for fmt, marker in MARKER_FILES.items() if os.path.isfile(root.child(directory, marker).path)]
    if len(found) == 1:
        return found[0]
    if found:
        markers = ", ".join(f"{MARKER_FILES[fmt]} ({fmt})" for fmt in found)
        raise DataError(f"{directory.shown}: found the files of several formats: {markers}; name the format")
    try:
        present = sorted(os.listdir(directory.path))
    except OSError:
        present = []
    listing = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "") if present else "nothing"
    expected = ", ".join(f"{marker} ({fmt})" for fmt, marker in MARKER_FILES.items())
    raise DataError(f"{directory.shown}: cannot detect the data format: expected {expected}; found {listing}")


def _interactions(table: Table, user: str, artist: str, weight: str | None, *, source: str,
                  catalog: columns.Catalog | None) -> Interactions:
    rows = columns.data_rows(table)
    user_ids = columns.ids(table, user, rows, "user id")
    artist_ids = columns.ids(table, artist, rows, "artist id")
    weights = columns.weights(table, weight, rows) if weight else np.ones(rows.size, dtype=np.float64)
    zeros = int(np.count_nonzero(weights == 0))
    if zeros:
        log.info("%s: dropped %d rows with weight 0", table.file.shown, zeros)
    return build_interactions(user_ids, artist_ids, weights, source=source, shown=table.file.shown,
                              catalog=catalog)


@dataclass(frozen=True)
class _DirectoryFormat:
    """How one directory format lays out its files: the interactions file and its (user, artist,
    weight) columns, the catalog file and its (id, name) columns, both ``delimiter``-separated;
    ``positional`` column names when the files may lack a header line (HetRec)."""

    title: str
    interactions: tuple[str, tuple[str, str, str]]
    catalog: tuple[str, tuple[str, str]]
    delimiter: str
    interactions_positional: tuple[str, ...] | None = None
    catalog_positional: tuple[str, ...] | None = None
    checked_only: str = ""  # a file that, if present, must be readable text


_DIRECTORY_FORMATS = {
    "notebook": _DirectoryFormat(
        "notebook", ("lastfm_play.csv", ("user_id", "artist_id", "plays")),
        ("lastfm_artist.csv", ("artist_id", "artist_name")), ",", checked_only="lastfm_user.csv"),
    "hetrec": _DirectoryFormat(
        "HetRec 2011 Last.fm", ("user_artists.dat", ("userID", "artistID", "weight")),
        ("artists.dat", ("id", "name")), "\t",
        interactions_positional=("userID", "artistID", "weight"),
        catalog_positional=("id", "name", "url", "pictureURL")),
    "movielens": _DirectoryFormat(
        "MovieLens", ("ratings.csv", ("userId", "movieId", "rating")), ("movies.csv", ("movieId", "title")), ","),
}


def _load_directory(fmt: str, path: str | os.PathLike[str], root: DataRoot | None) -> Interactions:
    layout = _DIRECTORY_FORMATS[fmt]
    root, directory = _directory(path, root)
    plays_name, plays_columns = layout.interactions
    catalog_name, catalog_columns = layout.catalog
    plays = _required_file(root, directory, plays_name, fmt)
    artists = _required_file(root, directory, catalog_name, fmt)
    if layout.checked_only:
        extra = root.child(directory, layout.checked_only)
        if os.path.exists(extra.path):
            inspect_text(extra)
    catalog_table = read_text_table(artists, required=catalog_columns, delimiter=layout.delimiter,
                                    positional=layout.catalog_positional)
    catalog = columns.catalog(catalog_table, *catalog_columns)
    table = read_text_table(plays, required=plays_columns, delimiter=layout.delimiter,
                            positional=layout.interactions_positional)
    data = _interactions(table, *plays_columns, catalog=catalog, source=f"{layout.title} files in {directory.shown}")
    if fmt == "hetrec":
        data = dataclasses.replace(data, tags=_hetrec_tags(root, directory, data.artist_ids))
    return data


def _hetrec_tags(root: DataRoot, directory: DataFile, artist_ids) -> tags.ArtistTags | None:
    """HetRec's tags when its two tag files are present; None when neither is."""
    (names_name, names_columns), (applied_name, applied_columns) = tags.HETREC_TAG_NAMES, tags.HETREC_TAG_APPLIED
    names_file, applied_file = root.child(directory, names_name), root.child(directory, applied_name)
    present = [os.path.exists(file.path) for file in (names_file, applied_file)]
    if not any(present):
        return None
    if not all(present):
        missing = names_file if not present[0] else applied_file
        raise DataError(f"{missing.shown}: file not found (HetRec tags need both {names_name} and {applied_name}, "
                        "or neither)")
    names_table = read_text_table(names_file, required=names_columns, delimiter="\t", positional=names_columns)
    applied_table = read_text_table(applied_file, required=applied_columns[:3], delimiter="\t",
                                    positional=applied_columns)
    return tags.hetrec_tags(names_table, applied_table, artist_ids)


def _table_tags(root: DataRoot, table_file: DataFile, artist_column: str, artist_ids) -> tags.ArtistTags | None:
    """The tags file beside ``table_file`` (``tags.TABLE_TAG_FILES``), None when there is none."""
    directory = DataFile(path=os.path.dirname(table_file.path), shown=os.path.dirname(table_file.shown))
    found = [file for file in (root.child(directory, name) for name in tags.TABLE_TAG_FILES)
             if os.path.exists(file.path) and os.path.realpath(file.path) != os.path.realpath(table_file.path)]
    if not found:
        return None
    if len(found) > 1:
        raise DataError(f"{directory.shown or '.'}: found several tags files ({', '.join(f.shown for f in found)}); "
                        "keep one")
    table = _read_any_table(found[0], (artist_column, tags.TAG_COLUMN), (tags.WEIGHT_COLUMN,))
    return tags.table_tags(table, artist_column, artist_ids)


def load_notebook(path: str | os.PathLike[str], *, root: DataRoot | None = None) -> Interactions:
    """The original notebook's files in directory ``path`` (see the module docstring)."""
    return _load_directory("notebook", path, root)


def load_hetrec(path: str | os.PathLike[str], *, root: DataRoot | None = None) -> Interactions:
    """HetRec 2011 Last.fm files in directory ``path`` (see the module docstring)."""
    return _load_directory("hetrec", path, root)


def load_movielens(path: str | os.PathLike[str], *, root: DataRoot | None = None) -> Interactions:
    """MovieLens files in directory ``path``: movies play the artists, ratings the weights."""
    return _load_directory("movielens", path, root)


def _split_suffix(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    return os.path.splitext(lower)[1]


def _read_any_table(file: DataFile, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Table:
    suffix = _split_suffix(file.shown)
    if not os.path.isfile(file.path):
        what = "is a directory, expected a file" if os.path.isdir(file.path) else "file not found"
        raise DataError(f"{file.shown}: {what}")
    if suffix in _PARQUET_SUFFIXES or read_magic(file) == b"PAR1":
        return read_parquet_table(file, required=required, optional=optional)
    return read_text_table(file, required=required, optional=optional, delimiter=_TEXT_DELIMITERS.get(suffix))


def load_table(
    path: str | os.PathLike[str],
    *,
    user_column: str = "user_id",
    artist_column: str = "artist_id",
    weight_column: str = "",
    artists_path: str | os.PathLike[str] = "",
    name_column: str = "name",
    root: DataRoot | None = None,
) -> Interactions:
    """A generic table: file ``path`` (CSV, TSV or Parquet) with columns ``user_column``,
    ``artist_column`` and, unless ``weight_column`` is empty (every row then weighs 1),
    ``weight_column``. ``artists_path``, if given, is a catalog file with columns
    ``artist_column`` and ``name_column``."""
    root = root or DataRoot(None)
    for label, name in (("user", user_column), ("artist", artist_column)):
        if not name:
            raise DataError(f"the {label} column name is empty")
    if user_column == artist_column:
        raise DataError(f"the user and artist columns are both {user_column!r}")
    file = root.resolve(path)
    catalog = None
    if artists_path:
        catalog_file = root.resolve(artists_path)
        catalog_table = _read_any_table(catalog_file, (artist_column, name_column or "name"))
        catalog = columns.catalog(catalog_table, artist_column, name_column or "name")
    required = (user_column, artist_column) + ((weight_column,) if weight_column else ())
    table = _read_any_table(file, required)
    data = _interactions(table, user_column, artist_column, weight_column or None, catalog=catalog,
                         source=f"table {file.shown}")
    return dataclasses.replace(data, tags=_table_tags(root, file, artist_column, data.artist_ids))


def load_files(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    user_column: str = "user_id",
    artist_column: str = "artist_id",
    weight_column: str = "",
    artists_path: str | os.PathLike[str] = "",
    name_column: str = "name",
    root: DataRoot | None = None,
) -> Interactions:
    """Loads ``path`` in ``format`` (one of ``FORMATS``; "auto" detects it). The column
    arguments apply to the "table" format only."""
    root = root or DataRoot(None)
    if format not in FORMATS:
        raise DataError(f"unknown data format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "auto":
        format = detect_format(path, root=root)
    if format == "table":
        return load_table(path, user_column=user_column, artist_column=artist_column, weight_column=weight_column,
                          artists_path=artists_path, name_column=name_column, root=root)
    loader = {"notebook": load_notebook, "hetrec": load_hetrec, "movielens": load_movielens}[format]
    return loader(path, root=root)
