"""Successive halving: rungs by the table's size, subsamples per rung, promotions of the top
1/ETA decided in the claim transaction, rankings by the highest rung, ensembles among full
evaluations; and the cost model that sets time limits and vetoes what cannot finish."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from atm_core.cost import CostModel, Observation
from atm_core.data.dataset import inspect_dataset
from atm_core.data.split import split_frames
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.fidelity import MIN_JUDGED_ROWS, at_rung
from atm_core.modelhub import ModelHub
from atm_core.modelhub.claims import Outcome
from atm_core.modelhub.history import search_state
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus
from atm_core.rungs import HALVING_FROM, MAX_RUNGS, MIN_RUNG_ROWS, rung_rows, top_rung
from tests.conftest import make_settings


@pytest.fixture(autouse=True)
def small_rungs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rungs from 2,500 rows on tables from 7,500 (30,000 by default), so that small test
    tables have two."""
    monkeypatch.setattr("atm_core.rungs.MIN_RUNG_ROWS", 2_500)
    monkeypatch.setattr("atm_core.rungs.HALVING_FROM", 7_500)


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    """12,000 rows, 3 classes: a training part of 8,400 rows, so two rungs (from 2,500)."""
    X, y = make_classification(
        n_samples=12_000, n_features=8, n_informative=5, n_classes=3, random_state=0
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    frame["class"] = np.array(["a", "b", "c"])[y]
    path = tmp_path_factory.mktemp("data") / "large.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_rungs_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("atm_core.rungs.MIN_RUNG_ROWS", MIN_RUNG_ROWS)
    monkeypatch.setattr("atm_core.rungs.HALVING_FROM", HALVING_FROM)
    assert (MIN_RUNG_ROWS, HALVING_FROM) == (10_000, 30_000)
    assert top_rung(29_999) == 0  # small: straight to the full evaluation
    assert top_rung(30_000) == 1
    assert top_rung(89_999) == 1 and top_rung(90_000) == 2
    assert top_rung(10**6) == 4  # rung 0: 12,346 rows
    assert top_rung(10**8) == MAX_RUNGS - 1
    assert top_rung(10**7, "full") == 0
    assert [rung_rows(r, 2, 90_000) for r in range(3)] == [10_000, 30_000, 90_000]
    for rows in (30_000, 54_000, 150_000, 254_654, 800_000):  # rung 0 in [10,000, 30,000)
        assert 10_000 <= rung_rows(0, top_rung(rows), rows) < 30_000


def test_a_rung_is_a_stratified_subsample_laid_out_for_a_holdout(large_csv: str) -> None:
    info, train, test = inspect_dataset(large_csv)
    data = split_frames(train, test, "class", info.schema, 0, 0.3)
    low = at_rung(data, 0, 1, seed=0)
    assert rung_rows(0, 1, 8_400) == 2_800
    # 80 % of them fitted; judged on 20 %, but on no fewer than MIN_JUDGED_ROWS
    assert low.n_folds == 0 and low.n_fit == 2_240
    assert len(low.y_train) == 2_240 + MIN_JUDGED_ROWS
    fitted = set(map(tuple, low.X_train.iloc[: low.n_fit].to_numpy()))
    assert not fitted & set(map(tuple, low.X_train.iloc[low.n_fit :].to_numpy()))
    shares = low.y_train.value_counts(normalize=True)
    assert (abs(shares - data.y_train.value_counts(normalize=True)) < 0.01).all()
    # below the top, the test score comes from as many stratified test rows as it trains on
    assert len(low.y_test) == 2_800 < len(data.y_test)
    assert (abs(low.y_test.value_counts(normalize=True)
                - data.y_test.value_counts(normalize=True)) < 0.01).all()  # fmt: skip
    assert data.X_test.merge(low.X_test).shape[0] == 2_800  # rows of the test part
    again = at_rung(data, 0, 1, seed=0)
    assert low.X_train.equals(again.X_train)  # the same rows for every configuration
    assert at_rung(data, 1, 1, seed=0) is data


def finish(hub: ModelHub, claim, score: float) -> None:
    outcome = Outcome("m", "0" * 64, "x", score, 0.0, score, fit_seconds=0.1, fit_rows=100)
    assert hub.complete_classifier(claim, outcome)


def test_the_top_third_of_a_rung_is_promoted_once_best_first(hub: ModelHub, large_csv: str) -> None:
    datarun = enter_data(hub, DatarunRequest(large_csv, methods=["dt"], budget=30)).dataruns[0]
    assert datarun.top_rung == 1
    partition = hub.hyperpartitions(datarun.id)[0].id
    scores = [0.5, 0.9, 0.7, 0.8, 0.6, 0.95]
    claims = [hub.reserve(datarun.id, partition, {"max_depth": d}) for d in range(6)]
    for claim, score in zip(claims, scores, strict=True):
        finish(hub, claim, score)
    first = hub.promote(datarun.id)
    second = hub.promote(datarun.id)
    assert hub.promote(datarun.id) is None  # 6 finished: a quota of 2
    promoted = [hub.get_classifier(c.classifier_id) for c in (first, second)]
    assert [p.rung for p in promoted] == [1, 1] and (first.rung, second.rung) == (1, 1)
    by_score = {c.classifier_id: s for c, s in zip(claims, scores, strict=True)}
    origins = {c.config_key: c.id for c in hub.classifiers(datarun.id) if c.rung == 0}
    assert [by_score[origins[p.config_key]] for p in promoted] == [0.95, 0.9]
    assert promoted[0].hyperparameters_values == {"max_depth": 5}
    # a third more at rung 0 raises the quota: the next best moves up
    for depth in (6, 7, 8):
        finish(hub, hub.reserve(datarun.id, partition, {"max_depth": depth}), 0.1)
    third = hub.get_classifier(hub.promote(datarun.id).classifier_id)
    assert by_score[origins[third.config_key]] == 0.8


def test_configurations_compete_for_promotion_within_their_method(
    hub: ModelHub, large_csv: str
) -> None:
    """Each method's top third moves up, however the methods rank against each other at a
    low rung (boosting gains more from rows than a tree does)."""
    request = DatarunRequest(large_csv, methods=["dt", "logreg"], budget=30)
    datarun = enter_data(hub, request).dataruns[0]
    partitions = {hp.method: hp.id for hp in hub.hyperpartitions(datarun.id)}
    scores = {"dt": [0.9, 0.95, 0.92], "logreg": [0.6, 0.7, 0.5]}
    for method, method_scores in scores.items():
        for i, score in enumerate(method_scores):
            values = {"max_depth": i + 2} if method == "dt" else {"C": 10.0**i}
            finish(hub, hub.reserve(datarun.id, partitions[method], values), score)
    promoted = [hub.promote(datarun.id), hub.promote(datarun.id)]
    assert hub.promote(datarun.id) is None  # 3 finished per method: a quota of 1 each
    assert sorted(c.method for c in promoted) == ["dt", "logreg"]
    by_method = {c.method: hub.get_classifier(c.classifier_id) for c in promoted}
    assert by_method["dt"].hyperparameters_values == {"max_depth": 3}  # dt's best, 0.95
    assert by_method["logreg"].hyperparameters_values == {"C": 10.0}  # logreg's best, 0.7


def test_the_search_learns_what_each_method_gains_from_the_rung_above(
    hub: ModelHub, large_csv: str
) -> None:
    """The promoted dt scores 0.01 above its rung-0 score, the promoted logreg 0.05: the
    search state hands each method's partitions its gain, shrunk towards the mean (0.03)."""
    request = DatarunRequest(large_csv, methods=["dt", "logreg"], budget=30)
    datarun = enter_data(hub, request).dataruns[0]
    partitions = {hp.method: hp.id for hp in hub.hyperpartitions(datarun.id)}
    for method, best in (("dt", 0.95), ("logreg", 0.70)):
        for i, score in enumerate((best - 0.1, best, best - 0.2)):
            values = {"max_depth": i + 2} if method == "dt" else {"C": 10.0**i}
            finish(hub, hub.reserve(datarun.id, partitions[method], values), score)
    assert {p.rung_gain for p in search_state(hub, hub.get_datarun(datarun.id)).partitions} == {0}
    for _ in range(2):
        claim = hub.promote(datarun.id)
        finish(hub, claim, {"dt": 0.96, "logreg": 0.75}[claim.method])
    state = search_state(hub, hub.get_datarun(datarun.id))
    gains = {p.spec.method: p.rung_gain for p in state.partitions}
    assert gains == pytest.approx({"dt": 0.02, "logreg": 0.04})
    assert sum(len(p.trials) for p in state.partitions) == 6  # the rung-0 configurations


def test_the_leader_of_a_rung_moves_up_before_its_method_has_eta_there(
    hub: ModelHub, large_csv: str
) -> None:
    """One configuration per method finished at rung 0 (quotas of 0): the best of them, of
    either method, moves up at once; the other waits for its method's top third."""
    request = DatarunRequest(large_csv, methods=["dt", "logreg"], budget=30)
    datarun = enter_data(hub, request).dataruns[0]
    partitions = {hp.method: hp.id for hp in hub.hyperpartitions(datarun.id)}
    finish(hub, hub.reserve(datarun.id, partitions["dt"], {"max_depth": 3}), 0.8)
    assert hub.promote(datarun.id).method == "dt"  # the only one: it leads
    finish(hub, hub.reserve(datarun.id, partitions["logreg"], {"C": 1.0}), 0.9)
    leader = hub.promote(datarun.id)
    assert leader.method == "logreg" and leader.rung == 1
    assert hub.promote(datarun.id) is None  # both have moved up
    finish(hub, hub.reserve(datarun.id, partitions["dt"], {"max_depth": 4}), 0.85)
    assert hub.promote(datarun.id) is None  # not the leader, and 2 dt finished: a quota of 0


def test_concurrent_promoters_never_promote_twice(hub: ModelHub, large_csv: str, tmp_path: Path):
    datarun = enter_data(hub, DatarunRequest(large_csv, methods=["dt"], budget=60)).dataruns[0]
    partition = hub.hyperpartitions(datarun.id)[0].id
    for depth in range(30):
        finish(hub, hub.reserve(datarun.id, partition, {"max_depth": depth}), depth / 30)
    promoted: list[int] = []

    def promoter() -> None:
        own = ModelHub(settings=make_settings(hub.settings.database_url, tmp_path))
        try:
            while (claim := own.promote(datarun.id)) is not None:
                promoted.append(claim.classifier_id)
        finally:
            own.close()

    threads = [threading.Thread(target=promoter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(promoted) == len(set(promoted)) == 10  # the top third of 30, each once
    keys = Counter(c.config_key for c in hub.classifiers(datarun.id) if c.rung == 1)
    assert set(keys.values()) == {1}


def test_a_datarun_searches_by_rungs_and_ends_with_full_evaluations(
    sqlite_hub: ModelHub, large_csv: str
) -> None:
    request = DatarunRequest(large_csv, methods=["logreg", "dt"], budget=16, metric="f1_macro")
    datarun_id = enter_data(sqlite_hub, request).dataruns[0].id
    Driver(sqlite_hub).run()
    classifiers = sqlite_hub.classifiers(datarun_id)
    assert len(classifiers) == 16
    assert sqlite_hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    rungs = Counter(c.rung for c in classifiers if c.status == ClassifierStatus.COMPLETE)
    assert rungs[0] > rungs[1] >= 1
    low = next(c for c in classifiers if c.rung == 0 and c.status == ClassifierStatus.COMPLETE)
    full = next(c for c in classifiers if c.rung == 1)
    assert low.fit_rows == 2_240 and full.fit_rows == 8_400  # a holdout of 2,800; all rows
    assert low.predictions_location is None and full.predictions_location is not None
    board = sqlite_hub.leaderboard_rows(datarun_id)
    assert [row["rung"] for row in board] == sorted((row["rung"] for row in board), reverse=True)
    assert sqlite_hub.best_classifier(datarun_id).rung == 1
    ensemble = sqlite_hub.get_ensemble(datarun_id)
    assert all(sqlite_hub.get_classifier(i).rung == 1 for i in ensemble.weights)


def test_fidelity_full_evaluates_every_configuration_fully(
    sqlite_hub: ModelHub, large_csv: str
) -> None:
    request = DatarunRequest(large_csv, methods=["dt"], budget=3, fidelity="full")
    datarun = enter_data(sqlite_hub, request).dataruns[0]
    assert datarun.top_rung == 0 and datarun.fidelity == "full"
    Driver(sqlite_hub).run()
    assert {c.rung for c in sqlite_hub.classifiers(datarun.id)} == {0}
    assert {c.fit_rows for c in sqlite_hub.classifiers(datarun.id)} == {8_400}


def test_the_cost_model_learns_how_fits_grow_with_rows() -> None:
    costs = CostModel(
        [
            Observation("svm", 1.0, 1_000),
            Observation("svm", 4.2, 2_000),  # quadratic
            Observation("dt", 0.1, 1_000),
            Observation("dt", 0.3, 1_000),  # another configuration of the same method
        ]
    )
    assert costs.fit_seconds("svm", 4_000) == pytest.approx(16.0, rel=0.1)
    assert costs.fit_seconds("dt", 3_000) == pytest.approx(0.6)  # linear: one row count seen
    assert costs.fit_seconds("knn", 1_000) is None
    assert costs.time_limit("dt", 100, 1) == 10.0  # at least 10 s
    assert costs.time_limit("svm", 4_000, 4) == pytest.approx(10 * 1.3 * 4 * 16, rel=0.1)
