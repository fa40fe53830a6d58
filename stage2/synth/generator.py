"""A deterministic generator of realistic institutions, in the contract's input tables.

:func:`make_institution` draws one institution (students, programmes, courses, enrolments,
rooms, shifts, prerequisites and EAV batching parameters) from a single
``np.random.default_rng(seed)``; :func:`write_institution` writes it as ``<table>.csv`` files.
Same arguments give the same frames and byte-identical files.

Structure a batcher can find (see :mod:`stage2.synth.catalog` for every rate):

- programmes (``PRG-CSE``, ...; beyond the discipline list, the same disciplines on further
  campuses: ``PRG-CSE-C02``) run the odd term semesters 1, 3, 5, 7 of ``2024-25``;
- each (programme, semester) has core, practical, skill and value-added courses that nearly all
  its students take, and in its last term semesters electives in tracks: a student picks one
  track and takes most of its electives, a few of the others;
- a few % carry a backlog (a core course of an earlier semester) or take an elective of another
  programme; about 1 % are inactive.

Vectorised throughout: no Python loop runs per student or per enrolment, so 10^6 students take
seconds. The big frames use categoricals for repeated strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stage2.contract.csvio import write_csv
from stage2.synth import catalog as cat

#: contract tables, in the order they are generated and written
TABLES = (
    "student_data",
    "programs",
    "courses",
    "student_course_enrollment",
    "rooms",
    "shifts",
    "course_prerequisites",
    "dynamic_parameters",
    "entity_parameter_values",
)
GROUPINGS = ("many", "one", "large")
DELIMITERS = (",", ";", "\t", "|")
ENROLLMENT_FORMATS = ("table", "list_column")
LIST_COLUMNS = ("preferred_languages", "enrolled_courses")

MAX_TERM_SEMESTERS = 4  # odd semesters 1, 3, 5, 7 of a 4-year programme
ELECTIVE = "ELECTIVE"


def make_institution(
    n_students: int,
    *,
    seed: int = 0,
    profile: str = "university",
    n_groups: str = "many",
) -> dict[str, pd.DataFrame]:
    """Generate one institution with ``n_students`` students.

    Returns one DataFrame per name in :data:`TABLES`, with the contract's columns (plus
    ``gender`` and ``cgpa`` in ``student_data``). ``profile`` is ``"university"`` (5+
    programmes, more with more students) or ``"college"`` (2-3 programmes, fewer electives).
    ``n_groups="one"`` puts every student in one programme, academic year and semester (one
    mixable group with core courses, track electives and noise); ``"many"`` spreads them over
    programme x semester groups of mostly 40-400 students; ``"large"`` over few programmes whose
    semester groups hold ~32,000 students on average (sizes in a 1 : 6 range: ~10k-60k at 1M).

    Deterministic: the same arguments give equal frames. ``student_course_enrollment`` holds
    ``student_id``/``course_id``/``academic_year``/``enrollment_date`` as categoricals.
    """
    spec = _check_arguments(n_students, profile, n_groups)
    rng = np.random.default_rng(seed)

    programs, prog_sems = _programs(spec, n_students, n_groups)
    courses, index = _courses(spec, programs, rng)
    students, group, track = _students(spec, programs, prog_sems, n_students, n_groups, rng)
    enrollment, backlog = _enrollments(students, group, track, courses, index, rng)
    students["cgpa"] = np.where(
        backlog,
        np.maximum(students["cgpa"] - cat.BACKLOG_CGPA_PENALTY, cat.CGPA_MIN),
        students["cgpa"],
    ).round(2)

    group_sizes = students.groupby(["program_id", "semester"], observed=True).size()
    rooms = _rooms(group_sizes.to_numpy(), rng)
    prerequisites = _prerequisites(courses, index, rng)
    parameters, values = _parameters(spec, programs)
    return {
        "student_data": students,
        "programs": programs,
        "courses": courses,
        "student_course_enrollment": enrollment,
        "rooms": rooms,
        "shifts": _shifts(),
        "course_prerequisites": prerequisites,
        "dynamic_parameters": parameters,
        "entity_parameter_values": values,
    }


def _check_arguments(n_students: int, profile: str, n_groups: str) -> cat.Profile:
    if isinstance(n_students, bool) or not isinstance(n_students, (int, np.integer)):
        raise TypeError(f"n_students must be an int, got {n_students!r}")
    if n_students < 1:
        raise ValueError(f"n_students must be >= 1, got {n_students}")
    if profile not in cat.PROFILES:
        raise ValueError(f"profile must be one of {sorted(cat.PROFILES)}, got {profile!r}")
    if n_groups not in GROUPINGS:
        raise ValueError(f"n_groups must be one of {list(GROUPINGS)}, got {n_groups!r}")
    return cat.PROFILES[profile]


# --------------------------------------------------------------------------- helpers


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For owners i with ranges [starts[i], starts[i] + counts[i]): (owner of each row, position).

    The vectorised form of ``[(i, starts[i] + j) for i in owners for j in range(counts[i])]``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    first_row = np.cumsum(counts) - counts
    position = np.repeat(np.asarray(starts, dtype=np.int64) - first_row, counts)
    position += np.arange(len(owner))
    return owner, position


def _ranges(sorted_keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and count of each key 0..n_keys-1 in a non-decreasing key array."""
    keys = np.arange(n_keys)
    starts = np.searchsorted(sorted_keys, keys, side="left")
    return starts, np.searchsorted(sorted_keys, keys, side="right") - starts


