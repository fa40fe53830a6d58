"""Structured configs: the typed shape of ``conf/`` and every default value.

Each default lives here and only here: a YAML file under ``conf/`` lists only what its option
changes (``conf/batch_size/small_rooms.yaml`` sets three bounds, ``conf/algorithm/kmeans.yaml``
selects the k-means schema and nothing else). ``python -m stage2 --cfg job`` prints the
composed values. Registered in Hydra's ConfigStore by :func:`register_configs`, so that a
misspelt key or a value of the wrong type fails when the configuration is composed, before any
data is read; the pipeline reads the composed configuration as a :class:`Stage2Config`
object (:func:`to_stage2_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

RULE_TYPES = ("no_mix", "homogeneous", "max_variance", "capacity_limit")
CONSTRAINT_LEVELS = ("hard", "soft")
#: the design document's acceptance thresholds for production use (metric -> minimum)
ACCEPTANCE_THRESHOLDS = {
    "academic_coherence": 0.70,
    "resource_utilization": 0.75,
    "constraint_satisfaction_rate": 0.90,
    "silhouette_score": 0.30,
    "size_balance": 0.80,
}
#: entity types a constraint rule or an EAV override may be scoped to
SCOPE_TYPES = ("INSTITUTION", "TENANT", "PROGRAM", "COURSE")


@dataclass
class DataConfig:
    #: the institution's input directory (the data contract); ``${stage2.dataset:NAME}``
    #: materialises a built-in example institution and returns its directory (default: the
    #: synthetic demo university)
    input_dir: str = "${stage2.dataset:demo}"


@dataclass
class BatchSizeConfig:
    """Batch size bounds, in students."""

    min: int = 15
    target: int = 35
    max: int = 60
    #: price of a batch's deviation from its planned (equal) size, in SSE units per squared
    #: student, before scaling by (weights.balance + weights.size) / weights.homogeneity
    deviation_cost: float = 0.02


@dataclass
class WeightsConfig:
    """Objective weights; they must sum to 1 (± 0.01)."""

    #: course similarity within a batch (and the weighted soft rules)
    homogeneity: float = 0.4
    #: equal batch sizes within a mixable group
    balance: float = 0.3
    #: closeness of batch sizes to ``batch_size.target``
    size: float = 0.3


@dataclass
class ConstraintsConfig:
    """A named constraint set (``conf/constraints/<name>.yaml`` holds its rules)."""

    name: str = MISSING
    #: rule name -> {field_name, rule_type, constraint_level, weight, threshold, entity_type,
    #: entity_id}; typed loosely so ``+constraints.rules.NAME={...}`` works on the command
    #: line, and checked by ``stage2.config.settings.make_rule`` (INVALID_CONSTRAINT_RULE)
    rules: dict[str, Any] = field(default_factory=dict)
    #: objective units per unit of soft-rule weight: a soft rule of weight w adds
    #: ``w * soft_rule_scale`` times its within-batch sum of squares to the course SSE
    soft_rule_scale: float = 0.1


@dataclass
class AlgorithmConfig:
    """Common keys of every clustering algorithm; each algorithm's schema extends it."""

    name: str = MISSING
    #: independent restarts; the best result (lowest objective) is kept
    n_init: int = 1
    max_iter: int = 30


