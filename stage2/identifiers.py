"""Deterministic identifiers: UUID5 of the tenant and stable codes, so the same input,
configuration and seed always give the same ids."""

from __future__ import annotations

import re
import uuid

#: namespace of every stage2 identifier (uuid5 of the project's name in the URL namespace)
STAGE2_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "stage2.batching")
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def stable_uuid(*parts: object) -> str:
    return str(uuid.uuid5(STAGE2_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def batch_id(tenant_id: str, batch_code: str) -> str:
    return stable_uuid("batch", tenant_id, batch_code)


def membership_id(batch_id_: str, student_id: str) -> str:
    return stable_uuid("membership", batch_id_, student_id)


def enrollment_id(batch_id_: str, course_id: str) -> str:
    return stable_uuid("enrollment", batch_id_, course_id)


def code_fragment(value: object) -> str:
    """An identifier-safe fragment of a value: runs of other characters become ``-``."""
    return _UNSAFE.sub("-", str(value)).strip("-").upper() or "X"
