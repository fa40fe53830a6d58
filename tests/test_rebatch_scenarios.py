"""experiments/rebatching/scenarios.py: the re-batching experiment's scenario generator."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from stage2.contract.loader import load_institution
from stage2.synth.generator import make_institution, write_institution

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "rebatching" / "scenarios.py"
RATES = {"switch": 0.1, "new": 0.05, "drop": 0.04, "close_rooms": 2}


def _load_module():
    spec = importlib.util.spec_from_file_location("rebatch_scenarios", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scenarios = _load_module()
make_scenario = scenarios.make_scenario


@pytest.fixture(scope="module")
def institution(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scen") / "in"
    write_institution(path, make_institution(400, seed=3))
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _courses(enrollment: pd.DataFrame) -> dict[str, set[str]]:
    return enrollment.groupby("student_id")["course_id"].agg(set).to_dict()


def test_counts_switches_drops_rooms_and_untouched_files(institution, tmp_path):
    out = tmp_path / "out"
    scenario = make_scenario(institution, out, seed=7, **RATES)
    assert json.loads((out / "scenario.json").read_text()) == scenario

    before, after = _read(institution / "student_data.csv"), _read(out / "student_data.csv")
    n_active = int((before["is_active"] == "true").sum())
    assert scenario["n_active"] == n_active
    assert len(scenario["switched"]) == round(0.1 * n_active)
    assert len(scenario["new"]) == round(0.05 * n_active)
    assert len(scenario["dropped"]) == round(0.04 * n_active)
    assert len(scenario["closed_rooms"]) == 2

    switched = {m["student_id"]: m for m in scenario["switched"]}
    dropped = set(scenario["dropped"])
    assert not switched.keys() & dropped
    assert not switched.keys() & {n["student_id"] for n in scenario["new"]}

    # switched: exactly one course different, the rest of the row kept
    old_enr = _read(institution / "student_course_enrollment.csv")
    new_enr = _read(out / "student_course_enrollment.csv")
    old_courses, new_courses = _courses(old_enr), _courses(new_enr)
    for sid, move in switched.items():
        assert old_courses[sid] - new_courses[sid] == {move["dropped_course"]}
        assert new_courses[sid] - old_courses[sid] == {move["added_course"]}
    assert (old_enr.drop(columns="course_id") == new_enr.iloc[: len(old_enr)].drop(columns="course_id")).all().all()

    # dropped: inactive; the other original rows unchanged
    after_old = after.iloc[: len(before)]
    assert (after_old["student_id"] == before["student_id"]).all()
    is_dropped = before["student_id"].isin(dropped)
    assert (after_old.loc[is_dropped, "is_active"] == "false").all()
    assert after_old[~is_dropped].equals(before[~is_dropped])

    # new: clones with fresh ids and the source's courses
    clones = after.iloc[len(before) :].set_index("student_id")
    assert list(clones.index) == [n["student_id"] for n in scenario["new"]]
    assert not set(clones.index) & set(before["student_id"])
    assert clones["roll_number"].is_unique and not set(clones["roll_number"]) & set(before["roll_number"])
    source_rows = before.set_index("student_id")
    for item in scenario["new"]:
        sid, source = item["student_id"], item["cloned_from"]
        assert new_courses[sid] == new_courses[source]
        for column in ("program_id", "academic_year", "semester", "preferred_shift"):
            assert clones.at[sid, column] == source_rows.at[source, column]

    # rooms closed, nothing else touched
    rooms_before, rooms_after = _read(institution / "rooms.csv"), _read(out / "rooms.csv")
    assert set(rooms_before["room_id"]) - set(rooms_after["room_id"]) == set(scenario["closed_rooms"])
    assert len(rooms_after) == len(rooms_before) - 2
    for path in institution.iterdir():
        if path.name not in {"student_data.csv", "student_course_enrollment.csv", "rooms.csv"}:
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    load_institution(out)  # still a valid stage2 input


def test_deterministic(institution, tmp_path):
    for name in ("a", "b"):
        make_scenario(institution, tmp_path / name, seed=11, **RATES)
    make_scenario(institution, tmp_path / "c", seed=12, **RATES)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "scenario.json").read_bytes() != (tmp_path / "c" / "scenario.json").read_bytes()


def test_previous_run_rooms_delete_mode_and_list_column(tmp_path):
    src = tmp_path / "in"
    write_institution(src, make_institution(200, seed=5), delimiter=";", bom=True, enrollment_format="list_column")
    rooms = _read_semicolon(src / "rooms.csv")["room_id"].tolist()
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"batch_id": ["b1", "b2", "b3"], "room_id": [rooms[-1], rooms[-2], ""]}).to_csv(
        run / "student_batches.csv", index=False
    )
    out = tmp_path / "out"
    scenario = make_scenario(src, out, seed=1, switch=0.1, new=0.05, drop=0.05, close_rooms=1,
                             previous_run=run, drop_mode="delete")
    assert scenario["closed_rooms"][0] in {rooms[-1], rooms[-2]}
    data = (out / "student_data.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b";" in data.splitlines()[0]
    after = _read_semicolon(out / "student_data.csv").set_index("student_id")
    before = _read_semicolon(src / "student_data.csv").set_index("student_id")
    assert not set(scenario["dropped"]) & set(after.index)
    for move in scenario["switched"]:
        old = set(before.at[move["student_id"], "enrolled_courses"].split("|"))
        new = set(after.at[move["student_id"], "enrolled_courses"].split("|"))
        assert old ^ new == {move["dropped_course"], move["added_course"]}
    load_institution(out)


def test_refuses_unsafe_output(institution, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        make_scenario(institution, out)
    with pytest.raises(ValueError, match="input directory"):
        make_scenario(institution, institution / "sub")
    make_scenario(institution, out, force=True, switch=0, new=0, drop=0, close_rooms=0)
    assert not (out / "keep.txt").exists()
    for path in institution.iterdir():  # no change at all: every file copied as is
        assert (out / path.name).read_bytes() == path.read_bytes()


def _read_semicolon(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=";", dtype=str, keep_default_na=False, encoding="utf-8-sig")
