"""Peak memory of a process tree, sampled while it runs (used by overhead.py and large_csv.py)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

MB = 1024 * 1024


class MemorySampler:
    """Samples a process tree every 0.1 s: the process's VmHWM, and its RSS plus the unique
    memory (USS) of its children (the fits it forks share the data with it copy-on-write).

    (``ru_maxrss`` from ``wait4`` is no use here: it keeps the RSS of this script, which the
    child was forked from before it exec'd.)
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.status = Path(f"/proc/{pid}/status")
        self.peaks = {"worker_hwm_mb": 0.0, "children_uss_mb": 0.0, "tree_mb": 0.0, "children": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.1):
            try:
                hwm = int(re.search(r"VmHWM:\s+(\d+) kB", self.status.read_text())[1]) * 1024
                rss = self.process.memory_info().rss
                children = self.process.children(recursive=True)
            except (psutil.Error, OSError, TypeError):
                continue
            uss = 0
            for child in children:
                try:
                    uss += child.memory_full_info().uss
                except psutil.Error:
                    continue
            peaks = self.peaks
            peaks["worker_hwm_mb"] = max(peaks["worker_hwm_mb"], hwm / MB)
            peaks["children_uss_mb"] = max(peaks["children_uss_mb"], uss / MB)
            peaks["tree_mb"] = max(peaks["tree_mb"], (rss + uss) / MB)
            peaks["children"] = max(peaks["children"], len(children))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks
