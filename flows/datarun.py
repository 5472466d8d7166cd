"""The ``atm`` flow: one datarun in four steps — ingest, enumerate, search, finalize.

``prefect deployment run atm/datarun --param train_path=...`` runs it on a work pool;
``atm run --train-path ...`` runs it in-process on Prefect's embedded (ephemeral) server.
Several flow runs may share a datarun (pass ``datarun_id``): the ModelHub is the only
coordination point, so together they spend exactly the budget.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run

from atm_core.dataruns import DatarunRequest
from atm_core.modelhub.claims import Claim
from atm_core.settings import Settings, load_settings
from atm_core.worker import ClassifierResult, next_claim, record_failure
from flows.publish import ProgressArtifact, publish_results
from flows.runners import make_task_runner
from flows.tasks import (
    enumerate_hyperpartitions,
    finalize_datarun,
    hub_for,
    ingest_dataset,
    train_classifier,
)

DEFAULTS = DatarunRequest(train_path="")


@flow(name="atm", task_runner=make_task_runner(), log_prints=True)
def datarun(
    train_path: str | None = None,
    class_column: str = DEFAULTS.class_column,
    test_path: str | None = None,
    methods: list[str] | None = None,
    priority: int = DEFAULTS.priority,
    budget_type: str = DEFAULTS.budget_type,
    budget: int = DEFAULTS.budget,
    deadline: str | datetime | None = None,
    metric: str = DEFAULTS.metric,
    score_target: str = DEFAULTS.score_target,
    tuner: str = DEFAULTS.tuner,
    selector: str = DEFAULTS.selector,
    r_minimum: int = DEFAULTS.r_minimum,
    k_window: int = DEFAULTS.k_window,
    gridding: int = DEFAULTS.gridding,
    seed: int = DEFAULTS.seed,
    time_limit: float | None = DEFAULTS.time_limit,
    warm_start: bool = DEFAULTS.warm_start,
    cv_folds: int | None = DEFAULTS.cv_folds,
    test_size: float = DEFAULTS.test_size,
    description: str | None = None,
    datarun_id: int | None = None,
    n_parallel: int = 1,
    run_key: str | None = None,
    database_url: str | None = None,
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Search classifiers for a dataset (or continue datarun ``datarun_id``); returns the best.

    ``run_key`` names the datarun this run creates; a retried flow run (same key) continues it.
    """
    settings = load_settings(database_url=database_url, artifact_root=artifact_root)
    if datarun_id is None:
        if not train_path:
            raise ValueError("give train_path (a new datarun) or datarun_id (an existing one)")
        request = DatarunRequest(
            train_path=train_path,
            class_column=class_column,
            test_path=test_path,
            methods=None if methods is None else list(methods),
            priority=priority,
            budget_type=budget_type,
            budget=budget,
            deadline=deadline,
            metric=metric,
            score_target=score_target,
            tuner=tuner,
            selector=selector,
            r_minimum=r_minimum,
            k_window=k_window,
            gridding=gridding,
            seed=seed,
            time_limit=time_limit,
            warm_start=warm_start,
            cv_folds=cv_folds,
            test_size=test_size,
            description=description,
        )
        ingested = ingest_dataset(settings, request)
        entered = enumerate_hyperpartitions(
            settings, ingested, run_key=run_key or f"prefect:{flow_run.id}"
        )
        datarun_id = entered.dataruns[0].id
    search(settings, datarun_id, max(1, n_parallel))
    summary = finalize_datarun(settings, datarun_id)
    publish_results(hub_for(settings), summary)
    return summary.to_dict()


def search(settings: Settings, datarun_id: int, n_parallel: int) -> None:
    """Keep up to ``n_parallel`` classifier tasks in flight until the datarun has no work left.

    Every proposal is made from the ModelHub's current history and reserved there before its
    task starts. With nothing to claim while others (other flow runs, CLI workers) still
    train, wait: their classifiers finish, or their leases expire and are reclaimed here.
    """
    hub = hub_for(settings)
    logger = get_run_logger()
    progress = ProgressArtifact(hub, datarun_id)
    progress.update()
    in_flight: dict[PrefectFuture[ClassifierResult], Claim] = {}
    while True:
        while len(in_flight) < n_parallel and (claim := next_claim(hub, datarun_id)) is not None:
            in_flight[train_classifier.submit(settings, claim)] = claim
        if not in_flight:
            if not hub.running_count(datarun_id):
                progress.update(force=True)
                return  # finalize completes the datarun
            time.sleep(settings.poll_seconds)
            continue
        finished = next(as_completed(list(in_flight)))
        claim = in_flight.pop(finished)
        try:
            finished.result()
        except Exception as exc:  # retries are spent: record it, never as a success
            logger.error("classifier %d failed: %r", claim.classifier_id, exc)
            record_failure(hub, claim, exc)
        progress.update()
