"""The convenience API (``stage2.quick_batch_processing``, ``stage2.validate_batch_processing_inputs``):
keyword settings mapped onto the configuration, the same batches as the command line, a
validation that reports every problem and writes nothing, and the README's examples run."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT, assert_outputs_valid, subprocess_env
from omegaconf import OmegaConf

import stage2
from stage2 import load_config, process_student_batching
from stage2.api import accepted_settings, compose_settings
from stage2.errors import ConfigurationError
from stage2.outputs import STAGE3_TABLES

AS_OF = "2025-08-01T00:00:00"
#: a run without MLflow or audit notebook, with fixed timestamps (byte-identical reruns)
OFFLINE = {"tracking": False, "report_notebook": False, "as_of": AS_OF}


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: modification time (ns) and content digest."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def config_keys(node, prefix: str = ""):
    """Every key of a composed configuration whose value is not a section of the schema."""
    for key in node:
        if dataclasses.is_dataclass(OmegaConf.get_type(node, key)):
            yield from config_keys(node[key], f"{prefix}{key}.")
        else:
            yield prefix + key


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A private directory as ``tempfile``'s default and as the working directory, so that
    a test sees every file a call creates there."""
    cwd = tmp_path / "cwd"
    temp = tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return tmp_path


# ----------------------------------------------------------------------------- settings


def test_keywords_are_the_schema_keys_and_groups_and_compose_as_the_command_line_does():
    settings = accepted_settings()
    assert settings["batch_size_min"] == "batch_size.min" and settings["seed"] == "seed"
    assert settings["algorithm_n_init"] == "algorithm.n_init" and settings["algorithm_linkage"] == "algorithm.linkage"
    assert settings["algorithm"] == "algorithm=balanced|hierarchical|kmeans|spectral"
    assert settings["institution"] == "institution=xyz" and "tracking" in settings
    # the functions' parameters and the name a group keyword chooses are not settings
    assert not {"data_input_dir", "output_dir", "algorithm_name", "constraints_name"} & set(settings)
    # every key of the composed configuration has its keyword, or is chosen by a group keyword
    leaf_keys = {value for value in settings.values() if "=" not in value}
    groups = {value.split("=")[0] for value in settings.values() if "=" in value}
    for algorithm in ("balanced", "hierarchical"):
        composed_keys = set(config_keys(load_config([f"algorithm={algorithm}"])))
        assert composed_keys - {"data.input_dir", "output_dir", "algorithm.name", "constraints.name"} <= (
            leaf_keys | groups), algorithm

    composed = compose_settings({
        "batch_size_min": 20, "batch_size_max": 50, "algorithm": "kmeans", "algorithm_n_init": 2, "seed": 7,
        "tracking": False, "weights": "coherence_first", "institution": "xyz", "report_formats": ("txt", "csv"),
        "as_of": datetime(2025, 8, 1), "rebatch_pinned": Path("/srv/pinned.txt"),
    })
    command_line = load_config([
        "batch_size.min=20", "batch_size.max=50", "algorithm=kmeans", "algorithm.n_init=2", "seed=7",
        "tracking.enabled=false", "weights=coherence_first", "+institution=xyz", "report.formats=[txt,csv]",
        "as_of=2025-08-01T00:00:00", "rebatch.pinned=/srv/pinned.txt",
    ])
    assert OmegaConf.to_container(composed, resolve=False) == OmegaConf.to_container(command_line, resolve=False)
    # a boolean for a group switches its `enabled` key; a string chooses its option
    assert compose_settings({"tracking": "off"}).tracking.enabled is False
    assert compose_settings({}).tracking.enabled is True  # the schema's default, not a second one


def test_an_unknown_name_is_rejected_listing_the_accepted_ones_before_anything_is_written(
        make_institution_dir, private_tmp):
    out = private_tmp / "out"
    with pytest.raises(ConfigurationError) as info:
        stage2.quick_batch_processing(make_institution_dir(300, seed=1), out, batch_size_mn=20, data_input_dir="/x")
    error = info.value
    assert error.code == "INVALID_CONFIGURATION" and error.exit_code == 2
    message = str(error)
    assert "unknown setting(s) batch_size_mn, data_input_dir" in message
    assert "did you mean batch_size_min" in message and "data_input_dir: pass it as the input_dir parameter" in message
    accepted = message.split("Accepted: ")[1].split(" Fix:")[0].split(", ")
    assert accepted == sorted(accepted_settings()) and "batch_size_min" in accepted
    assert not out.exists() and not any((private_tmp / "cwd").iterdir())
    with pytest.raises(ConfigurationError, match="takes no output_dir"):
        stage2.validate_batch_processing_inputs(make_institution_dir(300, seed=1), output_dir="out")


