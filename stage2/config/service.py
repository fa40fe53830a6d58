"""Structured config of the REST service (``python -m stage2.service``): every key and its
default, composed by Hydra from ``conf/service.yaml``. Override on the command line, e.g.
``python -m stage2.service service.port=8765 service.home=/srv/stage2``."""

from __future__ import annotations

from dataclasses import dataclass, field

#: override keys a submission may set (``key=value``, also ``+key`` / ``++key``): the batching
#: settings. A key is allowed when it equals an entry or starts with ``entry.``.
BATCHING_OVERRIDE_KEYS = (
    "batch_size", "weights", "algorithm", "constraints", "seed", "strict", "dry_run", "enrollment",
    "resources", "report", "as_of",
)
#: override keys a submission may set as they are, without sub-keys: the re-batching settings
#: that are numbers or switches. ``rebatch.previous_run`` and ``rebatch.pinned`` name server
#: paths and stay out: a re-batch names its previous run by id (``previous_run_id``).
EXACT_OVERRIDE_KEYS = (
    "rebatch.move_penalty", "rebatch.changed_move_penalty", "rebatch.room_overflow_penalty",
    "rebatch.freeze_unchanged", "rebatch.max_moved", "rebatch.fresh_reference",
)


@dataclass
class ServiceConfig:
    #: address to listen on; anything but loopback needs ``api_keys_file``
    host: str = "127.0.0.1"
    port: int = 8765
    #: the service's directory: job store (``runs.db``), uploaded inputs, run directories and
    #: the default MLflow store (``sqlite:///<home>/mlflow.db``); created if missing
    home: str = "stage2-service"
    #: directory under which JSON submissions may name an ``input_dir`` (relative to it);
    #: ``None``: only uploads are accepted
    data_root: str | None = None
    #: API keys, one per line: ``<key> <scopes>`` with scopes comma-separated (``read``,
    #: ``submit``); ``None``: no keys, and then the service listens on loopback only
    api_keys_file: str | None = None
    #: runs executing at once (each is its own ``python -m stage2`` process)
    max_concurrent: int = 1
    #: waiting runs beyond which a submission is refused with 429
    max_queued: int = 20
    #: seconds a client is told to wait after a 429 (``Retry-After``)
    retry_after_s: int = 30
    #: largest upload (all files of one submission together), in megabytes
    max_upload_mb: int = 200
    #: seconds a cancelled run gets to stop after SIGTERM before SIGKILL
    cancel_grace_s: float = 10.0
    #: seconds between the executor's checks of the running processes
    poll_interval_s: float = 0.2
    #: after a restart, run again (``resume=true``, from its checkpoints) a run that the old
    #: service left running, at most this many times; then it ends FAILED (SERVICE_RESTARTED)
    max_resumes: int = 1
    #: MLflow tracking URI of the runs; ``None``: ``sqlite:///<home>/mlflow.db``
    tracking_uri: str | None = None
    #: MLflow experiment of the runs
    experiment_name: str = "stage2-service"
    #: runs listed per page at most (``GET /v1/runs?limit=``)
    max_page_size: int = 200
    #: override keys a submission may set (see :data:`BATCHING_OVERRIDE_KEYS`)
    allowed_override_keys: list[str] = field(default_factory=lambda: list(BATCHING_OVERRIDE_KEYS))
    #: override keys a submission may set exactly, not their sub-keys (see
    #: :data:`EXACT_OVERRIDE_KEYS`)
    allowed_exact_override_keys: list[str] = field(default_factory=lambda: list(EXACT_OVERRIDE_KEYS))
    log_level: str = "info"


@dataclass
class ServiceRootConfig:
    service: ServiceConfig = field(default_factory=ServiceConfig)


def register_service_configs() -> None:
    """Register the service's schema with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="stage2_service_schema", node=ServiceRootConfig)
