"""Structured-config schemas: the typed shape of ``conf/``.

Registered in Hydra's ConfigStore by :func:`register_configs`, so that a misspelt key or a
value of the wrong type fails when the configuration is composed, before any data is read.
Values live in the YAML files under ``conf/``; these dataclasses only fix names, types and
the defaults a Python caller gets without Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

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
    #: materialises a built-in example institution and returns its directory
    input_dir: str = MISSING


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
    #: groups with tight sizes (fixed, or free by one student) get at least this many restarts
    #: (also above n_init) and this multiple of the random-swap trials (and of their cap)
    tight_effort: float = 12.0


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
class ResourcesConfig:
    """Home room and shift allocation."""

    allocate_rooms: bool = True
    #: room types usable as a batch's home room; ``None`` means every room
    room_types: Optional[list[str]] = None
    #: weight of shift-preference satisfaction against seat utilisation in the allocation
    shift_preference_weight: float = 1.0


@dataclass
class EnrollmentConfig:
    #: share of a batch's members taking a course for the batch to attend it (``ENROLLED``)
    shared_threshold: float = 0.5


@dataclass
class TrackingConfig:
    enabled: bool = True
    #: MLflow tracking URI; ``None``: $MLFLOW_TRACKING_URI, else ``sqlite:///<cwd>/mlflow.db``
    uri: Optional[str] = None
    experiment_name: str = "stage2"
    run_name: Optional[str] = None
    log_artifacts: bool = True
    #: metric of the child runs by which a sweep's parent run records its best child
    #: (stage2.tracking.hydra_callback.MLflowSweepCallback)
    sweep_objective: str = "academic_coherence"
    #: ``maximize`` or ``minimize`` ``sweep_objective``
    sweep_direction: str = "maximize"


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
class InstitutionConfig:
    """Who the run is for; set by ``+institution=NAME``."""

    name: str = MISSING
    tenant_id: Optional[str] = None
    institution_id: Optional[str] = None
    description: str = ""


@dataclass
class Stage2Config:
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: Any = MISSING
    batch_size: BatchSizeConfig = field(default_factory=BatchSizeConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    institution: Optional[InstitutionConfig] = None
    seed: int = 0
    #: turn warnings (undersized group, unplaced batch, ...) into errors
    strict: bool = False
    #: ISO-8601 reference time for EAV effective dates and output timestamps; ``None``: now
    as_of: Optional[str] = None
    #: where the CSVs and reports go; ``None``: Hydra's run directory (or the cwd)
    output_dir: Optional[str] = None
    #: worker processes for clustering independent groups (-1: every core); large runs only
    n_jobs: int = -1
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


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="stage2_schema", node=Stage2Config)
    for name, schema in ALGORITHM_SCHEMAS.items():
        cs.store(group="algorithm", name=f"{name}_schema", node=schema)
    cs.store(group="batch_size", name="batch_size_schema", node=BatchSizeConfig)
    cs.store(group="weights", name="weights_schema", node=WeightsConfig)
    cs.store(group="constraints", name="constraints_schema", node=ConstraintsConfig)
    cs.store(group="resources", name="resources_schema", node=ResourcesConfig)
    cs.store(group="tracking", name="tracking_schema", node=TrackingConfig)
