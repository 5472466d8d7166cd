"""Propose the next configuration of a datarun from its history.

The selector picks a hyperpartition from the judgment scores of its finished classifiers; the
tuner, fitted on that partition's history, picks the numeric values. Configurations already
tried (finished, errored or in flight elsewhere) are never proposed again, so a finite space
(a grid, a partition without tunables) is reported *exhausted* once every point is taken.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from baytune.tuning import StopTuning, UniformTuner
from baytune.tuning.tuners.base import BaseMetaModelTuner

from atm_core.errors import SearchError
from atm_core.search import DEFAULT_SELECTOR, DEFAULT_TUNER
from atm_core.search.hyperpartitions import HyperpartitionSpec
from atm_core.search.selectors import make_selector
from atm_core.search.space import TuningSpace
from atm_core.search.tuners import make_tuner

MODEL_DRAWS = 5  # proposals of the tuner that may hit taken configurations before overruling it
MAX_DRAWS = 100


@dataclass(frozen=True)
class SearchConfig:
    selector: str = DEFAULT_SELECTOR
    tuner: str = DEFAULT_TUNER
    k_window: int = 3
    r_minimum: int = 2
    gridding: int = 0
    warm_start: bool = False
    seed: int | None = None  # the datarun's: proposals repeat for the same history


@dataclass
class Trial:
    """A configuration already taken: ``score`` is None while running or when it errored;
    ``seconds``, what its evaluation cost, is None while running (or when not recorded)."""

    values: dict[str, Any]
    score: float | None = None
    seconds: float | None = None


@dataclass
class Partition:
    """A hyperpartition, the configurations taken in it and ``rung_gain``, what its method's
    scores are expected to gain from rung 0 to the full evaluation (:mod:`.rung_gains`)."""

    id: int
    spec: HyperpartitionSpec
    trials: list[Trial] = field(default_factory=list)
    rung_gain: float = 0.0


@dataclass(frozen=True)
class Proposal:
    hyperpartition_id: int
    values: dict[str, Any]


@dataclass
class ProposalOutcome:
    proposal: Proposal | None
    exhausted: list[int]


def propose(partitions: list[Partition], config: SearchConfig) -> ProposalOutcome:
    """Select a partition and tune it; ``proposal`` is None when every partition is exhausted.

    baytune's selectors and tuners draw from numpy's global generator: with a ``seed`` it is
    seeded from the seed and the history's size for this call and restored after it, so a
    datarun's proposals repeat run after run (one worker) without touching anyone else's draws.
    """
    if config.seed is None:
        return _propose(partitions, config)
    taken = sum(len(p.trials) for p in partitions)
    state = np.random.get_state()
    np.random.seed((config.seed, taken))
    try:
        return _propose(partitions, config)
    finally:
        np.random.set_state(state)


def _propose(partitions: list[Partition], config: SearchConfig) -> ProposalOutcome:
    spaces = {p.id: TuningSpace(p.spec.tunables, config.gridding) for p in partitions}
    exhausted = [
        p.id for p in partitions if _distinct_tried(p, spaces[p.id]) >= spaces[p.id].cardinality
    ]
    candidates = {p.id: p for p in partitions if p.id not in exhausted}
    while candidates:
        chosen = _untried_method(partitions, candidates) if config.warm_start else None
        if chosen is None:
            chosen = _select(list(candidates.values()), config)
        values = _tune(candidates[chosen], spaces[chosen], config)
        if values is None:
            exhausted.append(chosen)
            del candidates[chosen]
            continue
        spec = candidates[chosen].spec
        return ProposalOutcome(Proposal(chosen, spec.fixed_values() | values), exhausted)
    return ProposalOutcome(None, exhausted)


def _untried_method(partitions: list[Partition], candidates: dict[int, Partition]) -> int | None:
    """Warm start: the first open partition of the first method nothing was tried with yet.

    Methods come in the datarun's order and a partition's first configuration is its default
    (when the catalogue declares one), so a datarun starts with each method's default model.
    """
    tried = {p.spec.method for p in partitions if p.trials}
    for partition in partitions:
        if partition.spec.method not in tried and partition.id in candidates:
            return partition.id
    return None


def _distinct_tried(partition: Partition, space: TuningSpace) -> int:
    return len({space.key(trial.values) for trial in partition.trials})


def _scored(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.score is not None and math.isfinite(t.score)]


def _select(candidates: list[Partition], config: SearchConfig) -> int:
    if len(candidates) == 1:
        return candidates[0].id
    by_algorithm: dict[str, list[int]] = defaultdict(list)
    for partition in candidates:
        by_algorithm[partition.spec.method].append(partition.id)
    selector = make_selector(
        config.selector,
        [p.id for p in candidates],
        config.k_window,
        dict(by_algorithm),
        seconds={p.id: [t.seconds for t in p.trials] for p in candidates},
        gains={p.id: p.rung_gain for p in candidates},
    )
    choice_scores = {p.id: [t.score for t in _scored(p.trials)] for p in candidates}
    chosen = selector.select(choice_scores)
    if chosen not in choice_scores:
        raise SearchError(
            f"selector '{config.selector}' chose {chosen!r}, which is not a candidate"
        )
    return chosen


def _tune(partition: Partition, space: TuningSpace, config: SearchConfig) -> dict[str, Any] | None:
    if space.tunable is None:
        return {}
    if not partition.trials and (defaults := space.defaults()) is not None:
        return defaults
    tuner = make_tuner(config.tuner, space.tunable, config.r_minimum)
    scored = _scored(partition.trials)
    if isinstance(tuner, BaseMetaModelTuner) and len(scored) < tuner.min_trials:
        # r_minimum counts *scored* trials: baytune counts every trial it knows of (errored and
        # in-flight ones included below) and would then predict with a meta-model never fitted.
        tuner = UniformTuner(space.tunable)
    if scored:
        tuner.record([space.encode(t.values) for t in scored], [float(t.score) for t in scored])
    scored_ids = {id(t) for t in scored}
    unscored = [t for t in partition.trials if id(t) not in scored_ids]
    if unscored and hasattr(tuner, "_trials_set"):
        # baytune only de-duplicates against recorded trials; errored and in-flight ones count too.
        taken = space.tunable.transform([space.encode(t.values) for t in unscored])
        tuner._trials_set.update(map(tuple, taken))
    # baytune de-duplicates its own (log10) values; an int_exp axis rounds many of them to one
    # integer, so a model that keeps choosing a region already taken is overruled.
    tried = {space.key(t.values) for t in partition.trials}
    for attempt in range(MAX_DRAWS):
        if attempt == MODEL_DRAWS:
            untried = space.untried(tried)
            if untried is not None:
                return untried[np.random.randint(len(untried))] if untried else None
            taken_raw = getattr(tuner, "_trials_set", set())
            tuner = UniformTuner(space.tunable)
            tuner._trials_set.update(taken_raw)
        try:
            raw = tuner.propose(1)
        except StopTuning:
            return None
        values = space.decode(raw)
        if space.key(values) not in tried:
            return values
    return None  # only configurations already taken come out: count the partition as exhausted
