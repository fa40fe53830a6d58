"""Faculty feasibility stage: can the institution's competent faculty teach every section the
batches create, before Stage 3 builds a timetable on them?

- A *section* is a row of ``batch_course_enrollment`` with status ``ENROLLED`` (the batch
  attends the course together). It needs ``sessions_per_week × session_hours`` hours a week
  (``resources.faculty.session_hours``; a course without ``max_sessions_per_week`` counts
  ``resources.faculty.default_sessions_per_week``). ``PARTIAL`` rows are not sections.
- A teacher may teach a course when its ``faculty.csv`` row and its
  ``faculty_course_competency.csv`` row are both active and ``competency_level`` ≥
  ``resources.faculty.min_competency``; each teacher teaches at most ``max_hours_per_week``
  hours a week over all courses.
- Decided exactly by a maximum flow (OR-Tools): source → course (capacity: its hours needed) →
  competent teacher → sink (capacity: the teacher's weekly hours). The flow's value is the
  section-hours the faculty can cover; ``faculty_coverage`` = covered ÷ needed. Capacities are
  whole minutes (hours are rounded to the minute).

The flow may split a course's hours (even one section's) among its competent teachers: it says
whether the hours fit, not who teaches which session. So a shortfall it finds is certain (no
assignment of whole sections covers more), while full coverage is necessary, not sufficient,
for Stage 3's assignment. The total missing is the same for every maximum flow; how a shortfall
is split among courses that share teachers is that of the one maximum flow OR-Tools returns
(deterministic for the same input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from ortools.graph.python import max_flow

from stage2.contract.csvio import string_positions
from stage2.contract.loader import COMPETENCIES, FACULTY
from stage2.errors import InfeasibleError, Stage2Error

MINUTES_PER_HOUR = 60
#: courses a warning, an error and ``quality_report.json`` name (most hours missing first); the
#: full list is ``faculty_report.csv``
LISTED_COURSES = 20
#: decimals of the hours in the reports (a minute is 0.0167 h)
HOURS_DECIMALS = 4
STATUS_COVERED = "covered"
STATUS_SHORT = "short"
STATUS_NO_FACULTY = "no_competent_faculty"

COURSE_REPORT_COLUMNS: tuple[str, ...] = (
    "course_id", "course_name", "sections", "sessions_per_week", "hours_per_section", "hours_needed",
    "hours_covered", "hours_missing", "competent_faculty", "status",
)  # fmt: skip
FACULTY_LOAD_COLUMNS: tuple[str, ...] = (
    "faculty_id", "faculty_name", "is_active", "max_hours_per_week", "hours_assigned", "utilization",
    "competent_courses", "courses_taught",
)  # fmt: skip


@dataclass(frozen=True)
class TeachingFlow:
    """One maximum flow of course hours to teachers, in minutes."""

    #: per course: minutes covered
    covered: np.ndarray
    #: per teacher: minutes assigned
    load: np.ndarray
    #: per (course, teacher) arc: minutes of that course the teacher takes
    arc_flow: np.ndarray


def max_teaching_flow(
    demand: np.ndarray, capacity: np.ndarray, arc_course: np.ndarray, arc_faculty: np.ndarray
) -> TeachingFlow:
    """The maximum flow from courses (``demand[c]`` minutes each) to teachers (at most
    ``capacity[f]`` minutes each) over the arcs ``arc_course[i] → arc_faculty[i]`` (who may
    teach what). Integer minutes in, integer minutes out."""
    demand = np.asarray(demand, dtype=np.int64)
    capacity = np.asarray(capacity, dtype=np.int64)
    arc_course = np.asarray(arc_course, dtype=np.int64)
    arc_faculty = np.asarray(arc_faculty, dtype=np.int64)
    n_courses, n_faculty, n_arcs = demand.size, capacity.size, arc_course.size
    if n_arcs == 0 or not demand.any() or not capacity.any():
        return TeachingFlow(np.zeros(n_courses, np.int64), np.zeros(n_faculty, np.int64), np.zeros(n_arcs, np.int64))
    source, sink = 0, 1
    course_node = 2 + np.arange(n_courses)
    faculty_node = 2 + n_courses + np.arange(n_faculty)
    tails = np.concatenate([np.full(n_courses, source), course_node[arc_course], faculty_node])
    heads = np.concatenate([course_node, faculty_node[arc_faculty], np.full(n_faculty, sink)])
    # a teacher takes at most what the course needs and what the teacher has: no arc is unbounded
    middle = np.minimum(demand[arc_course], capacity[arc_faculty])
    capacities = np.concatenate([demand, middle, capacity])
    solver = max_flow.SimpleMaxFlow()
    arcs = solver.add_arcs_with_capacity(tails.astype(np.int32), heads.astype(np.int32), capacities.astype(np.int64))
    status = solver.solve(source, sink)
    if status != solver.OPTIMAL:
        raise RuntimeError(f"OR-Tools max-flow ended with status {status} on {n_courses} courses, {n_faculty} "
                           f"teachers and {n_arcs} competencies")
    flows = np.asarray(solver.flows(arcs), dtype=np.int64)
    return TeachingFlow(flows[:n_courses], flows[n_courses + n_arcs:], flows[n_courses:n_courses + n_arcs])


@dataclass
class FacultyCheck:
    """The faculty check of one run: skipped (``checked`` false, ``reason`` says why) or the
    per-course and per-teacher tables of one maximum flow."""

    checked: bool
    reason: str = ""
    #: resources.faculty as used
    session_hours: float = 0.0
    min_competency: int = 0
    #: per course with a section (:data:`COURSE_REPORT_COLUMNS`), by course_id
    courses: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COURSE_REPORT_COLUMNS)))
    #: per teacher of faculty.csv, in file order (:data:`FACULTY_LOAD_COLUMNS`)
    load: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FACULTY_LOAD_COLUMNS)))
    minutes_needed: int = 0
    minutes_covered: int = 0
    warnings: list[str] = field(default_factory=list)
    #: under ``strict``: the ``INSUFFICIENT_FACULTY`` error, recorded (not raised) so that the
    #: run fails once with all its problems
    problems: list[Stage2Error] = field(default_factory=list)

    @property
    def hours_needed(self) -> float:
        return round(self.minutes_needed / MINUTES_PER_HOUR, HOURS_DECIMALS)

    @property
    def hours_covered(self) -> float:
        return round(self.minutes_covered / MINUTES_PER_HOUR, HOURS_DECIMALS)

    @property
    def hours_missing(self) -> float:
        return round((self.minutes_needed - self.minutes_covered) / MINUTES_PER_HOUR, HOURS_DECIMALS)

    @property
    def coverage(self) -> float | None:
        """Section-hours covered ÷ needed; ``None`` when skipped or when no section needs hours."""
        if not self.checked or not self.minutes_needed:
            return None
        return self.minutes_covered / self.minutes_needed

    @property
    def metrics(self) -> dict[str, float | None]:
        """``faculty_coverage``, only when the check ran (quality.md: absent without the tables)."""
        return {"faculty_coverage": self.coverage} if self.checked else {}

    def short_courses(self) -> pd.DataFrame:
        """The courses missing hours, most missing first (then by course_id)."""
        short = self.courses.loc[self.courses["hours_missing"] > 0]
        return short.sort_values(["hours_missing", "course_id"], ascending=[False, True], kind="stable")

    def summary(self) -> dict[str, Any]:
        """The ``faculty`` section of ``quality_report.json``."""
        if not self.checked:
            return {"checked": False, "reason": self.reason}
        short = self.short_courses()
        load = self.load
        return {
            "checked": True,
            "session_hours": self.session_hours,
            "min_competency": self.min_competency,
            "n_courses": len(self.courses),
            "n_sections": int(self.courses["sections"].sum()),
            "n_faculty": len(load),
            "n_active_faculty": int(load["is_active"].sum()),
            "hours_needed": self.hours_needed,
            "hours_covered": self.hours_covered,
            "hours_missing": self.hours_missing,
            "coverage": self.coverage,
            "n_courses_short": len(short),
            "courses_short": _course_records(short.head(LISTED_COURSES)),
            "faculty_at_capacity": int(((load["hours_assigned"] >= load["max_hours_per_week"])
                                        & (load["hours_assigned"] > 0)).sum()),
        }


def check_faculty(
    batch_courses: pd.DataFrame,
    faculty: pd.DataFrame | None,
    competencies: pd.DataFrame | None,
    *,
    session_hours: float,
    default_sessions_per_week: int,
    min_competency: int,
    strict: bool,
) -> FacultyCheck:
    """Check that the competent faculty can teach every section of ``batch_courses`` (see the
    module's docstring). ``faculty``/``competencies`` are the loader's frames (``None`` when the
    file is absent: the check is skipped).

    A shortfall is a warning naming the courses and the hours they miss; under ``strict`` a
    ``problem``: an :class:`InfeasibleError` (``INSUFFICIENT_FACULTY``, exit 4) the stage runner
    raises with the run's other problems.
    """
    if faculty is None or competencies is None:
        absent = " and ".join(name for name, table in ((FACULTY, faculty), (COMPETENCIES, competencies))
                              if table is None)
        return FacultyCheck(checked=False, reason=f"{absent} absent: the faculty check was skipped")
    sections = batch_courses.loc[(batch_courses["enrollment_status"] == "ENROLLED").to_numpy()]
    codes, course_ids = pd.factorize(sections["course_id"].astype("string"), sort=True)
    n_sections = np.bincount(codes, minlength=len(course_ids)).astype(np.int64)
    first_row = np.unique(codes, return_index=True)[1]
    sessions = pd.to_numeric(sections["sessions_per_week"].iloc[first_row], errors="coerce").reset_index(drop=True)
    defaulted = sessions.isna().to_numpy()
    sessions_per_week = sessions.fillna(default_sessions_per_week).to_numpy(dtype=np.int64)
    session_minutes = round(session_hours * MINUTES_PER_HOUR)
    demand = n_sections * sessions_per_week * session_minutes

    teacher_active = faculty["is_active"].to_numpy(dtype=bool)
    capacity = np.rint(faculty["max_hours_per_week"].to_numpy(dtype=np.float64) * MINUTES_PER_HOUR).astype(np.int64)
    capacity = np.where(teacher_active, capacity, 0)
    course_of_row = string_positions(competencies["course_id"], pd.Series(course_ids, dtype="string"))
    teacher_of_row = string_positions(competencies["faculty_id"], faculty["faculty_id"])
    eligible = (
        competencies["is_active"].to_numpy(dtype=bool)
        & (competencies["competency_level"].to_numpy(dtype=np.int64) >= min_competency)
        & (course_of_row >= 0)
        & (teacher_of_row >= 0)
    )
    eligible[eligible] &= capacity[teacher_of_row[eligible]] > 0
    arc_course, arc_faculty = course_of_row[eligible], teacher_of_row[eligible]
    flow = max_teaching_flow(demand, capacity, arc_course, arc_faculty)

    competent = np.bincount(arc_course, minlength=len(course_ids))
    courses = pd.DataFrame({
        "course_id": np.asarray(course_ids, dtype=object),
        "course_name": sections["course_name"].iloc[first_row].to_numpy(dtype=object),
        "sections": n_sections,
        "sessions_per_week": sessions_per_week,
        "hours_per_section": _hours(sessions_per_week * session_minutes),
        "hours_needed": _hours(demand),
        "hours_covered": _hours(flow.covered),
        "hours_missing": _hours(demand - flow.covered),
        "competent_faculty": competent,
        "status": np.where(flow.covered >= demand, STATUS_COVERED, np.where(competent > 0, STATUS_SHORT,
                                                                             STATUS_NO_FACULTY)),
    })
    check = FacultyCheck(
        checked=True, session_hours=session_hours, min_competency=min_competency, courses=courses,
        load=_faculty_load(faculty, capacity, flow, arc_course, arc_faculty, np.asarray(course_ids, dtype=object)),
        minutes_needed=int(demand.sum()), minutes_covered=int(flow.covered.sum()),
    )
    if defaulted.any():
        named = ", ".join(map(str, np.asarray(course_ids, dtype=object)[defaulted][:LISTED_COURSES]))
        check.warnings.append(f"faculty check: {int(defaulted.sum())} course(s) without max_sessions_per_week "
                              f"counted as {default_sessions_per_week} session(s) a week: {named}"
                              f"{' ...' if defaulted.sum() > LISTED_COURSES else ''}")
    if check.minutes_covered < check.minutes_needed:
        message = _shortfall_message(check)
        if strict:
            check.problems.append(InfeasibleError(
                message, code="INSUFFICIENT_FACULTY", where=f"{FACULTY} / {COMPETENCIES}",
                details={"hours_needed": check.hours_needed, "hours_covered": check.hours_covered,
                         "courses_short": _course_records(check.short_courses())}))
        else:
            check.warnings.append(f"[INSUFFICIENT_FACULTY] {message}")
    return check


def _hours(minutes: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(minutes, dtype=np.float64) / MINUTES_PER_HOUR, HOURS_DECIMALS)


def _faculty_load(faculty: pd.DataFrame, capacity: np.ndarray, flow: TeachingFlow, arc_course: np.ndarray,
                  arc_faculty: np.ndarray, course_ids: np.ndarray) -> pd.DataFrame:
    """Per teacher: weekly hours, hours assigned by the flow, and the courses (``id:hours``)."""
    max_hours = faculty["max_hours_per_week"].to_numpy(dtype=np.float64)
    assigned = _hours(flow.load)
    taught = flow.arc_flow > 0
    order = np.lexsort((arc_course[taught], arc_faculty[taught]))  # by teacher, then course id
    pairs = pd.DataFrame({
        "teacher": arc_faculty[taught][order],
        "text": [f"{c}:{h:g}" for c, h in zip(course_ids[arc_course[taught][order]],
                                              _hours(flow.arc_flow[taught][order]), strict=True)],
    })
    per_teacher = pairs.groupby("teacher", sort=False)["text"].agg(";".join)
    return pd.DataFrame({
        "faculty_id": faculty["faculty_id"].to_numpy(dtype=object),
        "faculty_name": (faculty["faculty_name"].to_numpy(dtype=object) if "faculty_name" in faculty
                         else np.full(len(faculty), None, dtype=object)),
        "is_active": faculty["is_active"].to_numpy(dtype=bool),
        "max_hours_per_week": max_hours,
        "hours_assigned": assigned,
        "utilization": np.round(np.divide(assigned, max_hours, out=np.zeros(len(faculty)), where=capacity > 0),
                                HOURS_DECIMALS),
        "competent_courses": np.bincount(arc_faculty, minlength=len(faculty)),
        "courses_taught": per_teacher.astype(object).reindex(np.arange(len(faculty)), fill_value="").to_numpy(),
    })


def _course_records(courses: pd.DataFrame) -> list[dict[str, Any]]:
    columns = ("course_id", "hours_needed", "hours_missing", "competent_faculty")
    return [
        {"course_id": str(course), "hours_needed": float(needed), "hours_missing": float(missing),
         "competent_faculty": int(competent)}
        for course, needed, missing, competent in zip(*(courses[c].to_list() for c in columns), strict=True)
    ]


def _shortfall_message(check: FacultyCheck) -> str:
    short = check.short_courses()
    named = ", ".join(
        f"{r.course_id} {r.hours_missing:g} h" + (" (no competent faculty)" if r.status == STATUS_NO_FACULTY else "")
        for r in short.head(LISTED_COURSES).itertuples()
    )
    more = len(short) - LISTED_COURSES
    return (f"the competent faculty can cover {check.hours_covered:g} of {check.hours_needed:g} section-hours a "
            f"week ({check.coverage:.1%}); {len(short)} course(s) miss {check.hours_missing:g} h: {named}"
            f"{f' and {more} more (faculty_report.csv)' if more > 0 else ''}")