@dataclass
class BalancedConfig(AlgorithmConfig):
    name: str = "balanced"
    #: restarts at most; fewer on large groups (``restart_budget``)
    n_init: int = 6
    #: student-restarts per group: a group of n students gets max(1, min(n_init, budget // n))
    restart_budget: int = 5_000
    max_iter: int = 30
    #: arcs per point in the size-constrained assignment: its nearest centroids
    n_candidates: int = 24
    #: relative objective improvement below which the k-means rounds stop
    tol: float = 1e-3
    #: polish each restart by swaps (and moves, for flexible sizes) with exact deltas
    local_search: bool = True
    #: batches each batch exchanges students with in the local search
    n_neighbors: int = 6
    max_passes: int = 20
    #: random-swap trials per batch in each restart (0: none); see stage2.clustering.random_swap
    swap_trials: float = 3.0
    #: batches nearest to the relocated centroid (and to the removed one) that a trial re-solves
    swap_neighbors: int = 6
    #: k-means rounds per trial
    swap_iter: int = 3
    #: the trials are split into this many rounds, each followed by k-means rounds on the group
    swap_rounds: int = 3
    #: at least this many trials per group where trials are local (small groups are cheap, and
    #: their result varies most from seed to seed)
    swap_min_trials: int = 400
    #: at most this many trials per group (bounds the time of very large groups)
    swap_max_trials: int = 1000
    #: no random swap in groups with more distinct feature rows per batch than this: a trial
    #: re-solves its region's distinct rows, so there it costs as much as hundreds of trials on
    #: course sets, and restarts already reach the best known optimum (continuous data with
    #: large clusters; experiments/balanced_benchmarks)
    swap_max_rows_per_batch: float = 60.0
    #: groups with tight sizes (fixed, or free by one student) get at least this many restarts
    #: (also above n_init) and this multiple of the random-swap trials (and of their cap)
    tight_effort: float = 12.0
    #: groups of more students are solved as ceil(n / part_max_students) sub-problems, then
    #: repaired as a whole (0: always whole)
    part_max_students: int = 25_000
    #: ... but every part gets at least this many batches
    part_min_batches: int = 20
    #: k-means rounds on the whole group after its parts are solved (exact assignments)
    part_repair_iter: int = 3


@dataclass
class KMeansConfig(AlgorithmConfig):
    name: str = "kmeans"
    n_init: int = 4
    max_iter: int = 300


@dataclass
class SpectralConfig(AlgorithmConfig):
    name: str = "spectral"
    n_neighbors: int = 10


@dataclass
class HierarchicalConfig(AlgorithmConfig):
    name: str = "hierarchical"
    linkage: str = "ward"


@dataclass
class FacultyConfig:
    """The faculty feasibility check (run when faculty.csv and faculty_course_competency.csv are
    both present): can the competent faculty teach every section the batches create?"""

    #: hours of one weekly session: a section (a batch attending a course, ENROLLED) needs
    #: ``max_sessions_per_week × session_hours`` hours a week (rounded to whole minutes)
    session_hours: float = 1.0
    #: sessions a week of a course whose ``max_sessions_per_week`` is empty
    default_sessions_per_week: int = 1
    #: least ``competency_level`` (1–10) with which a teacher may teach a course
    min_competency: int = 5


@dataclass
class ResourcesConfig:
    """Home room and shift allocation."""

    allocate_rooms: bool = True
    #: room types usable as a batch's home room; ``None`` means every room
    room_types: list[str] | None = None
    #: weight of shift-preference satisfaction against seat utilisation in the allocation
    shift_preference_weight: float = 1.0
    #: the faculty feasibility check (``resources.faculty.*``)
    faculty: FacultyConfig = field(default_factory=FacultyConfig)


#: ``enrollment.prerequisites`` values: no check | list the ineligible enrollments | also leave
#: them out of the batching | fail the run (``PREREQUISITE_NOT_MET``)
PREREQUISITE_POLICIES: tuple[str, ...] = ("off", "report", "exclude", "strict")


@dataclass
class EnrollmentConfig:
    #: share of a batch's members taking a course for the batch to attend it (``ENROLLED``)
    shared_threshold: float = 0.5
    #: what to do with a current enrollment whose mandatory prerequisites are not in the
    #: student's history: one of :data:`PREREQUISITE_POLICIES` (EAV may set it per programme)
    prerequisites: str = "report"
    #: ineligible (student, course, prerequisite) rows listed in quality_report.json (all of
    #: them are in prerequisite_report.csv) and named by a strict failure
    prerequisites_listed: int = 100


