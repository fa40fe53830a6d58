"""What the service accepts from a client: API keys and their scopes, override strings, input
directories and upload names. Every refusal is a :class:`Refused` with the HTTP status and a
message naming the offending key, path or file.

- Keys: ``service.api_keys_file``, one ``<key> <scope>[,<scope>...]`` per line (``#`` starts a
  comment); compared in constant time; never logged.
- Overrides: ``key=value`` strings whose key is a batching setting
  (``service.allowed_override_keys``); no interpolation (``${...}``) in values, which could read
  the service's environment. A few keys are allowed exactly, without sub-keys
  (``service.allowed_exact_override_keys``: the re-batching numbers and switches).
- ``previous_run_id``: a re-batch names its previous run by id, never by path; the service
  resolves it to that run's output directory (the key also needs the ``read`` scope).
- ``input_dir``: relative to ``service.data_root``, resolved with symlinks, and inside it.
- Uploads: named exactly as a contract file; the name is looked up, never used as a path.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stage2.contract.loader import CONTRACT_FILES
from stage2.locations import config_dir

SCOPES = ("read", "submit")
_OVERRIDE = re.compile(r"^(?P<prefix>\+{0,2}|~)(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?:=(?P<value>.*))?$",
                       re.DOTALL)
#: characters an input_dir may hold: the run's Hydra override carries it
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")


class Refused(Exception):
    """A request the service refuses: the HTTP status, a message, extra response headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        #: a machine-readable reason (``PREVIOUS_RUN_NOT_FOUND``, ...), sent as ``code`` when set
        self.code = code


@dataclass(frozen=True)
class ApiKey:
    secret: str
    scopes: frozenset[str]


def load_api_keys(path: Path) -> list[ApiKey]:
    """The keys of ``path``; a malformed line raises ``ValueError`` naming its number (not
    its content, which may hold a key)."""
    keys = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}, line {number}: expected '<key> <scopes>'")
        scopes = frozenset(s.strip() for s in parts[1].split(",") if s.strip())
        if not scopes or not scopes <= set(SCOPES):
            raise ValueError(f"{path}, line {number}: scopes must be among {', '.join(SCOPES)}")
        keys.append(ApiKey(parts[0], scopes))
    if not keys:
        raise ValueError(f"{path}: no API key")
    return keys


def authorise(keys: Sequence[ApiKey] | None, presented: str | None, scope: str) -> None:
    """Raise 401 for a missing or unknown key, 403 for a key without ``scope``. ``keys``
    ``None``: the service runs without keys (loopback only) and everything is allowed."""
    if keys is None:
        return
    if not presented:
        raise Refused(401, "missing API key: send it in the X-API-Key header")
    matched = [key for key in keys if hmac.compare_digest(key.secret.encode(), presented.encode())]
    if not matched:
        raise Refused(401, "unknown API key")
    if scope not in matched[0].scopes:
        raise Refused(403, f"this API key lacks the '{scope}' scope")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_groups() -> dict[str, frozenset[str]]:
    """Each config group of ``conf/`` and its options (``constraints`` -> {default, minimal})."""
    root = config_dir()
    return {group.name: frozenset(path.stem for path in group.glob("*.yaml"))
            for group in root.iterdir() if group.is_dir()}


def check_overrides(overrides: object, allowed_keys: Sequence[str],
                    groups: Mapping[str, frozenset[str]] | None = None,
                    exact_keys: Sequence[str] = ()) -> list[str]:
    """The submission's overrides, each ``key=value`` with an allowed batching key: one of
    ``allowed_keys`` or a sub-key of one, or exactly one of ``exact_keys`` (no sub-key). A key
    that selects a config group (``constraints=minimal``) must name one of the group's options:
    Hydra would read any other value as a path to a YAML file."""
    groups = config_groups() if groups is None else groups
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise Refused(400, "overrides must be a JSON array of 'key=value' strings")
    for override in overrides:
        match = _OVERRIDE.match(override.strip())
        if match is None or (match["value"] is None and match["prefix"] != "~"):
            raise Refused(400, f"override {override!r} is not of the form key=value")
        key = match["key"]
        if key not in exact_keys and not any(key == allowed or key.startswith(allowed + ".")
                                             for allowed in allowed_keys):
            exact = f"; and exactly: {', '.join(exact_keys)}" if exact_keys else ""
            raise Refused(400, f"override key {key!r} is not allowed (allowed: {', '.join(allowed_keys)} and "
                               f"their sub-keys{exact})")
        if match["value"] is not None and ("${" in match["value"] or "\n" in match["value"]):
            raise Refused(400, f"override {key!r}: interpolations and line breaks are not allowed in values")
        if key in groups and match["value"] is not None and match["value"].strip() not in groups[key]:
            raise Refused(400, f"override {key!r}: {match['value']!r} is not an option of the {key} group "
                               f"({', '.join(sorted(groups[key]))})")
    return [o.strip() for o in overrides]


def resolve_input_dir(data_root: str | None, requested: object) -> Path:
    """The directory ``requested`` names under ``data_root``: 403 if it is absolute, leaves
    the root (``..``, symlinks) or the service has no data root; 404 if it is not a directory."""
    if data_root is None:
        raise Refused(403, "this service accepts uploads only (service.data_root is not set)")
    if not isinstance(requested, str) or not requested.strip():
        raise Refused(400, "input_dir must be a non-empty string, relative to the service's data root")
    if requested.startswith(("/", "\\")) or Path(requested).is_absolute() or re.match(r"^[A-Za-z]:", requested):
        raise Refused(403, f"input_dir {requested!r} is absolute; give it relative to the data root")
    if not _SAFE_PATH.match(requested):
        raise Refused(400, f"input_dir {requested!r}: use letters, digits, '.', '_', '-' and '/' only")
    root = Path(data_root).resolve()
    resolved = (root / requested).resolve()
    if not resolved.is_relative_to(root):
        raise Refused(403, f"input_dir {requested!r} leaves the data root")
    if not resolved.is_dir():
        raise Refused(404, f"input_dir {requested!r} is not a directory under the data root")
    return resolved


def contract_name(filename: str | None) -> str:
    """The contract file an upload is, by its exact name (400 otherwise)."""
    for name in CONTRACT_FILES:
        if filename == name:
            return name
    raise Refused(400, f"upload {filename!r} is not a file of the data contract ({', '.join(CONTRACT_FILES)})")
