"""A datarun's search history as the proposal code sees it: its open hyperpartitions, every
configuration taken in them with its score, and whether budget is left, read together."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from atm_core.cost import CostModel, Observation
from atm_core.modelhub import claims
from atm_core.modelhub.hub import ModelHub
from atm_core.modelhub.models import (
    Classifier,
    Datarun,
    Hyperpartition,
    HyperpartitionStatus,
    utcnow,
)
from atm_core.modelhub.reads import judgment
from atm_core.search.catalogue import ParamSpec
from atm_core.search.hyperpartitions import HyperpartitionSpec
from atm_core.search.proposal import Partition, SearchConfig, Trial
from atm_core.search.rung_gains import RungScore, method_gains


@dataclass(frozen=True)
class SearchState:
    config: SearchConfig
    partitions: list[Partition]
    has_budget: bool
    costs: CostModel


def hyperpartition_spec(partition: Hyperpartition) -> HyperpartitionSpec:
    return HyperpartitionSpec(
        method=partition.method,
        estimator_class=partition.estimator_class,
        categoricals=tuple((name, value) for name, value in partition.categoricals),
        constants=tuple((name, value) for name, value in partition.constants),
        tunables=tuple(ParamSpec.from_json(spec) for spec in partition.tunables),
    )


def search_config(datarun: Datarun) -> SearchConfig:
    return SearchConfig(
        selector=datarun.selector,
        tuner=datarun.tuner,
        k_window=datarun.k_window,
        r_minimum=datarun.r_minimum,
        gridding=datarun.gridding,
        warm_start=datarun.warm_start,
        seed=datarun.seed,
    )


def search_state(hub: ModelHub, datarun: Datarun, reserve_seconds: float = 0.0) -> SearchState:
    """Open hyperpartitions with every configuration taken in them and its score (at rung 0,
    where every configuration starts: scores comparable across them), what the finished ones
    cost, what their method gains from the rungs above, and whether the datarun has budget
    left (its time budget counted as over ``reserve_seconds`` early), in one transaction
    (``datarun`` is the caller's copy)."""
    with hub.transaction() as session:
        partitions = {
            hp.id: Partition(hp.id, hyperpartition_spec(hp))
            for hp in session.scalars(
                select(Hyperpartition)
                .where(
                    Hyperpartition.datarun_id == datarun.id,
                    Hyperpartition.status == HyperpartitionStatus.INCOMPLETE,
                )
                .order_by(Hyperpartition.id)
            )
        }
        costs = CostModel()
        rung_scores: list[RungScore] = []
        for classifier in session.scalars(
            select(Classifier).where(Classifier.datarun_id == datarun.id).order_by(Classifier.id)
        ):
            if classifier.fit_seconds is not None and classifier.fit_rows:
                costs.observations.append(
                    Observation(
                        classifier.method or "", classifier.fit_seconds, classifier.fit_rows
                    )
                )
            score = judgment(classifier, datarun.score_target)
            if score is not None and not math.isfinite(score):
                score = None
            if score is not None:
                configuration = (classifier.hyperpartition_id, classifier.config_key)
                rung_scores.append(
                    RungScore(classifier.method or "", configuration, classifier.rung, score)
                )
            partition = partitions.get(classifier.hyperpartition_id)
            if partition is not None and classifier.rung == 0:
                partition.trials.append(
                    Trial(classifier.hyperparameters_values, score, classifier.evaluation_seconds)
                )
        gains = method_gains(rung_scores, datarun.top_rung)
        for partition in partitions.values():
            partition.rung_gain = gains.get(partition.spec.method, 0.0)
        reserved = utcnow() + timedelta(seconds=reserve_seconds)
        budget = claims.has_budget(session, datarun, reserved)
    return SearchState(search_config(datarun), list(partitions.values()), budget, costs)
