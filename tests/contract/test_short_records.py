"""A record with fewer fields than the header is a PARSE_ERROR naming the file and row, on
Arrow's path and on pandas' (a quote after white space sends a file there); a missing final
newline, blank lines and a header's unnamed trailing column are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from stage2.contract.csvio import parse_table, read_table
from stage2.errors import InputValidationError

#: a quoted cell after white space: such files are split by pandas, not Arrow
PANDAS_PATH_ROW = 'P02, "Second, programme",\n'
HEADER = "program_id,program_name,program_type\n"


def _on(path: str, body: str) -> str:
    """``body`` as it is, or with a record after its header that sends it down pandas' path."""
    if path == "arrow":
        return body
    header, records = body.split("\n", 1)
    return f"{header}\n{PANDAS_PATH_ROW}{records}"


def _issues(data: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(InputValidationError) as caught:
        parse_table(data.encode(), "programs.csv")
    return [(i.code, i.row, i.message) for i in caught.value.issues]


@pytest.mark.parametrize("path", ["arrow", "pandas"])
@pytest.mark.parametrize(
    ("records", "row", "missing"),
    [
        ("P01,One,UG\nP07,Prog", 3, "program_type"),  # cut mid-row, no final newline
        ("P01,One,UG\nP07,Prog\n", 3, "program_type"),
        ("P07,Prog,\nP01\nP03,Three,UG\n", 3, "program_name, program_type"),  # an inner one, 1 field
        ('P01,"One\nline two",UG\n\nP07,"Prog"\n', 3, "program_type"),  # rows count records
        ("P01,One,UG\r\nP07,Prog\r\n", 3, "program_type"),
    ],
)
def test_a_short_record_is_a_parse_error_naming_its_row(path: str, records: str, row: int, missing: str) -> None:
    (issue,) = _issues(_on(path, HEADER + records))
    code, where, message = issue
    assert (code, where) == ("PARSE_ERROR", row + (path == "pandas"))
    assert f"of the header's 3 fields: no {missing} " in message and "cut short" in message


@pytest.mark.parametrize("path", ["arrow", "pandas"])
def test_every_short_record_is_reported_up_to_the_cap(path: str) -> None:
    issues = _issues(_on(path, HEADER + "P01,One\n" * 150 + "P09,Nine,UG\n"))
    assert len(issues) == 101 and all(code == "PARSE_ERROR" for code, _, _ in issues)
    first = 3 if path == "pandas" else 2
    assert [row for _, row, _ in issues[:100]] == list(range(first, first + 100))
    assert issues[-1][1] is None and "50 more record(s)" in issues[-1][2]


@pytest.mark.parametrize("path", ["arrow", "pandas"])
@pytest.mark.parametrize(
    "body",
    [
        HEADER + "P01,One,UG\nP07,Prog,PG",  # no final newline: a whole record
        HEADER + "P01,One,UG\n\n   \nP07,Prog,PG\n",  # a blank line and one of white space
        HEADER + "P01,One,\n,,\nP07,Prog,PG\n",  # empty cells that are there
        "program_id,program_name,\nP01,One\nP07,Prog,\n",  # an unnamed (empty) trailing column
    ],
)
def test_whole_records_are_accepted(path: str, body: str) -> None:
    frame = parse_table(_on(path, body).encode(), "programs.csv")
    assert frame["program_id"].dropna().tolist() == (["P02"] if path == "pandas" else []) + ["P01", "P07"]


def test_a_large_file_cut_short_names_the_last_row(tmp_path: Path) -> None:
    """Arrow reads large files in parallel blocks, where it numbers no row: the row is found."""
    path = tmp_path / "programs.csv"
    path.write_text(HEADER + "".join(f"P{i},Programme {i},UG\n" for i in range(200_000)) + "P999999,Progr")
    with pytest.raises(InputValidationError) as caught:
        read_table(path)
    (issue,) = caught.value.issues
    assert (issue.code, issue.file, issue.row) == ("PARSE_ERROR", "programs.csv", 200_002)
