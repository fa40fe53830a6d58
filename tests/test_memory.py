"""Memory housekeeping of a run (stage2.memory): run in child interpreters, since the Arrow pool
is process-global."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import pyarrow as pa
from stage2.memory import return_memory_promptly, trim_heap
before = pa.default_memory_pool().backend_name
return_memory_promptly()
return_memory_promptly()  # once per process: a second call changes nothing
trim_heap()
print(before, pa.default_memory_pool().backend_name)
"""


def _probe(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | env
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment, check=True)
    return done.stdout.split()


def test_a_run_gives_arrow_memory_back_through_jemalloc():
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.fail("this pyarrow has no jemalloc: return_memory_promptly would silently do nothing")
    before, after = _probe()
    assert after == "jemalloc"


def test_a_pool_chosen_by_the_user_is_left_alone():
    before, after = _probe(ARROW_DEFAULT_MEMORY_POOL="system")
    assert before == after == "system"
