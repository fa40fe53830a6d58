"""Deterministic "what changed between two batching runs" scenarios, for the re-batching experiment.

``make_scenario(IN, OUT, ...)`` reads an institution directory in the stage2 input contract
(``/work/shared/spec/data-contract.md``) and writes a modified copy to ``OUT``:

- ``switch``: a share of the active students switch ONE course: one of their current-term
  enrolments is replaced by a course they do not take yet (any term), drawn among the courses the
  other active students of their (program_id, academic_year, semester) group take this term
  (weighted by how many take it, so popular alternatives are likelier than one-off backlogs), or,
  when there is none, uniformly among the courses of their programme (``courses.csv``
  ``program_id``). The
  enrolment row keeps its other columns (academic_year, semester, is_mandatory, ...): only its
  ``course_id`` changes. With an ``enrolled_courses`` list column the item is replaced in the cell.
- ``new``: new students, each a clone of a random active, non-dropped student (same row, fresh
  unique ``student_id`` ``<orig>-new-<k>``, fresh ``roll_number``/``email`` when those are unique in
  the file) with copies of all its enrolment rows (after the switches). Appended at the end.
- ``drop``: a share of the active students leave: ``drop_mode="inactive"`` sets ``is_active`` to
  false (the column is added, true for the others, if missing); ``"delete"`` removes their rows
  and their enrolment rows.
- ``close_rooms``: N rooms are removed from ``rooms.csv``; with ``previous_run`` (a run directory
  holding ``student_batches.csv``, or that file), among the rooms its batches use (then among the
  others if there are fewer than N).

Rates are shares of the active students (``is_active`` not false, non-empty ``student_id``); the
counts are ``round(rate * n_active)``. Dropped and switched students are disjoint; new students
are never switched. Everything is a pure function of the input files and ``seed`` (one
``numpy.random.default_rng(seed)``, students drawn from their sorted ids). Untouched files are
copied byte for byte; touched ones are rewritten from all-string frames (``dtype=str,
keep_default_na=False``) with the original header, column order, delimiter (sniffed from the
header line), byte-order mark and line ends. ``OUT/scenario.json`` lists the parameters and the
exact ids affected (``switched``, ``new``, ``dropped``, ``closed_rooms``).

CLI::

    python experiments/rebatching/scenarios.py IN OUT [--switch 0.05] [--new 0.02] [--drop 0.02]
        [--drop-mode inactive|delete] [--close-rooms 1] [--previous-run DIR] [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stage2.contract.csvio import detect_delimiter

STUDENTS = "student_data.csv"
ENROLLMENTS = "student_course_enrollment.csv"
COURSES = "courses.csv"
ROOMS = "rooms.csv"
BATCHES = "student_batches.csv"
SCENARIO = "scenario.json"
ENROLLED_COURSES = "enrolled_courses"
DROP_MODES = ("inactive", "delete")

UTF8_BOM = b"\xef\xbb\xbf"
QUOTE = '"'
FALSE_TOKENS = frozenset({"false", "f", "0", "no"})
#: the false token written for a student dropped in ``inactive`` mode, in the style of the true
#: tokens the column already uses (lower-case key, case restored on output)
_FALSE_OF = {"true": "false", "t": "f", "1": "0", "yes": "no", "y": "n"}
#: columns given a fresh value in clones when their non-empty values are unique in the file
UNIQUE_STUDENT_COLUMNS = ("roll_number", "email")
UNIQUE_ENROLLMENT_COLUMNS = ("enrollment_id",)
_KEY_SEP = "\x1f"


# --------------------------------------------------------------------------- CSV round trip


class Table:
    """One CSV file as an all-string frame with positional columns, and how to write it back."""

    def __init__(self, header: list[str], frame: pd.DataFrame, delimiter: str, bom: bool, line_end: str):
        self.header = header
        self.frame = frame
        self.delimiter = delimiter
        self.bom = bom
        self.line_end = line_end
        self._position = {}
        for i, name in enumerate(header):
            self._position.setdefault(name.strip(), i)

    def col(self, name: str) -> int | None:
        """Position of the column whose (stripped) header is ``name``, None if absent."""
        return self._position.get(name)

    def values(self, name: str) -> pd.Series:
        """The stripped cells of column ``name`` ("" everywhere if absent)."""
        position = self.col(name)
        if position is None:
            return pd.Series("", index=self.frame.index, dtype=object)
        return self.frame[position].str.strip()

    def add_column(self, name: str, values: pd.Series) -> int:
        position = len(self.header)
        self.header.append(name)
        self.frame[position] = values.to_numpy()
        self._position[name] = position
        return position

    def blank_rows(self) -> pd.Series:
        """Records whose cells are all empty (the loader drops them)."""
        if self.frame.empty:
            return pd.Series(False, index=self.frame.index)
        return self.frame.apply(lambda column: column.str.strip() == "").all(axis=1)

    def to_bytes(self) -> bytes:
        text = self.frame.to_csv(sep=self.delimiter, index=False, header=self.header, lineterminator=self.line_end)
        return (UTF8_BOM if self.bom else b"") + text.encode("utf-8")


def _first_record(text: str) -> str:
    """The header record: text up to the first line break outside quotes (``\\r`` kept)."""
    in_quotes = False
    for position, char in enumerate(text):
        if char == QUOTE:
            in_quotes = not in_quotes
        elif char == "\n" and not in_quotes:
            return text[:position]
    return text


def read_table(path: Path) -> Table:
    data = path.read_bytes()
    bom = data.startswith(UTF8_BOM)
    text = data[len(UTF8_BOM) :].decode("utf-8") if bom else data.decode("utf-8")
    if not text.strip():
        raise ValueError(f"{path} is empty")
    first = _first_record(text)
    line_end = "\r\n" if first.endswith("\r") else "\n"
    delimiter = detect_delimiter(first.rstrip("\r"))
    raw = pd.read_csv(
        io.StringIO(text), sep=delimiter, header=None, dtype=str, keep_default_na=False, quotechar=QUOTE,
        doublequote=True, engine="c",
    ).fillna("")
    header = [str(cell) for cell in raw.iloc[0].tolist()]
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = range(len(header))
    return Table(header, frame, delimiter, bom, line_end)


# --------------------------------------------------------------------------- helpers


def _semester_key(values: pd.Series) -> pd.Series:
    """Semesters as comparable text: whole numbers normalised (``"7.0"`` -> ``"7"``)."""
    numbers = pd.to_numeric(values, errors="coerce")
    whole = numbers.notna() & (numbers == numbers.round())
    out = values.copy()
    out[whole] = numbers[whole].astype("int64").astype(str)
    return out


def _active_mask(students: Table) -> pd.Series:
    sid = students.values("student_id")
    inactive = students.values("is_active").str.lower().isin(FALSE_TOKENS)
    return (sid != "") & ~inactive


def _false_token(students: Table, position: int) -> str:
    """``false`` in the style of the column's most common true token (``TRUE`` -> ``FALSE``...)."""
    cells = students.frame[position].str.strip()
    trues = cells[cells.str.lower().isin(_FALSE_OF)]
    if trues.empty:
        return "false"
    token = trues.value_counts().sort_index().idxmax()
    false = _FALSE_OF[token.lower()]
    if token.isupper():
        return false.upper()
    if token[:1].isupper():
        return false.capitalize()
    return false


