"""Configuration stage: schema checks at composition, the design's codes, EAV overrides."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from stage2.config import build_settings
from stage2.errors import ConfigurationError, InputValidationError


def test_default_config_composes_with_the_stable_keys(compose_config):
    cfg = compose_config(["data.input_dir=/nowhere"])
    assert (cfg.batch_size.min, cfg.batch_size.target, cfg.batch_size.max) == (15, 35, 60)
    assert (cfg.weights.homogeneity, cfg.weights.balance, cfg.weights.size) == (0.4, 0.3, 0.3)
    assert cfg.algorithm.name == "balanced"
    assert cfg.constraints.name == "default"
    assert cfg.seed == 0 and cfg.strict is False
    assert cfg.tracking.enabled is True and cfg.tracking.uri is None
    assert "institution" not in cfg or cfg.institution is None


@pytest.mark.parametrize("algorithm", ["balanced", "kmeans", "spectral", "hierarchical"])
def test_every_algorithm_config_composes(compose_config, algorithm):
    assert compose_config([f"algorithm={algorithm}", "data.input_dir=/x"]).algorithm.name == algorithm


def test_minimal_constraints_are_exactly_the_three_hard_no_mix_rules(compose_config):
    settings = build_settings(compose_config(["constraints=minimal", "data.input_dir=/x"]))
    assert [(r.field_name, r.rule_type, r.level) for r in settings.rules] == [
        ("program_id", "no_mix", "hard"), ("academic_year", "no_mix", "hard"), ("semester", "no_mix", "hard"),
    ]


def test_misspelt_key_fails_at_composition(compose_config):
    with pytest.raises(ConfigCompositionException, match="batch_size.mn"):
        compose_config(["batch_size.mn=3"])


def test_wrong_type_fails_at_composition(compose_config):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(["batch_size.min=abc"])


def test_algorithm_parameter_typo_fails(compose_config):
    with pytest.raises(ConfigCompositionException):
        compose_config(["algorithm.n_candidate=3"])


def test_institution_group_adds_tenant_bounds_and_constraint_set(compose_config):
    cfg = compose_config(["+institution=xyz"])
    assert cfg.institution.name == "xyz" and cfg.institution.tenant_id == "TENANT-XYZ"
    assert (cfg.batch_size.min, cfg.batch_size.max) == (20, 55)
    assert cfg.constraints.name == "minimal"


@pytest.mark.parametrize(
    "overrides",
    [["batch_size.min=40", "batch_size.target=35"], ["batch_size.max=30"], ["batch_size.min=0"]],
)
def test_bounds_out_of_order_raise_batch_size_bounds_violated(compose_config, overrides):
    with pytest.raises(ConfigurationError) as info:
        build_settings(compose_config(overrides + ["data.input_dir=/x"]))
    assert info.value.code == "BATCH_SIZE_BOUNDS_VIOLATED"
    assert info.value.exit_code == 2


def test_recommended_ranges_only_warn(compose_config):
    settings = build_settings(compose_config(["batch_size.min=5", "batch_size.target=20", "batch_size.max=100",
                                              "data.input_dir=/x"]))
    assert any("batch_size.min=5" in w for w in settings.warnings)
    assert any("batch_size.max=100" in w for w in settings.warnings)


def test_weights_must_sum_to_one(compose_config):
    build_settings(compose_config(["weights.homogeneity=0.405", "data.input_dir=/x"]))  # within 0.01
    with pytest.raises(ConfigurationError) as info:
        build_settings(compose_config(["weights.homogeneity=0.9", "data.input_dir=/x"]))
    assert info.value.code == "WEIGHT_NORMALIZATION_FAILED"
    assert "sum 1.5" in str(info.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("constraints.rules.shift_homogeneous.weight=11", "weight 11"),
        ("constraints.rules.shift_homogeneous.threshold=1.5", "threshold 1.5"),
        ("constraints.rules.shift_homogeneous.rule_type=cluster", "rule_type 'cluster'"),
        ("constraints.rules.shift_homogeneous.constraint_level=medium", "constraint_level 'medium'"),
        ("constraints.rules.shift_homogeneous.constraint_level=hard", "can only be soft"),
        ("++constraints.rules.shift_homogeneous.entity_type=PROGRAM", "needs an entity_id"),
    ],
)
def test_invalid_rules_raise_invalid_constraint_rule(compose_config, override, fragment):
    with pytest.raises(ConfigurationError) as info:
        build_settings(compose_config([override, "data.input_dir=/x"]))
    assert info.value.code == "INVALID_CONSTRAINT_RULE"
    assert "shift_homogeneous" in str(info.value) and fragment in str(info.value)


def _eav_data(values: list[dict], students: pd.DataFrame | None = None) -> SimpleNamespace:
    params = pd.DataFrame(
        {
            "parameter_id": ["P1", "P2", "P3", "P4"],
            "parameter_code": ["batch_size.target", "batch_size.min", "constraint.cgpa_spread", "weights.homogeneity"],
        }
    )
    frame = pd.DataFrame(values)
    for column in ("parameter_value", "numeric_value", "integer_value", "boolean_value", "json_value",
                   "effective_from", "effective_to", "tenant_id", "value_id"):
        if column not in frame:
            frame[column] = None
    if students is None:
        students = pd.DataFrame({"student_id": ["s1"], "program_id": ["CSE"], "academic_year": ["2024-25"],
                                 "semester": [1], "cgpa": [7.5], "preferred_shift": [None],
                                 "preferred_languages": [()]})
    return SimpleNamespace(entity_parameter_values=frame, dynamic_parameters=params, students=students,
                           input_dir="inst")


def test_eav_overrides_bounds_per_program_and_institution(compose_config):
    data = _eav_data([
        {"entity_type": "PROGRAM", "entity_id": "CSE", "parameter_id": "P1", "integer_value": 40, "value_id": "v1"},
        {"entity_type": "INSTITUTION", "entity_id": "I1", "parameter_id": "P2", "integer_value": 20, "value_id": "v2"},
    ])
    settings = build_settings(compose_config(["data.input_dir=/x"]), data)
    assert settings.bounds.min == 20 and settings.bounds.target == 35
    assert settings.bounds_for("CSE").target == 40 and settings.bounds_for("CSE").min == 20
    assert settings.bounds_for("ECE").target == 35
    assert {o.value_id for o in settings.overrides} == {"v1", "v2"}


def test_eav_rule_scoped_to_program_and_out_of_force_values_ignored(compose_config):
    """A PROGRAM-scoped EAV cgpa_spread replaces the YAML cgpa_spread for CSE only; values
    outside their effective window change nothing."""
    rule = json.dumps({"field_name": "cgpa", "rule_type": "max_variance", "constraint_level": "soft", "weight": 4,
                       "threshold": 0.5})
    data = _eav_data([
        {"entity_type": "PROGRAM", "entity_id": "CSE", "parameter_id": "P3", "json_value": rule, "value_id": "v-cse"},
        {"entity_type": "INSTITUTION", "entity_id": "I1", "parameter_id": "P1", "integer_value": 50,
         "effective_from": "2030-01-01", "value_id": "v-future"},
        {"entity_type": "INSTITUTION", "entity_id": "I1", "parameter_id": "P2", "integer_value": 10,
         "effective_to": "2020-01-01", "value_id": "v-past"},
    ])
    yaml_rule = "+constraints.rules.cgpa_spread={field_name: cgpa, rule_type: max_variance, weight: 1, threshold: 0.3}"
    settings = build_settings(compose_config(["data.input_dir=/x", "as_of=2025-06-01", yaml_rule]), data)
    assert settings.bounds.target == 35 and settings.bounds.min == 15
    assert [o.value_id for o in settings.overrides] == ["v-cse"]
    cse = [r for r in settings.rules_for_program("CSE") if r.name == "cgpa_spread"]
    assert [(r.source, r.weight, r.threshold, r.entity_type, r.entity_id) for r in cse] == [
        ("eav:v-cse", 4.0, 0.5, "PROGRAM", "CSE")]
    for program in ("ECE", None):
        other = [r for r in settings.rules_for_program(program) if r.name == "cgpa_spread"]
        assert [(r.source, r.weight, r.threshold, r.entity_type) for r in other] == [("yaml", 1.0, 0.3, "INSTITUTION")]


def test_eav_tenant_filter(compose_config):
    data = _eav_data([
        {"entity_type": "TENANT", "entity_id": "T2", "parameter_id": "P1", "integer_value": 50, "tenant_id": "T2"},
    ])
    cfg = compose_config(["+institution=xyz"])
    OmegaConf.update(cfg, "data.input_dir", "/x")
    assert build_settings(cfg, data).bounds.target == 40  # xyz's YAML value; T2's value is not ours


def test_eav_bad_values_are_configuration_errors(compose_config):
    data = _eav_data([{"entity_type": "INSTITUTION", "entity_id": "I1", "parameter_id": "P4", "numeric_value": 0.9}])
    with pytest.raises(ConfigurationError) as info:
        build_settings(compose_config(["data.input_dir=/x"]), data)
    assert info.value.code == "WEIGHT_NORMALIZATION_FAILED"
    bad_rule = _eav_data([{"entity_type": "PROGRAM", "entity_id": "CSE", "parameter_id": "P3",
                           "json_value": json.dumps({"field_name": "cgpa", "rule_type": "max_variance",
                                                     "weight": 12})}])
    with pytest.raises(ConfigurationError) as info:
        build_settings(compose_config(["data.input_dir=/x"]), bad_rule)
    assert info.value.code == "INVALID_CONSTRAINT_RULE" and "entity_parameter_values.csv, row 2" in str(info.value)


def test_eav_bad_date_is_an_input_error(compose_config):
    data = _eav_data([{"entity_type": "INSTITUTION", "entity_id": "I1", "parameter_id": "P1", "integer_value": 40,
                       "effective_from": "not-a-date"}])
    with pytest.raises(InputValidationError) as info:
        build_settings(compose_config(["data.input_dir=/x"]), data)
    assert "INVALID_DATE" in str(info.value) and "effective_from" in str(info.value)


def test_rule_field_must_be_a_student_column(compose_config):
    data = _eav_data([])
    with pytest.raises(ConfigurationError) as info:
        build_settings(compose_config(["data.input_dir=/x",
                                       "+constraints.rules.x={field_name: gender, rule_type: homogeneous}"]), data)
    assert "'gender' is not a column of student_data.csv" in str(info.value)
