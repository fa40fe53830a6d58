"""``GET /metrics``: the service's Prometheus metrics (prometheus-client, text format).

Counts that must survive a restart (runs by status, queue depth, runs in progress) are read
from the job store at scrape time; runs finished by status (a counter) and durations
(histograms) cover this process's lifetime, as Prometheus counters do. No
metric has a per-run label. The service runs one web process, so no multiprocess directory
is needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: buckets of whole-run and per-stage durations, in seconds
DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _StoreCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        runs = GaugeMetricFamily("stage2_runs", "Runs in the job store, by status (deleted runs leave it)",
                                 labels=["status"])
        for status, n in sorted(counts.items()):
            runs.add_metric([status], n)
        yield runs
        yield GaugeMetricFamily("stage2_runs_in_progress", "Runs executing now", value=counts.get("RUNNING", 0))
        yield GaugeMetricFamily("stage2_queue_depth", "Runs waiting to start", value=counts.get("QUEUED", 0))


class ServiceMetrics:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(counts))
        self.finished = Counter("stage2_runs_finished", "Runs that ended, by final status, since this process "
                                "started", ["status"], registry=self.registry)
        self.run_seconds = Histogram("stage2_run_duration_seconds", "Wall time of finished runs, from start",
                                     ["status"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.stage_seconds = Histogram("stage2_stage_duration_seconds", "Wall time of pipeline stages of "
                                       "succeeded runs", ["stage"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.last_success = Gauge("stage2_last_success_timestamp_seconds", "Unix time the last run succeeded",
                                  registry=self.registry)

    def run_finished(self, status: str, seconds: float) -> None:
        self.finished.labels(status=status).inc()
        self.run_seconds.labels(status=status).observe(max(0.0, seconds))
        if status == "SUCCEEDED":
            self.last_success.set_to_current_time()

    def observe_stages(self, jsonl: Path) -> None:
        """Record the ``stage_done`` events of a run's ``stage2.jsonl``."""
        try:
            lines = jsonl.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            if '"stage_done"' not in line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "stage_done" and isinstance(event.get("seconds"), int | float):
                self.stage_seconds.labels(stage=str(event.get("stage"))).observe(float(event["seconds"]))

    def render(self) -> bytes:
        return generate_latest(self.registry)
