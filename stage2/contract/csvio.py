"""Reading one contract CSV file, and the cell parsers the loader builds on.

Reading rules (data contract, "Reading rules"):

- UTF-8 with or without a byte-order mark; any other bytes are an ``ENCODING_ERROR`` naming the
  line of the first undecodable byte.
- The delimiter is ``,`` unless the header line holds more ``;``, tab or ``|`` characters
  (counted outside quotes). A header without any delimiter must be one known column name.
- Quoted fields may hold delimiters, quotes (doubled) and newlines.
- Header names and cells are stripped of surrounding white space; an empty cell is null.
- Records whose cells are all empty (e.g. ``,,,`` lines written by spreadsheets) are dropped.
- A record with more or fewer fields than the header is a ``PARSE_ERROR`` naming its row (fewer:
  a file cut short); one that lacks only unnamed columns (a header ending in a delimiter) is not.
  The last record needs no line break.

Row numbers: every frame :func:`read_table` returns is indexed by record position (0 = first
data record), so the record's row in issues is ``index + 2`` (header = row 1, see
:func:`row_number`). This equals the file's line number unless a quoted cell spans several lines
or the file has blank lines; both are rare, and then the row counts records, not lines.

Parsers return ``(values, issues)``: they never raise on bad cells, so the loader can report
every problem of every file in one error.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Final, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from stage2.errors import InputValidationError, ValidationIssue

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
DEFAULT_DELIMITER = ","
#: Delimiters detected from the header line; on a tie the earlier one wins.
CANDIDATE_DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
QUOTE = '"'
#: Rows before the first data record (the header), plus 1 for 1-based numbering.
FIRST_DATA_ROW = 2
#: A check reports at most this many rows one by one, then one summary issue.
MAX_ISSUES_PER_CHECK = 100
#: Largest magnitude a whole-number cell may have (every integer up to it is exact in a float).
MAX_WHOLE_NUMBER = 2**53
#: Dtype of every text column: pandas' nullable string (nulls are ``pd.NA``).
STRING_DTYPE: Final = "string"
#: Separators of a plain list cell (``a;b;c`` or ``a|b|c``).
LIST_SEPARATOR_PATTERN = r"[;|]"
JSON_ARRAY_START = "["
#: Placeholder name of a column whose header cell is empty (dropped if all its cells are empty).
_UNNAMED = "\x00unnamed"

TRUE_TOKENS = frozenset({"true", "t", "1", "yes"})
FALSE_TOKENS = frozenset({"false", "f", "0", "no"})

#: Every column the data contract names for an input file: a header line without a delimiter
#: is accepted as a one-column file only if it is one of these.
KNOWN_COLUMNS: frozenset[str] = frozenset(
    {
        # student_data
        "student_id", "program_id", "academic_year", "semester", "student_name", "roll_number",
        "email", "preferred_shift", "preferred_languages", "enrolled_courses", "tenant_id",
        "institution_id", "is_active",
        # programs
        "program_code", "program_name", "program_type", "department_id", "duration_years",
        "total_credits",
        # courses
        "course_id", "course_code", "course_name", "course_type", "credits", "theory_hours",
        "practical_hours", "max_sessions_per_week",
        # student_course_enrollment
        "is_mandatory", "enrollment_date",
        # rooms
        "room_id", "capacity", "room_code", "room_name", "room_type", "building_name",
        "floor_number",
        # shifts
        "shift_id", "shift_code", "shift_name", "shift_type", "start_time", "end_time",
        # course_prerequisites
        "prerequisite_course_id", "minimum_grade",
        # dynamic_parameters
        "parameter_id", "parameter_code", "parameter_name", "parameter_path", "data_type",
        "default_value", "validation_rules",
        # entity_parameter_values
        "value_id", "entity_type", "entity_id", "parameter_value", "numeric_value",
        "integer_value", "boolean_value", "json_value", "effective_from", "effective_to",
        # faculty, faculty_course_competency
        "faculty_id", "faculty_code", "faculty_name", "max_hours_per_week", "competency_level",
        "preference_score",
        # pass-through tables
        "timeslot_id",
    }
)

_PARSER_LINE = re.compile(r"line (\d+)")
_PARSER_ROW = re.compile(r"row (\d+)")


def row_number(label: Hashable) -> int:
    """The 1-based file row of the record with index ``label`` (header = row 1)."""
    return int(label) + FIRST_DATA_ROW  # type: ignore[call-overload]


# --------------------------------------------------------------------------------------------
# reading


def read_table(path: Path) -> pd.DataFrame:
    """Read one contract CSV file into a frame of nullable strings.

    Columns have dtype ``string`` (stripped, empty -> ``pd.NA``); the index is the record
    position (see :func:`row_number`). Raises :class:`InputValidationError` holding one
    ``EMPTY_TABLE``, ``ENCODING_ERROR`` or ``PARSE_ERROR`` issue if the file cannot be read.
    """
    path = Path(path)
    return _parse(path.read_bytes, path.name)


def parse_table(data: bytes, file: str) -> pd.DataFrame:
    """:func:`read_table` on bytes already in memory; ``file`` names the file in issues."""
    return _parse(lambda: data, file)


def _parse(read: Callable[[], bytes], file: str) -> pd.DataFrame:
    """:func:`read_table` of the bytes ``read`` returns, which are freed once Arrow has read them
    (the file's bytes and its frame need not both be in memory)."""
    body = _body(read(), file)
    _reject_blank(body, file)
    header = _header_record(body, file)
    delimiter = detect_delimiter(header)
    table = _read_arrow(body, delimiter, _count_outside_quotes(header)[delimiter] + 1, file)
    if table is not None:
        del body
        columns = table.columns
        del table  # each raw column is freed once its normalised one replaces it
        frame = _arrow_frame(columns, file)
    else:
        # Arrow's reader stopped (or was not tried): report bad bytes first, as for any file,
        # then let pandas split the records and name the problem
        text = _decode(body, file)
        raw = _read_pandas(body, delimiter, file)
        names = _header_names(raw.iloc[0].fillna("").tolist(), file)
        # pandas pads a short record with empty cells: count each record's fields as it splits them
        _reject_short_records(_short_records_of_text(text, delimiter, len(names)), names, file)
        del text
        frame = raw.iloc[1:].set_axis(names, axis=1)
        frame.index = frame.index - 1  # record position: first data record = 0
        frame = _normalise_cells(frame, file)
    if frame.empty:
        _fail("EMPTY_TABLE", file, "the file has a header row but no data rows")
    return frame


#: A quote after white space: pandas (``skipinitialspace``) opens a quoted field there, Arrow
#: keeps the quote as text, so such files are left to pandas.
_QUOTE_AFTER_SPACE: tuple[bytes, ...] = (b' "', b'\t"')
#: The ASCII characters ``str.isspace`` counts as white space: exactly those Arrow's (and so
#: pandas') ``strip`` removes from the ends of a cell.
_ASCII_SPACE = bytes(code for code in range(128) if chr(code).isspace())
_NOT_ASCII_SPACE = re.compile(b"[^" + re.escape(_ASCII_SPACE) + b"]")
_FIRST_NON_ASCII = 0x80
#: A cell that starts and ends with a byte in this range (printable ASCII) needs no stripping:
#: white space is ASCII space and controls below it, or a multi-byte (non-ASCII) character.
_PRINTABLE_ASCII = (ord("!"), _FIRST_NON_ASCII - 1)
#: Arrow's type of every cell: the storage of pandas' ``string`` dtype (no conversion later).
_ARROW_TEXT = pa.large_string()


def _read_arrow(body: bytes, delimiter: str, n_columns: int, file: str) -> pa.Table | None:
    """Every record as strings (header included, empty cells ``""``), by Arrow's multi-threaded
    reader (several times faster than pandas on large files).

    Splits records exactly as :func:`_read_pandas`. ``None`` where the two readers could differ
    (a quote after white space) or Arrow cannot read the file (e.g. a record with more fields
    than the header, or bytes that are not UTF-8): the caller then reports the problem. A record
    with fewer fields than the header is a ``PARSE_ERROR`` raised here
    (:func:`_reject_short_records`).
    """
    quoted = QUOTE.encode() in body  # one byte: a fast scan, unlike the patterns below
    if quoted and any(pattern in body for pattern in _QUOTE_AFTER_SPACE):
        return None
    short: list[tuple[int | None, int]] = []
    try:
        table = _arrow_csv(body, delimiter, n_columns, quoted, short, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if short:
        names = _header_names([column[0].as_py() for column in table.columns], file)
        if any(not name.startswith(_UNNAMED) for name in names[min(n for _, n in short):]):
            if any(row is None for row, _ in short):  # Arrow numbers rows only when reading in one thread
                short.clear()
                _arrow_csv(body, delimiter, n_columns, quoted, short, use_threads=False)
            _reject_short_records(short, names, file)
        return None  # only unnamed columns missing: pandas keeps those records (padded)
    return table if table.num_rows else None


def _arrow_csv(body: bytes, delimiter: str, n_columns: int, quoted: bool, short: list[tuple[int | None, int]],
               *, use_threads: bool) -> pa.Table:
    """Arrow's reading of :func:`_read_arrow`; each record with fewer fields than the header but
    not blank is left out and appended to ``short`` as (row, fields), row ``None`` when
    ``use_threads`` (Arrow then does not count rows). Raises ``ArrowInvalid`` for a longer one
    and for a quote that never closes."""
    positions = [str(i) for i in range(n_columns)]

    def short_record(row: Any) -> str:
        # a longer record, or a quote left open to the end of the file: pandas names the problem
        if row.actual_columns > row.expected_columns or row.text.count(QUOTE) % 2:
            return "error"
        if row.text.strip():  # a record of white space only is a blank line: dropped, as those are
            short.append((row.number, row.actual_columns))
        return "skip"

    return pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=positions, use_threads=use_threads),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter,
            quote_char=QUOTE,
            double_quote=True,
            newlines_in_values=quoted,
            invalid_row_handler=short_record,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(positions, _ARROW_TEXT),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=True,  # as strict as Python's decoder: no bytes pass here that it rejects
        ),
    )


