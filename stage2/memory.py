"""Peak memory of this process and of the worker processes it used.

``getrusage(RUSAGE_SELF).ru_maxrss`` is not this process's own peak on Linux: it carries over
the launching process's peak across fork + exec (a stage2 run started by a 1.5 GB notebook
kernel reports 1.5 GB), and it leaves out worker processes. ``VmHWM`` in ``/proc/self/status``
is the process's own high-water mark; workers report theirs with their results.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from functools import cache
from pathlib import Path

import pyarrow as pa

_STATUS = Path("/proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started, MiB (``VmHWM``; ``ru_maxrss``
    where ``/proc`` is not available)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_peak() -> tuple[int, float]:
    """(pid, peak MiB) of the calling process: what a worker task returns beside its result."""
    return os.getpid(), peak_rss_mb()


def workers_peak_mb(peaks: list[tuple[int, float]]) -> float:
    """Sum over distinct worker processes of each one's largest reported peak, MiB (an upper
    bound of their memory at any one moment)."""
    largest: dict[int, float] = {}
    for pid, peak in peaks:
        largest[pid] = max(peak, largest.get(pid, 0.0))
    return float(sum(largest.values()))


#: the environment variable by which a user chooses Arrow's memory pool (then left alone)
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


@cache
def return_memory_promptly() -> None:
    """Make Arrow's allocator give freed memory back to the system at once (jemalloc with no
    decay), unless the user chose a pool in ``$ARROW_DEFAULT_MEMORY_POOL``. Arrow's default
    pool keeps freed pages for reuse: a 1M-student run holds hundreds of MB of CSV-parsing
    buffers it never uses again. Once per process; a no-op where jemalloc is not built in."""
    if os.environ.get(ARROW_POOL_VARIABLE):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pass


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``; a no-op elsewhere):
    numpy's and pandas's freed arrays otherwise stay in this process's resident memory."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
