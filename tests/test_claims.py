"""Claims and leases on every dialect: exact budgets, token-guarded updates, reclaiming."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.modelhub import ModelHub
from atm_core.modelhub.claims import Claim, DuplicateProposal, Outcome
from atm_core.modelhub.claims import has_budget as budget_left
from atm_core.modelhub.models import (
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    ErrorKind,
    Hyperpartition,
    HyperpartitionStatus,
    utcnow,
)
from tests.conftest import make_settings


def new_datarun(hub: ModelHub, path: str, budget: int = 5, **options) -> tuple[int, list[int]]:
    """A dt datarun (two partitions with tunables); returns its id and partition ids."""
    options.setdefault("methods", ["dt"])
    datarun_id = enter_data(hub, DatarunRequest(path, budget=budget, **options)).dataruns[0].id
    return datarun_id, [hp.id for hp in hub.hyperpartitions(datarun_id)]


def other_worker(hub: ModelHub, tmp_path: Path, **overrides) -> ModelHub:
    """A second ModelHub on the same database: another worker process, as far as claims go."""
    return ModelHub(settings=make_settings(hub.settings.database_url, tmp_path, **overrides))


def outcome(cv: float = 0.8) -> Outcome:
    return Outcome("file:///m.pkl", "0" * 64, "file:///m.parquet", cv, 0.1, 0.7)


def has_budget(hub: ModelHub, datarun_id: int) -> bool:
    """Whether a classifier could still be reserved (an open datarun with budget left)."""
    with hub.transaction() as session:
        datarun = session.get(Datarun, datarun_id)
        return datarun.status != DatarunStatus.COMPLETE and budget_left(session, datarun)


def update_rows(hub: ModelHub, model: type, key: int, **values) -> None:
    with hub.transaction() as session:
        session.execute(update(model).where(model.id == key).values(**values))


def expire(hub: ModelHub, classifier_id: int) -> None:
    """What a dead worker leaves behind: a running row whose lease ran out."""
    update_rows(hub, Classifier, classifier_id, lease_expires_at=utcnow() - timedelta(minutes=1))


def run_in_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- reserving ------------------------------------------------------------------------------
def test_reserve_stops_exactly_at_the_budget(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget=3)
    claims = [hub.reserve(datarun_id, partition, {"max_depth": d}) for d in range(2, 6)]
    assert all(isinstance(c, Claim) for c in claims[:3])
    assert claims[3] is None
    assert not has_budget(hub, datarun_id)
    rows = hub.classifiers(datarun_id)
    assert len(rows) == 3
    for row, claim in zip(rows, claims, strict=False):
        assert row.status == ClassifierStatus.RUNNING
        assert row.claim_token == claim.token and claim.attempt == 1 and row.attempts == 1
        assert row.lease_expires_at > utcnow() + timedelta(seconds=20)  # lease_seconds=30
        assert row.host == hub.host and row.start_time is not None
    datarun = hub.get_datarun(datarun_id)
    assert datarun.status == DatarunStatus.RUNNING and datarun.start_time is not None


def test_reserve_refuses_a_configuration_twice(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (first, second) = new_datarun(hub, pollution_path)
    hub.reserve(datarun_id, first, {"max_depth": 3})
    with pytest.raises(DuplicateProposal):
        hub.reserve(datarun_id, first, {"max_depth": 3})
    assert hub.reserve(datarun_id, second, {"max_depth": 3}) is not None  # other partition
    assert len(hub.classifiers(datarun_id)) == 2


def test_reserve_refuses_closed_partitions_and_foreign_ones(
    hub: ModelHub, pollution_path: str
) -> None:
    datarun_id, (first, second) = new_datarun(hub, pollution_path)
    _, (foreign, _) = new_datarun(hub, pollution_path)
    update_rows(hub, Hyperpartition, first, status=HyperpartitionStatus.ERRORED)
    hub.mark_exhausted([second])
    for partition in (first, second):
        with pytest.raises(DuplicateProposal):
            hub.reserve(datarun_id, partition, {"max_depth": 3})
    with pytest.raises(ValueError, match="not part of datarun"):
        hub.reserve(datarun_id, foreign, {"max_depth": 3})
    assert hub.classifiers(datarun_id) == []


def test_reserve_on_a_complete_datarun_gives_nothing(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    update_rows(hub, Datarun, datarun_id, status=DatarunStatus.COMPLETE)
    assert hub.reserve(datarun_id, partition, {"max_depth": 3}) is None
    assert not has_budget(hub, datarun_id)


def test_concurrent_reservations_never_overshoot(
    hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    """Six workers racing for a budget of 7 get exactly 7 claims between them."""
    datarun_id, partitions = new_datarun(hub, pollution_path, budget=7)
    won: list[Claim] = []

    def worker(index: int) -> None:
        mine = other_worker(hub, tmp_path)
        try:
            for attempt in range(10):
                claim = mine.reserve(
                    datarun_id, partitions[attempt % 2], {"max_depth": 100 * index + attempt}
                )
                if claim is None:
                    return
                won.append(claim)
        finally:
            mine.close()

    run_in_threads(6, worker)
    assert len(won) == 7
    assert len({c.classifier_id for c in won}) == 7
    assert len(hub.classifiers(datarun_id)) == 7


# -- leases, completion, failure ------------------------------------------------------------
def test_complete_records_the_outcome_once(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    assert hub.complete_classifier(claim, outcome(0.8))
    row = hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.COMPLETE
    assert (row.cv_judgment_metric, row.cv_judgment_metric_stdev) == (0.8, 0.1)
    assert row.test_judgment_metric == 0.7
    assert row.model_location == "file:///m.pkl" and row.metrics_location == "file:///m.parquet"
    assert row.model_sha256 == "0" * 64
    assert row.lease_expires_at is None and row.end_time is not None
    # Completing again (a retry whose first acknowledgement was lost) reports the recorded
    # success and changes nothing; nothing else can touch a finished classifier any more.
    assert hub.complete_classifier(claim, outcome(0.1))
    assert not hub.renew_lease(claim)
    assert not hub.fail_classifier(claim, "late error")
    assert not hub.release(claim)
    assert hub.get_classifier(claim.classifier_id).cv_judgment_metric == 0.8


def test_recording_an_error_twice_is_one_error(hub: ModelHub, pollution_path: str) -> None:
    """A retried ``fail`` (lost acknowledgement) is recognised, not refused or doubled."""
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    assert hub.fail_classifier(claim, "first")
    assert hub.fail_classifier(claim, "second")
    row = hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.ERRORED and row.error_message == "first"
    assert not hub.complete_classifier(claim, outcome(0.5))


def test_infrastructure_errors_do_not_count_against_the_partition(
    hub: ModelHub, pollution_path: str
) -> None:
    """An object-store outage errors classifiers, but says nothing about their partition."""
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget=20)
    for depth in range(2, 8):
        claim = hub.reserve(datarun_id, partition, {"max_depth": depth})
        assert hub.fail_classifier(claim, "store down", ErrorKind.INFRASTRUCTURE)
    assert hub.get_hyperpartition(partition).status == HyperpartitionStatus.INCOMPLETE
    kinds = {c.error_kind for c in hub.classifiers(datarun_id)}
    assert kinds == {ErrorKind.INFRASTRUCTURE}
    for depth in range(8, 12):
        claim = hub.reserve(datarun_id, partition, {"max_depth": depth})
        assert hub.fail_classifier(claim, "ValueError: bad depth")
    assert hub.get_hyperpartition(partition).status == HyperpartitionStatus.ERRORED


def test_a_wrong_token_changes_nothing(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    forged = Claim(claim.classifier_id, datarun_id, "not-the-token", 1)
    assert not hub.renew_lease(forged)
    assert not hub.complete_classifier(forged, outcome())
    assert not hub.fail_classifier(forged, "boom")
    assert not hub.release(forged)
    row = hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.RUNNING and row.claim_token == claim.token


def test_renew_lease_extends_the_expiry(hub: ModelHub, pollution_path: str, tmp_path: Path) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    before = hub.get_classifier(claim.classifier_id).lease_expires_at
    long_lease = other_worker(hub, tmp_path, lease_seconds=3600)
    try:
        assert long_lease.renew_lease(claim)
    finally:
        long_lease.close()
    after = hub.get_classifier(claim.classifier_id).lease_expires_at
    assert after > before + timedelta(minutes=50)


def test_fail_records_the_error_and_closes_the_partition_after_too_many(
    hub: ModelHub, pollution_path: str
) -> None:
    """max_hyperpartition_errors=3: the 4th errored classifier marks its partition errored."""
    datarun_id, (partition, other) = new_datarun(hub, pollution_path, budget=10)
    for depth in range(2, 6):
        claim = hub.reserve(datarun_id, partition, {"max_depth": depth})
        status = {hp.id: hp.status for hp in hub.hyperpartitions(datarun_id)}[partition]
        assert status == HyperpartitionStatus.INCOMPLETE
        assert hub.fail_classifier(claim, f"Traceback...\nValueError: depth {depth}")
    row = hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.ERRORED
    assert row.error_message.endswith("ValueError: depth 5")
    assert row.end_time is not None and row.lease_expires_at is None
    statuses = {hp.id: hp.status for hp in hub.hyperpartitions(datarun_id)}
    assert statuses == {
        partition: HyperpartitionStatus.ERRORED,
        other: HyperpartitionStatus.INCOMPLETE,
    }


def test_long_error_messages_are_kept_whole(hub: ModelHub, pollution_path: str) -> None:
    """Tracebacks can exceed 64 KB (MySQL TEXT); the whole message must survive."""
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    message = "Traceback (most recent call last):\n" + "x" * 100_000 + "\nValueError: end"
    assert hub.fail_classifier(claim, message)
    assert hub.get_classifier(claim.classifier_id).error_message == message


def test_release_gives_the_slot_back(hub: ModelHub, pollution_path: str) -> None:
    """Ctrl+C: the interrupted classifier's row is deleted, its budget and config free again."""
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget=1)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    assert not has_budget(hub, datarun_id)
    assert hub.release(claim)
    assert hub.classifiers(datarun_id) == []
    assert has_budget(hub, datarun_id)
    assert hub.reserve(datarun_id, partition, {"max_depth": 3}) is not None


