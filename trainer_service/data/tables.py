"""Reading delimited text and Parquet tables, with errors that name the file, line and column.

Every value is read as a string (ids stay ``"007"``; ``1`` and ``1.0`` stay distinct); the loaders
convert weights themselves. Before the parser sees a text file, one streaming pass (constant
memory) refuses what it would choke on or read wrongly: an empty file, binary data (NUL bytes, many
control characters, ZIP, UTF-16), lines longer than ``MAX_LINE_BYTES``. The same pass picks the
encoding: UTF-8 (a BOM is skipped), or Latin-1 when the file is not valid UTF-8 (every byte is a
character there, so ids stay distinct; names of such files may show mojibake). Gzip-compressed
files are read transparently.

Quoting: comma-, semicolon- and pipe-separated files use CSV quoting (``"a,b"`` is one field, ``""``
an escaped quote); tab-separated files have no quoting (the TSV convention, and HetRec's).

One parser: ``pyarrow.csv`` splits text tables (the header line, each candidate delimiter when
sniffing, and the rows; a row's line after quoted line breaks is counted from the values it
parsed), ``pyarrow.parquet`` reads Parquet; columns stay pyarrow arrays through ``columns.py``. Not
pandas, which would only wrap the same parser less completely, and more slowly (docs/training.md):
its pyarrow engine refuses ``quoting`` (tab-separated files have none) and takes no ``block_size``
(a parse block must hold the longest line). Nor Python's ``csv`` beside it: two parsers can split one line two ways.
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainer_service.data.errors import DataError
from trainer_service.data.paths import DataFile

#: Longest accepted line, in bytes (after decompression). Real lines are well under 1 KiB.
MAX_LINE_BYTES = 1 << 20
#: Longest accepted id (user or artist), in characters. Ids become a fixed-width numpy array, so
#: one huge id would multiply the memory of all of them.
MAX_ID_CHARS = 128
#: Longest accepted artist name, in characters (same reason).
MAX_NAME_CHARS = 256

_CHUNK_BYTES = 8 << 20
_BLOCK_BYTES = 16 << 20  # pyarrow's parse block; must exceed the longest line
_SNIFF_BYTES = 64 << 10
# Bytes that never occur in text files (all C0 controls but tab, LF, VT, FF, CR, and ESC).
_CONTROL_BYTES = np.zeros(256, dtype=bool)
_CONTROL_BYTES[[*range(0, 9), *range(14, 27), *range(28, 32)]] = True
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
SNIFF_DELIMITERS = (",", "\t", ";", "|")


def delimiter_name(delimiter: str) -> str:
    """'comma', 'tab', ... for messages."""
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


@dataclass(frozen=True)
class TextInfo:
    """What the streaming pass learned about a text file."""

    encoding: str
    gzipped: bool
    has_quote: bool


def _reason(file: DataFile, error: BaseException) -> str:
    """An exception's message for a client: the server's path replaced by the path as shown."""
    text = str(error).strip() or type(error).__name__
    return text.replace(file.path, file.shown)


def read_magic(file: DataFile) -> bytes:
    """The first 4 bytes of ``file`` (``DataError`` when it cannot be opened)."""
    with _open_binary(file) as raw:
        return raw.read(4)


def _open_binary(file: DataFile):
    try:
        return open(file.path, "rb")
    except FileNotFoundError:
        raise DataError(f"{file.shown}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{file.shown}: is a directory, expected a file") from None
    except OSError as error:
        raise DataError(f"{file.shown}: cannot open: {error.strerror or _reason(file, error)}") from None


def _file_kind_from_magic(head: bytes) -> str | None:
    if head.startswith(b"PAR1"):
        return "a Parquet file (name it .parquet to read it as one)"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (unzip it first)"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (save it as UTF-8)"
    return None


def inspect_text(file: DataFile, expected: str = "") -> TextInfo:
    """Streams the whole file once (constant memory) and refuses what cannot be text data.

    Raises ``DataError`` for a missing, unreadable, empty (0 bytes) or binary file, a corrupt gzip
    stream, or a line longer than ``MAX_LINE_BYTES``. ``expected`` (e.g. "a header line with
    columns ...") completes the message for an empty file.
    """
    with _open_binary(file) as raw:
        head = raw.read(4)
        if not head:
            raise DataError(f"{file.shown}: file is empty (0 bytes)"
                            + (f"; expected {expected}" if expected else ""))
        raw.seek(0)
        gzipped = head.startswith(b"\x1f\x8b")
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        try:
            return _scan(file, stream, gzipped)
        except (OSError, EOFError, zlib.error) as error:
            if gzipped:
                raise DataError(f"{file.shown}: corrupt gzip data: {_reason(file, error)}") from None
            raise DataError(f"{file.shown}: cannot read: {_reason(file, error)}") from None


def _scan(file: DataFile, stream, gzipped: bool) -> TextInfo:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    utf8 = True
    has_quote = False
    offset = 0  # bytes before this chunk
    newlines_before = 0  # b"\n" before this chunk
    last_break = -1  # absolute offset of the last line break seen
    first = True
    while True:
        chunk = stream.read(_CHUNK_BYTES)
        if first:
            if not chunk:
                raise DataError(f"{file.shown}: file is empty (no data after decompression)")
            kind = _file_kind_from_magic(chunk[:4])
            if kind:
                raise DataError(f"{file.shown}: not a text table: looks like {kind}")
            sample = np.frombuffer(chunk[:_SNIFF_BYTES], dtype=np.uint8)
            controls = int(_CONTROL_BYTES[sample].sum())
            if controls > max(8, sample.size // 100):
                raise DataError(f"{file.shown}: not a text file: {controls} control bytes in its first "
                                f"{sample.size} bytes (binary data?)")
            first = False
        if not chunk:
            break
        nul = chunk.find(b"\x00")
        if nul >= 0:
            line = newlines_before + chunk.count(b"\n", 0, nul) + 1
            raise DataError(f"{file.shown}: line {line}: NUL byte: a binary file, not text")
        data = np.frombuffer(chunk, dtype=np.uint8)
        breaks = np.flatnonzero((data == 10) | (data == 13))
        starts = np.concatenate(([last_break], breaks + offset))
        ends = np.concatenate((breaks + offset, [offset + data.size]))
        lengths = ends - starts - 1
        long = np.flatnonzero(lengths > MAX_LINE_BYTES)
        if long.size:
            start_in_chunk = max(int(starts[long[0]]) + 1 - offset, 0)
            line = newlines_before + chunk.count(b"\n", 0, start_in_chunk) + 1
            raise DataError(f"{file.shown}: line {line} is longer than {MAX_LINE_BYTES:,} bytes "
                            "(not a table of ids and counts?)")
        if breaks.size:
            last_break = int(breaks[-1]) + offset
        if not has_quote:
            has_quote = chunk.find(b'"') >= 0
        if utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
        newlines_before += chunk.count(b"\n")
        offset += data.size
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    return TextInfo(encoding="utf-8-sig" if utf8 else "latin-1", gzipped=gzipped, has_quote=has_quote)


def _first_line(file: DataFile, info: TextInfo) -> str:
    """The file's first line, decoded, without its line break (``\\n``, ``\\r\\n`` or ``\\r``)."""
    with _open_binary(file) as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if info.gzipped else raw
        head = stream.readline(MAX_LINE_BYTES + 2)  # inspect_text refused longer lines
    return re.split(rb"[\r\n]", head, maxsplit=1)[0].decode(info.encoding)


def _parse_options(delimiter: str, on_invalid: Callable | None = None) -> pacsv.ParseOptions:
    """How every text table is split: CSV quoting unless tab-separated, blank lines kept as rows."""
    quoting = delimiter != "\t"
    return pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False, double_quote=True,
                              newlines_in_values=quoting, ignore_empty_lines=False, invalid_row_handler=on_invalid)


