"""ATM core: ModelHub, method catalogue, search, worker. Never imports Prefect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
