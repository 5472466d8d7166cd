"""Selectors: baytune's bandits over hyperpartitions, and custom ones by class path."""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
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


SELECTORS: dict[str, type[Selector]] = {
    "uniform": Uniform,
    "ucb1": UCB1,
    "bestk": BestKReward,
    "bestkvel": BestKVelocity,
    "purebestkvel": PureBestKVelocity,
    "recentk": RecentKReward,
    "recentkvel": RecentKVelocity,
    "hieralg": HierarchicalByAlgorithm,
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
) -> Selector:
    """Instantiate a selector with the datarun's ``k_window`` and the method grouping."""
    cls = resolve_selector(name)
    parameters = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "k" in parameters:
        kwargs["k"] = k_window
    if "by_algorithm" in parameters:
        kwargs["by_algorithm"] = by_algorithm
    return cls(list(choices), **kwargs)
