"""What each method gains from the rungs above rung 0, learned from configurations run at both.

Methods gain unequally from more rows: on gss_wrkstat (32,000 training rows) the random forests
rank first at rung 0 (10,800 rows) and boosting first on the whole training part. A selector
that compares methods by rung-0 scores alone keeps choosing the forests. A method's *gain* is
the expected change of a configuration's score from rung 0 to the top rung: the sum, over each
step r -> r + 1, of the mean change of the method's configurations scored at both rungs. With
few of them a step's gain is shrunk towards the step's mean over every method (PRIOR pseudo
configurations of it), and a method with none gets that mean: what every method gains alike
changes no comparison.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from statistics import mean
from typing import NamedTuple

PRIOR = 1.0  # pseudo configurations of the step's mean over every method


class RungScore(NamedTuple):
    method: str
    configuration: Hashable  # the same configuration at every rung
    rung: int
    score: float


def method_gains(scores: Iterable[RungScore], top: int) -> dict[str, float]:
    """Each method's expected score gain from rung 0 to rung ``top`` (0 for every method when
    ``top`` is 0: one rung)."""
    by_configuration: dict[tuple[str, Hashable], dict[int, float]] = defaultdict(dict)
    for method, configuration, rung, score in scores:
        by_configuration[method, configuration][rung] = score
    methods = {method for method, _ in by_configuration}
    gains = dict.fromkeys(methods, 0.0)
    for rung in range(top):
        changes: dict[str, list[float]] = defaultdict(list)
        for (method, _), at in by_configuration.items():
            if rung in at and rung + 1 in at:
                changes[method].append(at[rung + 1] - at[rung])
        every = [change for method_changes in changes.values() for change in method_changes]
        pooled = mean(every) if every else 0.0
        for method in methods:
            own = changes.get(method, [])
            gains[method] += (sum(own) + PRIOR * pooled) / (len(own) + PRIOR)
    return gains
