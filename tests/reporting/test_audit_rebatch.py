"""The audit of a re-batch (``rebatch.previous_run``): the notebook's "Re-batching against the
previous run" section and the integrity checks of ``rebatch_diff.csv``, on real runs.

One fresh run of a small synthetic institution, then a re-batch of a changed copy of it: some
students switch a course, a few leave, a few join, every student of one batch leaves (the batch is
dissolved: a gap in the codes) and one group grows beyond its batches' capacity (new batches,
numbered after the group's previous codes). Both runs execute the audit notebook as the pipeline
does (``report.notebook=true``), so the integrity section passes on a re-batch or the run fails.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from stage2 import load_config, process_student_batching
from stage2.reporting import audit
from stage2.reporting.audit import RunFileError

#: no MLflow, no other reports, one fixed time; the audit notebook on (the pipeline executes it)
RUN = ("tracking.enabled=false", "report.notebook=true", "report.formats=[]", "as_of=2026-01-01T00:00:00")
#: (the defaults) a group of k batches fits k × 60 students at most
SIZES = ("batch_size.min=15", "batch_size.target=35", "batch_size.max=60")
SCENARIOS = Path(__file__).resolve().parents[2] / "experiments" / "rebatching" / "scenarios.py"
NOT_A_REBATCH = "not a re-batch (no rebatch.previous_run)"


def run(input_dir: Path, out: Path, *overrides: str) -> Path:
    cfg = load_config([f"data.input_dir={input_dir}", *RUN, *SIZES, *overrides])
    process_student_batching(cfg, output_dir=out)
    return out


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def figures_of(out: Path) -> dict:
    return json.loads((out / "quality_report.json").read_text(encoding="utf-8")).get("rebatch")


def notebook_text(out: Path) -> str:
    """Everything the executed notebook shows (HTML unescaped, tags dropped), code excluded."""
    executed = nbformat.read(str(out / "audit_report.ipynb"), as_version=4)
    parts = []
    for cell in executed.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            if output.output_type == "stream":
                parts.append(output.text)
            else:
                parts.append(output.get("data", {}).get("text/html", ""))
    text = re.sub(r"<[^>]+>", " ", "\n".join(parts))
    return html.unescape(text)


def section(text: str) -> str:
    start = text.index("## Re-batching against the previous run")
    return text[start: text.index("## EAV overrides and warnings", start)]


@pytest.fixture(scope="module")
def runs(make_institution_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit-rebatch")
    institution = make_institution_dir(600, seed=3)
    fresh = run(institution, root / "fresh")

    spec = importlib.util.spec_from_file_location("_audit_rebatch_scenarios", SCENARIOS)
    assert spec is not None and spec.loader is not None
    scenarios = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = scenarios
    spec.loader.exec_module(scenarios)
    changed = root / "changed"
    scenarios.make_scenario(institution, changed, switch=0.05, new=0.02, drop=0.02, close_rooms=1, seed=0,
                            previous_run=fresh)

    batches = read_csv(fresh / "student_batches.csv")
    membership = read_csv(fresh / "batch_student_membership.csv")
    per_group = batches.groupby("group_key")["batch_id"].agg(list)
    # the largest group with two batches or more loses one; the group with the fewest batches grows
    shrink = max((g for g, ids in per_group.items() if len(ids) >= 2), key=lambda g: len(per_group[g]))
    grow_group = min((g for g in per_group.index if g != shrink), key=lambda g: len(per_group[g]))
    students = read_csv(changed / "student_data.csv")
    enrollments = read_csv(changed / "student_course_enrollment.csv")
    # every student of the first batch of one group leaves: that batch is dissolved
    emptied = batches.loc[batches["batch_id"].isin(per_group[shrink])].sort_values("batch_code")["batch_id"].iloc[0]
    gone = set(membership.loc[membership["batch_id"] == emptied, "student_id"])
    students.loc[students["student_id"].isin(gone), "is_active"] = "false"
    # another group grows beyond count × max: new batches
    grow = membership.loc[membership["batch_id"].isin(per_group[grow_group]), "student_id"].tolist()
    n_clones = len(per_group[grow_group]) * 60 + 30 - len(grow)
    sources = students.set_index("student_id", drop=False)
    clones, enrolled = [], []
    for k in range(n_clones):
        source = grow[k % len(grow)]
        clone = sources.loc[source].copy()
        clone["student_id"] = clone["roll_number"] = f"GROW-{k:04d}"
        clone["email"] = f"grow-{k:04d}@example.edu"
        clones.append(clone)
        enrolled.append(enrollments.loc[enrollments["student_id"] == source].assign(student_id=clone["student_id"]))
    pd.concat([students, pd.DataFrame(clones)], ignore_index=True).to_csv(changed / "student_data.csv", index=False)
    pd.concat([enrollments, *enrolled], ignore_index=True).to_csv(changed / "student_course_enrollment.csv",
                                                                  index=False)

    rebatch = run(changed, root / "rebatch", f"rebatch.previous_run={fresh}", "rebatch.fresh_reference=true")
    return {"fresh": fresh, "rebatch": rebatch, "changed": changed}


# ------------------------------------------------------------------------------- the notebook


def test_the_rebatch_notebook_shows_the_figures_of_quality_report_json(runs):
    figures = figures_of(runs["rebatch"])
    assert figures["batches_dissolved"] >= 1 and figures["batches_created"] >= 1, figures  # the scenario's point
    assert figures["course_sse_fresh"] is not None
    text = section(notebook_text(runs["rebatch"]))
    assert NOT_A_REBATCH not in text

    n_students = len(read_csv(runs["rebatch"] / "batch_student_membership.csv"))
    moved = sum(figures[f"moved_{c}"] for c in ("unchanged", "changed", "forced"))
    expected = [
        figures["previous_run"],
        f"students batched now {n_students:,}",
        *(f"{c} students {figures[f'n_{c}']:,}; {figures[f'moved_{c}']:,} moved"
          for c in ("unchanged", "changed", "forced")),
        f"new students {figures['n_new']:,}", f"students who left {figures['n_left']:,}",
        f"perturbation share {figures['perturbation_share']:.2%}",
        f"({moved:,} + {figures['n_new']:,}) / {n_students:,}",
        f"previous batches {figures['n_previous_batches']:,}",
        f"batches kept {figures['batches_kept']:,} ({figures['batches_kept_share']:.1%} of the previous)",
        f"batches changed {figures['batches_changed']:,}",
        f"kept batches with member changes {figures['batches_with_member_changes']:,}",
        f"batches created {figures['batches_created']:,}", f"batches dissolved {figures['batches_dissolved']:,}",
        f"room changes {figures['room_changes']:,}", f"shift changes {figures['shift_changes']:,}",
        f"course SSE, previous membership {figures['course_sse_previous']:,.1f}",
        f"course SSE, this run {figures['course_sse']:,.1f}",
        f"{figures['course_sse'] / figures['course_sse_fresh']:.3f} × a fresh run's",
        f"course SSE, fresh run {figures['course_sse_fresh']:,.1f}",
        f"move penalties {figures['move_penalty']:g} unchanged, {figures['changed_move_penalty']:g} changed",
    ]
    flat = re.sub(r"\s+", " ", text)
    for item in expected:
        assert item in flat, item
    for dissolved in figures["dissolved_batches"]:
        assert f"{dissolved['batch_code']} {dissolved['batch_id']} {dissolved['reason']}" in flat, dissolved

    # the diff's rows by (class, reason), and the first 20 moved students
    diff = read_csv(runs["rebatch"] / "rebatch_diff.csv")
    for (student_class, reason), n in diff.groupby(["student_class", "reason"]).size().items():
        assert re.search(rf"{student_class} {reason} (moved|joined|left) {n} ", flat), (student_class, reason, n)
    moved_rows = diff.loc[diff["student_class"].isin(["unchanged", "changed", "forced"])]
    assert len(moved_rows) == moved
    for row in moved_rows.head(20).itertuples():
        assert (f"{row.student_id} {row.student_class} {row.reason} {row.previous_batch_code} {row.batch_code}"
                in flat), row
    if len(moved_rows) > 20:
        assert f"moved students (first 20 of {len(moved_rows):,} rows)" in flat
        assert moved_rows["student_id"].iloc[20] not in flat.split("moved students (first 20", 1)[1]

    # the integrity section passed, with the re-batch's checks
    integrity = re.sub(r"\s+", " ", notebook_text(runs["rebatch"]).split("## Integrity", 1)[1])
    assert f"re-batch: rebatch_diff.csv agrees with the membership {len(diff):,} rows" in integrity
    assert (runs["rebatch"] / "audit_report.html").is_file()


def test_the_fresh_notebook_says_it_is_not_a_rebatch(runs):
    assert figures_of(runs["fresh"]) is None and not (runs["fresh"] / "rebatch_diff.csv").exists()
    text = section(notebook_text(runs["fresh"]))
    assert text.count(NOT_A_REBATCH) == 1
    assert "re-batch figures" not in text and "moved students" not in text and "dissolved batches" not in text
    integrity = notebook_text(runs["fresh"]).split("## Integrity", 1)[1]
    assert "rebatch_diff.csv agrees" not in integrity
    html_report = (runs["fresh"] / "audit_report.html").read_text(encoding="utf-8")
    assert "Re-batching against the previous run" in html_report and NOT_A_REBATCH in html_report


# ------------------------------------------------------------------------------- the functions


def test_functions_return_none_for_a_fresh_run(runs):
    fresh = audit.load_run(runs["fresh"])
    assert fresh.rebatch is None and fresh.rebatch_diff is None
    for function in (audit.rebatch_frame, audit.dissolved_frame, audit.rebatch_diff_summary, audit.moved_students):
        assert function(fresh) is None, function.__name__
    assert audit.rebatch_failures(fresh) == []


def test_rebatch_frame_and_tables_match_the_files(runs):
    rebatch = audit.load_run(runs["rebatch"])
    figures = figures_of(runs["rebatch"])
    frame = audit.rebatch_frame(rebatch)
    assert frame is not None and list(frame.columns) == ["figure", "value", "meaning"]
    values = dict(zip(frame["figure"], frame["value"], strict=True))
    assert values["previous run"] == figures["previous_run"] == str(runs["fresh"])
    assert values["batches dissolved"] == f"{figures['batches_dissolved']:,}"
    assert values["perturbation share"] == f"{figures['perturbation_share']:.2%}"
    assert values["course SSE, fresh run"] == f"{figures['course_sse_fresh']:,.1f}"

    dissolved = audit.dissolved_frame(rebatch)
    assert dissolved is not None
    assert dissolved[["batch", "batch_id", "reason"]].to_dict("records") == [
        {"batch": d["batch_code"], "batch_id": d["batch_id"], "reason": d["reason"]}
        for d in figures["dissolved_batches"]]
    assert "no_students_left" in set(dissolved["reason"]) and dissolved["meaning"].str.len().gt(0).all()

    diff = read_csv(runs["rebatch"] / "rebatch_diff.csv")
    summary = audit.rebatch_diff_summary(rebatch)
    assert summary is not None and summary["students"].sum() == len(diff)
    counted = diff.groupby(["student_class", "reason"]).size()
    rows = summary[["class", "reason", "students"]].itertuples(index=False)
    assert {(c, r): n for c, r, n in rows} == counted.to_dict()
    order = [audit.REBATCH_CLASSES.index(c) for c in summary["class"]]
    assert order == sorted(order)
    assert summary["meaning"].str.len().gt(0).all()
    happened = dict(zip(summary["class"], summary["what happened"], strict=False))
    assert happened.get("new", "joined") == "joined" and happened.get("left", "left") == "left"

    moved = audit.moved_students(rebatch)
    assert moved is not None
    expected = diff.loc[diff["student_class"].isin(["unchanged", "changed", "forced"])]
    assert moved["student"].tolist() == expected["student_id"].tolist()
    assert moved["to batch"].tolist() == expected["batch_code"].tolist()
    assert len(moved) == sum(figures[f"moved_{c}"] for c in ("unchanged", "changed", "forced"))


def test_codes_of_the_rebatch_are_not_fresh_numbering_yet_pass_integrity(runs):
    """The re-batch keeps previous codes with a gap and numbers new batches after the old ones:
    the audit's integrity check accepts it (the pipeline ran the notebook) and rebatch_failures
    finds nothing."""
    before = read_csv(runs["fresh"] / "student_batches.csv")
    after = read_csv(runs["rebatch"] / "student_batches.csv")
    figures = figures_of(runs["rebatch"])
    for dissolved in figures["dissolved_batches"]:
        assert dissolved["batch_code"] not in set(after["batch_code"])
    created = after.loc[~after["batch_code"].isin(set(before["batch_code"]))]
    assert len(created) == figures["batches_created"]
    number = after["batch_code"].str.extract(r"-B(\d+)$")[0].astype(int)
    fresh_numbering = number.groupby(after["group_key"]).transform(lambda n: sorted(n) == list(range(1, len(n) + 1)))
    assert not fresh_numbering.all(), "the scenario should leave a gap in some group's codes"
    rebatch = audit.load_run(runs["rebatch"])
    assert audit.rebatch_failures(rebatch) == []


@pytest.fixture
def tampered(runs, tmp_path) -> Path:
    out = tmp_path / "rebatch"
    shutil.copytree(runs["rebatch"], out)
    return out


def edit_diff(out: Path, edit) -> pd.DataFrame:
    diff = read_csv(out / "rebatch_diff.csv")
    diff = edit(diff)
    diff.to_csv(out / "rebatch_diff.csv", index=False)
    return diff


def test_a_diff_disagreeing_with_the_membership_fails_naming_the_student(tampered):
    diff = read_csv(tampered / "rebatch_diff.csv")
    moved = diff.index[diff["student_class"] != "left"][0]
    other = next(b for b in read_csv(tampered / "student_batches.csv")["batch_id"] if b != diff.at[moved, "batch_id"])

    def edit(frame):
        frame.loc[moved, "batch_id"] = other
        return frame

    edit_diff(tampered, edit)
    failures = audit.rebatch_failures(audit.load_run(tampered))
    assert any("batch_id is not the student's batch" in f and diff.at[moved, "student_id"] in f for f in failures)


def test_a_dropped_diff_row_or_a_kept_code_renamed_fails(tampered):
    diff = edit_diff(tampered, lambda frame: frame.loc[frame["student_class"] != "new"].iloc[1:])
    failures = audit.rebatch_failures(audit.load_run(tampered))
    assert any("rebatch.n_new" in f for f in failures), failures
    assert any(re.search(r"rebatch\.moved_\w+ is \d+ but the files give \d+", f) for f in failures), failures

    # a kept batch renamed in student_batches.csv: the diff's previous code of it disagrees
    batches = read_csv(tampered / "student_batches.csv")
    kept = diff.loc[diff["previous_batch_id"].isin(set(batches["batch_id"])), "previous_batch_id"].iloc[0]
    batches.loc[batches["batch_id"] == kept, "batch_code"] = "RENAMED-B99"
    batches.to_csv(tampered / "student_batches.csv", index=False)
    failures = audit.rebatch_failures(audit.load_run(tampered))
    assert any("a kept batch's code changed" in f for f in failures), failures


def test_a_dissolved_code_in_use_and_figures_that_do_not_add_up_fail(tampered):
    report = json.loads((tampered / "quality_report.json").read_text())
    batches = read_csv(tampered / "student_batches.csv")
    report["rebatch"]["dissolved_batches"].append({"batch_id": "x", "batch_code": batches["batch_code"].iloc[0],
                                                   "reason": "group_below_min"})
    report["rebatch"]["batches_created"] += 1
    (tampered / "quality_report.json").write_text(json.dumps(report))
    failures = audit.rebatch_failures(audit.load_run(tampered))
    assert any("dissolved batches are still in student_batches.csv" in f for f in failures), failures
    assert any("rebatch.batches_dissolved" in f for f in failures), failures
    assert any("created is not the" in f for f in failures), failures


def test_a_rebatch_without_its_diff_fails_integrity(tampered):
    (tampered / "rebatch_diff.csv").unlink()
    run_ = audit.load_run(tampered)
    [failure] = audit.rebatch_failures(run_)
    assert "rebatch_diff.csv" in failure
    with pytest.raises(RunFileError):
        audit.rebatch_diff_summary(run_)


def test_the_audit_constants_are_the_rebatching_ones():
    from stage2.rebatching import diff, plan

    assert audit.REBATCH_DIFF_COLUMNS == diff.DIFF_COLUMNS and audit.REBATCH_DIFF_FILE == diff.REBATCH_DIFF
    assert set(audit.REBATCH_CLASSES) == {*plan.CLASSES, diff.LEFT}
    assert set(audit.MOVING_CLASSES) == {plan.UNCHANGED, plan.CHANGED, plan.FORCED}
    assert set(audit.REBATCH_REASONS) == {plan.COURSES_CHANGED, plan.GROUP_CHANGED, plan.BATCH_DISSOLVED,
                                          diff.NEW_STUDENT, diff.INACTIVE, diff.NOT_IN_INPUT, diff.MOVED_BY_OBJECTIVE}
    assert set(audit.DISSOLVED_REASONS) == {plan.NO_STUDENTS_LEFT, plan.GROUP_GONE, plan.GROUP_SHRANK}
