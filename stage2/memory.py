"""Peak memory of this process and of the worker processes it used.

``getrusage(RUSAGE_SELF).ru_maxrss`` is not this process's own peak on Linux: it carries over
the launching process's peak across fork + exec (a stage2 run started by a 1.5 GB notebook
kernel reports 1.5 GB), and it leaves out worker processes. ``VmHWM`` in ``/proc/self/status``
is the process's own high-water mark; workers report theirs with their results.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

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