def _arrow_frame(columns: list[pa.ChunkedArray], file: str) -> pd.DataFrame:
    """The frame :func:`read_table` returns from :func:`_read_arrow`'s columns, normalised in
    Arrow as :func:`_normalise_cells` does in pandas; each of ``columns`` is replaced (freed)
    by its normalised records."""
    names = _header_names([column[0].as_py() for column in columns], file)
    n_records = len(columns[0]) - 1
    for i, column in enumerate(columns):
        columns[i] = _normalise_column(column.slice(1))
    for name, column in zip(names, columns, strict=True):
        if name.startswith(_UNNAMED) and column.null_count < len(column):
            position = int(name[len(_UNNAMED) :]) + 1
            _fail("PARSE_ERROR", file, f"column {position} has values but no name in the header row", row=1)
    named = [(name, column) for name, column in zip(names, columns, strict=True) if not name.startswith(_UNNAMED)]
    positions = [str(i) for i in range(len(named))]
    frame = pa.Table.from_arrays([column for _, column in named], names=positions).to_pandas(
        types_mapper={_ARROW_TEXT: pd.StringDtype()}.get
    )
    frame = frame.set_axis([name for name, _ in named], axis=1)
    if not named or all(column.null_count == len(column) for _, column in named):
        return frame.iloc[:0]
    if any(column.null_count == 0 for _, column in named):
        return frame
    filled = np.zeros(n_records, dtype=bool)
    for _, column in named:
        filled |= column.is_valid().to_numpy()
    return frame if filled.all() else frame.loc[filled]  # no copy of a file without empty records