@pytest.mark.parametrize(("settings", "expected"), [
    ({"algorithm": "kmean"}, "not an option of the algorithm group (options: balanced, hierarchical, kmeans"),
    ({"batch_size_min": "twenty"}, "batch_size_min='twenty' (batch_size.min)"),
    ({"algorithm_linkage": "ward"}, "algorithm_linkage belongs to algorithm='hierarchical'"),
    ({"institution_tenant_id": "T1"}, "no institution section"),
    ({"weights": True}, "not an option of the weights group"),
])
def test_a_wrong_option_or_type_is_a_configuration_error_naming_the_keyword(settings, expected):
    with pytest.raises(ConfigurationError) as info:
        compose_settings(settings)
    assert info.value.code == "INVALID_CONFIGURATION" and expected in str(info.value)


# ----------------------------------------------------------------------------- batching


@pytest.mark.slow
def test_the_result_is_the_command_lines_for_the_same_settings(make_institution_dir, tmp_path):
    input_dir = make_institution_dir(500, seed=3)
    result = stage2.quick_batch_processing(input_dir, tmp_path / "api", batch_size_min=20, batch_size_max=40,
                                           algorithm="kmeans", seed=5, **OFFLINE)
    cli_dir = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "stage2", f"data.input_dir={input_dir}", f"hydra.run.dir={cli_dir}",
         "batch_size.min=20", "batch_size.max=40", "algorithm=kmeans", "seed=5", "tracking.enabled=false",
         "report.notebook=false", f"as_of={AS_OF}"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for table in STAGE3_TABLES:
        assert (tmp_path / "api" / f"{table}.csv").read_bytes() == (cli_dir / f"{table}.csv").read_bytes(), table
    assert result.output_dir == (tmp_path / "api").resolve()
    assert_outputs_valid(result.output_dir, input_dir, size_bounds=(20, 40))
    assert result.run_id is None and result.settings.bounds.min == 20 and result.batches["student_count"].max() <= 40
    report = json.loads((result.output_dir / "quality_report.json").read_text())
    assert report["config"]["algorithm"]["name"] == "kmeans" and report["config"]["seed"] == 5


def test_without_an_output_directory_the_run_goes_to_a_new_temporary_one(make_institution_dir, private_tmp):
    input_dir = make_institution_dir(300, seed=1)
    before = snapshot(input_dir)
    result = stage2.quick_batch_processing(input_dir, seed=1, **OFFLINE)
    assert result.output_dir.parent == private_tmp / "temp" and result.output_dir.name.startswith("stage2-run-")
    assert all((result.output_dir / f"{table}.csv").is_file() for table in STAGE3_TABLES)
    assert not any((private_tmp / "cwd").iterdir()) and snapshot(input_dir) == before


def test_a_failed_run_raises_and_names_its_run_directory(make_institution_dir, private_tmp):
    broken = private_tmp / "broken"
    shutil.copytree(make_institution_dir(300, seed=1), broken)
    (broken / "rooms.csv").unlink()
    with pytest.raises(stage2.errors.InputValidationError) as info:
        stage2.quick_batch_processing(broken, **OFFLINE)
    (run_dir,) = (private_tmp / "temp").iterdir()
    assert any(str(run_dir) in note for note in info.value.__notes__)
    assert json.loads((run_dir / "errors.json").read_text())["error"]["code"] == "MISSING_FILE"


# ----------------------------------------------------------------------------- validation


def test_validation_of_a_good_export_is_the_dry_runs_plan_and_writes_nothing(make_institution_dir, private_tmp):
    input_dir = make_institution_dir(500, seed=3)
    before_input, before_cwd = snapshot(input_dir), snapshot(private_tmp)
    report = stage2.validate_batch_processing_inputs(input_dir, batch_size_min=20)
    assert snapshot(input_dir) == before_input and snapshot(private_tmp) == before_cwd  # no file, no MLflow store

    assert report.ok and report.status == "valid" and report.problems == []
    assert report.plan is not None and report.n_batches == report.plan.n_batches > 0
    assert len(report.groups) == len(report.plan.groups) and report.room_check["slots"] > 0
    assert {g["bounds"][0] for g in report.groups} == {20}

    dry = process_student_batching(load_config([f"data.input_dir={input_dir}", "tracking.enabled=false",
                                                "dry_run=true", "batch_size.min=20"]),
                                   output_dir=private_tmp / "dry")
    written = json.loads((dry.output_dir / "validation_report.json").read_text())
    record = report.to_dict()
    assert json.loads(json.dumps(record)) == record
    for key in ("n_students", "n_inactive_students", "n_groups", "n_batches", "room_check", "groups", "data_digest",
                "warnings", "eav_overrides", "input_dir", "status"):
        assert record[key] == written[key], key
    text = str(report)
    assert text.startswith(f"stage2 validation of {input_dir.resolve()}: valid")
    assert f"-> {report.n_batches} batch(es)" in text and f"{report.room_check['slots']} (room, shift) slots" in text


