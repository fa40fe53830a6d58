"""Re-batching against a previous run (``rebatch.previous_run``): real pipeline runs on small
synthetic institutions, each re-batch compared with the run it starts from, plus the solver's
pieces (soft room caps of the size model, the penalised k-means) on instances small enough to
reason about."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    CONF_DIR,
    REPO_ROOT,
    STAGE3_TABLES,
    active_students,
    assert_no_outputs,
    assert_outputs_valid,
    read_output,
    subprocess_env,
)

from stage2 import load_config, process_student_batching
from stage2.clustering.assignment import COST_SCALE, SizeModel, assign_costs, assign_exact
from stage2.errors import InputValidationError
from stage2.rebatching.solve import GroupMoves, penalised_labels
from stage2.synth.generator import make_institution, write_institution

#: every run: no MLflow, no notebook, one fixed time (so reruns and kept memberships compare byte for byte)
OFFLINE = ("tracking.enabled=false", "report.notebook=false", "as_of=2026-01-01T00:00:00")
SMALL_BATCHES = ("batch_size.min=10", "batch_size.target=15", "batch_size.max=20")
DIFF = "rebatch_diff.csv"
DIFF_COLUMNS = ["student_id", "previous_batch_id", "previous_batch_code", "batch_id", "batch_code", "student_class",
                "reason"]
GROUP = ["program_id", "academic_year", "semester"]
SCENARIOS = REPO_ROOT / "experiments" / "rebatching" / "scenarios.py"


# ------------------------------------------------------------------------------- helpers


def run(input_dir: Path, out: Path, *overrides: str):
    cfg = load_config([f"data.input_dir={input_dir}", *OFFLINE, *overrides], config_dir=CONF_DIR)
    return process_student_batching(cfg, output_dir=out)


def rebatch(input_dir: Path, previous: Path, out: Path, *overrides: str) -> dict:
    """Re-batch ``input_dir`` against ``previous``; the report's ``rebatch`` section."""
    run(input_dir, out, f"rebatch.previous_run={previous}", *overrides)
    return report(out)["rebatch"]


def report(out: Path) -> dict:
    return json.loads((out / "quality_report.json").read_text(encoding="utf-8"))


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def placement(out: Path) -> dict[str, str]:
    """student_id -> batch_id of a run."""
    membership = read_output(out, "batch_student_membership")
    return dict(zip(membership["student_id"], membership["batch_id"], strict=True))