def _split_line(line: str, delimiter: str) -> list[str]:
    """One line (no line break) split as the table reader splits lines: pyarrow's parser reads it
    as a header. A quote never closed ends at the line's end."""
    for text in (line, line + '"'):
        try:
            return pacsv.read_csv(io.BytesIO(text.encode("utf-8") + b"\n"),
                                  read_options=pacsv.ReadOptions(use_threads=False),
                                  parse_options=_parse_options(delimiter)).column_names
        except pa.ArrowInvalid:
            continue
    return line.split(delimiter)


def quoted(text: str, limit: int = 80) -> str:
    """``repr`` of a value for a message, cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


@dataclass
class Table:
    """Columns read from one file: ``columns`` maps a name to a pyarrow string array (one value
    per data row, blank lines included as empty strings so rows map to lines).

    ``where(row)`` names a row for messages: ``"line 7"`` for text (as an editor counts, header
    included), ``"row 5"`` for Parquet (1-based). ``numeric`` holds numeric Parquet columns as
    float64 arrays; ``floating`` names the floating-point ones (never ids).
    """

    file: DataFile
    columns: dict[str, pa.ChunkedArray]
    header: tuple[str, ...] | None
    header_lines: int
    width: int = 0  # fields per line (text)
    delimiter: str | None = None
    info: TextInfo | None = None
    parquet: bool = False
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    floating: frozenset[str] = frozenset()
    skipped_lines: tuple[int, ...] = ()  # whitespace-only lines, which are not rows (numbered as records)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def where(self, row: int) -> str:
        """Where data row ``row`` (0-based) is, for a message."""
        if self.parquet:
            return f"row {row + 1}"
        assert self.info is not None and self.delimiter is not None
        record = row + 1 + self.header_lines  # as the parser numbers records: skipped ones too
        for skipped in self.skipped_lines:  # sorted
            if skipped <= record:
                record += 1
        breaks = self._breaks_before if self.info.has_quote and self.delimiter != "\t" else None
        return f"line {record + (int(breaks[row]) if breaks is not None else 0)}"

    @cached_property
    def _breaks_before(self) -> np.ndarray | None:
        """(rows + 1,) int64: line breaks inside the quoted values of the rows before each row, every
        column counted (``\\r\\n`` is one); None when the file no longer parses. Error path only: it
        parses the file again."""
        assert self.info is not None and self.delimiter is not None
        try:
            arrow = _read_csv(self.file, self.info, self.delimiter, self.width, self.header_lines,
                              range(self.width), lambda row: "skip" if row.text.strip() == "" else "error")
        except (pa.ArrowException, OSError, ValueError, UnicodeError):
            return None
        if arrow.num_rows != self.num_rows:
            return None
        per_row = np.zeros(arrow.num_rows, dtype=np.int64)
        for values in arrow.columns:
            for pattern, sign in (("\n", 1), ("\r", 1), ("\r\n", -1)):
                per_row += sign * pc.count_substring(values, pattern).to_numpy(zero_copy_only=False)
        return np.concatenate(([0], np.cumsum(per_row)))


def _check_header(file: DataFile, header: list[str], delimiter: str, required: Sequence[str],
                  optional: Sequence[str]) -> None:
    missing = [name for name in required if name not in header]
    if missing:
        expected = ", ".join(repr(name) for name in required)
        if len(header) == 1:
            other = [name for sym, name in _DELIMITER_NAMES.items() if sym != delimiter and sym in header[0]]
            hint = f": wrong delimiter? (read as {delimiter_name(delimiter)}-separated" + (
                f"; the line contains {other[0]}s)" if other else ")")
            raise DataError(f"{file.shown}: line 1: expected columns {expected}, found one column "
                            f"{quoted(header[0])}{hint}")
        near = {name.lower(): name for name in header}
        hints = [f"{name!r} (found {near[name.lower()]!r}: names are case-sensitive)"
                 for name in missing if name.lower() in near]
        found = ", ".join(repr(name) for name in header)
        raise DataError(f"{file.shown}: line 1: missing column "
                        f"{', '.join(hints) if hints else ', '.join(repr(name) for name in missing)}; "
                        f"expected columns {expected}, found {found}")
    for name in (*required, *optional):
        if name and header.count(name) > 1:
            raise DataError(f"{file.shown}: line 1: column {name!r} appears {header.count(name)} times in the header")


def read_text_table(
    file: DataFile,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    delimiter: str | None,
    positional: Sequence[str] | None = None,
) -> Table:
    """Reads the named columns of a delimited text file, every value as a string.

    - ``positional=None``: the first line is a header; ``required`` columns must appear in it,
      ``optional`` ones may. ``delimiter=None`` sniffs it from the header (the candidate under
      which every required column appears).
    - ``positional=(name, ...)``: columns by position (``required`` and ``optional`` name them);
      the first line is a header only when its first field is ``positional[0]`` (any case, a
      leading ``//`` or ``#`` allowed, as some HetRec copies have).

    Every line must have as many fields as the first; blank lines are kept as rows of empty
    strings (so row numbers map to lines; the loaders drop them), whitespace-only lines are
    skipped. Parsing is pyarrow's (C++, columnar: no Python object per value), single-threaded
    so that errors know their line.
    """
    if positional is None:
        expected = "a header line with columns " + ", ".join(repr(name) for name in required)
    else:
        expected = f"lines of {delimiter_name(delimiter or ',')}-separated " + ", ".join(positional)
    info = inspect_text(file, expected)
    first = _first_line(file, info)
    if not first.strip():
        raise DataError(f"{file.shown}: line 1 is blank; expected "
                        + ("a header line" if positional is None else "data"))
    if positional is None:
        if delimiter is None:
            delimiter = _sniff(first, required)
        header = [name.strip() for name in _split_line(first, delimiter)]
        _check_header(file, header, delimiter, required, optional)
        wanted = [name for name in (*required, *optional) if name and name in header]
        positions = [header.index(name) for name in wanted]
        header_lines = 1
        width = len(header)
    else:
        assert delimiter is not None
        fields = _split_line(first, delimiter)
        if len(fields) < len(required):
            expected = ", ".join(positional[: len(required)])
            found = "one field" if len(fields) == 1 else f"{len(fields)} fields"
            hint = ": wrong delimiter?" if len(fields) == 1 else ""
            raise DataError(f"{file.shown}: line 1: expected {len(required)} {delimiter_name(delimiter)}-separated "
                            f"fields ({expected}), found {found} {quoted(first)}{hint}")
        is_header = fields[0].strip().lstrip("/#").strip().lower() == positional[0].lower()
        header = [name.strip().lstrip("/#").strip() for name in fields] if is_header else None
        header_lines = 1 if is_header else 0
        # Optional trailing columns may be absent from every line (an artists.dat without URLs).
        wanted = [name for name in (*required, *optional) if name and positional.index(name) < len(fields)]
        positions = [list(positional).index(name) for name in wanted]
        width = len(fields)
    arrays, skipped = _parse(file, info, delimiter, width, header_lines, positions)
    return Table(file=file, columns=dict(zip(wanted, arrays)), header=tuple(header) if header else None,
                 header_lines=header_lines, width=width, delimiter=delimiter, info=info,
                 skipped_lines=tuple(skipped))


def _read_csv(file: DataFile, info: TextInfo, delimiter: str, width: int, header_lines: int,
              positions: Sequence[int], on_invalid: Callable) -> pa.Table:
    """The columns at ``positions`` of the lines after the header, every value a string, parsed
    single-threaded so that ``on_invalid`` sees rows in order, with their numbers."""
    names = [f"field{index}" for index in range(width)]
    with pa.input_stream(file.path, compression="gzip" if info.gzipped else None) as stream:
        return pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(skip_rows=header_lines, column_names=names, use_threads=False,
                                           block_size=_BLOCK_BYTES,
                                           encoding="utf8" if info.encoding.startswith("utf-8") else info.encoding),
            parse_options=_parse_options(delimiter, on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in names},
                                                 include_columns=[names[p] for p in positions],
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )


def _parse(file: DataFile, info: TextInfo, delimiter: str, width: int, header_lines: int,
           positions: Sequence[int]) -> tuple[list[pa.ChunkedArray], list[int]]:
    """The columns at ``positions`` of every data line, and the whitespace-only lines skipped."""
    skipped: list[int] = []
    invalid = []

    def on_invalid(row) -> str:  # called in order (single-threaded); row.number counts records, not lines
        if row.text.strip() == "":
            skipped.append(row.number)
            return "skip"
        invalid.append(row)
        return "error"

    quoting = delimiter != "\t"
    try:
        table = _read_csv(file, info, delimiter, width, header_lines, positions, on_invalid)
    except (pa.ArrowException, OSError, ValueError, UnicodeError) as error:
        if invalid:
            row = invalid[0]
            if quoting and row.text.count('"') % 2:
                raise DataError(f"{file.shown}: line {row.number}: a quoted field is never closed "
                                "(unbalanced '\"')") from None
            name = delimiter_name(delimiter)
            hint = f"an unquoted {name} inside a value?" if row.actual_columns > width else "a missing field?"
            raise DataError(f"{file.shown}: line {row.number}: {row.actual_columns} {name}-separated field"
                            f"{'' if row.actual_columns == 1 else 's'}, expected {width} as on line 1 "
                            f"({hint})") from None
        raise DataError(f"{file.shown}: cannot parse as {delimiter_name(delimiter)}-separated text: "
                        f"{_reason(file, error)}") from None
    return [table.column(f"field{p}") for p in positions], sorted(n for n in skipped if n is not None)


def _sniff(first: str, required: Sequence[str]) -> str:
    best = None
    for candidate in SNIFF_DELIMITERS:
        header = [name.strip() for name in _split_line(first, candidate)]
        if all(name in header for name in required):
            return candidate
        if best is None or len(header) > best[1]:
            best = (candidate, len(header))
    return best[0] if best and best[1] > 1 else ","


def read_parquet_table(file: DataFile, *, required: Sequence[str], optional: Sequence[str] = ()) -> Table:
    """Reads the named columns of a Parquet file. Integer, decimal, floating-point and string
    columns become strings; numeric columns are also kept as float64 in ``Table.numeric`` (for
    weights). Floating-point id columns are refused by the loaders (is 1.0 the id 1?)."""
    head = read_magic(file)
    if not head:
        raise DataError(f"{file.shown}: file is empty (0 bytes)")
    if head != b"PAR1":
        raise DataError(f"{file.shown}: not a Parquet file (it does not start with 'PAR1')")
    try:
        schema = pq.read_schema(file.path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{file.shown}: cannot read Parquet: {_reason(file, error)}") from None
    header = list(schema.names)
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(f"{file.shown}: missing column {', '.join(repr(n) for n in missing)}; expected columns "
                        f"{', '.join(repr(n) for n in required)}, found {', '.join(repr(n) for n in header)}")
    wanted = [name for name in (*required, *optional) if name and name in header]
    try:
        arrow = pq.read_table(file.path, columns=wanted)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{file.shown}: cannot read Parquet: {_reason(file, error)}") from None
    try:
        return _parquet_columns(file, arrow, wanted, tuple(header))
    except pa.ArrowException as error:  # e.g. a decimal too large for float64
        raise DataError(f"{file.shown}: cannot convert Parquet columns: {_reason(file, error)}") from None


def _parquet_columns(file: DataFile, arrow: pa.Table, wanted: list[str], header: tuple[str, ...]) -> Table:
    columns: dict[str, pa.ChunkedArray] = {}
    numeric: dict[str, np.ndarray] = {}
    floating: set[str] = set()
    for name in wanted:
        column = arrow.column(name)
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = column.type
        if column.null_count:
            first_null = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{file.shown}: row {first_null + 1}, column {name!r}: missing value (null)")
        is_number = pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind)
        if not (is_number or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"{file.shown}: column {name!r} has type {kind}; expected integers or strings")
        if is_number:
            numeric[name] = column.cast(pa.float64()).to_numpy()
        if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            floating.add(name)
        columns[name] = pc.cast(column, pa.string())
    return Table(file=file, columns=columns, header=header, header_lines=0, parquet=True,
                 numeric=numeric, floating=frozenset(floating))
