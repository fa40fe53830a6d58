"""Enrollment history and the prerequisite graph (contract "Enrollment history").

**Term order.** A term is (``academic_year``, ``semester``). Two academic years are the same
year when their text is equal; otherwise each is identified by its first four-digit number, the
calendar year it starts in (``2024-25``, ``2024/2025`` and ``AY2024`` are the same year and come
before ``2025-26``). Terms compare by year first, then by semester within the same year. An
enrollment row is

- *history* (a course taken before) when its term is earlier than its student's;
- *current* (batched) when its term is the student's, or when it has no ``academic_year``, or
  when the years are the same and either semester is empty;
- *later* when its term is after the student's: an input error.

Years that differ as text and do not both contain a four-digit number cannot be ordered: the
row is an ``INVALID_VALUE``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse import csgraph

from stage2.contract.csvio import STRING_DTYPE

HISTORY = -1
CURRENT = 0
LATER = 1
#: a row whose year cannot be ordered against its student's
UNORDERED = 2
#: the pattern of a year's starting calendar year
START_YEAR_PATTERN = r"(\d{4})"


def _year_codes(academic_year: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Each row's position in the distinct non-empty year texts (-1: missing or empty), and
    those texts: millions of rows name a handful of years, so they are compared as integers."""
    codes, distinct = pd.factorize(academic_year.astype(STRING_DTYPE))
    distinct = pd.Index(distinct, dtype=STRING_DTYPE)
    empty = np.asarray(distinct == "", dtype=bool)
    if empty.any():  # the contract's years have at least four characters: empty text is no year
        codes = np.where(np.isin(codes, np.flatnonzero(empty)), -1, codes)
    return codes.astype(np.int32, copy=False), distinct


def _start_years(years: pd.Index) -> np.ndarray:
    extracted = pd.Series(years, dtype=STRING_DTYPE).str.extract(START_YEAR_PATTERN, expand=False)
    return pd.to_numeric(extracted, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


#: :func:`_year_order` of a row or a student without a year
NO_YEAR = 3


def _year_order(row_texts: pd.Index, student_texts: pd.Index) -> np.ndarray:
    """``table[r, s]``: how row year text ``r`` compares with student year text ``s``: -1
    earlier, 0 the same year (the semester decides), 1 later, :data:`UNORDERED`; the last row
    and column (code -1) are :data:`NO_YEAR`."""
    row_start, student_start = _start_years(row_texts), _start_years(student_texts)
    difference = row_start[:, None] - student_start[None, :]
    orderable = ~np.isnan(difference)
    table = np.full((len(row_texts) + 1, len(student_texts) + 1), NO_YEAR, dtype=np.int8)
    inner = np.where(orderable, np.sign(np.where(orderable, difference, 0.0)), UNORDERED).astype(np.int8)
    inner[np.asarray(row_texts, dtype=object)[:, None] == np.asarray(student_texts, dtype=object)[None, :]] = 0
    table[:-1, :-1] = inner
    return table


def _semesters(semester: pd.Series) -> np.ndarray:
    """Semester numbers as int32, -1 where missing."""
    return semester.astype("Int64").to_numpy(dtype=np.int32, na_value=-1)


def classify_terms(
    row_year: pd.Series, row_semester: pd.Series, student_year: pd.Series, student_semester: pd.Series,
    student_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Per enrollment row, :data:`HISTORY`, :data:`CURRENT`, :data:`LATER` or :data:`UNORDERED`
    against its student's term (see the module docstring). ``student_rows[i]`` is the position
    of row ``i``'s student in the student series (``None``: the series are aligned by position;
    a negative position: an unknown student, whose row is :data:`CURRENT`)."""
    # millions of rows name a handful of years: years compare through a table of the distinct texts
    row_code, row_texts = _year_codes(row_year)
    student_code, student_texts = _year_codes(student_year)
    student_sem = _semesters(student_semester)
    if student_rows is not None:
        # an unknown student reads the appended -1: no year, no semester
        position = np.where(student_rows >= 0, student_rows, len(student_code))
        student_code, student_sem = np.append(student_code, -1)[position], np.append(student_sem, -1)[position]
    year = _year_order(row_texts, student_texts)[row_code, student_code]
    row_sem = _semesters(row_semester)
    semester = np.where((row_sem >= 0) & (student_sem >= 0), np.sign(row_sem - student_sem), 0).astype(np.int8)
    order = np.where(year == 0, semester, year)
    result = np.full(len(row_code), CURRENT, dtype=np.int8)
    result[order == -1] = HISTORY
    result[order == 1] = LATER
    result[order == UNORDERED] = UNORDERED
    return result


def prerequisite_cycles(course_id: pd.Series, prerequisite_id: pd.Series) -> list[list[str]]:
    """Every strongly connected set of courses of the graph prerequisite → course, each as one
    cycle through it (course ids in order, the first repeated at the end), sorted. A pair of
    rows A→B and B→A is the cycle ``[A, B, A]``. Null ids are ignored."""
    known = course_id.notna().to_numpy() & prerequisite_id.notna().to_numpy()
    ids, codes = np.unique(np.concatenate([course_id[known].astype(str).to_numpy(),
                                           prerequisite_id[known].astype(str).to_numpy()]), return_inverse=True)
    n_edges = int(known.sum())
    if n_edges == 0:
        return []
    target, source = codes[:n_edges], codes[n_edges:]
    graph = sp.csr_matrix((np.ones(n_edges), (source, target)), shape=(len(ids), len(ids)))
    n_components, component = csgraph.connected_components(graph, directed=True, connection="strong")
    sizes = np.bincount(component, minlength=n_components)
    cycles = []
    for label in np.flatnonzero(sizes > 1):
        members = np.flatnonzero(component == label)
        cycles.append(_one_cycle(graph, members, ids))
    return sorted(cycles)


def _one_cycle(graph: sp.csr_matrix, members: np.ndarray, ids: np.ndarray) -> list[str]:
    """A cycle through the smallest course of a strongly connected set: a shortest path from it
    to a course with an edge back to it, by breadth-first search within the set."""
    sub = graph[members][:, members]
    start = 0  # members are sorted: the smallest course id
    _, predecessors = csgraph.breadth_first_order(sub, start, directed=True, return_predecessors=True)
    back = sub[:, start].nonzero()[0]
    end = int(back[back != start][0])
    path = [end]
    while path[-1] != start:
        path.append(int(predecessors[path[-1]]))
    path.reverse()
    return [str(ids[members[i]]) for i in [*path, start]]
