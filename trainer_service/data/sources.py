"""Data sources: what to train on, as the proto's ``DataSource`` says it, parsed from the command
line, described for people, and loaded.

Command-line syntax (``parse_source``)::

    synthetic[:SIZE][:seed=N]   the built-in generator; SIZE is tiny, small (default), medium or
                                full (Last.fm 360K scale); N an integer (default 0)
    FORMAT:PATH[:OPTIONS]       files in FORMAT: notebook, hetrec, movielens, table, or auto
    PATH                        a directory (its format detected from the files present) or a
                                table file (CSV, TSV or Parquet)

    OPTIONS (table, or auto on a file): comma-separated KEY=VALUE with KEY one of
      user=COLUMN     user id column (default user_id)
      artist=COLUMN   artist id column (default artist_id)
      weight=COLUMN   play count column (default none: every row weighs 1)
      artists=FILE    artist catalog file with the artist column and a name column
      name=COLUMN     name column of the catalog (default name)

    Examples: synthetic   synthetic:full:seed=7   hetrec:lastfm-2k   data/lastfm-2k
              table:ratings.csv:user=userId,artist=movieId,weight=rating,artists=movies.csv,name=title

A path containing ':' needs an explicit format (``auto:PATH``). When the trainer has a data
directory, every path is relative to it and may not leave it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from trainer_service.data.errors import DataError
from trainer_service.data.interactions import Interactions
from trainer_service.data.loaders import FORMATS, load_files
from trainer_service.data.paths import DataRoot
from trainer_service.data.synthetic import DEFAULT_SIZE, PRESETS, generate

_TABLE_OPTIONS = {"user": "user_column", "artist": "artist_column", "weight": "weight_column",
                  "artists": "artists_path", "name": "name_column"}
_FORMAT_TITLES = {"notebook": "notebook files in", "hetrec": "HetRec 2011 Last.fm files in",
                  "movielens": "MovieLens files in", "table": "table", "auto": "data in"}


@dataclass(frozen=True)
class DataSourceSpec:
    """Where training data comes from (mirrors the proto's ``DataSource``).

    ``kind="synthetic"``: ``size`` (a ``PRESETS`` name) and ``seed``. ``kind="files"``: ``path``
    (a directory, or a table file) in ``format`` (one of ``FORMATS``); for tables, the column
    names and an optional catalog file ``artists_path``. Empty column names mean the defaults,
    as in the proto. Invalid combinations raise ``DataError``.
    """

    kind: str = "synthetic"
    size: str = DEFAULT_SIZE
    seed: int = 0
    path: str = ""
    format: str = "auto"
    user_column: str = "user_id"
    artist_column: str = "artist_id"
    weight_column: str = ""
    artists_path: str = ""
    name_column: str = "name"

    def __post_init__(self):
        object.__setattr__(self, "user_column", self.user_column or "user_id")
        object.__setattr__(self, "artist_column", self.artist_column or "artist_id")
        object.__setattr__(self, "name_column", self.name_column or "name")
        object.__setattr__(self, "size", self.size or DEFAULT_SIZE)
        object.__setattr__(self, "format", self.format or "auto")
        if self.kind == "synthetic":
            if self.size not in PRESETS:
                raise DataError(f"unknown synthetic size {self.size!r}; expected one of {', '.join(PRESETS)}")
            if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not -2**63 <= self.seed < 2**63:
                raise DataError(f"synthetic seed must be a 64-bit integer, got {self.seed!r}")
        elif self.kind == "files":
            if not self.path:
                raise DataError("a files data source needs a path")
            if self.format not in FORMATS:
                raise DataError(f"unknown data format {self.format!r}; expected one of {', '.join(FORMATS)}")
            if self.format not in ("table", "auto") and self._table_options():
                raise DataError(f"column options apply to the table format only, not {self.format!r}")
        else:
            raise DataError(f"unknown data source kind {self.kind!r}; expected 'files' or 'synthetic'")

    @classmethod
    def synthetic(cls, size: str = DEFAULT_SIZE, seed: int = 0) -> "DataSourceSpec":
        """The built-in generator at a preset size."""
        return cls(kind="synthetic", size=size, seed=seed)

    @classmethod
    def files(cls, path: str, format: str = "auto", **columns: str) -> "DataSourceSpec":
        """Files at ``path`` in ``format``; ``columns``: user_column, artist_column, weight_column,
        artists_path, name_column (table format)."""
        return cls(kind="files", path=os.fspath(path), format=format, **columns)

    def _table_options(self) -> dict[str, str]:
        defaults = DataSourceSpec()
        return {key: getattr(self, field) for key, field in _TABLE_OPTIONS.items()
                if getattr(self, field) != getattr(defaults, field)}

    def to_text(self) -> str:
        """The command-line form; ``parse_source(spec.to_text()) == spec``."""
        if self.kind == "synthetic":
            return f"synthetic:{self.size}:seed={self.seed}"
        text = f"{self.format}:{self.path}"
        options = self._table_options()
        if options:
            text += ":" + ",".join(f"{key}={value}" for key, value in options.items())
        return text

    def describe(self) -> str:
        """A one-line description for people and logs."""
        if self.kind == "synthetic":
            preset = PRESETS[self.size]
            return (f"synthetic data, {self.size} preset ({preset.users:,} users, {preset.artists:,} artists, "
                    f"~{preset.interactions:,} interactions), seed {self.seed}")
        text = f"{_FORMAT_TITLES[self.format]} {self.path}"
        if self.format == "auto":
            text += " (format detected)"
        if self.format in ("table", "auto") and (self._table_options() or self.format == "table"):
            columns = f"user {self.user_column}, artist {self.artist_column}, " + (
                f"weight {self.weight_column}" if self.weight_column else "every row weighs 1")
            if self.artists_path:
                columns += f"; names from {self.artists_path} ({self.name_column})"
            text += f" ({columns})"
        return text


_OPTIONS_SEGMENT = re.compile(r"^[a-z]+=[^,]*(,[a-z]+=[^,]*)*$")


def parse_source(text: str) -> DataSourceSpec:
    """Parses the command-line form of a data source (syntax in this module's docstring).
    Raises ``DataError`` naming what is wrong."""
    text = text.strip()
    if not text:
        raise DataError("empty data source; expected synthetic[:SIZE][:seed=N], FORMAT:PATH or PATH")
    head, sep, rest = text.partition(":")
    if head == "synthetic":
        return _parse_synthetic(text, rest.split(":") if sep else [])
    if head in FORMATS:
        if not sep or not rest:
            raise DataError(f"data source {text!r}: {head} needs a path, as in {head}:PATH")
        return _parse_files(text, head, rest)
    if sep and re.fullmatch(r"[A-Za-z]{2,}", head) and not os.path.exists(text):
        raise DataError(f"data source {text!r}: unknown kind {head!r}; expected synthetic or one of "
                        f"{', '.join(FORMATS)} (for a path containing ':', write auto:PATH)")
    return DataSourceSpec.files(text, "auto")


def _parse_synthetic(text: str, segments: list[str]) -> DataSourceSpec:
    size, seed = DEFAULT_SIZE, 0
    for segment in segments:
        if segment in PRESETS:
            size = segment
        elif segment.startswith("seed="):
            try:
                seed = int(segment[len("seed="):])
            except ValueError:
                raise DataError(f"data source {text!r}: seed must be an integer, got {segment[5:]!r}") from None
        else:
            raise DataError(f"data source {text!r}: unexpected {segment!r}; expected a size "
                            f"({', '.join(PRESETS)}) or seed=N")
    return DataSourceSpec.synthetic(size, seed)


def _parse_files(text: str, format: str, rest: str) -> DataSourceSpec:
    path, options = rest, {}
    prefix, sep, last = rest.rpartition(":")
    if sep and prefix and _OPTIONS_SEGMENT.match(last):
        path = prefix
        for item in last.split(","):
            key, _, value = item.partition("=")
            if key not in _TABLE_OPTIONS:
                raise DataError(f"data source {text!r}: unknown option {key!r}; expected "
                                f"{', '.join(_TABLE_OPTIONS)}")
            if _TABLE_OPTIONS[key] in options:
                raise DataError(f"data source {text!r}: option {key!r} given twice")
            options[_TABLE_OPTIONS[key]] = value
    return DataSourceSpec.files(path, format, **options)


def check_source_paths(spec: DataSourceSpec, root: DataRoot | None) -> None:
    """Refuses a source whose files this trainer may not read: any files source when it has no
    data directory (``root`` None), and paths leaving the directory (``DataPathError``: absolute,
    ``..``, a symlink out). Whether the files exist and parse is for ``load_source`` to say."""
    if spec.kind != "files":
        return
    if root is None:
        raise DataError("this trainer has no --data-dir: only the synthetic generator can be used")
    root.resolve(spec.path)
    if spec.artists_path:
        root.resolve(spec.artists_path)


def load_source(spec: DataSourceSpec, data_dir: str | os.PathLike[str] | None = None) -> Interactions:
    """Loads ``spec``. With ``data_dir``, file paths are relative to it and confined to it
    (``DataPathError`` otherwise); without, relative to the working directory. Raises
    ``DataError`` for bad data. Synthetic data ignores ``data_dir``."""
    if spec.kind == "synthetic":
        return generate(spec.size, seed=spec.seed).interactions
    root = DataRoot(data_dir)
    return load_files(spec.path, spec.format, user_column=spec.user_column, artist_column=spec.artist_column,
                      weight_column=spec.weight_column, artists_path=spec.artists_path,
                      name_column=spec.name_column, root=root)
