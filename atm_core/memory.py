"""Keep a worker's memory small: give freed memory back, and keep forked pages shared.

A worker loads its data once and forks a fit process that shares it copy-on-write. Two things
undo that sharing or keep memory that is no longer used:

* Python's garbage collector writes to every tracked object it visits; in a forked child each
  visit copies the page the object lives on (45 MB of a fit process's own memory on the 100k
  benchmark set). :func:`frozen_for_fork` keeps the objects alive at the fork out of the
  child's collections.
* glibc's ``malloc`` and Arrow's allocator keep freed memory for reuse: after a fit on 52,500
  rows its process held 90-120 MB, 45-50 MB once trimmed. :func:`give_back` returns it.
  :func:`configure_allocators` keeps less in the first place: Arrow's own allocator (mimalloc)
  keeps what it freed whatever it is asked, so Arrow allocates with ``malloc`` (a worker holding
  the 100k set: 335 -> 314 MB); and glibc, once a large block is freed, serves blocks up to
  32 MB from its heap, where freed ones fragment it, so a fixed threshold keeps every block
  over 1 MB (a copy of the data, a one-hot matrix) a mapping of its own, unmapped when freed.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

_FORK_LOCK = threading.Lock()

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
# Not glibc's initial 128 kB: histogram gradient boosting allocates a 350 kB histogram per
# node on the 100k set, and mapping each took its fits 40 % longer.
MMAP_THRESHOLD = 1024 * 1024


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None on another C library (musl, macOS) where its calls do not apply."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def give_back(*, collect: bool = True) -> None:
    """Return free heap memory to the operating system (~1 ms), after collecting garbage
    unless ``collect`` is False (a full collection of a worker's heap takes ~100 ms)."""
    if collect:
        gc.collect()
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@cache
def configure_allocators() -> None:
    """For a process about to hold a dataset: Arrow allocates with ``malloc``, and ``malloc``
    maps every block over 1 MB on its own (once per process)."""
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@contextmanager
def frozen_for_fork() -> Iterator[None]:
    """Fork inside: the child leaves every object alive at the fork out of its collections.

    The child's collector then never writes to the pages it shares with this process, which
    unfreezes at once and collects as before. (In the child, a reference cycle among those
    objects lives as long as the child: a fit process is replaced after 200 calls at most.)
    """
    forking = os.getpid()
    with _FORK_LOCK:  # another thread's fork does not end this one's freeze
        gc.freeze()
        try:
            yield
        finally:
            if os.getpid() == forking:  # the child stays frozen
                gc.unfreeze()
