"""What a configuration will cost: its fit time, learned from the ModelHub as classifiers
finish.

Per method, the fit seconds of the datarun's finished classifiers against the rows each was
fitted on give a power law ``seconds = a * rows ** b`` (``b`` from the fits when they span
several row counts, between 1 and 2; 1 otherwise), fitted on the median rate of the method's
configurations, whose hyperparameters vary. The driver uses it to give each classifier a
time limit from its prediction, to promote only configurations that can finish in the time
left, and to leave out methods whose cheapest evaluation cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median

LIMIT_FACTOR = 10.0  # a classifier may run this many times its predicted time...
MIN_LIMIT = 10.0  # ...and at least this many seconds
EVALUATION_OVERHEAD = 1.3  # predictions, scores and pickling on top of the fits


@dataclass(frozen=True)
class Observation:
    method: str
    seconds: float
    rows: int


@dataclass
class CostModel:
    observations: list[Observation] = field(default_factory=list)

    def fit_seconds(self, method: str, rows: int) -> float | None:
        """Predicted seconds of one fit of ``method`` on ``rows`` rows (None: never seen)."""
        seen = [o for o in self.observations if o.method == method and o.rows > 0]
        if not seen:
            return None
        exponent = _exponent(seen)
        rate = median(o.seconds / o.rows**exponent for o in seen)
        return rate * rows**exponent

    def evaluation_seconds(self, method: str, rows: int, fits: int) -> float | None:
        """Predicted seconds of a classifier: ``fits`` fits on ``rows`` rows, and the rest."""
        one = self.fit_seconds(method, rows)
        return None if one is None else EVALUATION_OVERHEAD * fits * one

    def time_limit(self, method: str, rows: int, fits: int) -> float | None:
        """A generous limit for a classifier, from its prediction (None: no prediction)."""
        predicted = self.evaluation_seconds(method, rows, fits)
        return None if predicted is None else max(MIN_LIMIT, LIMIT_FACTOR * predicted)


def _exponent(seen: list[Observation]) -> float:
    """How a method's fit time grows with rows: from fits at different row counts (medians of
    each count), kept between 1 (linear) and 2 (quadratic)."""
    by_rows: dict[int, list[float]] = {}
    for observation in seen:
        by_rows.setdefault(observation.rows, []).append(observation.seconds)
    if len(by_rows) < 2:
        return 1.0
    points = sorted((math.log(rows), math.log(max(median(times), 1e-4)))
                    for rows, times in by_rows.items())  # fmt: skip
    (x0, y0), (x1, y1) = points[0], points[-1]
    return min(2.0, max(1.0, (y1 - y0) / (x1 - x0)))
