"""Small batching instances with a provable optimum, for the optimality benchmark.

Each instance is one mixable group: ``features`` holds one 0/1 course row per student (empty
course columns dropped) and ``batch_sizes`` the exact, balanced batch sizes that stage2's sizing
stage would give (:func:`stage2.sizing.balanced_sizes`). Two families:

- ``synth-*``: a random subset of the single group of a synthetic institution
  (:func:`stage2.synth.make_institution` with ``n_groups="one"``: core courses, track electives,
  backlogs and noise), one institution seed per instance;
- ``itc-<file>-*``: a random subset of the students of a real ITC 2019 instance
  (``<students><student id><course id/>``). Real course sets repeat a lot (865 students of
  muni-fsps-spr17 have only 37 distinct course sets), so a uniform subset is often trivial.
  We therefore take a random *seed student*, keep the pool of students sharing at least one
  course with it, and draw students from the pool with probability ∝ 1/sqrt(frequency of their
  course set in the pool): the instance keeps real duplicates but mixes several course sets.

Everything is a pure function of the instance's seed; ITC files are read from
``<repo>/../shared/data/itc2019`` at run time and never copied into the repository.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stage2.sizing import balanced_sizes

REPO_ROOT = Path(__file__).resolve().parents[2]
ITC_DIR = REPO_ROOT.parent / "shared" / "data" / "itc2019"
ITC_FILES = ("muni-fsps-spr17", "pu-cs-fal07", "yach-fal17")

#: (n_students, n_batches) of the benchmark: every k in 2..4 at n from 10 to 30
SHAPES = (
    (10, 2), (12, 3), (14, 4), (16, 2), (18, 3), (20, 4),
    (22, 2), (24, 3), (26, 4), (28, 2), (30, 3), (30, 4),
)  # fmt: skip


@dataclass(frozen=True)
class Instance:
    id: str
    source: str
    #: n × d, one row per student (0/1 course columns, no empty column)
    features: np.ndarray
    #: exact batch sizes, non-increasing, summing to n
    batch_sizes: np.ndarray
    seed: int
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def k(self) -> int:
        return int(self.batch_sizes.size)

    @property
    def n_distinct(self) -> int:
        return int(np.unique(self.features, axis=0).shape[0])


def course_rows(course_sets: list[list[str]]) -> np.ndarray:
    """0/1 matrix of the given course sets over the courses they use (sorted ids)."""
    courses = sorted({c for s in course_sets for c in s})
    col = {c: j for j, c in enumerate(courses)}
    matrix = np.zeros((len(course_sets), len(courses)))
    for i, s in enumerate(course_sets):
        matrix[i, [col[c] for c in s]] = 1.0
    return matrix


def _instance(inst_id: str, source: str, course_sets: list[list[str]], k: int, seed: int, **meta) -> Instance:
    features = course_rows(course_sets)
    return Instance(
        id=inst_id,
        source=source,
        features=features,
        batch_sizes=balanced_sizes(len(course_sets), k),
        seed=seed,
        meta=meta,
    )


# --------------------------------------------------------------------------- synthetic


def synthetic_instance(n: int, k: int, seed: int, pool: int = 240) -> Instance:
    """``n`` random students of a one-group synthetic institution of ``pool`` students."""
    from stage2.synth import make_institution

    tables = make_institution(n_students=pool, seed=seed, n_groups="one")
    students = tables["student_data"]
    active = students.loc[students["is_active"].astype(bool), "student_id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(active, size=n, replace=False))
    enrol = tables["student_course_enrollment"]
    enrol = enrol[enrol["student_id"].astype(str).isin(set(chosen))]
    by_student = enrol.groupby(enrol["student_id"].astype(str), observed=True)["course_id"].agg(
        lambda s: sorted(map(str, s))
    )
    course_sets = [by_student.get(s, []) for s in chosen]
    return _instance(f"synth-s{seed}-n{n}-k{k}", "synthetic", course_sets, k, seed, students=list(chosen))


# --------------------------------------------------------------------------- ITC 2019


@functools.cache
def itc_students(name: str) -> dict[str, tuple[str, ...]]:
    """``student id -> sorted course ids`` of one ITC 2019 file (streamed; files start with a BOM,
    which the XML parser accepts in binary mode)."""
    path = ITC_DIR / f"{name}.xml"
    if not path.is_file():
        raise FileNotFoundError(f"ITC 2019 instance not found: {path}")
    students: dict[str, list[str]] = {}
    current: list[str] | None = None
    with path.open("rb") as fh:
        for event, elem in ET.iterparse(fh, events=("start", "end")):
            if event == "start" and elem.tag == "student":
                current = students.setdefault(elem.get("id"), [])
            elif event == "end" and elem.tag == "course" and current is not None:
                current.append(elem.get("id"))
            elif event == "end" and elem.tag == "student":
                current = None
                elem.clear()
            elif event == "end" and elem.tag in ("room", "course", "class", "distribution"):
                elem.clear()
    return {sid: tuple(sorted(set(cs), key=_course_key)) for sid, cs in students.items()}


def _course_key(course_id: str) -> tuple[int, str]:
    return (int(course_id), course_id) if course_id.isdigit() else (1 << 62, course_id)


def itc_instance(name: str, n: int, k: int, seed: int) -> Instance:
    """``n`` students of ``name`` who share at least one course with a random seed student,
    drawn with probability ∝ 1/sqrt(frequency of their course set in that pool)."""
    students = itc_students(name)
    ids = sorted(students, key=_course_key)
    rng = np.random.default_rng([seed, ITC_FILES.index(name) if name in ITC_FILES else 99])
    for _ in range(1000):
        seed_student = ids[int(rng.integers(len(ids)))]
        seed_courses = set(students[seed_student])
        pool = [s for s in ids if seed_courses.intersection(students[s])]
        if len(pool) >= n and len({students[s] for s in pool}) >= 3:
            break
    else:  # pragma: no cover - every shipped file has large pools
        raise RuntimeError(f"no seed student of {name} has a pool of {n} students")
    freq: dict[tuple[str, ...], int] = {}
    for s in pool:
        freq[students[s]] = freq.get(students[s], 0) + 1
    weights = np.array([1.0 / np.sqrt(freq[students[s]]) for s in pool])
    chosen = rng.choice(len(pool), size=n, replace=False, p=weights / weights.sum())
    chosen_ids = [pool[i] for i in np.sort(chosen)]
    return _instance(
        f"itc-{name.split('-')[0]}-s{seed}-n{n}-k{k}",
        f"itc2019:{name}",
        [list(students[s]) for s in chosen_ids],
        k,
        seed,
        students=chosen_ids,
        seed_student=seed_student,
    )


# --------------------------------------------------------------------------- the benchmark


def benchmark_instances(itc: bool = True) -> list[Instance]:
    """The benchmark: 12 synthetic instances (one per shape) and, when the ITC files are
    present, 8 per ITC file (shapes cycled, so each file covers k = 2, 3 and 4)."""
    instances = [synthetic_instance(n, k, seed=100 + i) for i, (n, k) in enumerate(SHAPES)]
    if itc and ITC_DIR.is_dir():
        for f, name in enumerate(ITC_FILES):
            for j in range(8):
                n, k = SHAPES[(4 * f + j) % len(SHAPES)]
                instances.append(itc_instance(name, n, k, seed=200 + 10 * f + j))
    return instances


def tiny_instances() -> list[Instance]:
    """Instances small enough for exhaustive search (n ≤ 12), for the tests."""
    out = [
        synthetic_instance(8, 2, seed=1),
        synthetic_instance(9, 3, seed=2),
        synthetic_instance(10, 2, seed=3),
        synthetic_instance(10, 3, seed=4),
        synthetic_instance(11, 4, seed=5),
    ]
    if ITC_DIR.is_dir():
        out += [itc_instance("yach-fal17", 10, 3, seed=6), itc_instance("muni-fsps-spr17", 9, 2, seed=7)]
    return out


if __name__ == "__main__":
    for inst in benchmark_instances():
        print(
            f"{inst.id:32s} n={inst.n:2d} k={inst.k} sizes={inst.batch_sizes.tolist()} "
            f"courses={inst.features.shape[1]:3d} distinct={inst.n_distinct}"
        )