# -- reclaiming expired leases --------------------------------------------------------------
def test_expired_lease_is_reclaimed_with_a_new_token(
    hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    lost = hub.reserve(datarun_id, partition, {"max_depth": 3})
    survivor = other_worker(hub, tmp_path)
    try:
        assert survivor.reclaim_expired(datarun_id) is None  # lease still valid
        expire(hub, lost.classifier_id)
        taken = survivor.reclaim_expired(datarun_id)
        assert taken is not None
        assert taken.classifier_id == lost.classifier_id
        assert taken.token != lost.token and taken.attempt == 2
        row = hub.get_classifier(lost.classifier_id)
        assert row.attempts == 2 and row.status == ClassifierStatus.RUNNING
        assert row.lease_expires_at > utcnow()
        assert row.hyperparameters_values == {"max_depth": 3}  # the same configuration
        # The worker that lost its lease can no longer write anything.
        assert not hub.renew_lease(lost)
        assert not hub.complete_classifier(lost, outcome(0.99))
        assert not hub.fail_classifier(lost, "late")
        assert not hub.release(lost)
        assert survivor.complete_classifier(taken, outcome(0.5))
    finally:
        survivor.close()
    assert hub.get_classifier(lost.classifier_id).cv_judgment_metric == 0.5
    assert len(hub.classifiers(datarun_id)) == 1


def test_worker_lost_after_max_attempts(hub: ModelHub, pollution_path: str, tmp_path: Path) -> None:
    """max_attempts=2: the second expiry records the classifier errored "worker lost"."""
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    expire(hub, claim.classifier_id)
    retry = hub.reclaim_expired(datarun_id)
    assert retry is not None and retry.attempt == 2
    expire(hub, claim.classifier_id)
    assert hub.reclaim_expired(datarun_id) is None
    row = hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.ERRORED
    assert row.error_message.startswith("worker lost")
    assert "2 attempts" in row.error_message
    assert hub.running_count(datarun_id) == 0


def test_reclaim_skips_to_the_next_expired_after_recording_a_loss(
    hub: ModelHub, pollution_path: str
) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    exhausted = hub.reserve(datarun_id, partition, {"max_depth": 3})
    fresh = hub.reserve(datarun_id, partition, {"max_depth": 4})
    update_rows(hub, Classifier, exhausted.classifier_id, attempts=2)
    expire(hub, exhausted.classifier_id)
    expire(hub, fresh.classifier_id)
    taken = hub.reclaim_expired(datarun_id)
    assert taken is not None and taken.classifier_id == fresh.classifier_id
    assert hub.get_classifier(exhausted.classifier_id).status == ClassifierStatus.ERRORED


def test_expired_lease_after_the_walltime_is_not_rerun(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget_type="walltime", budget=1)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    update_rows(hub, Datarun, datarun_id, start_time=utcnow() - timedelta(minutes=2))
    expire(hub, claim.classifier_id)
    assert hub.reclaim_expired(datarun_id) is None
    row = hub.get_classifier(claim.classifier_id)
    assert row.status == ClassifierStatus.ERRORED and "time budget" in row.error_message


def test_only_one_of_many_reclaimers_wins(
    hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path)
    claim = hub.reserve(datarun_id, partition, {"max_depth": 3})
    expire(hub, claim.classifier_id)
    taken: list[Claim] = []

    def reclaimer(_: int) -> None:
        mine = other_worker(hub, tmp_path)
        try:
            result = mine.reclaim_expired(datarun_id)
            if result is not None:
                taken.append(result)
        finally:
            mine.close()

    run_in_threads(5, reclaimer)
    assert len(taken) == 1
    assert hub.get_classifier(claim.classifier_id).attempts == 2


# -- budgets and completion -----------------------------------------------------------------
def test_errored_classifiers_count_against_the_budget(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget=2)
    hub.fail_classifier(hub.reserve(datarun_id, partition, {"max_depth": 3}), "boom")
    hub.complete_classifier(hub.reserve(datarun_id, partition, {"max_depth": 4}), outcome())
    assert not has_budget(hub, datarun_id)


def test_time_budgets(hub: ModelHub, pollution_path: str) -> None:
    """A walltime budget counts from the datarun's start; a deadline stops any datarun."""
    walltime, (partition, _) = new_datarun(hub, pollution_path, budget_type="walltime", budget=2)
    assert hub.reserve(walltime, partition, {"max_depth": 3}) is not None
    assert has_budget(hub, walltime)
    update_rows(hub, Datarun, walltime, start_time=utcnow() - timedelta(minutes=3))
    assert not has_budget(hub, walltime)
    assert hub.reserve(walltime, partition, {"max_depth": 4}) is None

    counted, (partition, _) = new_datarun(hub, pollution_path, budget=50)
    update_rows(hub, Datarun, counted, deadline=utcnow() - timedelta(seconds=5))
    assert not has_budget(hub, counted)
    assert hub.reserve(counted, partition, {"max_depth": 3}) is None


def test_finish_if_done_waits_for_running_work_and_completes_once(
    hub: ModelHub, pollution_path: str
) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget=2)
    first = hub.reserve(datarun_id, partition, {"max_depth": 3})
    assert not hub.finish_if_done(datarun_id)  # budget left
    second = hub.reserve(datarun_id, partition, {"max_depth": 4})
    hub.complete_classifier(first, outcome())
    assert not hub.finish_if_done(datarun_id)  # one still running
    hub.complete_classifier(second, outcome())
    assert hub.finish_if_done(datarun_id)
    assert not hub.finish_if_done(datarun_id)
    datarun = hub.get_datarun(datarun_id)
    assert datarun.status == DatarunStatus.COMPLETE and datarun.end_time is not None
    assert hub.dataruns_by_priority() == []