def test_validation_lists_every_input_problem_with_file_row_column_and_code(make_institution_dir, private_tmp):
    broken = private_tmp / "broken"
    shutil.copytree(make_institution_dir(300, seed=1), broken)
    students = pd.read_csv(broken / "student_data.csv", dtype=str, keep_default_na=False)
    students.loc[4, "semester"] = "ninth"
    students.loc[7, "program_id"] = "PRG-NOPE"
    students.to_csv(broken / "student_data.csv", index=False)
    rooms = pd.read_csv(broken / "rooms.csv", dtype=str, keep_default_na=False)
    rooms.drop(columns="capacity").to_csv(broken / "rooms.csv", index=False)
    before = snapshot(private_tmp)

    report = stage2.validate_batch_processing_inputs(broken)
    assert snapshot(private_tmp) == before
    assert not report.ok and report.status == "invalid" and report.plan is None and report.n_batches is None
    found = {(p.code, p.file, p.row, p.column) for p in report.problems}
    assert ("MISSING_COLUMN", "rooms.csv", None, "capacity") in found
    assert ("INVALID_NUMBER", "student_data.csv", 6, "semester") in found  # row 6: the header is line 1
    assert ("DANGLING_REFERENCE", "student_data.csv", 9, "program_id") in found
    assert all(p.fix for p in report.problems)
    text = str(report)
    assert ": invalid" in text and f"problems ({len(report.problems)}):" in text
    assert "student_data.csv, row 9, column 'program_id'" in text
    record = report.to_dict()
    assert record["ok"] is False and len(record["problems"]) == len(report.problems)
    assert {"code", "file", "row", "column", "message", "fix"} <= set(record["problems"][0])


def test_validation_lists_configuration_and_strict_sizing_problems(make_institution_dir):
    input_dir = make_institution_dir(300, seed=1)
    bounds = stage2.validate_batch_processing_inputs(input_dir, weights_homogeneity=0.9)
    assert [p.code for p in bounds.problems] == ["WEIGHT_NORMALIZATION_FAILED"] and not bounds.ok

    lenient = stage2.validate_batch_processing_inputs(input_dir, batch_size_min=20)
    undersized = [g["key"] for g in lenient.groups if g["status"] == "undersized"]
    assert lenient.ok and undersized and any("undersized" in w or "< min" in w for w in lenient.warnings)
    strict = stage2.validate_batch_processing_inputs(input_dir, batch_size_min=20, strict=True)
    assert not strict.ok and strict.problems[0].code == "CONSTRAINT_VIOLATION"
    assert strict.problems[0].where and any(key in strict.problems[0].where for key in undersized)


def test_a_missing_directory_is_a_problem_not_an_exception(private_tmp):
    report = stage2.validate_batch_processing_inputs(private_tmp / "nowhere")
    assert [(p.code, p.file) for p in report.problems] == [("MISSING_FILE", str(private_tmp / "nowhere"))]
    assert not (private_tmp / "nowhere").exists()


# ----------------------------------------------------------------------------- the README


def readme_section(title: str) -> str:
    """The ``pycon`` blocks of the README section headed ``title``, as one doctest text."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(f"\n### {title}\n", 1)[1].split("\n#", 1)[0]
    return "\n".join(re.findall(r"```pycon\n(.*?)```", section, flags=re.DOTALL))


def test_the_readme_examples_run(private_tmp):
    examples = readme_section("Batching and validating from Python")
    test = doctest.DocTestParser().get_doctest(examples, {}, "README: Batching and validating from Python",
                                               str(REPO_ROOT / "README.md"), 0)
    assert len(test.examples) >= 10
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert {p.name for p in (private_tmp / "cwd").iterdir()} == {"export-300", "run-300"}


def test_the_package_exports_both_functions_lazily():
    code = ("import sys, stage2; before = 'stage2.api' in sys.modules; f = stage2.quick_batch_processing; "
            "print(before, f.__module__, stage2.validate_batch_processing_inputs.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "stage2.api", "stage2.api"]