@dataclass
class TrackingConfig:
    enabled: bool = True
    #: MLflow tracking URI; ``None``: $MLFLOW_TRACKING_URI, else ``sqlite:///<cwd>/mlflow.db``
    uri: str | None = None
    experiment_name: str = "stage2"
    run_name: str | None = None
    log_artifacts: bool = True
    #: metric of the child runs by which a sweep's parent run records its best child
    #: (stage2.tracking.hydra_callback.MLflowSweepCallback)
    sweep_objective: str = "academic_coherence"
    #: ``maximize`` or ``minimize`` ``sweep_objective``
    sweep_direction: str = "maximize"
    #: when the store cannot be used (a server down, a damaged or uncreatable SQLite file):
    #: ``fail`` (TRACKING_UNAVAILABLE, exit 5, before the data is read) | ``warn`` (the run
    #: continues untracked and says so in the log, the warnings and quality_report.json)
    on_unavailable: str = "fail"
    #: seconds one request of the store check may take (an HTTP store: MLflow's request timeout)
    check_timeout_s: int = 5
    #: retries of the store check's request (MLflow's own default, 7 with back-off, takes minutes)
    check_retries: int = 0
    #: seconds to wait for another run creating or migrating the same new SQLite store
    store_lock_timeout_s: float = 120.0


@dataclass
class MetricsConfig:
    #: students sampled for the silhouette score when there are more (scikit-learn's
    #: ``sample_size``); the silhouette is O(sample²)
    silhouette_sample_size: int = 10_000
    #: acceptance thresholds (metric -> minimum); a run below one says so, with the batches
    thresholds: dict[str, float] = field(default_factory=lambda: dict(ACCEPTANCE_THRESHOLDS))


@dataclass
class ReportConfig:
    """What a run leaves for people to read, besides the CSVs and ``quality_report.json``."""

    #: execute notebooks/audit_report.ipynb into the run directory and export it to HTML
    notebook: bool = True
    #: any of console, txt, html, csv (json is always written: it is the run's record)
    formats: list[str] = field(default_factory=lambda: ["console", "txt", "html", "csv"])
    #: seconds a notebook cell may run
    notebook_timeout_s: int = 600


@dataclass
class RebatchConfig:
    """Re-batching against a previous run (``rebatch.previous_run=DIR``): keep its batches and
    move as few students as possible. Penalties are in the clustering objective's units (course
    SSE: a student's squared distance to its batch's mean course vector, at most its number of
    courses plus the soft-rule terms)."""

    #: a previous run's output directory (its ``student_batches.csv`` and
    #: ``batch_student_membership.csv``); ``None``: a fresh run
    previous_run: str | None = None
    #: objective units per unchanged student placed outside its previous batch: above what a
    #: student can gain by moving on realistic data, so unchanged students stay unless the size
    #: bounds force a move (experiments/rebatching)
    move_penalty: float = 0.5
    #: the same for a student whose course set changed (it may move where its new courses are)
    changed_move_penalty: float = 0.25
    #: objective units per student a kept batch has beyond its room's seats: it keeps its room
    #: unless placing the student elsewhere costs more than this
    room_overflow_penalty: float = 4.0
    #: unchanged students never move (their batch keeps them even against the objective)
    freeze_unchanged: bool = False
    #: at most this many unchanged students move (``None``: no cap); met by raising their move
    #: penalty ``cap_penalty_factor``-fold per round, then freezing them
    max_moved: int | None = None
    #: growth of the move penalty per round while ``max_moved`` is exceeded
    cap_penalty_factor: float = 4.0
    #: rounds of penalty growth before unchanged students are frozen
    cap_rounds: int = 4
    #: a file of student ids (one per line, or a CSV with a ``student_id`` column) who stay in
    #: their previous batch whatever the objective says
    pinned: str | None = None
    #: also run a fresh clustering and report its objective for reference (doubles the time)
    fresh_reference: bool = False


#: ``parallel.backend`` values: joblib's local worker processes, or a Dask cluster
PARALLEL_BACKENDS: tuple[str, ...] = ("loky", "dask")


