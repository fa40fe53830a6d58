"""EAV overrides (``entity_parameter_values``) applied by ``build_settings(cfg, data)``:
the effective window, file order, the tenant filter and rule replacement by scope.

Settings are built through the public path: a composed configuration (``compose_config``)
and an institution-like ``data`` object holding the two EAV frames, shaped as the loader
gives them (empty cells are nulls, the file row in ``source_row`` when present).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from stage2.config import build_settings

AS_OF = "2025-06-01T00:00:00"
YAML_TARGET = 35  # conf/batch_size/default.yaml
XYZ_TARGET = 40   # conf/institution/xyz.yaml (tenant TENANT-XYZ)
XYZ_TENANT = "TENANT-XYZ"

STUDENTS = pd.DataFrame(
    {
        "student_id": ["s1", "s2"], "program_id": ["CSE", "ECE"], "academic_year": ["2024-25", "2024-25"],
        "semester": pd.array([1, 1], dtype="Int64"), "preferred_shift": ["M", None],
        "preferred_languages": [("en",), ()], "cgpa": [7.5, 8.0],
    }
)


def eav_data(rows: list[dict]) -> SimpleNamespace:
    params = pd.DataFrame(
        {
            "parameter_id": ["PT", "PS"],
            "parameter_code": ["batch_size.target", "constraint.shift_homogeneous"],
            "data_type": ["integer", "json"],
        }
    )
    frame = pd.DataFrame(rows)
    for column in ("value_id", "entity_type", "entity_id", "parameter_id", "integer_value", "json_value",
                   "effective_from", "effective_to", "tenant_id"):
        if column not in frame:
            frame[column] = None
    return SimpleNamespace(entity_parameter_values=frame, dynamic_parameters=params, students=STUDENTS,
                           input_dir="inst")


def target_row(value_id: str, value: int, **extra) -> dict:
    return {"value_id": value_id, "entity_type": "INSTITUTION", "entity_id": "I1", "parameter_id": "PT",
            "integer_value": value, **extra}


def rule_row(value_id: str, spec: dict, entity_type: str = "INSTITUTION", entity_id: str = "I1", **extra) -> dict:
    return {"value_id": value_id, "entity_type": entity_type, "entity_id": entity_id, "parameter_id": "PS",
            "json_value": json.dumps(spec), **extra}


def shift_rule(weight: float, threshold: float | None = None) -> dict:
    spec = {"field_name": "preferred_shift", "rule_type": "homogeneous", "constraint_level": "soft", "weight": weight}
    if threshold is not None:
        spec["threshold"] = threshold
    return spec


def named(rules, name: str = "shift_homogeneous") -> list:
    return [r for r in rules if r.name == name]


@pytest.fixture
def default_cfg(compose_config):
    return compose_config(["data.input_dir=/x", f"as_of={AS_OF}"])


@pytest.fixture
def xyz_cfg(compose_config):
    """The xyz institution: its configuration sets institution.tenant_id = TENANT-XYZ."""
    cfg = compose_config(["+institution=xyz", "data.input_dir=/x", f"as_of={AS_OF}"])
    assert cfg.institution.tenant_id == XYZ_TENANT
    return cfg


# ----------------------------------------------------------------------------- effective window

TS = pd.Timestamp  # the loader turns the dates into naive UTC timestamps


@pytest.mark.parametrize(
    "effective_from, effective_to, applies",
    [
        ("2025-06-01", None, True),                     # from == as_of: inclusive
        ("2025-06-01T00:00:01", None, False),           # from one second after as_of
        (None, "2025-06-01", False),                    # to == as_of: exclusive
        (None, "2025-06-01T00:00:01", True),            # to one second after as_of
        ("2025-05-31", "2025-06-02", True),
        ("2025-06-02", "2025-07-01", False),            # not yet
        ("2025-01-01", "2025-05-31", False),            # already over
        (None, None, True),                             # both bounds open
        (pd.NA, pd.NA, True),
        (TS("2025-06-01"), None, True),
        (None, TS("2025-06-01"), False),
        (TS("2024-01-01"), TS("2026-01-01"), True),
    ],
)
def test_value_applies_while_effective_from_le_as_of_lt_effective_to(default_cfg, effective_from, effective_to,
                                                                     applies):
    """effective_from is inclusive, effective_to exclusive, an empty bound is open."""
    data = eav_data([target_row("v1", 40, effective_from=effective_from, effective_to=effective_to)])
    settings = build_settings(default_cfg, data)
    assert settings.bounds.target == (40 if applies else YAML_TARGET)
    assert [o.value_id for o in settings.overrides] == (["v1"] if applies else [])


def test_effective_window_compares_instants_with_a_zoned_as_of(compose_config):
    """as_of 23:00-01:00 on 31 May is midnight UTC on 1 June: a value from that midnight applies,
    one ending then does not (read as 23:00 UTC, both verdicts would flip)."""
    cfg = compose_config(["data.input_dir=/x", "as_of='2025-05-31T23:00:00-01:00'"])
    starts = eav_data([target_row("v1", 40, effective_from="2025-06-01")])
    assert build_settings(cfg, starts).bounds.target == 40
    ends = eav_data([target_row("v1", 40, effective_to="2025-06-01")])
    assert build_settings(cfg, ends).bounds.target == YAML_TARGET


def test_out_of_force_rule_leaves_the_yaml_rule(default_cfg):
    """A JSON rule whose effective_to is as_of does not replace the YAML rule."""
    data = eav_data([rule_row("v1", shift_rule(5, 0.6), effective_to="2025-06-01")])
    (rule,) = named(build_settings(default_cfg, data).rules)
    assert (rule.source, rule.weight, rule.threshold) == ("yaml", 2.0, 0.7)


# ----------------------------------------------------------------------------- file order


@pytest.mark.parametrize("values, expected", [((40, 45), 45), ((45, 40), 40)])
def test_later_file_row_wins_for_the_same_parameter_and_entity(default_cfg, values, expected):
    """Two in-force rows set batch_size.target for the institution: the later row's value is used."""
    first, second = values
    data = eav_data([target_row("v1", first), target_row("v2", second)])
    assert build_settings(default_cfg, data).bounds.target == expected