def load_scenarios():
    spec = importlib.util.spec_from_file_location("_rebatching_scenarios", SCENARIOS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def clone_students(input_dir: Path, sources: list[str], prefix: str) -> list[str]:
    """Append a copy of each source student (new id ``<prefix>-<k>``, unique roll number and
    email) with copies of its enrolments; return the new ids."""
    students = read_csv(input_dir / "student_data.csv")
    enrollments = read_csv(input_dir / "student_course_enrollment.csv")
    by_id = students.set_index("student_id", drop=False)
    new_ids, rows, enrolled = [], [], []
    for k, source in enumerate(sources, start=1):
        new_id = f"{prefix}-{k:04d}"
        row = by_id.loc[source].copy()
        row["student_id"], row["roll_number"], row["email"] = new_id, f"R{new_id}", f"{new_id.lower()}@example.edu"
        rows.append(row)
        enrolled.append(enrollments.loc[enrollments["student_id"] == source].assign(student_id=new_id))
        new_ids.append(new_id)
    write_csv(pd.concat([students, pd.DataFrame(rows)], ignore_index=True), input_dir / "student_data.csv")
    write_csv(pd.concat([enrollments, *enrolled], ignore_index=True), input_dir / "student_course_enrollment.csv")
    return new_ids


def deactivate(input_dir: Path, student_ids) -> None:
    students = read_csv(input_dir / "student_data.csv")
    students.loc[students["student_id"].isin(set(student_ids)), "is_active"] = "false"
    write_csv(students, input_dir / "student_data.csv")


def code_number(codes: pd.Series) -> pd.DataFrame:
    """``prefix`` and ``number`` of codes ``<prefix>-B<nn>``."""
    parts = codes.str.extract(r"^(?P<prefix>.+)-B(?P<number>\d+)$")
    assert parts.notna().all().all(), codes[parts.isna().any(axis=1)].tolist()
    return parts.assign(number=parts["number"].astype(int))


def assert_rebatch_valid(out: Path, input_dir: Path, size_bounds: tuple[int, int] | None = None) -> None:
    """:func:`conftest.assert_outputs_valid` for a re-batch.

    That check also requires a fresh run's code numbering (``B01..Bn`` within a group, by each
    batch's first student in input order), which a re-batch deliberately breaks: kept batches keep
    their codes, new ones come after every previous code, dissolved codes leave gaps. So codes
    are checked here (``<prefix>-B<nn>``, one prefix per group, unique per tenant) and everything
    else on a copy of the run whose codes are renumbered the fresh way (in ``student_batches.csv``
    and the report's ``rule_breaches``)."""
    batches = read_output(out, "student_batches")
    assert not batches.duplicated(["tenant_id", "batch_code"]).any()
    parts = code_number(batches["batch_code"])
    assert (parts.groupby(batches["group_key"])["prefix"].nunique() == 1).all(), "two code prefixes in one group"

    membership = read_output(out, "batch_student_membership")
    rows = active_students(input_dir).set_index("student_id")["input_row"]
    first_row = membership["student_id"].map(rows).groupby(membership["batch_id"]).min()
    ordered = batches.assign(first_row=batches["batch_id"].map(first_row).to_numpy(), prefix=parts["prefix"])
    ordered = ordered.sort_values("first_row", kind="stable")
    number = ordered.groupby("group_key", sort=False).cumcount() + 1
    fresh = dict(zip(ordered["batch_code"], ordered["prefix"] + "-B" + number.map("{:02d}".format), strict=True))

    copy = out.parent / f"{out.name}-renumbered"
    copy.mkdir()
    for table in STAGE3_TABLES[1:]:
        shutil.copy(out / f"{table}.csv", copy)
    write_csv(batches.assign(batch_code=batches["batch_code"].map(fresh)), copy / "student_batches.csv")
    quality = report(out)
    for breach in quality["rule_breaches"]:
        breach["batch_code"] = fresh[breach["batch_code"]]
    (copy / "quality_report.json").write_text(json.dumps(quality), encoding="utf-8")
    assert_outputs_valid(copy, input_dir, size_bounds=size_bounds)


def assert_diff_consistent(previous: Path, out: Path) -> pd.DataFrame:
    """``rebatch_diff.csv`` lists exactly the students whose batch_id changed, the new ones and
    the ones no longer batched, with both runs' ids and codes; the report's counts are its
    counts. Returns the diff indexed by student_id."""
    before, after = placement(previous), placement(out)
    raw = read_csv(out / DIFF)
    assert list(raw.columns) == DIFF_COLUMNS
    diff = raw.set_index("student_id")
    assert diff.index.is_unique
    moved = {s for s in before.keys() & after.keys() if before[s] != after[s]}
    new, left = after.keys() - before.keys(), before.keys() - after.keys()
    assert set(diff.index) == moved | new | left
    assert set(diff.loc[sorted(new), "student_class"]) <= {"new"}
    assert set(diff.loc[sorted(new), "reason"]) <= {"new_student"}
    assert set(diff.loc[sorted(left), "student_class"]) <= {"left"}
    assert set(diff.loc[sorted(moved), "student_class"]) <= {"unchanged", "changed", "forced"}
    assert set(diff.loc[diff["student_class"] == "unchanged", "reason"]) <= {"moved_by_objective"}
    for s in moved | left:
        assert diff.at[s, "previous_batch_id"] == before[s], s
    for s in new | left:
        assert diff.at[s, "batch_id" if s in left else "previous_batch_id"] == "", s
    for s in moved | new:
        assert diff.at[s, "batch_id"] == after[s], s
    code_before = read_output(previous, "student_batches").set_index("batch_id")["batch_code"]
    code_after = read_output(out, "student_batches").set_index("batch_id")["batch_code"]
    known = diff.loc[diff["previous_batch_id"] != ""]
    assert (known["previous_batch_code"] == code_before.reindex(known["previous_batch_id"]).to_numpy()).all()
    placed = diff.loc[diff["batch_id"] != ""]
    assert (placed["batch_code"] == code_after.reindex(placed["batch_id"]).to_numpy()).all()

    figures = report(out)["rebatch"]
    classes = diff["student_class"].value_counts()
    assert figures["n_new"] == classes.get("new", 0) == len(new)
    assert figures["n_left"] == classes.get("left", 0) == len(left)
    for student_class in ("unchanged", "changed", "forced"):
        assert figures[f"moved_{student_class}"] == int((diff.loc[sorted(moved), "student_class"]
                                                         == student_class).sum()), student_class
    assert figures["n_unchanged"] + figures["n_changed"] + figures["n_forced"] + figures["n_new"] == len(after)
    assert figures["perturbation_share"] == pytest.approx((len(moved) + len(new)) / len(after))
    return diff


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def institution(tmp_path_factory) -> Path:
    return write_institution(tmp_path_factory.mktemp("rebatch") / "in", make_institution(1000, seed=3))


@pytest.fixture(scope="module")
def base_run(institution, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rebatch-base") / "run"
    run(institution, out)
    return out


@pytest.fixture(scope="module")
def scenario(institution, base_run, tmp_path_factory) -> tuple[Path, dict]:
    """5% switch a course, 2% new, 2% inactive, one room of the previous run closed."""
    out = tmp_path_factory.mktemp("rebatch-scenario") / "in"
    changes = load_scenarios().make_scenario(institution, out, switch=0.05, new=0.02, drop=0.02, close_rooms=1,
                                             seed=0, previous_run=base_run)
    return out, changes


@pytest.fixture(scope="module")
def scenario_run(scenario, base_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rebatch-scenario-run") / "run"
    rebatch(scenario[0], base_run, out)
    return out


@pytest.fixture(scope="module")
def unpenalised_run(scenario, base_run, tmp_path_factory) -> Path:
    """The scenario re-batched with move_penalty=0: unchanged students move where the objective wants."""
    out = tmp_path_factory.mktemp("rebatch-free") / "run"
    rebatch(scenario[0], base_run, out, "rebatch.move_penalty=0.0")
    return out


# ------------------------------------------------------------------------------- 1. nothing changed


@pytest.mark.parametrize("sizes", ["default", "small"])
def test_unchanged_institution_reproduces_the_previous_run_byte_for_byte(sizes, request, tmp_path):
    """Default sizes (mostly one batch per group) and 10-20 (several per group, 3 unplaced)."""
    if sizes == "default":
        institution, base_run, overrides = request.getfixturevalue("institution"), request.getfixturevalue(
            "base_run"), ()
    else:
        resized = request.getfixturevalue("resized")
        institution, base_run, overrides = resized["base_input"], resized["base"], SMALL_BATCHES
    out = tmp_path / "re"
    figures = rebatch(institution, base_run, out, *overrides)
    for table in STAGE3_TABLES:
        assert (out / f"{table}.csv").read_bytes() == (base_run / f"{table}.csv").read_bytes(), table
    diff = read_csv(out / DIFF)
    assert list(diff.columns) == DIFF_COLUMNS and diff.empty
    n_batches = len(read_output(base_run, "student_batches"))
    n_students = len(read_output(base_run, "batch_student_membership"))
    assert figures["moved_unchanged"] == figures["moved_changed"] == figures["moved_forced"] == 0
    assert figures["batches_kept"] == figures["n_previous_batches"] == n_batches
    assert figures["batches_kept_share"] == 1.0
    assert figures["batches_created"] == figures["batches_dissolved"] == figures["batches_changed"] == 0
    assert figures["room_changes"] == figures["shift_changes"] == 0
    assert figures["n_unchanged"] == n_students
    assert figures["n_changed"] == figures["n_new"] == figures["n_forced"] == figures["n_left"] == 0
    assert figures["perturbation_share"] == 0.0 and figures["dissolved_batches"] == []
    assert figures["course_sse"] == pytest.approx(figures["course_sse_previous"])
    assert figures["course_sse"] == pytest.approx(report(out)["metrics"]["course_sse"])


# ------------------------------------------------------------------------------- 2. classification


def test_each_kind_of_change_gets_its_class_and_reason(institution, base_run, tmp_path):
    changed_input = tmp_path / "in"
    shutil.copytree(institution, changed_input)
    students = read_csv(changed_input / "student_data.csv")
    enrollments = read_csv(changed_input / "student_course_enrollment.csv")
    before = placement(base_run)
    old_batches = read_output(base_run, "student_batches").set_index("batch_id")

    # the forced one: a student of programme P moves from semester s1 to s2 (and takes the
    # courses of an s2 student of P)
    semesters = students.groupby("program_id")["semester"].agg(lambda s: sorted(set(s), key=int))
    program = next(p for p, s in semesters.items() if len(s) >= 2)
    s1, s2 = semesters[program][0], semesters[program][1]
    forced = sorted(students.loc[(students["program_id"] == program) & (students["semester"] == s1), "student_id"])[0]
    model = sorted(students.loc[(students["program_id"] == program) & (students["semester"] == s2), "student_id"])[0]
    students.loc[students["student_id"] == forced, "semester"] = s2
    enrollments = pd.concat([enrollments.loc[enrollments["student_id"] != forced],
                             enrollments.loc[enrollments["student_id"] == model].assign(student_id=forced)],
                            ignore_index=True)

    # the changed one: swaps one course for one its group takes and it does not
    others = students.loc[(students["program_id"] != program)].sort_values("student_id")
    changed = others["student_id"].iloc[0]
    group = others.iloc[0][GROUP]
    mates = students.loc[(students[GROUP] == group).all(axis=1), "student_id"]
    own = set(enrollments.loc[enrollments["student_id"] == changed, "course_id"])
    swap_in = sorted(set(enrollments.loc[enrollments["student_id"].isin(mates), "course_id"]) - own)[0]
    first_row = enrollments.index[enrollments["student_id"] == changed][0]
    enrollments.loc[first_row, "course_id"] = swap_in

    left, clone_source, deleted = others["student_id"].iloc[1:4]
    write_csv(students.loc[students["student_id"] != deleted], changed_input / "student_data.csv")
    write_csv(enrollments.loc[enrollments["student_id"] != deleted], changed_input / "student_course_enrollment.csv")
    deactivate(changed_input, [left])
    (new,) = clone_students(changed_input, [clone_source], "NEW")

    out = tmp_path / "re"
    figures = rebatch(changed_input, base_run, out, "rebatch.fresh_reference=true")
    assert_rebatch_valid(out, changed_input)
    diff = assert_diff_consistent(base_run, out)
    after = placement(out)
    batches = read_output(out, "student_batches").set_index("batch_id")

    assert (figures["n_changed"], figures["n_new"], figures["n_left"], figures["n_forced"]) == (1, 1, 2, 1)
    assert figures["n_unchanged"] == len(before) - 4
    assert figures["moved_forced"] == 1

    assert diff.loc[new, ["student_class", "reason", "previous_batch_id"]].tolist() == ["new", "new_student", ""]
    assert diff.loc[left, ["student_class", "reason", "batch_id"]].tolist() == ["left", "inactive", ""]
    assert diff.at[left, "previous_batch_id"] == before[left]
    assert diff.loc[deleted, ["student_class", "reason", "previous_batch_id"]].tolist() == [
        "left", "not_in_input", before[deleted]]
    assert diff.loc[forced, ["student_class", "reason"]].tolist() == ["forced", "group_changed"]
    assert old_batches.at[before[forced], "semester"] == s1
    assert batches.loc[after[forced], ["program_id", "semester"]].tolist() == [program, s2]

    digests = {name: read_output(path, "batch_student_membership").set_index("student_id")["course_set_digest"]
               for name, path in (("before", base_run), ("after", out))}
    assert digests["before"][changed] != digests["after"][changed]
    assert digests["before"][clone_source] == digests["after"][new]
    if changed in diff.index:  # it may move or stay; either way it is "changed"
        assert diff.loc[changed, ["student_class", "reason"]].tolist() == ["changed", "course_set_changed"]
    assert set(diff["student_class"]) - {"unchanged"} <= {"new", "left", "forced", "changed"}
    # fresh_reference: a fresh clustering's course SSE, for reference (None without it)
    assert isinstance(figures["course_sse_fresh"], float) and figures["course_sse_fresh"] > 0
    assert report(base_run).get("rebatch") is None


def test_students_of_a_batch_that_all_changed_semester_are_forced_into_batches_of_their_new_group(
        institution, base_run, tmp_path):
    """The semester is a hard ``no_mix`` field: a student whose semester changed is ``forced``
    (``group_changed``), even when the whole batch changed with it; and a batch's code keeps
    naming its own programme, year and semester (``<programme>-<year>-<semester>-B<nn>``), so no
    batch of semester s2 carries a semester-s1 code (nor a second "Sem s2 — B01" name)."""
    batches = read_output(base_run, "student_batches")
    membership = read_output(base_run, "batch_student_membership")
    students = read_csv(institution / "student_data.csv")
    semesters = students.groupby("program_id")["semester"].agg(lambda s: set(s))
    pairs = batches.groupby("group_key")["batch_id"].agg(list)
    promoted_batch = next(ids[0] for key, ids in pairs.items() if len(ids) >= 2)
    row = batches.set_index("batch_id").loc[promoted_batch]
    s1 = row["semester"]
    s2 = str(min(int(s) for s in semesters[row["program_id"]] if int(s) > int(s1)))
    ids = set(membership.loc[membership["batch_id"] == promoted_batch, "student_id"])

    changed_input = tmp_path / "in"
    shutil.copytree(institution, changed_input)
    students.loc[students["student_id"].isin(ids), "semester"] = s2
    write_csv(students, changed_input / "student_data.csv")
    enrollments = read_csv(changed_input / "student_course_enrollment.csv")
    enrollments.loc[enrollments["student_id"].isin(ids), "semester"] = s2  # the same courses, now current in s2
    write_csv(enrollments, changed_input / "student_course_enrollment.csv")

    out = tmp_path / "re"
    figures = rebatch(changed_input, base_run, out)
    now = read_output(out, "student_batches")
    prefix = now["program_id"] + "-" + now["academic_year"] + "-" + now["semester"] + "-B"
    wrong = now.loc[[not c.startswith(p) for c, p in zip(now["batch_code"], prefix, strict=True)],
                    ["batch_code", "semester", "batch_name"]]
    assert wrong.empty, wrong.to_dict("records")
    assert figures["n_forced"] == len(ids)
    diff = read_csv(out / DIFF).set_index("student_id")
    assert (diff.reindex(sorted(ids))["reason"] == "group_changed").all()


# ------------------------------------------------------------------------------- 3. stable identities


def test_kept_batches_keep_ids_codes_rooms_and_shifts(scenario, base_run, scenario_run):
    scenario_input, changes = scenario
    (closed,) = changes["closed_rooms"]
    figures = report(scenario_run)["rebatch"]
    assert_rebatch_valid(scenario_run, scenario_input)
    assert_diff_consistent(base_run, scenario_run)
    assert figures["n_changed"] == len(changes["switched"])
    assert figures["n_new"] == len(changes["new"]) and figures["n_left"] == len(changes["dropped"])

    old = read_output(base_run, "student_batches").set_index("batch_code")
    now = read_output(scenario_run, "student_batches").set_index("batch_code")
    kept = now.index.intersection(old.index)
    created = now.index.difference(old.index)
    dissolved = {d["batch_code"] for d in figures["dissolved_batches"]}
    assert len(created) == figures["batches_created"] and len(kept) == len(now) - figures["batches_created"]
    assert not dissolved & set(now.index), "a dissolved batch's code was reused"
    assert (now.loc[kept, "batch_id"] == old.loc[kept, "batch_id"]).all()

    rooms = read_csv(scenario_input / "rooms.csv")
    assert closed not in set(rooms["room_id"])
    seats = dict(zip(rooms["room_id"], rooms["capacity"].astype(int), strict=True))
    room_closed = (old.loc[kept, "room_id"] == closed).to_numpy()
    assert room_closed.any(), "the scenario closed a room no kept batch used"
    # a kept batch keeps its (room, shift) unless the room closed or no longer seats it (a group
    # of one batch that grew past its room has no choice)
    outgrown = (now.loc[kept, "student_count"].astype(int).to_numpy()
                > old.loc[kept, "room_id"].map(seats).fillna(0).astype(int).to_numpy()) & ~room_closed
    stayed = kept[~room_closed & ~outgrown]
    assert len(stayed) >= len(kept) - 3
    assert (now.loc[stayed, ["room_id", "shift_id"]] == old.loc[stayed, ["room_id", "shift_id"]]).all().all()
    assert figures["room_changes"] == int((room_closed | outgrown).sum())

    # a batch that must leave its room keeps its shift while a room that seats it is free there
    used = set(zip(now["room_id"], now["shift_id"], strict=True))
    for code in kept[room_closed | outgrown]:
        assert now.at[code, "room_id"] not in ("", closed, old.at[code, "room_id"])
        shift, size = old.at[code, "shift_id"], int(now.at[code, "student_count"])
        free_there = [r for r, c in seats.items() if c >= size and (r, shift) not in used]
        if now.at[code, "shift_id"] != shift:
            assert not free_there, f"{code} left shift {shift} though {free_there} were free there"
    assert figures["shift_changes"] == int((now.loc[kept, "shift_id"] != old.loc[kept, "shift_id"]).sum())


# ------------------------------------------------------------------------------- 4. limiting moves


def test_freeze_unchanged_moves_no_unchanged_student(scenario, base_run, unpenalised_run, tmp_path):
    assert report(unpenalised_run)["rebatch"]["moved_unchanged"] > 0  # they would move
    out = tmp_path / "frozen"
    figures = rebatch(scenario[0], base_run, out, "rebatch.move_penalty=0.0", "rebatch.freeze_unchanged=true")
    assert figures["moved_unchanged"] == 0
    diff = assert_diff_consistent(base_run, out)
    assert "unchanged" not in set(diff["student_class"])
    before, after = placement(base_run), placement(out)
    staying = [s for s in before.keys() & after.keys() if s not in diff.index]
    assert len(staying) >= figures["n_unchanged"]
    assert all(after[s] == before[s] for s in staying)
    assert_rebatch_valid(out, scenario[0])


@pytest.mark.parametrize("move_penalty", ["0.0", "0.01"])
def test_max_moved_caps_the_unchanged_students_who_move(move_penalty, scenario, base_run, unpenalised_run, tmp_path):
    """A zero penalty cannot be raised: the cap is met by freezing groups; a small one is raised
    ``cap_penalty_factor``-fold until the cap holds."""
    cap = 2
    uncapped = unpenalised_run if move_penalty == "0.0" else tmp_path / "uncapped"
    if move_penalty != "0.0":
        rebatch(scenario[0], base_run, uncapped, f"rebatch.move_penalty={move_penalty}")
    assert report(uncapped)["rebatch"]["moved_unchanged"] > cap
    out = tmp_path / "capped"
    figures = rebatch(scenario[0], base_run, out, f"rebatch.move_penalty={move_penalty}", f"rebatch.max_moved={cap}")
    assert figures["moved_unchanged"] <= cap
    if move_penalty == "0.0":
        assert figures["frozen_groups"]
    else:
        assert figures["penalty_factor"] > 1
    diff = assert_diff_consistent(base_run, out)
    assert (diff["student_class"] == "unchanged").sum() <= cap
    assert_rebatch_valid(out, scenario[0])


@pytest.mark.parametrize("file_format", ["lines", "csv"])
def test_pinned_students_stay_in_their_batch(scenario, base_run, unpenalised_run, tmp_path, file_format):
    diff = read_csv(unpenalised_run / DIFF)
    movers = diff.loc[diff["student_class"].isin(["unchanged", "changed"]), "student_id"].tolist()
    assert len(movers) >= 2
    pinned = tmp_path / ("pinned.txt" if file_format == "lines" else "pinned.csv")
    if file_format == "lines":
        pinned.write_text("# moved without a penalty\n" + "\n".join(movers) + "\n", encoding="utf-8")
    else:
        write_csv(pd.DataFrame({"student_id": movers, "note": "pinned"}), pinned)
    out = tmp_path / "pinned"
    rebatch(scenario[0], base_run, out, "rebatch.move_penalty=0.0", f"rebatch.pinned={pinned}")
    before, after = placement(base_run), placement(out)
    assert {s: after[s] for s in movers} == {s: before[s] for s in movers}
    assert not set(movers) & set(read_csv(out / DIFF)["student_id"])
    assert_diff_consistent(base_run, out)


# ------------------------------------------------------------------------------- 5. size bounds


@pytest.fixture(scope="module")
def resized(tmp_path_factory):
    """An institution batched into 10-20 students, then: group "shrink" loses most of a batch
    (fewer than 2 × min left), group "grow" gains students beyond count × max, and group
    "replace" loses every student of one batch and gains as many new ones."""
    root = tmp_path_factory.mktemp("rebatch-sizes")
    tables = make_institution(600, seed=4)
    values = tables["entity_parameter_values"]
    tables["entity_parameter_values"] = values.loc[values["parameter_id"] != "DP-002"]  # a programme's target 40
    base_input = write_institution(root / "in", tables)
    base = root / "run"
    run(base_input, base, *SMALL_BATCHES)

    batches = read_output(base, "student_batches")
    membership = read_output(base, "batch_student_membership")
    members = membership.groupby("batch_id")["student_id"].agg(sorted)
    per_group = batches.groupby("group_key")["batch_id"].agg(list)
    two = [g for g, ids in per_group.items() if len(ids) == 2]
    several = [g for g, ids in per_group.items() if len(ids) >= 2 and g not in two[:1]]
    shrink, grow, replace = two[0], several[0], several[1]

    changed = root / "changed"
    shutil.copytree(base_input, changed)
    # shrink: 2 students of the second batch and at most 16 of the first stay: < 20 = 2 × min
    first, second = sorted(per_group[shrink], key=lambda b: -len(members[b]))
    stay_second = members[second][:2]
    deactivate(changed, members[second][2:] + members[first][16:])
    # grow: k batches of n students -> k × max + 15 students
    grow_ids = [s for b in per_group[grow] for s in members[b]]
    n_grow = len(per_group[grow]) * 20 + 15 - len(grow_ids)
    grown = clone_students(changed, list(itertools.islice(itertools.cycle(grow_ids), n_grow)), "GROW")
    # replace: the batch with the highest code loses everyone; as many (or more) newcomers
    codes = batches.set_index("batch_id")["batch_code"]
    emptied = max(per_group[replace], key=lambda b: codes[b])
    gone = members[emptied]
    remaining = membership.loc[membership["batch_id"].isin(per_group[replace]), "student_id"].size - len(gone)
    n_replace = max(len(gone), (len(per_group[replace]) - 1) * 20 + 1 - remaining)
    replaced = clone_students(changed, list(itertools.islice(itertools.cycle(gone), n_replace)), "REPL")
    deactivate(changed, gone)

    out = root / "re"
    rebatch(changed, base, out, *SMALL_BATCHES)
    return {"base_input": base_input, "base": base, "input": changed, "out": out, "groups": (shrink, grow, replace),
            "first": first, "second": second, "stay_second": stay_second, "grown": grown, "emptied": emptied,
            "replaced": replaced}


def test_sizes_stay_within_bounds_after_shrinking_and_growing(resized):
    assert_rebatch_valid(resized["out"], resized["input"], size_bounds=(10, 20))
    sizes = read_output(resized["out"], "student_batches")["student_count"].astype(int)
    assert sizes.between(10, 20).all(), sizes.tolist()
    assert report(resized["out"])["metrics"]["size_bound_violations"] == 0
    assert_diff_consistent(resized["base"], resized["out"])


def test_a_group_below_count_times_min_dissolves_its_emptiest_batch(resized):
    figures = report(resized["out"])["rebatch"]
    old = read_output(resized["base"], "student_batches").set_index("batch_id")
    dissolved = {(d["batch_id"], d["batch_code"], d["reason"]) for d in figures["dissolved_batches"]}
    assert (resized["second"], old.at[resized["second"], "batch_code"], "group_below_min") in dissolved
    assert figures["batches_dissolved"] == len(figures["dissolved_batches"]) == 2
    now = read_output(resized["out"], "student_batches").set_index("batch_id")
    assert resized["second"] not in now.index and resized["first"] in now.index
    diff = read_csv(resized["out"] / DIFF).set_index("student_id")
    moved = diff.loc[resized["stay_second"]]
    assert (moved["student_class"] == "forced").all() and (moved["reason"] == "batch_dissolved").all()
    assert (moved["batch_id"] == resized["first"]).all()  # the group's only batch now
    assert figures["n_forced"] == figures["moved_forced"] == len(resized["stay_second"])


def test_a_group_beyond_count_times_max_gets_new_batches_numbered_after_the_old_ones(resized):
    figures = report(resized["out"])["rebatch"]
    old = read_output(resized["base"], "student_batches")
    now = read_output(resized["out"], "student_batches")
    created = now.loc[~now["batch_code"].isin(set(old["batch_code"]))]
    assert figures["batches_created"] == len(created) >= 2
    _, grow, replace = resized["groups"]
    for group in (grow, replace):
        last = code_number(old.loc[old["group_key"] == group, "batch_code"])["number"].max()
        new_numbers = code_number(created.loc[created["group_key"] == group, "batch_code"])["number"]
        assert len(new_numbers) >= 1 and (new_numbers > last).all(), (group, last, new_numbers.tolist())
    n_grow = (old["group_key"] == grow).sum()
    assert (now["group_key"] == grow).sum() == n_grow + 1  # ceil((k × 20 + 15) / 20) = k + 1
    assert (now.loc[now["group_key"] == grow, "batch_id"].isin(set(old["batch_id"]))).sum() == n_grow


def test_a_batch_whose_students_all_left_is_dissolved_and_its_code_never_reused(resized):
    figures = report(resized["out"])["rebatch"]
    old = read_output(resized["base"], "student_batches").set_index("batch_id")
    emptied_code = old.at[resized["emptied"], "batch_code"]
    assert {"batch_id": resized["emptied"], "batch_code": emptied_code,
            "reason": "no_students_left"} in figures["dissolved_batches"]
    now = read_output(resized["out"], "student_batches")
    assert emptied_code not in set(now["batch_code"]) and resized["emptied"] not in set(now["batch_id"])
    diff = read_csv(resized["out"] / DIFF).set_index("student_id")
    assert (diff.loc[resized["replaced"], "student_class"] == "new").all()


def test_a_rebatch_output_is_a_previous_run_that_an_unchanged_rebatch_reproduces(resized, tmp_path):
    """Gaps (dissolved codes) and codes after the old ones survive a second re-batch unchanged."""
    out = tmp_path / "again"
    figures = rebatch(resized["input"], resized["out"], out, *SMALL_BATCHES)
    for table in STAGE3_TABLES:
        assert (out / f"{table}.csv").read_bytes() == (resized["out"] / f"{table}.csv").read_bytes(), table
    assert read_csv(out / DIFF).empty
    assert figures["batches_kept"] == figures["n_previous_batches"] and figures["batches_dissolved"] == 0


# ------------------------------------------------------------------------------- 6. bad previous runs


def _broken_previous(kind: str, base_run: Path, root: Path) -> tuple[Path, str, str]:
    """A previous run broken as ``kind``: (its directory, the expected code, a name the error must give)."""
    previous = root / "previous"
    if kind == "missing_directory":
        return previous, "PREVIOUS_RUN_INVALID", str(previous)
    shutil.copytree(base_run, previous)
    if kind == "missing_membership":
        (previous / "batch_student_membership.csv").unlink()
        return previous, "PREVIOUS_RUN_INVALID", "batch_student_membership.csv"
    if kind == "unknown_batch":
        membership = read_csv(previous / "batch_student_membership.csv")
        membership.loc[3, "batch_id"] = "00000000-0000-5000-8000-000000000000"
        write_csv(membership, previous / "batch_student_membership.csv")
        return previous, "PREVIOUS_RUN_INVALID", "batch_student_membership.csv"
    assert kind == "other_tenant"
    batches = read_csv(previous / "student_batches.csv")
    write_csv(batches.assign(tenant_id="TEN-OTHER"), previous / "student_batches.csv")
    return previous, "PREVIOUS_RUN_TENANT", "student_batches.csv"


@pytest.mark.parametrize("kind", ["missing_directory", "missing_membership", "unknown_batch", "other_tenant"])
def test_a_bad_previous_run_fails_with_its_code_and_writes_no_csv(kind, institution, base_run, tmp_path):
    previous, code, named = _broken_previous(kind, base_run, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "student_batches.csv").write_text("stale output of an earlier run\n")
    with pytest.raises(InputValidationError) as info:
        run(institution, out, f"rebatch.previous_run={previous}")
    assert info.value.code == code and info.value.exit_code == 3
    assert named in str(info.value)
    assert_no_outputs(out)
    assert not (out / DIFF).exists()
    errors = json.loads((out / "errors.json").read_text())
    assert errors["status"] == "failed" and errors["error"]["code"] == code
    assert named in json.dumps(errors)


def test_cli_exits_3_naming_the_missing_file_of_the_previous_run(institution, base_run, tmp_path):
    previous, code, named = _broken_previous("missing_membership", base_run, tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "stage2", f"data.input_dir={institution}",
                           f"rebatch.previous_run={previous}", f"hydra.run.dir={run_dir}", *OFFLINE],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert code in proc.stderr and named in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_outputs(run_dir)
    assert json.loads((run_dir / "errors.json").read_text())["error"]["code"] == code


# ------------------------------------------------------------------------------- 7. determinism


def test_the_same_rebatch_twice_gives_identical_files(scenario, base_run, unpenalised_run, tmp_path):
    diff = read_csv(unpenalised_run / DIFF)
    assert (diff["student_class"] == "unchanged").any()  # a re-batch with moves by the objective
    out = tmp_path / "again"
    rebatch(scenario[0], base_run, out, "rebatch.move_penalty=0.0")
    for name in (*(f"{t}.csv" for t in STAGE3_TABLES), DIFF):
        assert (out / name).read_bytes() == (unpenalised_run / name).read_bytes(), name
    assert report(out)["rebatch"] == {**report(unpenalised_run)["rebatch"], "previous_run": str(base_run)}


# ------------------------------------------------------------------------------- 8. the solver's pieces


@pytest.mark.parametrize(("cap_cost", "expected"), [(10.0, [2, 4]), (0.5, [5, 1]), (0.0, [5, 1])])
def test_size_model_caps_are_soft_caps_priced_at_cap_cost(cap_cost, expected):
    """Six students one unit (of squared distance) closer to batch 0 than to batch 1, sizes
    1-5, batch 0 capped at 2: a cap cost above the unit keeps batch 0 at its cap, one below it
    (or none) fills batch 0 to max."""
    points, counts = np.zeros((6, 1)), np.ones(6, dtype=np.int64)
    centroids = np.array([[0.0], [1.0]])
    model = SizeModel(np.array([3, 3]), 1, 5, 0.0, np.array([2, 5]), cap_cost)
    assert assign_exact(points, counts, centroids, model).sum(axis=0).tolist() == expected
    costs = np.tile(np.array([0, COST_SCALE], dtype=np.int64), (6, 1))
    flows, _ = assign_costs(costs, counts, model)
    assert flows.sum(axis=0).tolist() == expected and (flows.sum(axis=1) == 1).all()
    assert model.penalty(np.array(expected)) == pytest.approx(cap_cost * max(expected[0] - 2, 0))


def _sse(features: np.ndarray, labels: np.ndarray) -> float:
    return float(sum(((features[labels == b] - features[labels == b].mean(axis=0)) ** 2).sum()
                     for b in np.unique(labels)))


#: two well separated clusters of 5 and 3 students; their previous batches mixed them (4 + 4)
CLUSTERS = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.5], [10, 0], [10, 1], [11, 0]], dtype=float)
MIXED = np.array([0, 0, 0, 1, 1, 0, 1, 1])


