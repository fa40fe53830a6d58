"""Run independent tasks (one per mixable group) on the configured backend.

``loky``: joblib's local worker processes. ``dask``: a Dask cluster, the one at
``parallel.address`` or a :class:`distributed.LocalCluster` started for the call. Each task
is sent its own arguments only (a group's problem, not the institution), and results come
back in task order, so the backend never changes a result.

A Dask worker that dies mid-task has its task resubmitted to another worker by the scheduler;
a task that keeps killing workers, a cluster left without workers for
``parallel.worker_wait_s`` or a scheduler that cannot be reached fails the run with an
:class:`~stage2.errors.EnvironmentFault`, never a hang.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from stage2.config.schema import ParallelConfig
from stage2.errors import EnvironmentFault

log = logging.getLogger(__name__)

#: how often the Dask loop checks that the cluster still has workers, seconds
DASK_POLL_S = 1.0


def worker_count(parallel: ParallelConfig) -> int:
    """Worker processes a local backend starts: ``n_workers``, or one per core for -1."""
    return parallel.n_workers if parallel.n_workers > 0 else max(os.cpu_count() or 1, 1)


def run_tasks(function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], parallel: ParallelConfig) -> list[Any]:
    """``[function(*task) for task in tasks]``, computed on ``parallel.backend``'s workers
    (loky draws ``tasks`` as workers free up; Dask sends them all at once)."""
    if parallel.backend == "dask":
        return _run_on_dask(function, list(tasks), parallel)
    return _run_on_loky(function, tasks, parallel)


def _run_on_loky(function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], parallel: ParallelConfig) -> list[Any]:
    # imported here: joblib (with loky, psutil, asyncio) would add to every small run's start-up
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    try:
        return list(Parallel(n_jobs=parallel.n_workers, batch_size="auto")(delayed(function)(*t) for t in tasks))
    finally:
        # idle workers would hold their memory through the later stages
        get_reusable_executor().shutdown(wait=True)


def _run_on_dask(function: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], parallel: ParallelConfig) -> list[Any]:
    from distributed import Client, LocalCluster

    cluster = None
    address = parallel.address
    if address:
        try:
            client = Client(address, timeout=f"{parallel.worker_wait_s}s")
        except (OSError, TimeoutError) as exc:
            raise EnvironmentFault(
                f"cannot reach the Dask scheduler at {address}: {exc}",
                code="PARALLEL_BACKEND_UNAVAILABLE", where="parallel.address",
            ) from exc
    else:
        cluster = LocalCluster(n_workers=worker_count(parallel), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        address = cluster.scheduler_address
    try:
        log.info("dask: %d tasks on %s (%d workers)", len(tasks), address, len(client.nthreads()))
        return _gather(client, address, function, tasks, parallel)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _gather(client: Any, address: str, function: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            parallel: ParallelConfig) -> list[Any]:
    from distributed import wait
    from distributed.scheduler import KilledWorker

    # the arguments travel inside each task, not scattered to one worker beforehand: the
    # scheduler can then rerun a task whose worker died (scattered data dies with its worker)
    futures = [client.submit(function, *task, pure=False) for task in tasks]
    without_workers_since: float | None = None
    while True:
        try:
            wait(futures, timeout=DASK_POLL_S)
            break
        except TimeoutError:
            pass
        if client.nthreads():
            without_workers_since = None
            continue
        now = time.monotonic()
        without_workers_since = without_workers_since or now
        if now - without_workers_since > parallel.worker_wait_s:
            left = sum(not f.done() for f in futures)
            client.cancel(futures)
            raise EnvironmentFault(
                f"the Dask cluster at {address} has had no worker for "
                f"{parallel.worker_wait_s:g} s with {left} of {len(futures)} group(s) left",
                code="PARALLEL_WORKERS_LOST", where="parallel.address",
            )
    try:
        return list(client.gather(futures))
    except KilledWorker as exc:
        raise EnvironmentFault(
            f"Dask workers died while running a group, and it was retried until the scheduler gave up: {exc} "
            "(out of memory on the workers?)", code="PARALLEL_WORKERS_LOST", where="parallel",
        ) from exc
    except ImportError as exc:
        raise EnvironmentFault(
            f"a Dask worker cannot import stage2 ({exc}): install the same stage2 on every worker",
            code="PARALLEL_BACKEND_UNAVAILABLE", where="parallel.address",
        ) from exc
