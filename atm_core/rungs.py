"""The rungs of successive halving (see :mod:`atm_core.fidelity`): how many, and how many
training rows each sees. Light: the ModelHub's claims import it."""

from __future__ import annotations

import math

ETA = 3  # each rung: ETA times the rows of the one below; the top 1/ETA move up
HALVING_FROM = 30_000  # smaller training parts: every configuration is evaluated in full
# rung 0 sees 10,000 to 30,000 rows (more only past MAX_RUNGS): rungs from 1,500, 2,000 or
# 5,000 rows evaluated up to 3.5x more configurations a minute but chose worse models at 60 s
# (flights 0.750-0.752 against 0.794 test AUC); benchmarks/RESULTS.md, "Smaller rungs"
MIN_RUNG_ROWS = 10_000
MAX_RUNGS = 5  # (rung 0 of a 1M-row table: 1/81 of its training part, 12,346 rows)
FIDELITIES = ("auto", "full")


def top_rung(n_train: int, fidelity: str = "auto") -> int:
    """The full evaluation's rung for a training part of ``n_train`` rows (0: one rung)."""
    if fidelity == "full" or n_train < HALVING_FROM:
        return 0
    top = 0
    while top < MAX_RUNGS - 1 and n_train >= MIN_RUNG_ROWS * ETA ** (top + 1):
        top += 1
    return top


def rung_rows(rung: int, top: int, n_train: int) -> int:
    """Training rows a configuration is fitted and judged on at ``rung``."""
    return n_train if rung >= top else math.ceil(n_train / ETA ** (top - rung))


def promotion_quota(finished: int) -> int:
    """How many of the configurations finished at a rung may move up: the top 1/ETA."""
    return finished // ETA
