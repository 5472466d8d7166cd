"""The built-in selectors' and tuners' names, and checking a name without importing baytune.

``atm enter_data`` validates ``--selector`` and ``--tuner`` with these; the classes behind
the names are in :mod:`atm_core.search.selectors` and :mod:`atm_core.search.tuners` (their
tables must list the same names: ``tests/test_search.py``). A ``file.py:Class`` name is still
imported, to check the class.
"""

from __future__ import annotations

from atm_core.errors import SearchError
from atm_core.search.plugins import is_custom

SELECTOR_NAMES = (
    "uniform",
    "ucb1",
    "bestk",
    "bestkvel",
    "purebestkvel",
    "recentk",
    "recentkvel",
    "hieralg",
    "hiercost",
)
TUNER_NAMES = ("uniform", "gp", "gp_ei", "gcp", "gp_eivel")


def unknown_selector(name: str) -> SearchError:
    return SearchError(
        f"unknown selector '{name}': use one of {', '.join(SELECTOR_NAMES)} "
        "or path/to/file.py:ClassName"
    )


def unknown_tuner(name: str) -> SearchError:
    return SearchError(
        f"unknown tuner '{name}': use one of {', '.join(TUNER_NAMES)} or path/to/file.py:ClassName"
    )


def check_selector(name: str) -> None:
    """Raise the error :func:`~atm_core.search.selectors.resolve_selector` would."""
    if is_custom(name):
        from atm_core.search.selectors import resolve_selector

        resolve_selector(name)
    elif name not in SELECTOR_NAMES:
        raise unknown_selector(name)


def check_tuner(name: str) -> None:
    """Raise the error :func:`~atm_core.search.tuners.resolve_tuner` would."""
    if is_custom(name):
        from atm_core.search.tuners import resolve_tuner

        resolve_tuner(name)
    elif name not in TUNER_NAMES:
        raise unknown_tuner(name)
