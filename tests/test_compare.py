"""``python -m stage2.compare``: metrics side by side, students who changed batch (batches
paired by membership, not by id), input digests; run directories and MLflow run ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stage2.compare import CompareError, compare_runs, main, match_batches, metric_direction

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DIGEST = "a" * 64
METRICS = {"n_students": 8, "academic_coherence": 0.8, "course_sse": 10.0, "size_balance": 1.0,
           "hard_constraint_violations": 0, "runtime_s.clustering": 0.5}


def write_run(directory: Path, membership: dict[str, str], *, metrics: dict | None = None, digest: str | None = DIGEST,
              codes: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    report = {"metrics": dict(METRICS if metrics is None else metrics)}
    if digest is not None:
        report["data_digest"] = digest
    (directory / "quality_report.json").write_text(json.dumps(report))
    rows = ["membership_id,batch_id,student_id"] + [f"m{i},{b},{s}" for i, (s, b) in enumerate(membership.items())]
    (directory / "batch_student_membership.csv").write_text("\n".join(rows) + "\n")
    if codes:
        lines = ["batch_id,batch_code"] + [f"{b},{c}" for b, c in codes.items()]
        (directory / "student_batches.csv").write_text("\n".join(lines) + "\n")
    return directory


def members(**batches: str) -> dict[str, str]:
    """``members(b1="s1 s2", b2="s3")`` -> ``{"s1": "b1", "s2": "b1", "s3": "b2"}``."""
    return {s: batch for batch, students in batches.items() for s in students.split()}


A = members(a1="s1 s2 s3 s4", a2="s5 s6 s7 s8")


def test_renamed_batches_with_the_same_members_are_unchanged(tmp_path):
    a = write_run(tmp_path / "a", A)
    b = write_run(tmp_path / "b", members(x="s5 s6 s7 s8", y="s1 s2 s3 s4"))
    result = compare_runs(a, b)
    assert result.n_changed == 0 and result.changed == []
    assert result.matching == {"a1": "y", "a2": "x"}
    assert result.n_identical_batches == 2 and result.n_common == 8
    assert result.same_input and result.warnings == []


def test_students_not_in_their_batch_s_partner_changed(tmp_path):
    a = write_run(tmp_path / "a", A, codes={"a1": "P-B01", "a2": "P-B02"})
    # s4 and s5 trade places: batches still pair a1-b1 and a2-b2 (3 shared students each)
    b = write_run(tmp_path / "b", members(b1="s1 s2 s3 s5", b2="s4 s6 s7 s8"), codes={"b1": "P-B01", "b2": "P-B02"})
    result = compare_runs(a, b)
    assert result.matching == {"a1": "b1", "a2": "b2"}
    assert [(c.student_id, c.label_a, c.label_b) for c in result.changed] == [("s4", "P-B01", "P-B02"),
                                                                            ("s5", "P-B02", "P-B01")]
    assert result.changed[0].expected_b == "b1"
    assert result.n_identical_batches == 0


def test_pairing_maximises_total_overlap_one_to_one():
    import numpy as np

    # A0 (5 students): 3 in B0, 2 in B1. A1 (4): 3 in B0, 1 in B2. Each A batch's own best is
    # B0; one-to-one, A0-B0 + A1-B2 shares 4 students, A0-B1 + A1-B0 shares 5: the optimum.
    batch_a = np.array([0] * 5 + [1] * 4)
    batch_b = np.array([0, 0, 0, 1, 1, 0, 0, 0, 2])
    pairs, method = match_batches(batch_a, batch_b)
    assert pairs == {0: 1, 1: 0} and method == "optimal"
    # a split batch: A's only batch pairs with the larger half
    pairs, _ = match_batches(np.zeros(5, dtype=int), np.array([0, 0, 1, 1, 1]))
    assert pairs == {0: 1}


def total_overlap(pairs: dict[int, int], batch_a, batch_b) -> int:
    """Students shared by the paired batches, counted from the raw labels."""
    return sum(1 for a, b in zip(batch_a, batch_b, strict=True) if pairs.get(int(a)) == int(b))


def max_overlap_by_brute_force(batch_a, batch_b) -> int:
    """The largest total overlap over every one-to-one pairing (each A batch to a distinct B
    batch or to nothing): the oracle, independent of any assignment solver."""
    import itertools

    import numpy as np

    n_a, n_b = int(max(batch_a)) + 1, int(max(batch_b)) + 1
    overlap = np.zeros((n_a, n_b), dtype=int)
    for a, b in zip(batch_a, batch_b, strict=True):
        overlap[a, b] += 1
    best = 0
    # B batches plus n_a "no partner" slots: every partial injective map is a permutation prefix
    slots = list(range(n_b)) + [None] * n_a
    for choice in set(itertools.permutations(slots, n_a)):
        best = max(best, sum(overlap[a, b] for a, b in enumerate(choice) if b is not None))
    return best


#: dense path for every block, and the sparse exact path for every block (no dense cell allowed)
BOTH_PATHS = pytest.mark.parametrize("max_dense_cells", [10**9, 0], ids=["dense", "sparse"])


@BOTH_PATHS
def test_pairing_beats_greedy_on_the_example_where_greedy_shares_4(max_dense_cells):
    """Largest overlaps first (greedy) takes A0-B0 or A1-B0 (3 each) and ends at 4 shared
    students; the maximum is 5 (A0-B1 + A1-B0). Before the fix, a block above the dense limit
    was paired greedily and reported 4 here."""
    import numpy as np

    batch_a = np.array([0] * 5 + [1] * 4)
    batch_b = np.array([0, 0, 0, 1, 1, 0, 0, 0, 2])
    pairs, method = match_batches(batch_a, batch_b, max_dense_cells=max_dense_cells)
    assert total_overlap(pairs, batch_a, batch_b) == 5 == max_overlap_by_brute_force(batch_a, batch_b)
    assert pairs == {0: 1, 1: 0} and method == "optimal"


@BOTH_PATHS
def test_pairing_total_overlap_is_the_brute_force_maximum_on_random_cases(max_dense_cells):
    import numpy as np

    rng = np.random.default_rng(2024)
    for case in range(150):
        n_a, n_b = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        n = int(rng.integers(1, 25))
        batch_a = rng.integers(0, n_a, n)
        # mostly the same batches relabelled, with some students moved: realistic and tie-rich
        relabel = rng.permutation(max(n_a, n_b))[:n_a] % n_b
        batch_b = np.where(rng.random(n) < 0.4, rng.integers(0, n_b, n), relabel[batch_a])
        pairs, method = match_batches(batch_a, batch_b, max_dense_cells=max_dense_cells)
        assert method == "optimal"
        assert len(set(pairs.values())) == len(pairs), f"case {case}: not one-to-one: {pairs}"
        shared = {(int(a), int(b)) for a, b in zip(batch_a, batch_b, strict=True)}
        assert all(pair in shared for pair in pairs.items()), f"case {case}: a pair shares no student: {pairs}"
        assert total_overlap(pairs, batch_a, batch_b) == max_overlap_by_brute_force(batch_a, batch_b), f"case {case}"


def test_dense_and_sparse_pairings_agree_on_a_larger_relabelled_run():
    """200 batches renamed and 15% of the students moved: both exact methods reach the same
    total (the batches' own partners), far above what a random pairing would share."""
    import numpy as np

    rng = np.random.default_rng(5)
    batch_a = np.repeat(np.arange(200), 30)
    rename = rng.permutation(200)
    batch_b = rename[batch_a]
    moved = rng.random(batch_a.size) < 0.15
    batch_b[moved] = rng.integers(0, 200, int(moved.sum()))
    dense, _ = match_batches(batch_a, batch_b)
    sparse, _ = match_batches(batch_a, batch_b, max_dense_cells=0)
    assert total_overlap(dense, batch_a, batch_b) == total_overlap(sparse, batch_a, batch_b)
    assert dense == {a: int(rename[a]) for a in range(200)} == sparse


def test_a_student_in_two_batches_of_one_run_is_a_clear_error(tmp_path, capsys):
    a = write_run(tmp_path / "a", A)
    b = write_run(tmp_path / "b", A)
    rows = (b / "batch_student_membership.csv").read_text() + "m99,a2,s3\n"  # s3 also in a2
    (b / "batch_student_membership.csv").write_text(rows)
    with pytest.raises(CompareError) as info:
        compare_runs(a, b)
    message = str(info.value)
    assert "'s3'" in message and "more than one batch" in message and "'a1'" in message and "'a2'" in message
    assert str(b / "batch_student_membership.csv") in message
    assert main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "'s3'" in err and "more than one batch" in err and "Traceback" not in err


def test_a_student_listed_twice_in_the_same_batch_is_named_too(tmp_path):
    a = write_run(tmp_path / "a", A)
    rows = (a / "batch_student_membership.csv").read_text() + "m98,a1,s2\nm99,a1,s5\n"
    (a / "batch_student_membership.csv").write_text(rows)
    with pytest.raises(CompareError, match=r"student 's2' is listed 2 times in batch 'a1'; 1 more student"):
        compare_runs(a, write_run(tmp_path / "b", A))


def test_split_and_merge_count_the_students_outside_the_paired_batch(tmp_path):
    a = write_run(tmp_path / "a", members(a1="s1 s2 s3 s4 s5 s6"))
    b = write_run(tmp_path / "b", members(b1="s1 s2", b2="s3 s4 s5 s6"))
    result = compare_runs(a, b)
    assert result.matching == {"a1": "b2"}
    assert [c.student_id for c in result.changed] == ["s1", "s2"]
    assert result.n_batches_a == 1 and result.n_batches_b == 2


def test_metric_directions_follow_quality_md(tmp_path):
    a = write_run(tmp_path / "a", A)
    b = write_run(tmp_path / "b", A, metrics={**METRICS, "academic_coherence": 0.9, "course_sse": 12.0, "n_students": 9,
                                              "runtime_s.clustering": 0.25, "silhouette_score": 0.4})
    result = compare_runs(a, b)
    coherence = result.metric("academic_coherence")
    assert coherence.direction == "higher" and coherence.better == "B" and coherence.diff == pytest.approx(0.1)
    assert result.metric("course_sse").better == "A"
    assert result.metric("n_students").better is None and result.metric("n_students").diff == 1
    assert result.metric("size_balance").better == "tie"
    assert result.metric("hard_constraint_violations").direction == "lower"
    assert result.metric("runtime_s.clustering").better == "B"
    silhouette = result.metric("silhouette_score")  # only in B
    assert silhouette.a is None and silhouette.better is None
    assert metric_direction("shift_preference_satisfaction") == "higher"
    assert metric_direction("peak_memory_mb") == "lower"


def test_different_inputs_and_students_in_one_run_only_are_warned_about(tmp_path):
    a = write_run(tmp_path / "a", A)
    b = write_run(tmp_path / "b", {**members(a1="s1 s2 s3 s4", a2="s5 s6 s7"), "s9": "a2"}, digest="b" * 64)
    result = compare_runs(a, b)
    assert not result.same_input
    assert result.only_in_a == ["s8"] and result.only_in_b == ["s9"] and result.n_common == 7
    assert result.n_changed == 0
    assert any("different inputs" in w for w in result.warnings)


def test_cli_prints_the_comparison_and_lists_up_to_n_students(tmp_path, capsys):
    a = write_run(tmp_path / "a", A)
    b = write_run(tmp_path / "b", members(b1="s1 s2 s3 s5", b2="s4 s6 s7 s8"), digest="c" * 64)
    assert main([str(a), str(b), "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "academic_coherence" in out and "students who changed batch: 2 of 8" in out
    assert "s4" in out and "s5" not in out.split("changed students")[1].split("input digest")[0]
    assert "different inputs" in out and "a" * 64 in out and "c" * 64 in out

    assert main([str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_changed"] == 2 and data["same_input"] is False
    assert {m["name"] for m in data["metrics"]} >= {"academic_coherence", "course_sse"}


def test_cli_exits_2_when_a_run_lacks_its_files(tmp_path, capsys):
    a = write_run(tmp_path / "a", A)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(a), str(empty)]) == 2
    err = capsys.readouterr().err
    assert "quality_report.json" in err and "batch_student_membership.csv" in err and str(empty) in err
    assert main([str(a), str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (a / "quality_report.json").write_text("{not json")
    assert main([str(a), str(a)]) == 2
    assert "unreadable" in capsys.readouterr().err


@pytest.mark.slow
def test_real_runs_by_directory_and_by_mlflow_run_id(tmp_path, make_institution_dir, mlflow_uri, capsys):
    from mlflow.tracking import MlflowClient

    from stage2 import load_config, process_student_batching

    client = MlflowClient(tracking_uri=mlflow_uri)
    client.create_experiment("compare-ids", artifact_location=(tmp_path / "artifacts").as_uri())
    input_dir = make_institution_dir(300, seed=4)
    results = {}
    for algorithm in ("balanced", "kmeans"):
        cfg = load_config([f"data.input_dir={input_dir}", f"algorithm={algorithm}", f"tracking.uri={mlflow_uri}",
                           "tracking.experiment_name=compare-ids", "report.notebook=false"], config_dir=CONF_DIR)
        results[algorithm] = process_student_batching(cfg, output_dir=tmp_path / algorithm)
    by_dir = compare_runs(tmp_path / "balanced", tmp_path / "kmeans")
    assert by_dir.same_input and by_dir.n_common == results["balanced"].metrics["n_students"]
    assert by_dir.metric("academic_coherence").a == pytest.approx(results["balanced"].metrics["academic_coherence"])
    assert all(len(c.label_a) < 36 for c in by_dir.changed)  # batch codes, not ids

    run_a, run_b = results["balanced"].run_id, results["kmeans"].run_id
    capsys.readouterr()  # the runs' console reports
    assert main([run_a, run_b, "--tracking-uri", mlflow_uri, "--json"]) == 0
    by_id = json.loads(capsys.readouterr().out)
    assert by_id["n_changed"] == by_dir.n_changed and by_id["same_input"] is True
    assert by_id["digest_a"] == by_dir.digest_a

    assert main(["0" * 32, run_b, "--tracking-uri", mlflow_uri]) == 2
    assert "not found" in capsys.readouterr().err
