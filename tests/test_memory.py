"""A worker's memory: freed memory goes back to the system, forked pages stay shared.

Each check runs in a process of its own: allocator settings and a frozen garbage collector are
process-wide, and would change the test session's own behaviour.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from atm_core.isolation import FitProcess
from tests.conftest import run_python as fresh_python

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads memory figures from /proc (Linux)"
)


def run_python(code: str, **env: str) -> str:
    """``code`` in a new interpreter; Arrow's pool variable only as ``env`` gives it."""
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    return fresh_python(code, {**environment, **env})


def rss_mb(pid: int | str = "self") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


FRAGMENT = """
from tests.test_memory import rss_mb
# 150 MB in 1 kB blocks on malloc's heap; the last one kept, so the heap's top is not free
blocks = [bytes(1000) + bytes([i % 256]) for i in range(150_000)]
keep = blocks[-1]
del blocks
"""


def test_give_back_returns_freed_heap_memory_to_the_system() -> None:
    out = run_python(
        FRAGMENT
        + """
from atm_core.memory import give_back
held = rss_mb()
give_back()
print(held, rss_mb())
"""
    )
    held, after = map(float, out.split())
    assert held - after > 100, (held, after)


def test_configure_allocators_puts_arrow_on_malloc_once() -> None:
    out = run_python(
        """
import pyarrow
from atm_core.memory import configure_allocators
before = pyarrow.default_memory_pool().backend_name
configure_allocators()
configure_allocators()
print(before, pyarrow.default_memory_pool().backend_name)
"""
    )
    before, after = out.split()
    assert before != "system" and after == "system"


PARQUET_WRITES = """
import atm_core  # first, as the atm command does: pandas loads pyarrow
import numpy as np, pandas as pd
import pyarrow
from atm_core.artifacts import _parquet
from atm_core.memory import configure_allocators, give_back
from tests.test_memory import rss_mb
backend = pyarrow.default_memory_pool().backend_name  # the parquet code's
configure_allocators()  # as a worker holding data does: pyarrow's own calls on malloc
rng = np.random.default_rng(0)  # a classifier's predictions: row numbers, probabilities
frame = pd.DataFrame({"row": np.arange(30_000), "p": rng.random(30_000, dtype="f4")})
import pyarrow.parquet  # the writer's code loaded
give_back()
before = rss_mb()
for _ in range(3):
    _parquet(frame)
give_back()
print(backend, rss_mb() - before)
"""


@pytest.mark.slow
def test_importing_atm_core_puts_arrows_parquet_code_on_malloc() -> None:
    backend, grown = run_python(PARQUET_WRITES).split()
    # on mimalloc, Arrow's default, the process kept 21 MB more
    assert backend == "system" and float(grown) < 8, grown


@pytest.mark.slow
def test_an_explicit_arrow_memory_pool_setting_wins() -> None:
    backend, _ = run_python(PARQUET_WRITES, ARROW_DEFAULT_MEMORY_POOL="mimalloc").split()
    assert backend == "mimalloc"  # not the "system" import atm_core would choose


def test_objects_alive_at_a_fork_stay_out_of_both_processes_collections() -> None:
    out = run_python(
        """
import gc, os, weakref
from atm_core.memory import freeze_for_fork
class Node:
    pass
garbage = Node()
garbage.cycle = garbage  # unreachable once deleted: collected, not frozen
dead = weakref.ref(garbage)
del garbage
alive = [[i] for i in range(10_000)]
freeze_for_fork()
pid = os.fork()
if pid == 0:
    gc.collect()
    os._exit(0 if gc.get_freeze_count() > 10_000 else 1)
gc.collect()
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), gc.get_freeze_count(), dead() is None)
"""
    )
    child_exit, parent_frozen, collected = out.split()
    assert child_exit == "0"  # the child's collections leave its inherited objects alone
    assert int(parent_frozen) > 10_000  # and so do the parent's
    assert collected == "True"  # garbage was collected before the freeze


def _allocate_and_free(context: object, megabytes: int) -> float:
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(megabytes * 1000)]
    keep = blocks[-1]
    del blocks
    assert keep
    return rss_mb()


def test_a_fit_process_gives_memory_back_after_each_call() -> None:
    process = FitProcess()
    try:
        during = process.run(_allocate_and_free, (150,), "context", 60)
        pid = process._child.pid
        deadline = time.monotonic() + 10
        while rss_mb(pid) > during - 100 and time.monotonic() < deadline:
            time.sleep(0.05)  # it gives back after replying
        assert rss_mb(pid) < during - 100
        assert process.run(_allocate_and_free, (1,), "context", 60) > 0  # and still serves
    finally:
        process.close()
