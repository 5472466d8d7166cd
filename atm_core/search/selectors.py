"""Selectors: baytune's bandits over hyperpartitions, and custom ones by class path."""

from __future__ import annotations

import inspect
import math
from collections.abc import Hashable, Sequence
from statistics import mean, median
from typing import Any

from baytune.selection import (
    UCB1,
    BestKReward,
    BestKVelocity,
    HierarchicalByAlgorithm,
    PureBestKVelocity,
    RecentKVelocity,
    Uniform,
)
from baytune.selection import RecentKReward as _RecentKReward
from baytune.selection.selector import Selector
from scipy.stats import rankdata

from atm_core.search.plugins import is_custom, load_class
from atm_core.search.strategies import SELECTOR_NAMES, unknown_selector


class RecentKReward(_RecentKReward):
    """The mean reward of the K most recent scores, older ones counting as zero.

    baytune 0.5.0 keeps the *first* K of the chronological list instead, i.e. the oldest scores,
    contradicting its own docstring: a partition that started well and then failed kept winning.
    """

    def compute_rewards(self, scores: Sequence[float]) -> list[float]:
        scores = list(scores)
        recent = scores[-self.k :] if self.k > 0 else []
        return recent + [0.0] * (len(scores) - len(recent))


MIN_PULL = 0.05  # a configuration that failed at once still costs 1/20 of a mean one


class HierarchicalByCost(HierarchicalByAlgorithm):
    """Method first (as ``hieralg``), by a UCB1 that charges each method the seconds its
    configurations took and rewards it by how its best ones rank.

    ``hieralg`` counts a method's *scored* configurations: one whose fits take ten times longer
    gets as many, and one that keeps running into its time limit (no score) is chosen again and
    again. Here a method's pulls are the seconds its configurations cost (finished, stopped
    and in flight) in units of the datarun's mean configuration, so a datarun's time, not its
    configurations, is what the bandit shares out. Its reward is the mean percentile rank,
    among every score of the datarun, of its ``k`` best scores: a gap of 0.01 AUC between the
    best methods weighs as much as one of 0.1, and a method's poor configurations do not hide
    its good ones. Before ranking, a method's rung-0 scores are moved by ``gains``, what its
    configurations gained from the rungs above (:mod:`.rung_gains`): a method that rung 0
    undervalues is compared by what its configurations score in full. A method never tried
    comes first. Within the chosen method, a partition is picked by plain UCB1, as in
    ``hieralg``.
    """

    def __init__(
        self,
        choices: Sequence[Hashable],
        by_algorithm: dict[str, list[Hashable]],
        k: int = 3,
        seconds: dict[Hashable, list[float | None]] | None = None,
        gains: dict[Hashable, float] | None = None,
    ) -> None:
        super().__init__(choices, by_algorithm)
        self.k = max(int(k), 1)
        # per choice: what each of its configurations cost (None: in flight, or not recorded)
        self.seconds = seconds or {}
        # per choice: what its scores gain from rung 0 to the full evaluation
        self.gains = gains or {}

    def select(self, choice_scores: dict[Hashable, list[float]]) -> Hashable:
        methods = {
            method: [c for c in choices if c in choice_scores]
            for method, choices in self.by_algorithm.items()
        }
        methods = {method: choices for method, choices in methods.items() if choices}
        best = self._method(methods, choice_scores)
        return UCB1(choices=methods[best]).select(choice_scores)

    def _method(
        self, methods: dict[str, list[Hashable]], choice_scores: dict[Hashable, list[float]]
    ) -> str:
        full = {
            method: sorted(
                (s + self.gains.get(c, 0.0) for c in choices for s in choice_scores[c]),
                reverse=True,
            )
            for method, choices in methods.items()
        }
        every = [s for scores in full.values() for s in scores]
        rank = dict(zip(every, (rankdata(every) - 0.5) / max(len(every), 1), strict=True))
        charges = {m: self._charges(choices, choice_scores) for m, choices in methods.items()}
        known = [s for costs in charges.values() for s in costs if s is not None]
        unit = mean(known) if known and mean(known) > 0 else 1.0
        pulls, total = {}, 0
        for method, costs in charges.items():
            spent = [s for s in costs if s is not None]
            typical = median(spent) if spent else unit
            pulls[method] = sum(max(typical if s is None else s, MIN_PULL * unit) for s in costs)
            pulls[method] /= unit
            total += len(costs)

        def upper_bound(method: str) -> float:
            if not charges[method]:
                return math.inf  # never tried
            scores = full[method]
            reward = mean(rank[s] for s in scores[: self.k]) if scores else 0.0
            return reward + math.sqrt(2.0 * math.log(max(total, 1)) / pulls[method])

        return max(methods, key=upper_bound)

    def _charges(
        self, choices: list[Hashable], choice_scores: dict[Hashable, list[float]]
    ) -> list[float | None]:
        """The seconds of each configuration of ``choices``; without a record of them, one
        unknown per scored configuration."""
        charges: list[float | None] = []
        for choice in choices:
            recorded = self.seconds.get(choice)
            charges += recorded if recorded is not None else [None] * len(choice_scores[choice])
        return charges


SELECTORS: dict[str, type[Selector]] = {
    "uniform": Uniform,
    "ucb1": UCB1,
    "bestk": BestKReward,
    "bestkvel": BestKVelocity,
    "purebestkvel": PureBestKVelocity,
    "recentk": RecentKReward,
    "recentkvel": RecentKVelocity,
    "hieralg": HierarchicalByAlgorithm,
    "hiercost": HierarchicalByCost,
}
assert tuple(SELECTORS) == SELECTOR_NAMES  # the names enter_data checks without baytune


def resolve_selector(name: str) -> type[Selector]:
    """The selector class for a name or a ``file.py:Class`` path; a clear error otherwise."""
    if is_custom(name):
        return load_class(name, Selector, "selector")
    try:
        return SELECTORS[name]
    except KeyError:
        raise unknown_selector(name) from None


def make_selector(
    name: str,
    choices: Sequence[Hashable],
    k_window: int,
    by_algorithm: dict[str, list[Hashable]],
    seconds: dict[Hashable, list[float | None]] | None = None,
    gains: dict[Hashable, float] | None = None,
) -> Selector:
    """Instantiate a selector with the datarun's ``k_window``, the method grouping and, for a
    selector that takes them, the ``seconds`` each choice's configurations cost and the
    ``gains`` of its scores from rung 0 to the full evaluation."""
    cls = resolve_selector(name)
    parameters = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "k" in parameters:
        kwargs["k"] = k_window
    if "by_algorithm" in parameters:
        kwargs["by_algorithm"] = by_algorithm
    if "seconds" in parameters:
        kwargs["seconds"] = seconds
    if "gains" in parameters:
        kwargs["gains"] = gains
    return cls(list(choices), **kwargs)
