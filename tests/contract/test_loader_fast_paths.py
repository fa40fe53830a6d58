"""The loader's fast paths give what the general ones do: stripping in Arrow, lookups by row
position, one parse per distinct list cell, plain integers, the streamed digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_loader import BASE, load, only, problems

from stage2.contract.csvio import (
    _header_names,
    _normalise_cells,
    _read_pandas,
    coerce_integer,
    explode_list_series,
    parse_list_series,
    parse_table,
    string_positions,
    tuples_by_label,
)
from stage2.errors import InputValidationError

ENROLLMENTS = BASE["student_course_enrollment.csv"]


@pytest.mark.parametrize(
    "body",
    [
        "a,b\n x ,y\n",
        "a,b\nx,\ty\t\n",
        "a,b\n\u00a0x\u00a0,\u2003y\n",  # non-ASCII white space
        "a,b\n\x1cx\x1f,y\n",  # ASCII separators count as white space
        "a,b\n   ,y\n,\n",  # a cell of white space is empty; an empty record is dropped
        "a,b\nx,y\n",
        "a,b,\nx,y,\n",  # a trailing delimiter: an unnamed empty column
    ],
)
def test_cells_are_normalised_as_by_pandas(body: str) -> None:
    data = body.encode()
    raw = _read_pandas(data, ",", "f.csv")  # pandas' reader and normalisation, as a reference
    expected = raw.iloc[1:].set_axis(_header_names(raw.iloc[0].fillna("").tolist(), "f.csv"), axis=1)
    expected.index = expected.index - 1
    expected = _normalise_cells(expected, "f.csv")
    pd.testing.assert_frame_equal(parse_table(data, "f.csv"), expected)


def test_file_of_unicode_white_space_is_empty() -> None:
    with pytest.raises(InputValidationError) as caught:
        parse_table("\u00a0\n \u2003\n".encode(), "f.csv")
    assert [i.code for i in caught.value.issues] == ["EMPTY_TABLE"]


def test_bad_byte_after_the_header_is_an_encoding_error_on_its_line() -> None:
    with pytest.raises(InputValidationError) as caught:
        parse_table(b"a,b\nx,y\nz,\xe9\n", "f.csv")
    (issue,) = caught.value.issues
    assert (issue.code, issue.row) == ("ENCODING_ERROR", 3)


def test_repeated_enrollment_with_a_dangling_course_is_dropped_once(tmp_path: Path) -> None:
    error = problems(tmp_path, student_course_enrollment_csv=ENROLLMENTS + "S1,C9,,2024-25,1,\nS1,C9,,2024-25,1,\n")
    dangling = only(error, "DANGLING_REFERENCE")
    assert [(i.row, i.value) for i in dangling] == [(6, "C9")]


def test_repeated_enrollments_of_known_ids_warn_with_the_first_row(tmp_path: Path) -> None:
    data = load(tmp_path, student_course_enrollment_csv=ENROLLMENTS + "S2,C1,,2024-25,1,\nS1,C1,,2024-25,1,\n")
    assert len(data.enrollments) == 4
    assert any("2 repeated" in w and "row 6" in w for w in data.warnings)


def test_repeated_student_id_with_enrollments_is_only_a_duplicate_key(tmp_path: Path) -> None:
    students = BASE["student_data.csv"] + "S1,P1,2024-25,1,Dup,MORNING,en,true,no\n"
    error = problems(tmp_path, student_data_csv=students)
    assert {i.code for i in error.issues} == {"DUPLICATE_KEY"}


@pytest.mark.parametrize("runs", [False, True])
def test_string_positions_in_runs(runs: bool) -> None:
    reference = pd.Series(["a", "b", None, "c"], dtype="string")
    values = pd.Series(["a", "a", None, None, "x", "x", "c", "a", "b"], dtype="string")
    expected = pd.Index(reference.astype(object)).get_indexer(values.astype(object))
    expected[[2, 3]] = 2  # a null finds the null of the reference
    np.testing.assert_array_equal(string_positions(values, reference, runs=runs), expected)


def test_list_cells_parsed_once_per_distinct_value() -> None:
    series = pd.Series(["en;hi", None, "en;hi", '["en"]', "[bad", "fr", "[bad", "[1.5]"], dtype="string")
    tuples, issues = parse_list_series(series, file="f.csv", column="langs")
    items, expected_issues = explode_list_series(series, file="f.csv", column="langs")
    assert tuples.tolist() == tuples_by_label(items, series.index).tolist()
    assert tuples.tolist()[:4] == [("en", "hi"), (), ("en", "hi"), ("en",)]
    assert [str(i) for i in issues] == [str(i) for i in expected_issues]
    assert [i.row for i in issues] == [6, 8, 9]


@pytest.mark.parametrize(
    ("cells", "values", "bad_rows"),
    [
        (["1", None, "-7"], [1, None, -7], []),
        (["9007199254740992", "9007199254740994", "-9223372036854775808"], [2**53, None, None], [3, 4]),
        (["3.0", "2"], [3, 2], []),  # not plain: the general path
    ],
)
def test_coerce_integer(cells: list[str | None], values: list[int | None], bad_rows: list[int]) -> None:
    result, issues = coerce_integer(pd.Series(cells, dtype="string"), file="f.csv", column="n")
    assert result.dtype == "Int64"
    assert [None if pd.isna(v) else int(v) for v in result] == values
    assert [i.row for i in issues] == bad_rows


def test_digest_frames_every_file_in_name_order(tmp_path: Path) -> None:
    data = load(tmp_path)
    total = hashlib.sha256()
    for name in sorted(BASE):
        content = (tmp_path / "in" / name).read_bytes()
        total.update(f"{name}\0{len(content)}\0".encode() + content)
        assert data.file_digests[name] == hashlib.sha256(content).hexdigest()
    assert data.digest == total.hexdigest()