def _moves(previous: np.ndarray, penalty: float, frozen: bool = False, features: np.ndarray = CLUSTERS) -> GroupMoves:
    n = features.shape[0]
    sizes = SizeModel(np.array([4, 4]) if n == 8 else np.array([4, 5]), 3, 6, 0.0)
    return GroupMoves(features, previous, np.full(n, penalty), np.full(n, frozen) & (previous >= 0), sizes, seed=0)


def test_penalised_labels_without_penalty_is_the_size_constrained_kmeans_optimum():
    labels = penalised_labels(_moves(MIXED, 0.0), n_candidates=None, max_iter=50, tol=1e-9)
    best = min(_sse(CLUSTERS, np.array(c)) for c in itertools.product((0, 1), repeat=8)
               if 3 <= sum(c) <= 6)  # every labelling with both sizes in [3, 6]
    assert _sse(CLUSTERS, labels) == pytest.approx(best)
    assert len(set(labels[:5])) == 1 and len(set(labels[5:])) == 1 and labels[0] != labels[5]


def test_penalised_labels_with_a_huge_penalty_or_frozen_keeps_previous_batches():
    newcomer = np.vstack([CLUSTERS, [[10.5, 0.5]]])
    previous = np.append(MIXED, -1)
    for moves in (_moves(previous, 1e4, features=newcomer), _moves(previous, 0.0, frozen=True, features=newcomer)):
        labels = penalised_labels(moves, n_candidates=None, max_iter=50, tol=1e-9)
        assert labels[:8].tolist() == MIXED.tolist()
        assert np.bincount(labels, minlength=2).tolist() in ([4, 5], [5, 4])
