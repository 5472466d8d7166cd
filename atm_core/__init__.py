"""ATM core: ModelHub, method catalogue, search, worker. Never imports Prefect."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Arrow's C++ code (its parquet reader and writer) allocates from Arrow's default pool, by
# default mimalloc, which keeps what it freed: writing one classifier's predictions left a
# worker 15-23 MB larger. The pool is chosen when pyarrow is first imported, from this variable
# (an explicit setting wins); see atm_core.memory.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__version__ = "0.1.0"
__all__ = ["ATM", "DatarunResult", "ModelHub", "Settings", "load_settings"]

if TYPE_CHECKING:
    from atm_core.api import ATM, DatarunResult
    from atm_core.modelhub import ModelHub
    from atm_core.settings import Settings, load_settings

_LAZY = {
    "ATM": "atm_core.api",
    "DatarunResult": "atm_core.api",
    "ModelHub": "atm_core.modelhub",
    "Settings": "atm_core.settings",
    "load_settings": "atm_core.settings",
}


def __getattr__(name: str) -> Any:
    """Import on first use so ``import atm_core`` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atm_core' has no attribute {name!r}")
