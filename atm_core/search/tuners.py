"""Tuners: baytune's, a velocity variant of GP-EI, and custom ones by class path."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from baytune.tuning import GCPTuner, GPEiTuner, GPTuner, Tunable, UniformTuner
from baytune.tuning.tuners.base import BaseTuner

from atm_core.search.plugins import is_custom, load_class
from atm_core.search.strategies import TUNER_NAMES, unknown_tuner


class GPEiVelocityTuner(GPEiTuner):
    """GP-EI that explores uniformly while the best scores are still improving slowly.

    Re-implements the original BTB ``GPEiVelocity`` (dropped by baytune): after each fit, the
    probability of a uniform proposal is ``exp(-100 * mean velocity)`` of the five best scores,
    so a search whose top scores have stalled keeps exploring instead of exploiting noise.
    """

    MULTIPLIER = -100
    N_BEST_Y = 5

    def _propose(self, num_proposals: int, allow_duplicates: bool) -> np.ndarray:
        scores = np.sort(np.asarray(self.scores, dtype=float).ravel())[-self.N_BEST_Y :]
        if len(self._trials_set) >= self.min_trials and len(scores) > 1:
            probability_uniform = float(np.exp(self.MULTIPLIER * np.mean(np.diff(scores))))
            if np.random.random() < probability_uniform:
                return self._sample(num_proposals, allow_duplicates)
        return super()._propose(num_proposals, allow_duplicates)


TUNERS: dict[str, type[BaseTuner]] = {
    "uniform": UniformTuner,
    "gp": GPTuner,
    "gp_ei": GPEiTuner,
    "gcp": GCPTuner,
    "gp_eivel": GPEiVelocityTuner,
}
assert tuple(TUNERS) == TUNER_NAMES  # the names enter_data checks without baytune


def resolve_tuner(name: str) -> type[BaseTuner]:
    """The tuner class for a name or a ``file.py:Class`` path; a clear error otherwise."""
    if is_custom(name):
        return load_class(name, BaseTuner, "tuner")
    try:
        return TUNERS[name]
    except KeyError:
        raise unknown_tuner(name) from None


def make_tuner(name: str, tunable: Tunable, r_minimum: int) -> BaseTuner:
    """Instantiate a tuner; ``r_minimum`` random trials come before any model-based proposal."""
    cls = resolve_tuner(name)
    kwargs: dict[str, Any] = {}
    parameters = inspect.signature(cls.__init__).parameters
    if "min_trials" in parameters:
        kwargs["min_trials"] = max(int(r_minimum), 1)
    return cls(tunable, **kwargs)