def _draw_index(rng: np.random.Generator, shares: np.ndarray | Sequence[float], size: int) -> np.ndarray:
    """``size`` draws of an index into ``shares`` (normalised)."""
    shares = np.asarray(shares, dtype=float)
    return rng.choice(len(shares), size=size, p=shares / shares.sum())


def _draw_rows(rng: np.random.Generator, cumulative: np.ndarray) -> np.ndarray:
    """One draw per row of a matrix of cumulative shares (rows end at 1)."""
    u = rng.random(len(cumulative))
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), cumulative.shape[1] - 1)


def _categorical(codes: np.ndarray, categories) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype="str"))


def _nth_name(names: tuple[str, ...], i: int) -> str:
    """The i-th name of a list; past its end, "Advanced <name>" (lists never run out)."""
    return names[i] if i < len(names) else f"Advanced {names[i % len(names)]}"


def _elective_semesters(n_semesters: int) -> int:
    """How many of a programme's last term semesters carry electives."""
    return 2 if n_semesters >= 3 else 1


# --------------------------------------------------------------------------- programmes


def _programs(spec: cat.Profile, n_students: int, n_groups: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The programme table, and the number of term semesters of each programme."""
    if n_groups == "one":
        n_programs = 1
    elif n_groups == "large":
        n_programs = max(1, round(n_students / (cat.LARGE_GROUP_STUDENTS * MAX_TERM_SEMESTERS)))
    else:
        n_programs = max(spec.min_programs, round(n_students / spec.students_per_program))
        if spec.max_programs is not None:
            n_programs = min(n_programs, spec.max_programs)
    rows = []
    for i in range(n_programs):  # one row per programme, not per student
        d = spec.disciplines[i % len(spec.disciplines)]
        campus = i // len(spec.disciplines) + 1
        suffix = "" if campus == 1 else f"-C{campus:02d}"
        rows.append(
            {
                "program_id": f"PRG-{d.code}{suffix}",
                "program_code": f"{d.code}{suffix}",
                "program_name": d.title if campus == 1 else f"{d.title} (Campus {campus})",
                "program_type": d.program_type,
                "department_id": f"DEPT-{d.department}{suffix}",
                "duration_years": d.duration_years,
                "total_credits": d.total_credits,
            }
        )
    programs = pd.DataFrame(rows)
    return programs, programs["duration_years"].to_numpy()  # term semesters = duration


def _discipline(spec: cat.Profile, program_index: int) -> cat.Discipline:
    return spec.disciplines[program_index % len(spec.disciplines)]


# --------------------------------------------------------------------------- courses


def _course_template(spec: cat.Profile, d: cat.Discipline) -> list[dict]:
    """The courses of one programme of discipline ``d``, ids relative to the programme."""
    rows: list[dict] = []
    n_sems = d.duration_years
    first_elective = n_sems - _elective_semesters(n_sems)
    tracks = d.tracks[: spec.tracks_per_program]
    n_core_used = 0
    n_electives_used = [0] * len(tracks)
    for s in range(n_sems):
        has_electives = s >= first_elective
        n_core = spec.core_per_elective_semester if has_electives else spec.core_per_semester
        core_names = [_nth_name(d.core, n_core_used + k) for k in range(n_core)]
        n_core_used += n_core
        # (key, name, course_type, track, core_k)
        semester_courses = [(f"CORE-{k + 1}", name, "CORE", -1, k)
                            for k, name in enumerate(core_names)]
        semester_courses += [(f"LAB-{k + 1}", f"{core_names[k]} {d.lab_suffix}", "PRACTICAL", -1,
                              -1) for k in range(min(d.labs_per_semester, n_core))]
        if not has_electives:
            semester_courses.append(("SEC-1", _nth_name(cat.SKILL_ENHANCEMENT_COURSES, s),
                                     "SKILL_ENHANCEMENT", -1, -1))
        semester_courses.append(("VAC-1", _nth_name(cat.VALUE_ADDED_COURSES, s), "VALUE_ADDED",
                                 -1, -1))
        if has_electives:
            for t, track in enumerate(tracks):
                for k in range(spec.electives_per_track):
                    name = _nth_name(track.electives, n_electives_used[t])
                    n_electives_used[t] += 1
                    semester_courses.append((f"ELE-{track.code}-{k + 1}", name, ELECTIVE, t, -1))
        semester = 2 * s + 1
        for slot, (key, name, course_type, track_index, core_k) in enumerate(semester_courses, 1):
            rows.append(
                {
                    "sem_pos": s,
                    "semester": semester,
                    "key": f"S{semester}-{key}",
                    "course_code": f"{d.code}{semester}{slot:02d}",
                    "course_name": name,
                    "course_type": course_type,
                    "track": track_index,
                    "core_k": core_k,
                }
            )
    return rows


class _CourseIndex:
    """Positional lookups into the course table (course order: programme, semester, slot).

    Groups are ``g = program * MAX_TERM_SEMESTERS + semester position``.
    """

    def __init__(self, program: np.ndarray, sem_pos: np.ndarray, course_type: np.ndarray,
                 track: np.ndarray, core_k: np.ndarray, n_programs: int) -> None:
        n_groups = n_programs * MAX_TERM_SEMESTERS
        group = program * MAX_TERM_SEMESTERS + sem_pos
        self.n_programs = n_programs
        self.track = track
        self.is_elective = course_type == ELECTIVE
        self.take_probability = np.array(
            [cat.TAKE_PROBABILITY.get(t, 0.0) for t in course_type], dtype=float
        )
        self.is_mandatory = np.isin(course_type, ["CORE", "PRACTICAL"])
        # the non-elective courses of each group, and the electives of each group / programme
        self.regular = np.flatnonzero(~self.is_elective)
        self.regular_start, self.regular_count = _ranges(group[self.regular], n_groups)
        self.elective = np.flatnonzero(self.is_elective)
        self.elective_start, self.elective_count = _ranges(group[self.elective], n_groups)
        self.program_elective_start, self.program_elective_count = _ranges(
            program[self.elective], n_programs
        )
        # core course k of (programme, semester position), -1 where there is none
        core = np.flatnonzero(core_k >= 0)
        self.core = np.full((n_programs, MAX_TERM_SEMESTERS, max(core_k.max() + 1, 1)), -1)
        self.core[program[core], sem_pos[core], core_k[core]] = core
        self.core_count = (self.core >= 0).sum(axis=2)


def _courses(spec: cat.Profile, programs: pd.DataFrame,
             rng: np.random.Generator) -> tuple[pd.DataFrame, _CourseIndex]:
    """Every term semester's courses of every programme, and positional lookups into them.

    ``theory_hours``/``practical_hours`` are weekly contact hours; a PRACTICAL course meets
    ``credits`` times a week for two hours per credit.
    """
    n_programs = len(programs)
    n_disciplines = min(n_programs, len(spec.disciplines))
    templates = [pd.DataFrame(_course_template(spec, spec.disciplines[i]))
                 for i in range(n_disciplines)]
    template = pd.concat(templates, ignore_index=True)
    t_start = np.cumsum([0] + [len(t) for t in templates[:-1]])
    t_count = np.array([len(t) for t in templates])
    discipline = np.arange(n_programs) % len(spec.disciplines)
    program, row = _expand(t_start[discipline], t_count[discipline])
    t = template.iloc[row].reset_index(drop=True)

    course_type = t["course_type"].to_numpy(dtype=object)
    n = len(t)
    # credits, weekly theory / practical hours and sessions, by course type
    three_or_four = rng.choice([3, 4], size=n, p=[0.4, 0.6])
    one_or_two = rng.choice([1, 2], size=n, p=[0.5, 0.5])
    is_type = {ct: course_type == ct for ct in ("CORE", "PRACTICAL", ELECTIVE,
                                             "SKILL_ENHANCEMENT", "VALUE_ADDED")}
    credits = np.select(
        [is_type["CORE"], is_type["PRACTICAL"], is_type[ELECTIVE], is_type["SKILL_ENHANCEMENT"]],
        [three_or_four, one_or_two, three_or_four, 2],
        default=one_or_two,  # VALUE_ADDED
    )
    theory = np.select(
        [is_type["PRACTICAL"], is_type[ELECTIVE], is_type["SKILL_ENHANCEMENT"]],
        [0, 3, 1],
        default=credits,
    )
    practical = np.select(
        [is_type["PRACTICAL"], is_type[ELECTIVE], is_type["SKILL_ENHANCEMENT"]],
        [2 * credits, 2 * (credits - 3), 2],
        default=0,
    )
    program_code = programs["program_code"].to_numpy(dtype=object)
    program_id = programs["program_id"].to_numpy(dtype=object)
    courses = pd.DataFrame(
        {
            "course_id": pd.Series(program_code[program], dtype="str") + "-" + t["key"],
            "course_code": t["course_code"],
            "course_name": t["course_name"],
            "course_type": t["course_type"],
            "credits": credits,
            "theory_hours": theory,
            "practical_hours": practical,
            "max_sessions_per_week": credits,
            "program_id": pd.Series(program_id[program], dtype="str"),
            "semester": t["semester"],
        }
    )
    index = _CourseIndex(
        program, t["sem_pos"].to_numpy(), course_type, t["track"].to_numpy(),
        t["core_k"].to_numpy(), n_programs,
    )
    return courses, index


# --------------------------------------------------------------------------- students


def _group_sizes(prog_sems: np.ndarray, n_students: int, n_groups: str,
                 rng: np.random.Generator) -> np.ndarray:
    """Students per group ``g = program * MAX_TERM_SEMESTERS + semester position``."""
    n_programs = len(prog_sems)
    sizes = np.zeros(n_programs * MAX_TERM_SEMESTERS, dtype=np.int64)
    if n_groups == "one":
        sizes[prog_sems[0] - _elective_semesters(prog_sems[0])] = n_students
        return sizes
    if n_groups == "large":
        weights = rng.uniform(*cat.LARGE_GROUP_WEIGHTS, size=(n_programs, MAX_TERM_SEMESTERS))
    else:
        intake = rng.lognormal(0.0, cat.PROGRAM_SIZE_SIGMA, size=n_programs)
        weights = intake[:, None] * np.asarray(cat.COHORT_RETENTION)[None, :]
    weights[np.arange(MAX_TERM_SEMESTERS)[None, :] >= prog_sems[:, None]] = 0.0
    weights = weights.ravel()
    return rng.multinomial(n_students, weights / weights.sum())


def _students(spec: cat.Profile, programs: pd.DataFrame, prog_sems: np.ndarray,
              n_students: int, n_groups: str,
              rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The student table, each student's group and (hidden) elective track."""
    n = n_students
    n_programs = len(programs)
    sizes = _group_sizes(prog_sems, n, n_groups, rng)
    group = np.repeat(np.arange(len(sizes)), sizes)
    serial = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    # ids are issued at admission: older cohorts first, in random order within a cohort
    order = np.lexsort((rng.random(n), -(group % MAX_TERM_SEMESTERS)))
    group, serial = group[order], serial[order]
    program, sem_pos = group // MAX_TERM_SEMESTERS, group % MAX_TERM_SEMESTERS
    semester = 2 * sem_pos + 1

    # names, gender, contact
    gender = _draw_index(rng, [s for _, s in cat.GENDER_SHARES], n)
    n_male, n_female = len(cat.MALE_FIRST_NAMES), len(cat.FEMALE_FIRST_NAMES)
    male_first = rng.integers(0, n_male, size=n)
    female_first = n_male + rng.integers(0, n_female, size=n)
    any_first = rng.integers(0, n_male + n_female, size=n)
    first = np.select([gender == 0, gender == 1], [male_first, female_first], default=any_first)
    last = rng.integers(0, len(cat.LAST_NAMES), size=n)
    first_names = cat.MALE_FIRST_NAMES + cat.FEMALE_FIRST_NAMES
    name_code = first * len(cat.LAST_NAMES) + last
    full_names = [f"{given} {family}" for given in first_names for family in cat.LAST_NAMES]
    email_names = [f"{given}.{family}".lower() for given in first_names for family in cat.LAST_NAMES]

    # roll number: admission year (2 digits), programme code, serial in the cohort
    group_prefix = [
        f"{(cat.TERM_START_YEAR - s) % 100:02d}{code.replace('-', '')}"
        for code in programs["program_code"]
        for s in range(MAX_TERM_SEMESTERS)
    ]
    roll = (
        pd.Series(np.asarray(group_prefix, dtype=object)[group], dtype="str")
        + pd.Series(serial, dtype="int64").astype("str").str.zfill(4)
    )
    email = (
        pd.Series(np.asarray(email_names, dtype=object)[name_code], dtype="str")
        + "."
        + roll.str.lower()
        + "@"
        + cat.EMAIL_DOMAIN
    )
    width = max(6, len(str(n)))
    student_id = "S" + pd.Series(np.arange(1, n + 1), dtype="int64").astype("str").str.zfill(width)

    # preferences: each programme has its own mix of shifts
    base = np.asarray(cat.SHIFT_PREFERENCE_BASE) * cat.SHIFT_PREFERENCE_CONCENTRATION
    shift_mix = np.cumsum(rng.dirichlet(base, size=n_programs), axis=1)
    shift = _draw_rows(rng, shift_mix[program])
    shift[rng.random(n) >= cat.SHIFT_PREFERENCE_SHARE] = -1
    language = _draw_index(rng, [s for _, s in cat.LANGUAGE_CHOICES], n)
    cgpa = np.clip(rng.normal(cat.CGPA_MEAN, cat.CGPA_SD, size=n), cat.CGPA_MIN, cat.CGPA_MAX)
    is_active = rng.random(n) >= cat.INACTIVE_SHARE

    # hidden ground truth, used for the enrolments only: each student's elective track
    n_tracks = np.array([min(len(_discipline(spec, p).tracks), spec.tracks_per_program)
                         for p in range(n_programs)])
    track_mix = rng.dirichlet(np.full(spec.tracks_per_program, cat.TRACK_CONCENTRATION),
                              size=n_programs)
    track_mix[np.arange(spec.tracks_per_program)[None, :] >= n_tracks[:, None]] = 0.0
    track_mix = np.cumsum(track_mix / track_mix.sum(axis=1, keepdims=True), axis=1)
    track = _draw_rows(rng, track_mix[program])

    students = pd.DataFrame(
        {
            "student_id": student_id,
            "roll_number": roll,
            "student_name": _categorical(name_code, full_names),
            "email": email,
            "gender": _categorical(gender, [g for g, _ in cat.GENDER_SHARES]),
            "program_id": _categorical(program, programs["program_id"]),
            "academic_year": _categorical(np.zeros(n, dtype=np.int8), [cat.ACADEMIC_YEAR]),
            "semester": semester,
            "preferred_shift": _categorical(shift, [s[1] for s in cat.SHIFTS]),
            "preferred_languages": _categorical(language, [v for v, _ in cat.LANGUAGE_CHOICES]),
            "cgpa": cgpa.round(2),
            "tenant_id": _categorical(np.zeros(n, dtype=np.int8), [cat.TENANT_ID]),
            "institution_id": _categorical(np.zeros(n, dtype=np.int8), [spec.institution_id]),
            "is_active": is_active,
        }
    )
    return students, group, track


# --------------------------------------------------------------------------- enrolments


def _enrollments(students: pd.DataFrame, group: np.ndarray, track: np.ndarray,
                 courses: pd.DataFrame, index: _CourseIndex,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per (student, course), sorted by student then course; and who has a backlog."""
    n = len(group)
    n_programs = index.n_programs
    program, sem_pos = group // MAX_TERM_SEMESTERS, group % MAX_TERM_SEMESTERS

    # the semester's regular courses, each taken with its type's probability
    stu_r, pos = _expand(index.regular_start[group], index.regular_count[group])
    course_r = index.regular[pos]
    keep = rng.random(len(course_r)) < index.take_probability[course_r]
    stu_r, course_r = stu_r[keep], course_r[keep]

    # the semester's electives: most of the own track, a few of the others
    stu_e, pos = _expand(index.elective_start[group], index.elective_count[group])
    course_e = index.elective[pos]
    own = index.track[course_e] == track[stu_e]
    keep = rng.random(len(course_e)) < np.where(own, cat.OWN_TRACK_TAKE, cat.OTHER_TRACK_TAKE)
    stu_e, course_e = stu_e[keep], course_e[keep]

    # backlog: one core course of an earlier semester of the own programme
    backlog = (sem_pos >= 1) & (rng.random(n) < cat.BACKLOG_SHARE)
    stu_b = np.flatnonzero(backlog)
    earlier = (rng.random(len(stu_b)) * sem_pos[stu_b]).astype(np.int64)
    n_core = index.core_count[program[stu_b], earlier]
    k = (rng.random(len(stu_b)) * n_core).astype(np.int64)
    course_b = index.core[program[stu_b], earlier, k]

    # cross-programme: one elective of another programme
    stu_x = np.flatnonzero((sem_pos >= 1) & (rng.random(n) < cat.CROSS_PROGRAM_SHARE))
    if n_programs > 1:
        other = (program[stu_x] + rng.integers(1, n_programs, size=len(stu_x))) % n_programs
        count = index.program_elective_count[other]
        pick = index.program_elective_start[other] + (rng.random(len(stu_x)) * count).astype(int)
        stu_x, course_x = stu_x[count > 0], index.elective[pick[count > 0]]
    else:
        stu_x, course_x = stu_x[:0], stu_x[:0]

    student = np.concatenate([stu_r, stu_e, stu_b, stu_x])
    course = np.concatenate([course_r, course_e, course_b, course_x])
    # nobody without a course: a student who drew none takes the semester's first course
    empty = np.flatnonzero(np.bincount(student, minlength=n) == 0)
    empty = empty[index.regular_count[group[empty]] > 0]
    student = np.concatenate([student, empty])
    course = np.concatenate([course, index.regular[index.regular_start[group[empty]]]])
    order = np.lexsort((course, student))
    student, course = student[order], course[order]

    start = np.datetime64(cat.REGISTRATION_START)
    dates = [str(start + np.timedelta64(d, "D")) for d in range(cat.REGISTRATION_DAYS)]
    date = rng.integers(0, cat.REGISTRATION_DAYS, size=n)  # a student registers on one day
    enrollment = pd.DataFrame(
        {
            "student_id": _categorical(student, students["student_id"]),
            "course_id": _categorical(course, courses["course_id"]),
            "academic_year": _categorical(np.zeros(len(student), dtype=np.int8),
                                          [cat.ACADEMIC_YEAR]),
            "semester": students["semester"].to_numpy()[student],
            "is_mandatory": index.is_mandatory[course],
            "enrollment_date": _categorical(date[student], dates),
        }
    )
    return enrollment, backlog


# --------------------------------------------------------------------------- rooms and shifts


def _shifts() -> pd.DataFrame:
    columns = ["shift_id", "shift_code", "shift_name", "shift_type", "start_time", "end_time"]
    return pd.DataFrame([list(s) for s in cat.SHIFTS], columns=columns)


def _largest_remainder(shares: np.ndarray | Sequence[float], total: int) -> np.ndarray:
    """Integer counts proportional to ``shares`` summing to ``total``."""
    quota = np.asarray(shares, dtype=float) / np.sum(shares) * total
    counts = np.floor(quota).astype(np.int64)
    by_remainder = np.lexsort((-quota, -(quota - counts)))  # ties: larger share first
    counts[by_remainder[: total - counts.sum()]] += 1
    return counts


def _rooms(group_sizes: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Enough rooms for the batches: ceil(expected batches / shifts * ROOM_SLACK)."""
    expected_batches = int(np.maximum(1, np.ceil(group_sizes / cat.BATCH_SIZE_TARGET)).sum())
    n = max(1, math.ceil(expected_batches / len(cat.SHIFTS) * cat.ROOM_SLACK))
    capacities = np.array([c for c, _ in cat.ROOM_CAPACITY_SHARES])
    counts = _largest_remainder([s for _, s in cat.ROOM_CAPACITY_SHARES], n)
    capacity = rng.permutation(np.repeat(capacities, counts))
    room_type = _draw_index(rng, [s for _, s in cat.ROOM_TYPE_SHARES], n)
    shift = rng.integers(0, len(cat.SHIFTS), size=n)
    shift[rng.random(n) >= cat.ROOM_SHIFT_PREFERENCE_SHARE] = -1

    i = np.arange(n)
    per_building = cat.FLOORS_PER_BUILDING * cat.ROOMS_PER_FLOOR
    building = i // per_building
    floor = (i // cat.ROOMS_PER_FLOOR) % cat.FLOORS_PER_BUILDING + 1
    number = floor * 100 + i % cat.ROOMS_PER_FLOOR + 1
    rows = []
    for b, f, num, t in zip(building.tolist(), floor.tolist(), number.tolist(),
                            room_type.tolist(), strict=True):  # one row per room
        name, code = cat.BUILDINGS[b % len(cat.BUILDINGS)]
        repeat = b // len(cat.BUILDINGS)
        if repeat:
            name, code = f"{name} {repeat + 1}", f"{code}{repeat + 1}"
        kind = cat.ROOM_TYPE_SHARES[t][0]
        rows.append((f"R{b * 1000 + num}", f"{code}-{num}",
                     f"{cat.ROOM_TYPE_LABEL[kind]} {code}-{num}", kind, name, f))
    rooms = pd.DataFrame(rows, columns=["room_id", "room_code", "room_name", "room_type",
                                        "building_name", "floor_number"])
    rooms.insert(1, "capacity", capacity)
    shift_codes = np.array([s[1] for s in cat.SHIFTS], dtype=object)
    rooms["preferred_shift"] = pd.Series(np.where(shift >= 0, shift_codes[shift], None),  # type: ignore[call-overload]
                                         dtype="str")
    return rooms


# --------------------------------------------------------------------------- prerequisites


def _prerequisites(courses: pd.DataFrame, index: _CourseIndex,
                   rng: np.random.Generator) -> pd.DataFrame:
    """Some core k of a term semester requires core k of the programme's previous one."""
    later, earlier = index.core[:, 1:, :], index.core[:, :-1, :]
    candidate = (later >= 0) & (earlier >= 0)
    later, earlier = later[candidate], earlier[candidate]  # C order: programme, semester, k
    chosen = rng.random(len(later)) < cat.PREREQUISITE_SHARE
    if len(later) and not chosen.any():
        chosen[0] = True  # "a few" is at least one
    later, earlier = later[chosen], earlier[chosen]
    course_id = courses["course_id"].to_numpy(dtype=object)
    grades = [g for g, _ in cat.MINIMUM_GRADES]
    return pd.DataFrame(
        {
            "course_id": pd.Series(course_id[later], dtype="str"),
            "prerequisite_course_id": pd.Series(course_id[earlier], dtype="str"),
            "is_mandatory": rng.random(len(later)) >= cat.PREREQUISITE_OPTIONAL_SHARE,
            "minimum_grade": pd.Series(
                np.asarray(grades, dtype=object)[
                    _draw_index(rng, [s for _, s in cat.MINIMUM_GRADES], len(later))
                ],
                dtype="str",
            ),
        }
    )


# --------------------------------------------------------------------------- EAV parameters

_VALUE_COLUMNS = ("parameter_value", "numeric_value", "integer_value", "boolean_value",
                  "json_value")


def _parameters(spec: cat.Profile, programs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``dynamic_parameters`` (batch sizes, two constraint rules) and their overrides."""
    size_rules = json.dumps({"min": 1, "max": 1000})
    rule_rules = json.dumps(cat.RULE_VALIDATION)
    definitions = [
        ("DP-001", "batch_size.min", "Minimum batch size", "integer", cat.BATCH_SIZE_MIN),
        ("DP-002", "batch_size.target", "Target batch size", "integer", cat.BATCH_SIZE_TARGET),
        ("DP-003", "batch_size.max", "Maximum batch size", "integer", cat.BATCH_SIZE_MAX),
        ("DP-004", "constraint.shift_homogeneous", "Batches share a preferred shift", "json",
         None),
        ("DP-005", "constraint.language_homogeneous", "Batches share a language", "json", None),
    ]
    parameters = pd.DataFrame(
        {
            "parameter_id": [d[0] for d in definitions],
            "parameter_code": [d[1] for d in definitions],
            "parameter_name": [d[2] for d in definitions],
            "parameter_path": ["stage2/" + d[1].replace(".", "/") for d in definitions],
            "data_type": [d[3] for d in definitions],
            "default_value": pd.Series(
                [None if d[4] is None else str(d[4]) for d in definitions], dtype="str"
            ),
            "validation_rules": [size_rules if d[3] == "integer" else rule_rules
                                 for d in definitions],
            "tenant_id": cat.TENANT_ID,
        }
    )

    program_ids = programs["program_id"].tolist()
    bba = [p for p in program_ids if p == "PRG-BBA"]
    target_program = bba[0] if bba else program_ids[-1]
    overrides = [
        ("EPV-001", "PROGRAM", target_program, "DP-002", "integer_value",
         cat.BATCH_SIZE_TARGET_OVERRIDE),
        ("EPV-002", "INSTITUTION", spec.institution_id, "DP-004", "json_value",
         json.dumps(cat.SHIFT_RULE)),
        ("EPV-003", "PROGRAM", program_ids[0], "DP-005", "json_value",
         json.dumps(cat.LANGUAGE_RULE)),
    ]
    values = pd.DataFrame(
        {
            "value_id": [o[0] for o in overrides],
            "entity_type": [o[1] for o in overrides],
            "entity_id": [o[2] for o in overrides],
            "parameter_id": [o[3] for o in overrides],
        }
    )
    dtypes = {"parameter_value": "str", "numeric_value": "Float64", "integer_value": "Int64",
              "boolean_value": "boolean", "json_value": "str"}
    for column in _VALUE_COLUMNS:
        cells = [o[5] if o[4] == column else None for o in overrides]
        values[column] = pd.array(cells, dtype=dtypes[column])  # type: ignore[call-overload]
    values["effective_from"] = cat.EAV_EFFECTIVE_FROM
    values["effective_to"] = pd.Series([None] * len(values), dtype="str")
    values["tenant_id"] = cat.TENANT_ID
    return parameters, values


# --------------------------------------------------------------------------- writing


def write_institution(
    out_dir: str | Path,
    tables: dict[str, pd.DataFrame],
    *,
    delimiter: str = ",",
    bom: bool = False,
    enrollment_format: str = "table",
) -> Path:
    """Write each table as ``out_dir/<table>.csv``; return ``out_dir``.

    UTF-8 (with a byte-order mark if ``bom``), ``\\n`` line ends, fields quoted only where
    needed, booleans as ``true``/``false``, nulls as empty cells. List cells use ``;``, or ``|``
    when the delimiter is ``;``. ``enrollment_format="list_column"`` writes the enrolments as
    an ``enrolled_courses`` list column of ``student_data`` instead of
    ``student_course_enrollment.csv`` (an old copy of that file in ``out_dir`` is removed).
    Tables are written in :data:`TABLES` order, then any others by name. Deterministic: the
    same tables and options give byte-identical files.
    """
    if delimiter not in DELIMITERS:
        raise ValueError(f"delimiter must be one of {list(DELIMITERS)}, got {delimiter!r}")
    if enrollment_format not in ENROLLMENT_FORMATS:
        raise ValueError(
            f"enrollment_format must be one of {list(ENROLLMENT_FORMATS)}, "
            f"got {enrollment_format!r}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    list_sep = "|" if delimiter == ";" else ";"
    tables = dict(tables)
    if enrollment_format == "list_column":
        if "student_data" not in tables or "student_course_enrollment" not in tables:
            raise ValueError("list_column needs student_data and student_course_enrollment")
        enrollment = tables.pop("student_course_enrollment")
        students = tables["student_data"]
        tables["student_data"] = students.assign(
            enrolled_courses=_enrolled_courses(students["student_id"], enrollment, ";")
        )
        (out / "student_course_enrollment.csv").unlink(missing_ok=True)
    names = [t for t in TABLES if t in tables] + sorted(set(tables) - set(TABLES))
    for name in names:
        frame = tables[name]
        if list_sep != ";":
            frame = _replace_list_separator(frame, list_sep)
        write_csv(frame, out / f"{name}.csv", delimiter=delimiter, bom=bom)
    return out


def _enrolled_courses(student_id: pd.Series, enrollment: pd.DataFrame, sep: str) -> pd.Series:
    """``a;b;c`` per student (in enrolment-table order), "" for a student without courses."""
    position = pd.Index(student_id).get_indexer(enrollment["student_id"])
    if (position < 0).any():
        raise ValueError("student_course_enrollment names students absent from student_data")
    order = np.argsort(position, kind="stable")
    values = pc.cast(pa.array(enrollment["course_id"], from_pandas=True), pa.string())
    offsets = np.concatenate([[0], np.cumsum(np.bincount(position, minlength=len(student_id)))])
    lists = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()),
                                     values.take(pa.array(order)))
    return pc.binary_join(lists, sep).to_pandas().astype("str").set_axis(student_id.index)


def _replace_list_separator(frame: pd.DataFrame, sep: str) -> pd.DataFrame:
    frame = frame.copy(deep=False)
    for column in LIST_COLUMNS:
        if column not in frame.columns:
            continue
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            frame[column] = values.cat.rename_categories(
                [str(c).replace(";", sep) for c in values.cat.categories]
            )
        else:
            frame[column] = values.astype("str").str.replace(";", sep, regex=False)
    return frame


