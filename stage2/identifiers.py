"""Deterministic identifiers: UUID5 of the tenant and stable codes, so the same input,
configuration and seed always give the same ids."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

#: namespace of every stage2 identifier (uuid5 of the project's name in the URL namespace)
STAGE2_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "stage2.batching")
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


_NAMESPACE_BYTES = STAGE2_NAMESPACE.bytes
_SEPARATOR = "\x1f"
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: the 36 characters of a UUID's text from its 32 hex digits and a dash (index 32)
_UUID_LAYOUT = np.r_[0:8, 32, 8:12, 32, 12:16, 32, 16:20, 32, 20:32]


def stable_uuid(*parts: object) -> str:
    return str(uuid.uuid5(STAGE2_NAMESPACE, _SEPARATOR.join(str(p) for p in parts)))


def stable_uuids(kind: str, *columns: Iterable[object]) -> list[str]:
    """``stable_uuid(kind, a, b, ...)`` for every row of the given columns."""
    return uuid_texts(kind, *columns).to_pylist()


def uuid_texts(kind: str, *columns: Iterable[object]) -> pa.LargeStringArray:
    """:func:`stable_uuids` as an Arrow string array: the hashing is per row, the UUID
    formatting vectorised, and no Python string is made per id."""
    prefix = _NAMESPACE_BYTES + (kind + _SEPARATOR).encode("utf-8")
    sha1 = hashlib.sha1
    rows = zip(*columns, strict=True)
    if len(columns) == 2:
        names: Iterable[str] = (f"{a!s}{_SEPARATOR}{b!s}" for a, b in rows)
    else:
        names = (_SEPARATOR.join(map(str, row)) for row in rows)
    digests = b"".join([sha1(prefix + name.encode("utf-8")).digest()[:16] for name in names])
    octets = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16).copy()
    octets[:, 6] = (octets[:, 6] & 0x0F) | 0x50  # version 5
    octets[:, 8] = (octets[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = np.empty((len(octets), 33), dtype=np.uint8)
    digits[:, 0:32:2] = _HEX_DIGITS[octets >> 4]
    digits[:, 1:32:2] = _HEX_DIGITS[octets & 0x0F]
    digits[:, 32] = ord("-")
    text = np.ascontiguousarray(digits[:, _UUID_LAYOUT])
    offsets = np.arange(len(octets) + 1, dtype=np.int64) * _UUID_LAYOUT.size
    return pa.Array.from_buffers(pa.large_string(), len(octets), [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def batch_id(tenant_id: str, batch_code: str) -> str:
    return stable_uuid("batch", tenant_id, batch_code)


def membership_id(batch_id_: str, student_id: str) -> str:
    return stable_uuid("membership", batch_id_, student_id)


def enrollment_id(batch_id_: str, course_id: str) -> str:
    return stable_uuid("enrollment", batch_id_, course_id)


def code_fragment(value: object) -> str:
    """An identifier-safe fragment of a value: runs of other characters become ``-``."""
    return _UNSAFE.sub("-", str(value)).strip("-").upper() or "X"
