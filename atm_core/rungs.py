"""The rungs of successive halving (see :mod:`atm_core.fidelity`): how many, and how many
training rows each sees. Light: the ModelHub's claims import it."""

from __future__ import annotations

import math

ETA = 3  # each rung: ETA times the rows of the one below; the top 1/ETA move up
MIN_RUNG_ROWS = 10_000  # training rows of the lowest rung
MAX_RUNGS = 4  # (rung 0 of a 1M-row table: 1/27 of its training part)
FIDELITIES = ("auto", "full")


def top_rung(n_train: int, fidelity: str = "auto") -> int:
    """The full evaluation's rung for a training part of ``n_train`` rows (0: one rung)."""
    if fidelity == "full" or n_train < MIN_RUNG_ROWS * ETA:
        return 0
    return min(MAX_RUNGS - 1, int(math.log(n_train / MIN_RUNG_ROWS, ETA)))


def rung_rows(rung: int, top: int, n_train: int) -> int:
    """Training rows a configuration is fitted and judged on at ``rung``."""
    return n_train if rung >= top else math.ceil(n_train / ETA ** (top - rung))


def promotion_quota(finished: int) -> int:
    """How many of the configurations finished at a rung may move up: the top 1/ETA."""
    return finished // ETA
