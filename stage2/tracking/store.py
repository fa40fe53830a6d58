"""The tracking store, checked before a run reads its data.

A store that cannot be used (an MLflow server that is down, a damaged SQLite file, a SQLite
path that cannot be created) is a fault of the environment, not a bug in stage2:
:func:`check_tracking_store` raises :class:`~stage2.errors.EnvironmentFault` with the code
``TRACKING_UNAVAILABLE`` (exit 5) within seconds, naming the store without its credentials
(:func:`redact_uri`). The check makes one request with ``tracking.check_timeout_s`` and
``tracking.check_retries`` (MLflow's own defaults retry for minutes).

A new SQLite store is created and migrated under an exclusive lock on ``<store file>.lock``
(:func:`store_lock`): MLflow creates its tables without one, so runs started at once on a new
store raced (``table ... already exists``, an alembic revision mismatch).
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stage2.config.schema import TrackingConfig
from stage2.errors import ConfigurationError, EnvironmentFault

#: ``tracking.on_unavailable`` values
ON_UNAVAILABLE: tuple[str, ...] = ("fail", "warn")
TRACKING_UNAVAILABLE = "TRACKING_UNAVAILABLE"
#: a SQLite store's URI prefix (SQLAlchemy's: ``sqlite:///relative.db``, ``sqlite:////abs.db``)
SQLITE_PREFIX = "sqlite:///"
#: SQLite locations that are no file
SQLITE_IN_MEMORY = ("", ":memory:")
#: the lock file of a SQLite store is the store's file name with this suffix, beside it
LOCK_SUFFIX = ".lock"
#: seconds between attempts to take a store lock another process holds
LOCK_POLL_S = 0.05
#: longest reason quoted from the store's error
MAX_REASON_CHARS = 300
#: ``user:password@`` (or ``token@``) after a URL's scheme
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
#: query parameters holding secrets (``?password=...``, ``&token=...``)
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:password|passwd|pwd|token|secret|key)[^=&#]*=)[^&#]*")
#: the operating system's reason inside a connection error (``[Errno 111] Connection refused``)
_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def redact_uri(uri: str) -> str:
    """``uri`` without credentials: ``user:password@`` and secret query values (``password=``,
    ``token=``, ``...key=``) removed, so it can be printed and logged."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub("", uri))


def sqlite_store_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (relative to the current directory unless absolute);
    ``None`` for any other store and for an in-memory SQLite database."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    location = uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return None if location in SQLITE_IN_MEMORY else Path(location)


@contextmanager
def store_lock(store: Path, timeout_s: float) -> Iterator[Path]:
    """Hold an exclusive lock on ``<store>.lock`` (created beside ``store``; yielded) while the
    block runs. Raises ``TimeoutError`` when another process holds it for ``timeout_s``
    seconds. The operating system releases the lock of a process that dies."""
    lock_path = store.with_name(store.name + LOCK_SUFFIX)
    with open(lock_path, "a") as handle:  # "a": never truncates a lock file another process holds
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"another process has held {lock_path} for {timeout_s:g} s") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield lock_path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _http_limits(retries: int, timeout_s: int) -> Iterator[None]:
    """MLflow's HTTP retries and request timeout set to these values while the block runs (MLflow
    reads them from the environment at each request)."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    limits = {MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: str(retries), MLFLOW_HTTP_REQUEST_TIMEOUT.name: str(timeout_s)}
    saved = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def validate_policy(policy: TrackingConfig) -> None:
    """Raise :class:`ConfigurationError` for an unknown ``tracking.on_unavailable`` or a check
    limit out of range."""
    if policy.on_unavailable not in ON_UNAVAILABLE:
        raise ConfigurationError(f"tracking.on_unavailable={policy.on_unavailable!r} is not one of "
                                 f"{', '.join(ON_UNAVAILABLE)}", where="tracking.on_unavailable")
    if policy.check_timeout_s < 1 or policy.check_retries < 0 or not policy.store_lock_timeout_s > 0:
        raise ConfigurationError(
            f"tracking.check_timeout_s={policy.check_timeout_s} (at least 1), tracking.check_retries="
            f"{policy.check_retries} (at least 0), tracking.store_lock_timeout_s={policy.store_lock_timeout_s} "
            "(positive)", where="tracking")


def store_fault(uri: str, error: BaseException) -> EnvironmentFault:
    """The ``TRACKING_UNAVAILABLE`` fault of the store ``uri`` that failed with ``error``: the
    message names the store (without credentials) and the reason, the fix what to do for that
    kind of store."""
    store = redact_uri(uri)
    path = sqlite_store_path(uri)
    if path is not None:
        fix = (f"check that {path.parent} exists or can be created and is writable, and that {path.name} is an "
               "MLflow store (move a damaged file aside: a new one is created), or correct tracking.uri")
    else:
        fix = f"start the MLflow server at {store}, or correct tracking.uri (or $MLFLOW_TRACKING_URI)"
    fix += "; or run untracked: tracking.on_unavailable=warn (or tracking.enabled=false)"
    return EnvironmentFault(f"the MLflow tracking store {store} cannot be used: {_reason(error)}",
                            code=TRACKING_UNAVAILABLE, where="tracking.uri", fix=fix, details={"store": store})


def _reason(error: BaseException) -> str:
    """The gist of the store's error: an operating system error's reason and file, the reason of
    a connection error, else the first line of the message (credentials removed), cut to
    :data:`MAX_REASON_CHARS`."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    text = redact_uri(str(error))
    found = _OS_ERROR.search(text)
    if found:
        return found.group(0).strip().rstrip(":")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


def check_tracking_store(uri: str, policy: TrackingConfig) -> None:
    """Make one request to the store ``uri`` within the policy's timeout and retries; a new
    SQLite store is created and migrated by it, under :func:`store_lock` (its directory is
    created as MLflow would). Raises :class:`EnvironmentFault` ``TRACKING_UNAVAILABLE`` naming
    the store and the reason if it cannot be used."""
    from mlflow.tracking import MlflowClient

    path = sqlite_store_path(uri)
    try:
        with _http_limits(policy.check_retries, policy.check_timeout_s):
            if path is None:
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                with store_lock(path, policy.store_lock_timeout_s):
                    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise store_fault(uri, exc) from exc
