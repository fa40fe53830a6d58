"""The stage runner (stage2.pipeline.runner): the wiring check, named outputs, timing and
checkpoint/resume, on small tables of plain functions; and the pipeline's own tables wire."""

from __future__ import annotations

import pytest

from stage2.checkpoints import CheckpointStore
from stage2.config.schema import Stage2Config
from stage2.pipeline import BATCHING_STAGES, REBATCH_STAGES, stage_table, steps
from stage2.pipeline.runner import Stage, StageRunner, check_wiring
from stage2.pipeline.stages import DRY_RUN_STAGES


def test_the_pipeline_tables_are_wired():
    check_wiring(BATCHING_STAGES, ["config", "input_dir", "run"])
    check_wiring(DRY_RUN_STAGES, ["config", "input_dir", "run"])
    check_wiring(REBATCH_STAGES, ["config", "input_dir", "run"])
    assert [s.name for s in BATCHING_STAGES[:len(DRY_RUN_STAGES)]] == [s.name for s in DRY_RUN_STAGES]
    fresh = Stage2Config()
    assert steps(fresh) == ["validation", "configuration", "prerequisites", "sizing", "features", "clustering",
                            "allocation", "membership", "enrollment", "faculty", "metrics", "outputs", "reports"]
    assert {s.name for s in BATCHING_STAGES if s.checkpoint} == {"sizing", "clustering", "allocation"}


def test_the_configuration_chooses_the_table():
    config = Stage2Config()
    assert stage_table(config) is BATCHING_STAGES
    config.rebatch.previous_run = "previous"
    assert stage_table(config) is REBATCH_STAGES
    assert steps(config)[2:7] == ["prerequisites", "previous_run", "sizing", "features", "classification"]
    # a re-batch reads its previous run afresh: only the plan, which does not depend on it, is checkpointed
    assert {s.name for s in REBATCH_STAGES if s.checkpoint} == {"sizing"}
    config.dry_run = True  # a dry run of a re-batch checks the previous run too
    assert [s.name for s in stage_table(config)] == ["validation", "configuration", "prerequisites", "previous_run",
                                                     "sizing"]
    config.rebatch.previous_run = None
    assert stage_table(config) is DRY_RUN_STAGES


def test_wiring_names_the_missing_input_and_the_duplicate_output():
    double = Stage("double", lambda x: 2 * x, ("x",), ("y",))
    with pytest.raises(ValueError, match=r"stage 'double' needs \['x'\]"):
        check_wiring([double], ["w"])
    with pytest.raises(ValueError, match=r"stage 'again' makes \['y'\] again"):
        check_wiring([double, Stage("again", lambda x: x, ("x",), ("y",))], ["x"])


def test_outputs_are_named_and_times_recorded():
    stages = [Stage("split", lambda x: (x // 10, x % 10), ("x",), ("tens", "ones")),
              Stage("sum", lambda a, b: a + b, ("tens", "ones"), ("digit_sum",))]
    runner = StageRunner()
    catalog = runner.run(stages, {"x": 47})
    assert catalog == {"x": 47, "tens": 4, "ones": 7, "digit_sum": 11}
    assert list(runner.runtimes) == ["split", "sum"]


def test_a_stage_returning_the_wrong_number_of_outputs_fails():
    with pytest.raises(TypeError, match="tuple of 2 values"):
        StageRunner().run([Stage("bad", lambda x: x, ("x",), ("a", "b"))], {"x": 1})


def counting_table(calls: list[str]) -> list[Stage]:
    def square(x):
        calls.append("square")
        return x * x

    def plus_one(y):
        calls.append("plus_one")
        return y + 1

    return [Stage("square", square, ("x",), ("y",), checkpoint=True),
            Stage("plus_one", plus_one, ("y",), ("z",), checkpoint=True)]


def test_resume_restores_checkpointed_stages_instead_of_running_them(tmp_path):
    def store(catalog):
        return CheckpointStore(tmp_path, key=f"input-{catalog['x']}")

    calls: list[str] = []
    first = StageRunner(checkpoints=store).run(counting_table(calls), {"x": 3})
    assert first["z"] == 10 and calls == ["square", "plus_one"]

    calls.clear()
    resumed = StageRunner(checkpoints=store, resume=True)
    assert resumed.run(counting_table(calls), {"x": 3})["z"] == 10
    assert calls == [] and resumed.resumed_from == "plus_one"

    calls.clear()  # another input: another key, nothing restored
    assert StageRunner(checkpoints=store, resume=True).run(counting_table(calls), {"x": 4})["z"] == 17
    assert calls == ["square", "plus_one"]


def test_a_checkpoint_of_another_shape_is_recomputed(tmp_path):
    """A checkpoint whose outputs are not the stage's (written by another version) is ignored."""
    store = CheckpointStore(tmp_path, key="k")
    store.save("square", "a bare result, as older versions saved it")
    calls: list[str] = []
    runner = StageRunner(checkpoints=lambda catalog: store, resume=True)
    assert runner.run(counting_table(calls), {"x": 2})["z"] == 5
    assert calls == ["square", "plus_one"] and runner.resumed_from is None


def test_a_fresh_run_clears_old_checkpoints(tmp_path):
    store = CheckpointStore(tmp_path, key="k")
    store.save("plus_one", {"z": -1})
    StageRunner(checkpoints=lambda catalog: store).run(counting_table([]), {"x": 2})
    assert store.load("plus_one") == {"z": 5}