def _normalise_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Strip every cell and make empty cells null (:func:`_normalise_cells`, in Arrow)."""
    if _edges_may_be_space(column):
        column = pc.utf8_trim_whitespace(column)
    empty = pc.equal(pc.binary_length(column), 0)
    if pc.any(empty).as_py():
        column = pc.if_else(empty, pa.scalar(None, column.type), column)
    return column


def _edges_may_be_space(column: pa.ChunkedArray) -> bool:
    """Whether a cell may start or end with white space (stripping it is then not a no-op).

    Reads the first and last byte of each cell straight from Arrow's buffers; an empty cell
    reads a neighbour's byte, which at worst says "may" where stripping changes nothing.
    """
    low, high = _PRINTABLE_ASCII
    for chunk in column.chunks:
        _, offsets_buffer, data_buffer = chunk.buffers()
        if len(chunk) == 0 or data_buffer is None or data_buffer.size == 0:
            continue
        offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(data_buffer, dtype=np.uint8)
        for edge in (data.take(offsets[:-1], mode="clip"), data.take(offsets[1:] - 1, mode="clip")):
            if ((edge < low) | (edge > high)).any():
                return True
    return False


def _read_pandas(body: bytes, delimiter: str, file: str) -> pd.DataFrame:
    """Every record as strings (header included), by pandas' C parser; a file it cannot split
    into records of the header's field count is a ``PARSE_ERROR`` naming the row."""
    try:
        # header=None: the header row fixes the field count, so a longer data row is an error
        # (with header=0 pandas would silently take its first field as the index).
        raw = pd.read_csv(
            io.BytesIO(body),
            encoding="utf-8",
            sep=delimiter,
            header=None,
            index_col=False,
            dtype=STRING_DTYPE,
            keep_default_na=False,
            skipinitialspace=True,
            quotechar=QUOTE,
            doublequote=True,
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        reason = _one_based_rows(str(exc).strip().removeprefix("Error tokenizing data. C error: "))
        _fail("PARSE_ERROR", file, f"cannot split the file into columns ({reason})", row=_error_row(reason))
    return raw


def _short_records_of_text(text: str, delimiter: str, n_fields: int) -> list[tuple[int | None, int]]:
    """(row, fields) of every record with fewer than ``n_fields`` fields that is not blank, as
    :func:`_read_pandas` splits them (the csv module with the same dialect: pandas itself pads
    a short record with empty cells). Rows count records, header = 1, blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=QUOTE, doublequote=True,
                        skipinitialspace=True, strict=False)
    records = (fields for fields in reader if fields)
    return [(row, len(fields)) for row, fields in enumerate(records, start=1)
            if len(fields) < n_fields and any(field.strip() for field in fields)]


def _reject_short_records(short: list[tuple[int | None, int]], names: list[str], file: str) -> None:
    """``PARSE_ERROR`` for every record of ``short`` ((row, fields) pairs) that lacks a named
    column: a file cut short, e.g. by an interrupted export, whose missing cells must not be read
    as empty ones. A record lacking only unnamed columns (after a header that ends in a
    delimiter) is not a problem: those columns are dropped."""
    named = [not name.startswith(_UNNAMED) for name in names]
    cut = [(row, n) for row, n in short if any(named[n:])]
    issues = [
        ValidationIssue(
            code="PARSE_ERROR", file=file, row=row,
            message=f"the record has {n} of the header's {len(names)} fields: no "
                    f"{', '.join(name for name, keep in zip(names[n:], named[n:], strict=True) if keep)} "
                    "(is the file cut short, by an interrupted export?)",
        )
        for row, n in cut[:MAX_ISSUES_PER_CHECK]
    ]
    if len(cut) > MAX_ISSUES_PER_CHECK:
        issues.append(ValidationIssue(code="PARSE_ERROR", file=file, message=(
            f"{len(cut) - MAX_ISSUES_PER_CHECK} more record(s) with fewer fields than the header")))
    if issues:
        raise InputValidationError(issues)


def _body(data: bytes, file: str) -> bytes:
    """The file's bytes without a UTF-8 byte-order mark; ``ENCODING_ERROR`` for a UTF-16 file or
    one holding a NUL byte (the UTF-8 check itself is :func:`_decode`, or Arrow's reader)."""
    if data.startswith(UTF16_BOMS):
        _fail("ENCODING_ERROR", file, "the file is UTF-16 (Excel 'Unicode text'), not UTF-8", row=1)
    body = data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data
    nul = body.find(b"\x00")
    if nul >= 0:
        # valid UTF-8, but no text export holds NUL: UTF-16 without a byte-order mark, or a
        # binary file (and PostgreSQL, Stage 3's store, rejects NUL in text)
        line = body[:nul].count(b"\n") + 1
        _fail(
            "ENCODING_ERROR",
            file,
            f"the file holds a NUL byte (0x00) on line {line}: it is not a UTF-8 text export "
            "(UTF-16 without a byte-order mark, or a binary file?)",
            row=line,
        )
    return body


def _decode(body: bytes, file: str) -> str:
    """``body`` as text; ``ENCODING_ERROR`` naming the line of the first byte that is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        bad = body[exc.start : exc.start + 1].hex().upper()
        _fail(
            "ENCODING_ERROR",
            file,
            f"the file is not UTF-8: byte 0x{bad} on line {line} cannot be decoded "
            "(was it saved as Latin-1 or Windows-1252?)",
            row=line,
        )


def _reject_blank(body: bytes, file: str) -> None:
    """``EMPTY_TABLE`` if the file holds only white space; ``ENCODING_ERROR`` as :func:`_decode`
    where that takes decoding it (it starts with a non-ASCII character)."""
    first = _NOT_ASCII_SPACE.search(body)
    if first is not None and body[first.start()] >= _FIRST_NON_ASCII:
        blank = _decode(body, file).isspace()  # rare: a file starting with a non-ASCII character
    else:
        blank = first is None
    if blank:
        _fail("EMPTY_TABLE", file, "the file is empty (no header row)")


def _header_record(body: bytes, file: str) -> str:
    """The header record (:func:`_first_record`), decoding only its bytes."""
    quote, newline = QUOTE.encode(), b"\n"
    start, quotes = 0, 0
    end = body.find(newline)
    while end >= 0:
        quotes += body.count(quote, start, end)
        if quotes % 2 == 0:  # the line break is outside quotes
            break
        start, end = end + 1, body.find(newline, end + 1)
    record = body if end < 0 else body[:end]
    try:
        return record.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return _first_record(_decode(body, file))  # _decode reports the first bad byte


def _first_record(text: str) -> str:
    """The header record: text up to the first line break outside quotes, without ``\\r``."""
    in_quotes = False
    for position, char in enumerate(text):
        if char == QUOTE:
            in_quotes = not in_quotes
        elif char == "\n" and not in_quotes:
            return text[:position].rstrip("\r")
    return text.rstrip("\r")


def _count_outside_quotes(line: str) -> dict[str, int]:
    counts = dict.fromkeys(CANDIDATE_DELIMITERS, 0)
    in_quotes = False
    for char in line:
        if char == QUOTE:
            in_quotes = not in_quotes
        elif not in_quotes and char in counts:
            counts[char] += 1
    return counts


def detect_delimiter(header_line: str) -> str:
    """The most frequent candidate delimiter outside quotes in ``header_line`` (``,`` if none)."""
    counts = _count_outside_quotes(header_line)
    best = max(CANDIDATE_DELIMITERS, key=lambda d: counts[d])  # first wins on a tie
    return best if counts[best] > 0 else DEFAULT_DELIMITER


def _header_names(cells: list[str], file: str) -> list[str]:
    """Strip the header cells; reject duplicate names and an unknown lone column."""
    names = [cell.strip() for cell in cells]
    if len(names) == 1 and names[0] not in KNOWN_COLUMNS:
        _fail(
            "PARSE_ERROR",
            file,
            f"no delimiter found in the header row ({names[0][:80]!r}); separate the column "
            "names with ',' ';' tab or '|'",
            row=1,
        )
    duplicates = sorted(name for name in set(names) if name and names.count(name) > 1)
    if duplicates:
        _fail("PARSE_ERROR", file, f"the header names these columns more than once: {', '.join(duplicates)}", row=1)
    # Unnamed columns (e.g. after a trailing delimiter) get a placeholder and are dropped if empty.
    return [name or f"{_UNNAMED}{i}" for i, name in enumerate(names)]


def _normalise_cells(frame: pd.DataFrame, file: str) -> pd.DataFrame:
    """Strip every cell, make empty cells ``pd.NA``, drop unnamed empty columns and empty records."""
    for column in frame.columns:
        stripped = frame[column].str.strip()
        frame[column] = stripped.mask(stripped == "")
    unnamed = [c for c in frame.columns if c.startswith(_UNNAMED)]
    for column in unnamed:
        if frame[column].notna().any():
            position = int(column[len(_UNNAMED) :]) + 1
            _fail("PARSE_ERROR", file, f"column {position} has values but no name in the header row", row=1)
    frame = frame.drop(columns=unnamed)
    filled = frame.notna().any(axis=1)
    return frame if filled.all() else frame.loc[filled]  # no copy of a file without empty records


def _one_based_rows(message: str) -> str:
    """pandas' parser says ``line N`` 1-based but ``row N`` (e.g. "EOF inside string starting at
    row N") counting records from 0, header included: make every ``row`` 1-based like ours."""
    return _PARSER_ROW.sub(lambda m: f"row {int(m.group(1)) + 1}", message)


def _error_row(message: str) -> int | None:
    match = _PARSER_LINE.search(message) or _PARSER_ROW.search(message)
    return int(match.group(1)) if match else None


def _fail(code: str, file: str, message: str, *, row: int | None = None) -> NoReturn:
    raise InputValidationError([ValidationIssue(code=code, file=file, message=message, row=row)])


# --------------------------------------------------------------------------------------------
# vectorised helpers


def string_isin(series: pd.Series, values: pd.Series) -> np.ndarray:
    """``series.isin(values)`` for string columns, as a numpy bool array (null -> ``False``).

    pandas' own ``isin`` on Arrow-backed strings converts ``values`` element by element in
    Python (tens of seconds for millions of ids); this stays in Arrow or in a hash index.
    """
    left = series.astype(STRING_DTYPE)
    right = values.astype(STRING_DTYPE).dropna().unique()
    if getattr(left.dtype, "storage", None) == "pyarrow":
        left_array = pa.array(left.array)
        found = pc.is_in(left_array, value_set=pa.array(right).cast(left_array.type))
        return np.asarray(pc.fill_null(found, False), dtype=bool)
    return pd.Index(right).get_indexer(left) >= 0


def string_positions(
    values: pd.Series | np.ndarray, reference: pd.Series | np.ndarray, *, runs: bool = False
) -> np.ndarray:
    """Position of each of ``values`` in ``reference`` (unique strings), -1 where absent —
    ``pd.Index(reference).get_indexer(values)``, but in Arrow (4× faster on millions of ids).

    ``runs``: the values come in runs of repeats (e.g. enrollments listed student by student),
    so each run is looked up once.
    """
    left = pd.Series(values).astype(STRING_DTYPE)
    if runs and len(left) > 1 and getattr(left.dtype, "storage", None) == "pyarrow":
        array = pa.array(left.array)
        changed = pc.fill_null(pc.not_equal(array[1:], array[:-1]), True)  # a null is its own run
        starts = np.flatnonzero(np.r_[True, np.asarray(changed)])
        found = string_positions(pd.Series(array.take(starts), dtype=STRING_DTYPE), reference)
        return np.repeat(found, np.diff(np.r_[starts, len(left)]))
    right = pd.Series(reference).astype(STRING_DTYPE)
    if getattr(left.dtype, "storage", None) == "pyarrow":
        left_array = pa.array(left.array)
        found = pc.index_in(left_array, value_set=pa.array(right.array).cast(left_array.type))
        return np.asarray(pc.fill_null(found, -1), dtype=np.int64)
    return pd.Index(right).get_indexer(pd.Index(left)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# issues


def row_issues(
    code: str,
    file: str,
    column: str | None,
    values: pd.Series,
    message: str,
    *,
    limit: int = MAX_ISSUES_PER_CHECK,
) -> list[ValidationIssue]:
    """One issue per entry of ``values`` (index = record labels), at most ``limit`` of them.

    Beyond ``limit`` a single summary issue counts the remaining rows, so a file that is wrong
    throughout does not produce a million issues.
    """
    issues = [
        ValidationIssue(
            code=code,
            file=file,
            message=message,
            row=row_number(label),
            column=column,
            value=None if _is_null(value) else value,
        )
        for label, value in values.iloc[:limit].items()
    ]
    remaining = len(values) - limit
    if remaining > 0:
        issues.append(
            ValidationIssue(
                code=code,
                file=file,
                message=f"{message}: {remaining} more row(s) like the ones above",
                column=column,
            )
        )
    return issues


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------
# cell parsers


def parse_bool_series(series: pd.Series, *, file: str, column: str) -> tuple[pd.Series, list[ValidationIssue]]:
    """Parse ``true/false/t/f/1/0/yes/no`` (any case) into nullable ``boolean``.

    Nulls stay null; any other text is null in the result and an ``INVALID_BOOLEAN`` issue.
    """
    lowered = series.astype(STRING_DTYPE).str.lower()
    parsed = pd.Series(pd.NA, index=series.index, dtype="boolean")
    parsed[string_isin(lowered, pd.Series(sorted(TRUE_TOKENS)))] = True
    parsed[string_isin(lowered, pd.Series(sorted(FALSE_TOKENS)))] = False
    invalid = series.notna() & parsed.isna()
    message = "not a boolean (use true/false/t/f/1/0/yes/no)"
    issues = row_issues("INVALID_BOOLEAN", file, column, series[invalid], message)
    return parsed, issues


_TOO_LARGE = f"whole number too large (at most {MAX_WHOLE_NUMBER} in magnitude)"


def coerce_integer(series: pd.Series, *, file: str, column: str) -> tuple[pd.Series, list[ValidationIssue]]:
    """Parse whole numbers (``3``, ``3.0``, ``3e0``) into nullable ``Int64``.

    Text that is not a finite whole number is null in the result and an ``INVALID_NUMBER``
    issue.
    """
    plain = _plain_integers(series)
    if plain is not None:
        integers, beyond = plain
        return integers, row_issues("INVALID_NUMBER", file, column, series[beyond], _TOO_LARGE)
    numbers, invalid = _to_finite_numbers(series)
    fractional = numbers.notna() & (numbers != numbers.round())
    # beyond ±2**53 a float no longer holds every whole number, and beyond int64 the cast to
    # Int64 silently wraps around (1e30 became -9223372036854775808): reject, do not wrap
    too_large = numbers.notna() & (numbers.abs() > MAX_WHOLE_NUMBER)
    bad = invalid | fractional | too_large
    issues = row_issues(
        "INVALID_NUMBER", file, column, series[(invalid | fractional) & ~too_large], "not a whole number"
    )
    issues += row_issues("INVALID_NUMBER", file, column, series[too_large], _TOO_LARGE)
    return numbers.mask(bad).astype("Int64"), issues


def coerce_float(series: pd.Series, *, file: str, column: str) -> tuple[pd.Series, list[ValidationIssue]]:
    """Parse numbers into nullable ``Float64``; other text is null and an ``INVALID_NUMBER`` issue."""
    numbers, invalid = _to_finite_numbers(series)
    issues = row_issues("INVALID_NUMBER", file, column, series[invalid], "not a number")
    return numbers, issues


def coerce_datetime(series: pd.Series, *, file: str, column: str) -> tuple[pd.Series, list[ValidationIssue]]:
    """Parse ISO 8601 dates/timestamps into naive UTC ``datetime64``.

    A timestamp with an offset is converted to UTC; one without is taken as UTC. Other text is
    ``NaT`` in the result and an ``INVALID_DATE`` issue.
    """
    # each distinct text is parsed once: an export repeats few dates over millions of rows
    codes, texts = pd.factorize(series.astype(STRING_DTYPE))
    distinct = pd.to_datetime(pd.Series(texts), errors="coerce", format="ISO8601", utc=True).dt.tz_convert(None)
    values = pd.api.extensions.take(distinct.to_numpy(), codes, allow_fill=True)
    parsed = pd.Series(values, index=series.index, name=series.name)
    invalid = series.notna() & parsed.isna()
    issues = row_issues("INVALID_DATE", file, column, series[invalid], "not an ISO date (YYYY-MM-DD[THH:MM:SS])")
    return parsed, issues


def _plain_integers(series: pd.Series) -> tuple[pd.Series, np.ndarray] | None:
    """:func:`coerce_integer`'s values, and the mask of values too large, for a column whose
    every cell is a plain integer literal, which Arrow casts in one pass (parsing text as
    numbers one by one takes seconds on millions of rows); ``None`` if any cell is anything
    else (``3.0``, ``x``).

    Each value goes through a float, as in :func:`_to_finite_numbers`, so that the limit of
    :data:`MAX_WHOLE_NUMBER` and the values kept are exactly those of the general path.
    """
    strings = series.astype(STRING_DTYPE)
    if getattr(strings.dtype, "storage", None) != "pyarrow":
        return None
    try:
        integers = pc.cast(pa.array(strings.array), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    filled = np.asarray(integers.is_valid())
    whole = np.asarray(pc.fill_null(integers, 0))
    too_large = np.zeros(len(whole), dtype=bool)
    if whole.size and max(int(whole.max()), -int(whole.min())) > MAX_WHOLE_NUMBER:
        # a float holds these only approximately: round-trip, as the general path
        as_float = whole.astype(np.float64)
        too_large = filled & (np.abs(as_float) > MAX_WHOLE_NUMBER)
        whole = np.where(too_large, 0, as_float).astype(np.int64)
    values = pd.arrays.IntegerArray(whole, ~filled | too_large)
    return pd.Series(values, index=series.index), too_large


def _to_finite_numbers(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    numbers = pd.to_numeric(series.astype(STRING_DTYPE), errors="coerce").astype("Float64")
    finite = numbers.notna() & np.isfinite(numbers.fillna(0.0).to_numpy(dtype=float))
    numbers = numbers.where(finite)
    invalid = series.notna() & ~finite
    return numbers, invalid


def parse_list_cell(value: object) -> tuple[str, ...]:
    """Parse one list cell: ``a;b;c``, ``a|b|c`` or a JSON array ``["a","b"]``.

    Returns the stripped, non-empty items (``()`` for a null cell). Raises ``ValueError`` for
    a cell that starts with ``[`` but is not a JSON array of strings or whole numbers.
    """
    if _is_null(value):
        return ()
    text = str(value).strip()
    if text.startswith(JSON_ARRAY_START):
        return tuple(item for item in (_json_item(i) for i in _json_array(text)) if item)
    return tuple(item.strip() for item in re.split(LIST_SEPARATOR_PATTERN, text) if item.strip())


def _json_array(text: str) -> list[object]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON array: {exc.msg}") from exc
    if not isinstance(parsed, list):
        raise ValueError("not a JSON array")
    return parsed


def _json_item(item: object) -> str:
    if isinstance(item, str):
        return item.strip()
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    raise ValueError(f"JSON array items must be strings, got {item!r}")


def explode_list_series(series: pd.Series, *, file: str, column: str) -> tuple[pd.Series, list[ValidationIssue]]:
    """All items of a list column in long form: one row per item, indexed by its record label.

    Items keep their cell's order; records keep file order. Plain cells are split vectorised;
    only cells starting with ``[`` are parsed one by one as JSON. A malformed JSON cell is an
    ``INVALID_VALUE`` issue and contributes no items.
    """
    items, bad_labels, bad_reasons = _explode(series)
    issues = row_issues("INVALID_VALUE", file, column, series.loc[bad_labels], _not_a_list(bad_reasons))
    return items.rename(column), issues


def _not_a_list(reasons: list[str]) -> str:
    """The message of a malformed list cell, with the reason of the first."""
    return "not a list: use a;b;c, a|b|c or a JSON array of strings" + (f" ({reasons[0]})" if reasons else "")


def _explode(series: pd.Series) -> tuple[pd.Series, list[Any], list[str]]:
    """:func:`explode_list_series`'s items, and the labels and reasons of malformed cells."""
    cells = series.dropna().astype(STRING_DTYPE)
    is_json = cells.str.startswith(JSON_ARRAY_START)
    parts = [_split_items(cells[~is_json])]
    bad_labels: list[Any] = []
    bad_reasons: list[str] = []
    for label, text in cells[is_json].items():
        try:
            cell_items = parse_list_cell(text)
        except ValueError as exc:
            bad_labels.append(label)
            bad_reasons.append(str(exc))
            continue
        parts.append(pd.Series(list(cell_items), index=[label] * len(cell_items), dtype=object))
    items = pd.concat(parts).astype(STRING_DTYPE).str.strip()
    items = items[items.notna() & (items != "")]
    if len(parts) > 1:  # JSON items were appended after the plain ones: restore record order
        items = items.sort_index(kind="stable")
    return items, bad_labels, bad_reasons


def _split_items(cells: pd.Series) -> pd.Series:
    """``cells.str.split(LIST_SEPARATOR_PATTERN, regex=True).explode()``; in Arrow when the
    strings are Arrow's (pandas splits by regex one Python string at a time)."""
    if getattr(cells.dtype, "storage", None) != "pyarrow":
        return cells.str.split(LIST_SEPARATOR_PATTERN, regex=True).explode()
    lists = pc.split_pattern_regex(pa.array(cells.array), LIST_SEPARATOR_PATTERN)
    items = pc.list_flatten(lists).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
    return pd.Series(items.array, index=cells.index[pc.list_parent_indices(lists).to_numpy()], name=cells.name)


def parse_list_series(series: pd.Series, *, file: str, column: str) -> tuple[pd.Series, list[ValidationIssue]]:
    """Parse a list column into a column of tuples of ``str`` (``()`` for a null cell), with
    the issues of :func:`explode_list_series`.

    Each distinct cell is parsed once and its rows share its tuple: an export repeats few lists
    (e.g. languages) over many rows, and a tuple per row costs seconds and memory.
    """
    codes, distinct = pd.factorize(series.astype(STRING_DTYPE))  # a null cell: code -1
    cells = pd.Series(distinct, dtype=STRING_DTYPE)
    items, bad_cells, bad_reasons = _explode(cells)
    # one more label than cells: its empty tuple is what code -1 (a null cell) takes
    tuples = tuples_by_label(items, pd.RangeIndex(len(cells) + 1)).to_numpy()
    bad_rows = series[np.isin(codes, np.asarray(bad_cells, dtype=codes.dtype))]
    issues = row_issues("INVALID_VALUE", file, column, bad_rows, _not_a_list(bad_reasons))
    return pd.Series(tuples[codes], index=series.index, dtype=object), issues


def tuples_by_label(items: pd.Series, index: pd.Index) -> pd.Series:
    """Group long-form ``items`` (sorted by label) back into one tuple per label of ``index``."""
    empty: tuple[str, ...] = ()
    tuples: list[tuple[str, ...]] = [empty] * len(index)
    if len(items):
        labels = items.index.to_numpy()
        values = items.to_numpy(dtype=object).tolist()  # list slices: far faster than numpy's here
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        ends = np.r_[starts[1:], len(labels)]
        positions = index.get_indexer(pd.Index(labels[starts]))
        for position, a, b in zip(positions.tolist(), starts.tolist(), ends.tolist(), strict=True):
            if position >= 0:
                tuples[position] = tuple(values[a:b])
    return pd.Series(tuples, index=index, dtype=object)


def upper_enum(series: pd.Series) -> pd.Series:
    """Normalise an enumeration column: upper case, inner spaces and hyphens as ``_``."""
    # each distinct value once: pandas replaces by regex one Python string at a time
    codes, distinct = pd.factorize(series.astype(STRING_DTYPE))
    normalised = pd.Series(distinct, dtype=STRING_DTYPE).str.upper().str.replace(r"[\s\-]+", "_", regex=True)
    result = take_strings(normalised, codes).set_axis(series.index)
    result.name = series.name
    return result


def string_categorical(values: pd.Series) -> pd.Categorical:
    """``values`` as a categorical of ``string`` categories (in order of first appearance; nulls
    stay null), dictionary-encoded in Arrow: several times faster than pandas' hashing on
    millions of rows."""
    encoded = pc.dictionary_encode(pa.array(values.astype(STRING_DTYPE).array))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks() if encoded.num_chunks else pa.array(
            [], pa.dictionary(pa.int32(), pa.large_string()))
    categories = pd.Index(encoded.dictionary.to_pylist(), dtype=STRING_DTYPE)
    return pd.Categorical.from_codes(pc.fill_null(encoded.indices, -1).to_numpy(), categories=categories)


def take_strings(values: pd.Series, positions: np.ndarray) -> pd.Series:
    """``values`` (``string``) at ``positions``, null where a position is -1; a fresh RangeIndex.

    In Arrow: building millions of strings from Python objects takes a second.
    """
    taken = pa.array(values.astype(STRING_DTYPE).array).take(pa.array(positions, mask=positions < 0))
    return taken.to_pandas(types_mapper={taken.type: pd.StringDtype()}.get)


# --------------------------------------------------------------------------------------------
# writing

def _text_array(values: pd.Series) -> pa.Array:
    """The column as arrow strings, formatted as written (nulls stay null)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        dictionary = _text_array(pd.Series(values.cat.categories))
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), dictionary)
    arr = pa.array(values, from_pandas=True)
    if pa.types.is_boolean(arr.type):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_floating(arr.type):  # shortest repr that round-trips: 7.83, 8.0
        return pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string())
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    return pc.cast(arr, pa.string())


def _needs_quoting(arr: pa.Array, delimiter: str) -> bool:
    if isinstance(arr, pa.DictionaryArray):
        arr = arr.dictionary
    pattern = "[" + re.escape(delimiter) + '"\r\n]'
    return bool(pc.any(pc.match_substring_regex(arr, pattern)).as_py())


def _write_quoted(table: pa.Table, path: Path, *, delimiter: str, bom: bool) -> None:
    """Records ended by ``\n``, fields quoted where they hold the delimiter, a quote, ``\r`` or
    ``\n``. Python's csv writer quotes only the characters of its line terminator, so it writes
    each record with ``\r\n`` (quoting both) and the terminator is then swapped for ``\n``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    records = table.to_pandas().itertuples(index=False, name=None)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        for record in itertools.chain([table.column_names], records):
            writer.writerow([value if isinstance(value, str) else "" for value in record])  # all text; else null
            f.write(buffer.getvalue()[:-2] + "\n")
            buffer.seek(0)
            buffer.truncate()


def write_csv(frame: pd.DataFrame, path: Path, *, delimiter: str = ",", bom: bool = False) -> None:
    """Write a frame as CSV, quoting only fields that need it.

    Fast path: arrow's writer, when no field needs quoting. Otherwise pandas (csv quoting).
    Both write the same text columns, so the bytes do not depend on the path taken.
    """
    names = [str(c) for c in frame.columns]
    columns = [_text_array(frame[c]) for c in frame.columns]
    table = pa.table(columns, names=names)
    header = pa.array(names, pa.string())
    if _needs_quoting(header, delimiter) or any(_needs_quoting(c, delimiter) for c in columns):
        _write_quoted(table, path, delimiter=delimiter, bom=bom)
        return
    with open(path, "wb") as f:
        if bom:
            f.write(UTF8_BOM)
        f.write((delimiter.join(names) + "\n").encode("utf-8"))
        if len(table):
            pacsv.write_csv(
                table, f,
                pacsv.WriteOptions(include_header=False, delimiter=delimiter,
                                   quoting_style="none"),
            )
