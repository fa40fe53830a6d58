"""Deterministic identifiers."""

import uuid

from stage2.identifiers import (
    STAGE2_NAMESPACE,
    batch_id,
    code_fragment,
    enrollment_id,
    membership_id,
    stable_uuid,
    stable_uuids,
)


def test_fast_uuid5_equals_the_standard_library():
    batches = ["b-1", "b-2", "ünï-çødé"]
    students = ["S1", "S2", "S,3"]
    fast = stable_uuids("membership", batches, students)
    assert fast == [membership_id(b, s) for b, s in zip(batches, students, strict=True)]
    assert all(uuid.UUID(u).version == 5 for u in fast)
    assert stable_uuids("enrollment", ["b"], ["C1"]) == [enrollment_id("b", "C1")]


def test_ids_depend_on_tenant_and_code_only():
    assert batch_id("T1", "CSE-2024-25-3-B01") == batch_id("T1", "CSE-2024-25-3-B01")
    assert batch_id("T1", "CSE-2024-25-3-B01") != batch_id("T2", "CSE-2024-25-3-B01")
    assert str(uuid.uuid5(STAGE2_NAMESPACE, "batch\x1fT1\x1fX")) == batch_id("T1", "X")


def test_code_fragment_is_identifier_safe():
    assert code_fragment("B.Tech CSE / 2024-25") == "B-TECH-CSE-2024-25"
    assert code_fragment("***") == "X"


def test_uuid_texts_of_any_number_of_columns_and_non_text_values():
    from stage2.identifiers import uuid_texts

    assert uuid_texts("k", ["a", "b"]).to_pylist() == [stable_uuid("k", "a"), stable_uuid("k", "b")]
    assert uuid_texts("k", [1, 2.5], ["x", None], ["ü", "z"]).to_pylist() == [
        stable_uuid("k", 1, "x", "ü"), stable_uuid("k", 2.5, None, "z")]
    assert uuid_texts("k", [], []).to_pylist() == []