def test_finish_if_done_when_no_partition_is_left(hub: ModelHub, pollution_path: str) -> None:
    datarun_id, partitions = new_datarun(hub, pollution_path, budget=100)
    hub.mark_exhausted(partitions[:1])
    assert not hub.finish_if_done(datarun_id)
    update_rows(hub, Hyperpartition, partitions[1], status=HyperpartitionStatus.ERRORED)
    hub.mark_exhausted(partitions[1:])  # errored stays errored
    statuses = [hp.status for hp in hub.hyperpartitions(datarun_id)]
    assert statuses == [HyperpartitionStatus.GRIDDING_DONE, HyperpartitionStatus.ERRORED]
    assert hub.finish_if_done(datarun_id)


def test_concurrent_finishers_complete_the_datarun_exactly_once(
    hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    datarun_id, (partition, _) = new_datarun(hub, pollution_path, budget=1)
    hub.complete_classifier(hub.reserve(datarun_id, partition, {"max_depth": 3}), outcome())
    finished: list[bool] = []

    def finisher(_: int) -> None:
        mine = other_worker(hub, tmp_path)
        try:
            finished.append(mine.finish_if_done(datarun_id))
        finally:
            mine.close()

    run_in_threads(6, finisher)
    assert sorted(finished) == [False] * 5 + [True]