def test_file_row_is_source_row_not_frame_position(default_cfg):
    """With the loader's source_row, file order decides even if the frame is in another order."""
    data = eav_data([target_row("late", 45), target_row("early", 40)])
    data.entity_parameter_values["source_row"] = [7, 3]
    assert build_settings(default_cfg, data).bounds.target == 45


def test_later_file_row_wins_for_a_rule(default_cfg):
    """Two JSON values of the same rule at the same scope: the later row's rule is in force."""
    data = eav_data([rule_row("v1", shift_rule(5, 0.6)), rule_row("v2", shift_rule(3, 0.9))])
    (rule,) = named(build_settings(default_cfg, data).rules)
    assert (rule.source, rule.weight, rule.threshold) == ("eav:v2", 3.0, 0.9)


# ----------------------------------------------------------------------------- tenant


@pytest.mark.parametrize(
    "tenant_id, applies",
    [(None, True), (pd.NA, True), (XYZ_TENANT, True), ("TENANT-OTHER", False)],
)
def test_tenant_filter(xyz_cfg, tenant_id, applies):
    """A value with no tenant_id, or the run's tenant, applies; another tenant's is ignored."""
    data = eav_data([target_row("v1", 50, tenant_id=tenant_id)])
    settings = build_settings(xyz_cfg, data)
    assert settings.bounds.target == (50 if applies else XYZ_TARGET)
    assert [o.value_id for o in settings.overrides] == (["v1"] if applies else [])


def test_another_tenants_later_row_does_not_win(xyz_cfg):
    """Only rows of the run's tenant (or none) compete on file order."""
    data = eav_data([
        target_row("ours", 45, tenant_id=XYZ_TENANT),
        target_row("shared", 48),
        target_row("theirs", 50, tenant_id="TENANT-OTHER"),
    ])
    settings = build_settings(xyz_cfg, data)
    assert settings.bounds.target == 48
    assert [o.value_id for o in settings.overrides] == ["ours", "shared"]


# ----------------------------------------------------------------------------- rule replacement


def test_yaml_shift_rule_baseline(default_cfg):
    """Without EAV values the default constraint set's shift rule is the YAML one (weight 2, 0.7)."""
    (rule,) = named(build_settings(default_cfg, eav_data([])).rules)
    assert (rule.source, rule.weight, rule.threshold, rule.entity_type) == ("yaml", 2.0, 0.7, "INSTITUTION")


@pytest.mark.parametrize("entity_type", ["INSTITUTION", "TENANT"])
def test_eav_rule_replaces_the_yaml_rule_of_the_same_name(default_cfg, entity_type):
    """An institution-wide constraint.shift_homogeneous value replaces the YAML rule everywhere."""
    data = eav_data([rule_row("v9", shift_rule(5, 0.6), entity_type=entity_type)])
    settings = build_settings(default_cfg, data)
    (rule,) = named(settings.rules)
    assert (rule.source, rule.weight, rule.threshold) == ("eav:v9", 5.0, 0.6)
    assert (rule.field_name, rule.rule_type, rule.level) == ("preferred_shift", "homogeneous", "soft")
    assert rule.is_global and rule.entity_id is None
    for program in ("CSE", "ECE"):
        assert [(r.source, r.weight) for r in named(settings.rules_for_program(program))] == [("eav:v9", 5.0)]
    assert [(o.parameter_code, o.value_id) for o in settings.overrides] == [("constraint.shift_homogeneous", "v9")]


def test_eav_rule_replaces_rather_than_merges(default_cfg):
    """A JSON rule without a threshold gets its type's default (0.8), not the YAML rule's 0.7."""
    data = eav_data([rule_row("v9", shift_rule(3))])
    (rule,) = named(build_settings(default_cfg, data).rules)
    assert (rule.source, rule.weight, rule.threshold) == ("eav:v9", 3.0, 0.8)


def test_program_rule_replaces_the_global_rule_for_that_programme_only(default_cfg):
    """A PROGRAM-scoped value is the rule for CSE; ECE keeps the YAML rule."""
    data = eav_data([rule_row("v7", shift_rule(4, 0.9), entity_type="PROGRAM", entity_id="CSE")])
    settings = build_settings(default_cfg, data)
    (cse,) = named(settings.rules_for_program("CSE"))
    assert (cse.source, cse.weight, cse.threshold, cse.entity_type, cse.entity_id) == (
        "eav:v7", 4.0, 0.9, "PROGRAM", "CSE")
    (ece,) = named(settings.rules_for_program("ECE"))
    assert (ece.source, ece.weight, ece.threshold, ece.entity_type) == ("yaml", 2.0, 0.7, "INSTITUTION")
    assert sorted(r.source for r in named(settings.rules)) == ["eav:v7", "yaml"]


def test_course_rule_adds_to_the_global_rule(default_cfg):
    """A COURSE-scoped value does not replace the institution-wide rule: both are in force."""
    data = eav_data([rule_row("v3", shift_rule(1, 1.0), entity_type="COURSE", entity_id="C1")])
    settings = build_settings(default_cfg, data)
    for program in ("CSE", "ECE"):
        rules = named(settings.rules_for_program(program))
        assert sorted((r.source, r.entity_type, r.entity_id) for r in rules) == [
            ("eav:v3", "COURSE", "C1"), ("yaml", "INSTITUTION", None)]
