"""The final model: when the search ends, the ensemble's members (or the best classifier) are
refitted on every labelled row and stored beside their search-time models; loading, predicting
and exporting use them by default; the recorded scores stay those measured before."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from atm_core import cli
from atm_core.data.dataset import FeatureSchema
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.estimators import CalibratedClassifier
from atm_core.modelhub import ModelHub
from atm_core.modelhub.claims import time_limit
from atm_core.modelhub.models import Classifier
from atm_core.pipeline import build_pipeline, refit_cost
from atm_core.results import (
    FINALIZE_SECONDS,
    MAX_REFIT_SHARE,
    final_candidates,
    refit_final_models,
    refit_model,
    refit_reserve,
    refit_seconds,
)


def n_fitted(model) -> int:
    return int(model.named_steps["estimator"].tree_.n_node_samples[0])


def finished(hub: ModelHub, path: str, **options) -> int:
    datarun_id = enter_data(hub, DatarunRequest(path, methods=["dt"], **options)).dataruns[0].id
    Driver(hub, datarun_ids=[datarun_id]).run()
    return datarun_id


def test_the_final_models_are_fitted_on_every_row_and_used_by_default(
    sqlite_hub: ModelHub, iris_path: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    datarun_id = finished(sqlite_hub, iris_path, budget=6)
    members = final_candidates(sqlite_hub, datarun_id)
    assert members
    for member in members:
        assert member.final_model_location.endswith(f"classifier-{member.id}/final/model.pkl")
        assert n_fitted(sqlite_hub.load_model(member.id)) == 150  # every labelled row
        assert n_fitted(sqlite_hub.load_model(member.id, final=False)) < 150  # the training part
    # scores stay those of the search-time models; others have no final model
    others = [c for c in sqlite_hub.classifiers(datarun_id, status="complete")
              if c.id not in {m.id for m in members}]  # fmt: skip
    assert all(c.final_model_location is None for c in others)
    ensemble = sqlite_hub.load_ensemble(datarun_id)
    assert all(n_fitted(model) == 150 for model, _ in ensemble.members)
    assert refit_final_models(sqlite_hub, datarun_id) == []  # done once

    # the CLI: predictions and exports of the final model, or of the search-time one on request
    monkeypatch.setenv("COLUMNS", "200")
    flags = ["--database-url", sqlite_hub.settings.database_url,
             "--artifact-root", sqlite_hub.settings.artifact_root]  # fmt: skip
    best = members[0].id
    for extra, rows in (([], 150), (["--search-time"], None)):
        target = tmp_path / f"model{len(extra)}.pkl"
        assert cli.main(["export", "--classifier-id", str(best), *extra, *flags, str(target)]) == 0
        exported = pickle.loads(target.read_bytes())
        assert (n_fitted(exported) == 150) == (rows == 150)
    capsys.readouterr()
    assert cli.main(["predict", "--ensemble", str(datarun_id), *flags, iris_path]) == 0
    frame = pd.read_csv(iris_path)
    assert capsys.readouterr().out.split() == [
        str(label) for label in ensemble.predict(frame.drop(columns=["class"]))
    ]


def test_no_refit_keeps_the_search_time_models(sqlite_hub: ModelHub, iris_path: str) -> None:
    datarun_id = finished(sqlite_hub, iris_path, budget=3, refit=False)
    assert all(c.final_model_location is None for c in sqlite_hub.classifiers(datarun_id))
    best = sqlite_hub.best_classifier(datarun_id)
    assert n_fitted(sqlite_hub.load_model(best.id)) < 150


def test_a_walltime_datarun_keeps_time_for_its_refit(sqlite_hub: ModelHub, iris_path: str) -> None:
    """Claims carry the datarun's end less the refit's estimated time; the search stops there,
    and the refit is done before the end."""
    datarun_id = finished(sqlite_hub, iris_path, budget_type="walltime", budget=0.1)
    datarun = sqlite_hub.get_datarun(datarun_id)
    end = time_limit(datarun)
    best = sqlite_hub.best_classifier(datarun_id)
    assert best.fit_seconds > 0 and best.fit_rows == 105  # 70 % of 150 rows
    assert refit_reserve(sqlite_hub, datarun) > best.fit_seconds  # scaled to 150 rows, + margin
    assert best.final_model_location is not None
    assert datarun.end_time <= end


def test_a_refit_longer_than_half_the_budget_is_not_reserved_for(
    sqlite_hub: ModelHub, iris_path: str
) -> None:
    """A rung-0 fit scaled to every row can exceed what is left of a short budget: the search
    keeps its time then, instead of ending at once."""
    datarun_id = finished(sqlite_hub, iris_path, budget_type="walltime", budget=0.1)
    datarun = sqlite_hub.get_datarun(datarun_id)
    best = sqlite_hub.best_classifier(datarun_id)
    whole = (time_limit(datarun) - datarun.start_time).total_seconds()

    def reserve_with(fit_seconds: float) -> float:
        with sqlite_hub.transaction() as session:
            session.get(Classifier, best.id).fit_seconds = fit_seconds
        return refit_reserve(sqlite_hub, datarun)

    assert reserve_with(MAX_REFIT_SHARE * whole) == FINALIZE_SECONDS  # scaled up: too long
    short = reserve_with(0.01 * whole)
    assert FINALIZE_SECONDS < short < FINALIZE_SECONDS + MAX_REFIT_SHARE * whole


# -- the refit's estimated time ---------------------------------------------------------------
class RowCountingSVC(SVC):
    """SVC recording the rows of each fit (class-wide), to count what a refit fits."""

    rows: ClassVar[list[int]] = []

    def fit(self, X, y, sample_weight=None):
        RowCountingSVC.rows.append(len(y))
        return super().fit(X, y, sample_weight)


class RowCountingLogisticRegression(LogisticRegression):
    rows: ClassVar[list[int]] = []

    def fit(self, X, y, sample_weight=None):
        RowCountingLogisticRegression.rows.append(len(y))
        return super().fit(X, y, sample_weight)


@pytest.mark.parametrize("counting", [RowCountingSVC, RowCountingLogisticRegression])
def test_the_refit_cost_is_what_a_refit_fits(counting) -> None:
    """In fits of the estimator on every row (rows summed over its fits): a calibrated SVC's
    plain fit also cross-validates for its maps, a logistic regression's fits once."""
    X, y = make_classification(n_samples=300, n_features=6, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    schema = FeatureSchema(numeric=tuple(frame.columns), categorical=())
    model = build_pipeline(f"tests.test_refit.{counting.__name__}", {}, schema)
    counting.rows.clear()
    model.fit(frame, y)
    assert refit_cost(model) == pytest.approx(sum(counting.rows) / len(y))
    assert (refit_cost(model) > 1) == (counting is RowCountingSVC)


SVC_RBF = {
    "name": "svc_rbf",
    "class": "sklearn.svm.SVC",
    "hyperparameters": {"C": {"type": "float", "range": [1.0]}},
    "root_hyperparameters": ["C"],
}


def test_a_calibrated_models_refit_estimate_is_in_proportion_to_its_refit(
    sqlite_hub: ModelHub, tmp_path: Path
) -> None:
    """Measured on 2,000 rows: the estimate from the search's fit against the refit's time (the
    fastest of 3). Leaving out the calibration's fits made it a third of the refit or less."""
    X, y = make_classification(n_samples=2000, n_features=10, flip_y=0.1, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(10)]).assign(**{"class": y})
    frame.to_csv(tmp_path / "data.csv", index=False)
    method = tmp_path / "svc_rbf.json"
    method.write_text(json.dumps(SVC_RBF))
    request = DatarunRequest(str(tmp_path / "data.csv"), methods=[str(method)], budget=1)
    request.refit = False
    datarun = enter_data(sqlite_hub, request).dataruns[0]
    Driver(sqlite_hub, datarun_ids=[datarun.id]).run()
    classifier = sqlite_hub.best_classifier(datarun.id)
    assert classifier.fit_rows == 1400
    estimate = refit_seconds(sqlite_hub, classifier, datarun)
    measured = []
    for _ in range(3):
        started = time.perf_counter()
        refit = refit_model(sqlite_hub, classifier.id)
        measured.append(time.perf_counter() - started)
    assert isinstance(refit.named_steps["estimator"], CalibratedClassifier)
    assert 0.5 < estimate / min(measured) < 4, (estimate, measured)


def test_a_boosting_refit_runs_the_iterations_its_search_stopped_at(
    sqlite_hub: ModelHub, tmp_path: Path
) -> None:
    """Early stopping is not repeated on every labelled row: the refit fits, with no
    validation split, the iteration count the search-time fit stopped at."""
    X, y = make_classification(n_samples=3_000, n_features=6, flip_y=0.2, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]).assign(label=y)
    path = tmp_path / "boost.csv"
    frame.to_csv(path, index=False)
    request = DatarunRequest(str(path), class_column="label", methods=["hgb"], budget=2)
    datarun_id = enter_data(sqlite_hub, request).dataruns[0].id
    Driver(sqlite_hub, datarun_ids=[datarun_id]).run()
    (member, *_) = final_candidates(sqlite_hub, datarun_id)
    searched = sqlite_hub.load_model(member.id, final=False).named_steps["estimator"]
    final = sqlite_hub.load_model(member.id).named_steps["estimator"]
    assert searched.do_early_stopping_ and searched.n_iter_ < 1000
    assert not final.do_early_stopping_
    assert final.max_iter == final.n_iter_ == searched.n_iter_
    assert refit_model(sqlite_hub, member.id).named_steps["estimator"].n_iter_ == searched.n_iter_
