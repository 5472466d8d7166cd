"""Keep a worker's memory small: give freed memory back, and keep forked pages shared.

A worker loads its data once and forks a fit process that shares it copy-on-write. Two things
undo that sharing or keep memory that is no longer used:

* Python's garbage collector writes to every tracked object it visits. After a fork each visit
  copies a shared page: in the child, or in the parent, which leaves the child's copy its own.
  :func:`freeze_for_fork` keeps the objects alive at a fork out of both processes' collections.
* glibc's ``malloc`` and Arrow's allocator keep freed memory for reuse: after a fit on 52,500
  rows its process held 90-120 MB, 45-50 MB once trimmed. :func:`give_back` returns it.
  :func:`configure_allocators` keeps less in the first place: Arrow's own allocator (mimalloc)
  keeps what it freed whatever it is asked, so Arrow allocates with ``malloc`` (a worker holding
  the 100k set: 335 -> 314 MB). ``set_memory_pool`` reaches pyarrow's own calls only; the
  parquet reader and writer take Arrow's C++ default, which ``import atm_core`` sets to
  ``malloc`` before pyarrow loads (``ARROW_DEFAULT_MEMORY_POOL``; the worker 300 -> 290 MB).
  And glibc, once a large block is freed, serves blocks up to 32 MB from its heap, where freed
  ones fragment it, so a fixed threshold keeps every block over 1 MB (a copy of the data, a
  one-hot matrix) a mapping of its own, unmapped when freed.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from functools import cache

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


def freeze_for_fork() -> None:
    """Call right before forking: every object alive now leaves all later collections, this
    process's and the child's (measured below; Python's documentation of ``gc.freeze``
    recommends the same for fork without exec).

    Garbage is collected first, so none is frozen. A full collection visits every tracked
    object and writes to it: in the child that copies the page; in this process it copies the
    page away from the child, which then owns it alone. One full collection in a worker made
    its fit process's own memory 2.4 -> 58 MB on the 100k benchmark set; with the worker's
    objects frozen it stays at 2.4. What stays frozen is what lived at a fork: the imported
    modules, the data, the ModelHub's objects; a reference cycle among them that becomes
    garbage later is not collected (a worker forks once per dataset, every 200 classifiers
    and after a stopped fit), and the first call costs one full collection (~110 ms in a
    worker), the later ones next to nothing.
    """
    gc.collect()
    gc.freeze()