@dataclass
class ParallelConfig:
    """Where independent groups are clustered. Every backend gives the same batches for the
    same seed: each group's result depends only on its data and ``seed + group index``."""

    #: ``loky`` (local worker processes, through joblib) | ``dask`` (a Dask cluster)
    backend: str = "loky"
    #: Dask scheduler address (``tcp://host:8786``); ``None``: a local cluster started for the
    #: run and closed after the clustering stage. Ignored by ``loky``.
    address: str | None = None
    #: worker processes (-1: one per core): loky's ``n_jobs``, a local Dask cluster's workers;
    #: 1 runs every group in this process. A remote scheduler has the workers it has.
    n_workers: int = -1
    #: below this many active students every group runs in this process: starting workers
    #: costs more than it saves
    min_students: int = 20_000
    #: Dask: fail with ``PARALLEL_WORKERS_LOST`` when the cluster has had no worker for this
    #: long, seconds (a run never waits forever on a cluster whose workers died)
    worker_wait_s: float = 60.0


@dataclass
class InstitutionConfig:
    """Who the run is for; set by ``+institution=NAME``."""

    name: str = MISSING
    tenant_id: str | None = None
    institution_id: str | None = None
    description: str = ""


@dataclass
class Stage2Config:
    data: DataConfig = field(default_factory=DataConfig)
    #: one of :data:`ALGORITHM_SCHEMAS`, chosen by ``algorithm=<name>``
    algorithm: AlgorithmConfig = MISSING
    batch_size: BatchSizeConfig = field(default_factory=BatchSizeConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    rebatch: RebatchConfig = field(default_factory=RebatchConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    institution: InstitutionConfig | None = None
    seed: int = 0
    #: turn warnings (undersized group, unplaced batch, ...) into errors
    strict: bool = False
    #: ISO-8601 reference time for EAV effective dates and output timestamps; ``None``: now
    as_of: str | None = None
    #: where the CSVs and reports go; ``None``: Hydra's run directory (or the cwd)
    output_dir: str | None = None
    #: validate input and configuration, print the plan, write only validation_report.json
    dry_run: bool = False
    #: continue an interrupted run in the same output directory from its last checkpoint
    resume: bool = False


ALGORITHM_SCHEMAS: dict[str, type[AlgorithmConfig]] = {
    "balanced": BalancedConfig,
    "kmeans": KMeansConfig,
    "spectral": SpectralConfig,
    "hierarchical": HierarchicalConfig,
}


#: ConfigStore name of each algorithm's schema, at the top level of the store (not in the
#: ``algorithm`` group) so that ``--help`` lists only the real options;
#: ``conf/algorithm/<name>.yaml`` extends it with ``- /algorithm_<name>_schema@_here_``
ALGORITHM_SCHEMA_NAMES = {name: f"algorithm_{name}_schema" for name in ALGORITHM_SCHEMAS}


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="stage2_schema", node=Stage2Config)
    for name, schema in ALGORITHM_SCHEMAS.items():
        cs.store(name=ALGORITHM_SCHEMA_NAMES[name], node=schema)


def to_stage2_config(cfg: Stage2Config | DictConfig | Mapping[str, Any]) -> Stage2Config:
    """The configuration as a typed :class:`Stage2Config`, interpolations resolved.

    ``cfg`` is a composed configuration (:func:`stage2.load_config`), a mapping of the same
    shape (merged over the defaults, so it may be partial; ``algorithm.name`` chooses the
    algorithm's schema) or already a :class:`Stage2Config`. A misspelt key or a value of the
    wrong type raises OmegaConf's validation error.
    """
    if isinstance(cfg, Stage2Config):
        return cfg
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is Stage2Config:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    merged = OmegaConf.structured(Stage2Config)
    raw: dict[str, Any] = dict(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig)  # type: ignore[arg-type]
                               else cfg)
    algorithm = raw.get("algorithm")
    if isinstance(algorithm, dict) and algorithm.get("name") in ALGORITHM_SCHEMAS:
        merged.algorithm = OmegaConf.structured(ALGORITHM_SCHEMAS[algorithm["name"]])
    merged = OmegaConf.merge(merged, raw)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