def _parse_list(cell: str) -> tuple[list[str], str]:
    """Items of a list cell and its style: ``"json"``, ``";"`` or ``"|"``."""
    text = cell.strip()
    if not text:
        return [], ";"
    if text.startswith("["):
        return [str(item).strip() for item in json.loads(text)], "json"
    style = "|" if "|" in text and ";" not in text else ";"
    parts = text.replace("|", ";").split(";")
    return [part.strip() for part in parts if part.strip()], style


def _format_list(items: list[str], style: str) -> str:
    return json.dumps(items, ensure_ascii=False) if style == "json" else style.join(items)


def _unique_values(table: Table, name: str) -> set[str] | None:
    """The column's non-empty values if they are unique, else None (also if absent)."""
    if table.col(name) is None:
        return None
    values = table.values(name)
    values = values[values != ""]
    return set(values) if not values.duplicated().any() else None


def _fresh(base: str, used: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is not in ``used``; added to ``used``."""
    candidate, m = base, 1
    while candidate in used:
        m += 1
        candidate = f"{base}-{m}"
    used.add(candidate)
    return candidate


def _new_value(value: str, k: int, used: set[str], *, email: bool = False) -> str:
    if email and "@" in value:
        local, domain = value.rsplit("@", 1)
        candidate, m = f"{local}-new-{k}@{domain}", 1
        while candidate in used:
            m += 1
            candidate = f"{local}-new-{k}-{m}@{domain}"
        used.add(candidate)
        return candidate
    return _fresh(f"{value}-new-{k}", used)


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a share in [0, 1], got {value!r}")


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _prepare_output(src: Path, out: Path, force: bool) -> None:
    if not src.is_dir():
        raise ValueError(f"input directory {src} does not exist")
    if _is_within(out, src):
        raise ValueError(f"refusing to write into the input directory ({out} is inside {src})")
    if _is_within(src, out):
        raise ValueError(f"refusing to use {out}: it contains the input directory {src}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"output directory {out} exists and is not empty (use --force to replace its contents)")


def _clear(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# --------------------------------------------------------------------------- the scenario


def make_scenario(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    switch: float = 0.05,
    new: float = 0.02,
    drop: float = 0.02,
    close_rooms: int = 1,
    seed: int = 0,
    previous_run: str | Path | None = None,
    drop_mode: str = "inactive",
    force: bool = False,
) -> dict[str, Any]:
    """Write the modified copy of ``input_dir`` to ``output_dir``; return ``scenario.json``'s dict."""
    for name, rate in (("switch", switch), ("new", new), ("drop", drop)):
        _check_rate(name, rate)
    if drop_mode not in DROP_MODES:
        raise ValueError(f"drop_mode must be one of {list(DROP_MODES)}, got {drop_mode!r}")
    if isinstance(close_rooms, bool) or int(close_rooms) != close_rooms or close_rooms < 0:
        raise ValueError(f"close_rooms must be a whole number >= 0, got {close_rooms!r}")
    src, out = Path(input_dir).resolve(), Path(output_dir).resolve()
    _prepare_output(src, out, force)
    rng = np.random.default_rng(seed)

    students = read_table(src / STUDENTS)
    enrollments = read_table(src / ENROLLMENTS) if (src / ENROLLMENTS).is_file() else None
    list_position = students.col(ENROLLED_COURSES)
    if enrollments is None and list_position is None:
        raise ValueError(f"{src} has neither {ENROLLMENTS} nor an {ENROLLED_COURSES} column in {STUDENTS}")
    for table, file, column in ((students, STUDENTS, "student_id"), (enrollments, ENROLLMENTS, "student_id"),
                                (enrollments, ENROLLMENTS, "course_id")):
        if table is not None and table.col(column) is None:
            raise ValueError(f"{file} has no {column} column")
    courses = read_table(src / COURSES) if (src / COURSES).is_file() else None

    sid = students.values("student_id")
    if sid[sid != ""].duplicated().any():
        raise ValueError(f"{STUDENTS} repeats a student_id")
    active = _active_mask(students)
    active_ids = sorted(sid[active])
    n_active = len(active_ids)
    row_of = pd.Series(students.frame.index, index=sid.to_numpy())[lambda s: ~s.index.duplicated()]
    n_switch, n_new, n_drop = (int(round(rate * n_active)) for rate in (switch, new, drop))
    if n_switch + n_drop > n_active:
        raise ValueError(f"switch + drop ({n_switch} + {n_drop}) exceed the {n_active} active students")

    order = [active_ids[i] for i in rng.permutation(n_active)]
    dropped = order[:n_drop]

    # ---- switches
    switcher = _Switcher(students, enrollments, courses, active)
    switched: list[dict[str, str]] = []
    for student_id in order[n_drop:]:
        if len(switched) == n_switch:
            break
        move = switcher.switch(student_id, rng)
        if move is not None:
            switched.append({"student_id": student_id, "dropped_course": move[0], "added_course": move[1]})
    if len(switched) < n_switch:
        raise ValueError(f"only {len(switched)} students can switch a course, {n_switch} asked")

    # ---- drops (inactive mode; delete mode removes rows after the clones are made)
    dropped_set = set(dropped)
    if drop_mode == "inactive" and dropped:
        position = students.col("is_active")
        if position is None:
            blank = students.blank_rows()
            position = students.add_column("is_active", pd.Series(np.where(blank, "", "true")))
        false = _false_token(students, position)
        students.frame.loc[row_of[dropped].to_numpy(), position] = false

    # ---- new students
    pool = [s for s in active_ids if s not in dropped_set]
    if n_new and not pool:
        raise ValueError("no active student left to clone")
    sources = [pool[i] for i in rng.choice(len(pool), size=n_new, replace=n_new > len(pool))] if n_new else []
    new_rows = _clone_students(students, enrollments, sources, row_of)

    if drop_mode == "delete" and dropped:
        students.frame = students.frame[~students.values("student_id").isin(dropped_set)].reset_index(drop=True)
        if enrollments is not None:
            keep = ~enrollments.values("student_id").isin(dropped_set)
            enrollments.frame = enrollments.frame[keep].reset_index(drop=True)

    # ---- rooms
    rooms = read_table(src / ROOMS)
    closed = _close_rooms(rooms, int(close_rooms), previous_run, rng)

    # ---- write
    touched: dict[str, Table] = {}
    if dropped or new_rows or (switched and enrollments is None) or (switched and switcher.list_touched):
        touched[STUDENTS] = students
    if enrollments is not None and (switched or new_rows or (dropped and drop_mode == "delete")):
        touched[ENROLLMENTS] = enrollments
    if closed:
        touched[ROOMS] = rooms
    _clear(out)
    for entry in sorted(src.iterdir()):
        target = out / entry.name
        if entry.name in touched:
            target.write_bytes(touched[entry.name].to_bytes())
        elif entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copyfile(entry, target)

    scenario: dict[str, Any] = {
        "input_dir": str(src),
        "seed": seed,
        "parameters": {
            "switch": switch, "new": new, "drop": drop, "close_rooms": int(close_rooms), "drop_mode": drop_mode,
            "previous_run": None if previous_run is None else str(Path(previous_run).resolve()),
        },
        "n_active": n_active,
        "counts": {
            "switched": len(switched), "new": len(new_rows), "dropped": len(dropped), "closed_rooms": len(closed),
        },
        "touched_files": sorted(touched),
        "switched": sorted(switched, key=lambda move: move["student_id"]),
        "new": new_rows,
        "dropped": sorted(dropped),
        "closed_rooms": closed,
    }
    (out / SCENARIO).write_text(json.dumps(scenario, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return scenario


class _Switcher:
    """Finds and applies one-course switches (in the enrolment table, else the list column)."""

    def __init__(self, students: Table, enrollments: Table | None, courses: Table | None, active: pd.Series):
        self.students = students
        self.enrollments = enrollments
        self.list_position = students.col(ENROLLED_COURSES)
        self.list_touched = False
        sid = students.values("student_id")
        self.row_of = pd.Series(students.frame.index, index=sid.to_numpy())[lambda s: ~s.index.duplicated()]
        year = students.values("academic_year")
        semester = _semester_key(students.values("semester"))
        program = students.values("program_id")
        self.group_of = pd.Series((program + _KEY_SEP + year + _KEY_SEP + semester).to_numpy(), index=sid.to_numpy())
        self.program_of = pd.Series(program.to_numpy(), index=sid.to_numpy())
        self.group_of = self.group_of[~self.group_of.index.duplicated()]
        self.program_of = self.program_of[~self.program_of.index.duplicated()]
        active_ids = set(sid[active])

        if enrollments is not None:
            e_sid = enrollments.values("student_id")
            e_course = enrollments.values("course_id")
            e_year = enrollments.values("academic_year")
            e_sem = _semester_key(enrollments.values("semester"))
            s_year = e_sid.map(pd.Series(year.to_numpy(), index=sid.to_numpy()).groupby(level=0).first())
            s_sem = e_sid.map(pd.Series(semester.to_numpy(), index=sid.to_numpy()).groupby(level=0).first())
            known = s_year.notna()
            self.current = (
                known
                & ((e_year == "") | (e_year == s_year))
                & ((e_sem == "") | (s_sem == "") | (e_sem == s_sem))
                & (e_course != "")
            )
            self.e_course = e_course
            self.rows_of = {key: rows for key, rows in e_sid.groupby(e_sid, sort=False).groups.items()}
            in_group = self.current & e_sid.isin(active_ids)
            pairs = pd.DataFrame({"group": e_sid[in_group].map(self.group_of), "course": e_course[in_group]})
        else:
            items = self._list_items()
            in_group = items["student_id"].isin(active_ids)
            pairs = pd.DataFrame({"group": items.loc[in_group, "student_id"].map(self.group_of),
                                  "course": items.loc[in_group, "course_id"]})
        # how many active students of each group take each course this term
        counts = pairs.dropna().groupby(["group", "course"]).size()
        self.group_courses: dict[str, dict[str, int]] = {}
        for (group, course), count in counts.items():
            self.group_courses.setdefault(group, {})[course] = int(count)

        self.known_courses: set[str] | None = None
        self.program_courses: dict[str, dict[str, int]] = {}
        if courses is not None and courses.col("course_id") is not None:
            c_id = courses.values("course_id")
            self.known_courses = set(c_id[c_id != ""])
            c_program = courses.values("program_id")
            frame = pd.DataFrame({"program": c_program, "course": c_id})
            frame = frame[(frame["program"] != "") & (frame["course"] != "")]
            self.program_courses = {
                key: dict.fromkeys(values, 1) for key, values in frame.groupby("program")["course"]
            }

    def _list_items(self) -> pd.DataFrame:
        sid = self.students.values("student_id")
        cells = self.students.frame[self.list_position]
        rows = [(s, item) for s, cell in zip(sid, cells, strict=True) if s for item in _parse_list(cell)[0]]
        return pd.DataFrame(rows, columns=["student_id", "course_id"])

    def _candidates(self, student_id: str, taken: set[str]) -> tuple[list[str], np.ndarray]:
        """Courses the student may switch to (sorted) and their weights: the number of active
        students of its group taking each this term, else 1 per course of its programme."""
        for pool in (self.group_courses.get(self.group_of.get(student_id)),
                     self.program_courses.get(self.program_of.get(student_id))):
            if not pool:
                continue
            candidates = sorted(
                course for course in pool
                if course not in taken and (self.known_courses is None or course in self.known_courses)
            )
            if candidates:
                return candidates, np.array([pool[course] for course in candidates], dtype=np.int64)
        return [], np.zeros(0, dtype=np.int64)

    def switch(self, student_id: str, rng: np.random.Generator) -> tuple[str, str] | None:
        """Apply one switch for ``student_id``: ``(dropped, added)``, or None if it cannot switch."""
        student_row = self.row_of[student_id]
        if self.enrollments is not None:
            rows = self.rows_of.get(student_id, [])
            taken = set(self.e_course[rows]) - {""}
            current = [row for row in rows if self.current[row]]
        else:
            items, _ = _parse_list(self.students.frame.at[student_row, self.list_position])
            taken = set(items)
            current = list(range(len(items)))
        candidates, weights = self._candidates(student_id, taken)
        if not current or not candidates:
            return None
        entry = current[int(rng.integers(len(current)))]
        cumulative = np.cumsum(weights)
        added = candidates[int(np.searchsorted(cumulative, rng.integers(cumulative[-1]), side="right"))]
        if self.enrollments is not None:
            position = self.enrollments.col("course_id")
            dropped = self.e_course[entry]
            self.enrollments.frame.at[entry, position] = added
            self.e_course[entry] = added
        else:
            dropped = items[entry]
        if self.list_position is not None:  # keep a list column in step (the only source without the table)
            items, style = _parse_list(self.students.frame.at[student_row, self.list_position])
            if dropped in items:
                items[items.index(dropped)] = added
                self.students.frame.at[student_row, self.list_position] = _format_list(items, style)
                self.list_touched = True
        return dropped, added


def _clone_students(
    students: Table, enrollments: Table | None, sources: list[str], row_of: pd.Series
) -> list[dict[str, str]]:
    """Append one clone per source (k = 1, 2, ...); return ``[{student_id, cloned_from}]``."""
    if not sources:
        return []
    used_ids = set(students.values("student_id"))
    if enrollments is not None:
        used_ids |= set(enrollments.values("student_id"))
    unique_columns = {name: _unique_values(students, name) for name in UNIQUE_STUDENT_COLUMNS}
    unique_enrollment = {
        name: _unique_values(enrollments, name) for name in UNIQUE_ENROLLMENT_COLUMNS if enrollments is not None
    }
    sid_position = students.col("student_id")
    e_sid = enrollments.values("student_id") if enrollments is not None else None
    rows_of = e_sid.groupby(e_sid, sort=False).groups if e_sid is not None else {}

    new_students, new_enrollments, result = [], [], []
    for k, source in enumerate(sources, start=1):
        new_id = _fresh(f"{source}-new-{k}", used_ids)
        row = students.frame.loc[row_of[source]].copy()
        row[sid_position] = new_id
        for name, used in unique_columns.items():
            position = students.col(name)
            if used is not None and position is not None and row[position].strip():
                row[position] = _new_value(row[position].strip(), k, used, email=name == "email")
        new_students.append(row)
        if enrollments is not None:
            block = enrollments.frame.loc[rows_of.get(source, [])].copy()
            block[enrollments.col("student_id")] = new_id
            for name, used in unique_enrollment.items():
                position = enrollments.col(name)
                if used is None or position is None:
                    continue
                block[position] = [
                    _new_value(value.strip(), k, used) if value.strip() else value for value in block[position]
                ]
            new_enrollments.append(block)
        result.append({"student_id": new_id, "cloned_from": source})
    students.frame = pd.concat([students.frame, pd.DataFrame(new_students)], ignore_index=True)
    if enrollments is not None and new_enrollments:
        enrollments.frame = pd.concat([enrollments.frame, *new_enrollments], ignore_index=True)
    return result


def _close_rooms(rooms: Table, n: int, previous_run: str | Path | None, rng: np.random.Generator) -> list[str]:
    if n == 0:
        return []
    if rooms.col("room_id") is None:
        raise ValueError(f"{ROOMS} has no room_id column")
    room_id = rooms.values("room_id")
    all_rooms = sorted(set(room_id[room_id != ""]))
    if n >= len(all_rooms):
        raise ValueError(f"cannot close {n} of the {len(all_rooms)} rooms: at least one must stay")
    preferred: list[str] = []
    if previous_run is not None:
        path = Path(previous_run)
        path = path / BATCHES if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"previous run has no {BATCHES}: {path}")
        used = read_table(path).values("room_id")
        preferred = sorted(set(used[used != ""]) & set(all_rooms))
        if len(preferred) < n:
            warnings.warn(f"the previous run uses only {len(preferred)} rooms; closing {n - len(preferred)} "
                          "unused ones too", stacklevel=2)
    if len(preferred) >= n:
        closed = [preferred[i] for i in rng.choice(len(preferred), size=n, replace=False)]
    else:
        others = [r for r in all_rooms if r not in set(preferred)]
        closed = preferred + [others[i] for i in rng.choice(len(others), size=n - len(preferred), replace=False)]
    rooms.frame = rooms.frame[~room_id.isin(set(closed))].reset_index(drop=True)
    return sorted(closed)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python experiments/rebatching/scenarios.py",
        description="Write a modified copy of a stage2 input directory (switches, new and dropped students, "
                    "closed rooms) and scenario.json listing the ids affected.",
    )
    parser.add_argument("input_dir", help="institution directory (stage2 input contract); never written")
    parser.add_argument("output_dir", help="directory to write the modified copy into (must be empty unless --force)")
    parser.add_argument("--switch", type=float, default=0.05, help="share of active students switching one course")
    parser.add_argument("--new", type=float, default=0.02, help="new students, as a share of active students")
    parser.add_argument("--drop", type=float, default=0.02, help="share of active students leaving")
    parser.add_argument("--drop-mode", choices=DROP_MODES, default="inactive",
                        help="inactive: set is_active=false (default); delete: remove their rows")
    parser.add_argument("--close-rooms", type=int, default=1, help="number of rooms removed (default 1)")
    parser.add_argument("--previous-run", default=None,
                        help="run directory (or its student_batches.csv): close rooms its batches use")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace the contents of a non-empty output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        scenario = make_scenario(
            args.input_dir, args.output_dir, switch=args.switch, new=args.new, drop=args.drop,
            close_rooms=args.close_rooms, seed=args.seed, previous_run=args.previous_run,
            drop_mode=args.drop_mode, force=args.force,
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    counts = scenario["counts"]
    print(
        f"scenario seed={args.seed}: {counts['switched']} switched, {counts['new']} new, "
        f"{counts['dropped']} dropped ({args.drop_mode}) of {scenario['n_active']} active; "
        f"{counts['closed_rooms']} rooms closed ({', '.join(scenario['closed_rooms']) or '-'}) -> {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
