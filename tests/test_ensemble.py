"""Ensembles: held-out predictions stored per classifier, the greedy selection on them, the
ensemble a finished datarun records, and loading, predicting and exporting it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from atm_core import cli
from atm_core.data.dataset import FeatureSchema, inspect_dataset
from atm_core.data.split import load_train_test, split_frames
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.ensemble import EnsembleModel, select
from atm_core.errors import NotFoundError
from atm_core.evaluation import evaluate, prediction_frame
from atm_core.modelhub import ModelHub
from atm_core.modelhub.database import create_hub_engine, foreign_keys_off, migrate
from atm_core.modelhub.models import DatarunStatus
from atm_core.pipeline import build_pipeline
from atm_core.results import (
    build_ensemble,
    finalize,
    refit_ensemble,
    refit_model,
    refit_seconds,
    summarize,
)
from tests.conftest import make_settings

LOGREG = "sklearn.linear_model.LogisticRegression"


def _data(path: str, seed: int = 0, cv_folds: int | None = None):
    info, train, test = inspect_dataset(path)
    return split_frames(train, test, "class", info.schema, seed, 0.3, cv_folds), info.schema


# -- predictions stored by the evaluation --------------------------------------------------
def test_predictions_are_out_of_fold_for_every_training_row(pollution_path: str) -> None:
    data, schema = _data(pollution_path, seed=5)

    def make_model():
        return build_pipeline(LOGREG, {"C": 0.3, "_scale": True}, schema, random_state=0)

    predictions = evaluate(make_model, data, "roc_auc", seed=5).predictions
    cv = predictions[predictions["split"] == "cv"]
    test = predictions[predictions["split"] == "test"]
    assert cv["row"].tolist() == list(range(len(data.y_train)))
    assert test["row"].tolist() == list(range(len(data.y_test)))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=5)
    expected_fold = np.empty(len(data.y_train), int)
    for index, (_, valid) in enumerate(folds.split(data.X_train, data.y_train)):
        expected_fold[valid] = index
    assert cv["fold"].tolist() == expected_fold.tolist() and set(test["fold"]) == {-1}
    # each training row predicted by the fold model that never saw it
    independent = cross_val_predict(
        make_model(), data.X_train, data.y_train, cv=folds, method="predict_proba"
    )
    np.testing.assert_allclose(cv[["p0", "p1"]].to_numpy(), independent, rtol=1e-6)
    refit = make_model().fit(data.X_train, data.y_train)
    np.testing.assert_allclose(
        test[["p0", "p1"]].to_numpy(), refit.predict_proba(data.X_test), rtol=1e-6
    )
    classes = data.classes
    assert cv["truth"].tolist() == [classes.index(v) for v in data.y_train]
    assert test["truth"].tolist() == [classes.index(v) for v in data.y_test]


def test_a_holdout_stores_the_judged_rows_only(iris_path: str) -> None:
    data, schema = _data(iris_path, cv_folds=0)
    evaluation = evaluate(
        lambda: build_pipeline(LOGREG, {"C": 1.0}, schema, random_state=0), data, "accuracy", 0
    )
    cv = evaluation.predictions[evaluation.predictions["split"] == "cv"]
    assert cv["row"].tolist() == list(range(data.n_fit, len(data.y_train)))
    assert set(cv["fold"]) == {0}
    assert [c for c in cv.columns if c.startswith("p")] == ["p0", "p1", "p2"]
    np.testing.assert_allclose(cv[["p0", "p1", "p2"]].sum(axis=1), 1.0, rtol=1e-5)


def test_a_model_without_predict_proba_stores_no_predictions(pollution_path: str) -> None:
    data, schema = _data(pollution_path)
    # build_pipeline calibrates an SVC (tests/test_calibration.py); a bare one has no probabilities
    evaluation = evaluate(
        lambda: build_pipeline("sklearn.svm.SVC", {}, schema, random_state=0, calibrate=False),
        data,
        "roc_auc",
        0,
    )
    assert evaluation.predictions is None
    assert evaluation.cv_judgment_metric > 0  # still judged on its decision function


# -- the greedy selection --------------------------------------------------------------------
def _frame(cv_scores: np.ndarray, cv_truth: np.ndarray, test_scores, test_truth) -> pd.DataFrame:
    """A binary prediction frame with 4 folds, positive-class scores given."""
    data_like = type(
        "Data",
        (),
        {
            "classes": [0, 1],
            "y_train": pd.Series(cv_truth),
            "y_test": pd.Series(test_truth),
        },
    )
    rows = np.arange(len(cv_truth))
    to_two = lambda p: np.column_stack([1 - p, p])  # noqa: E731
    return prediction_frame(data_like, rows, rows % 4, to_two(cv_scores), to_two(test_scores))


def _noisy_views(seed: int = 0, n: int = 400):
    """Two models that each see a different half of the signal: averaged, they see all of it."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 2 * n)
    a_signal, b_signal = rng.normal(size=2 * n), rng.normal(size=2 * n)
    label_score = truth + 0.0
    first = 1 / (1 + np.exp(-(label_score + a_signal)))
    second = 1 / (1 + np.exp(-(label_score + b_signal)))
    return truth[:n], truth[n:], first, second, n


def _fold_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    folds = np.arange(len(truth)) % 4
    return float(np.mean([roc_auc_score(truth[folds == f], scores[folds == f]) for f in range(4)]))


def test_selection_averages_complementary_models_and_scores_like_a_classifier() -> None:
    cv_truth, test_truth, first, second, n = _noisy_views()
    frames = {
        7: _frame(first[:n], cv_truth, first[n:], test_truth),
        3: _frame(second[:n], cv_truth, second[n:], test_truth),
    }
    selection = select(frames, "roc_auc")
    assert set(selection.weights) == {7, 3}
    weights = np.array([selection.weights[7], selection.weights[3]], float)
    blend = (weights[0] * first + weights[1] * second) / weights.sum()
    # the CV score is computed as a classifier's: the mean over folds
    assert selection.cv_judgment_metric == pytest.approx(_fold_auc(cv_truth, blend[:n]))
    assert selection.cv_judgment_metric > max(
        _fold_auc(cv_truth, first[:n]), _fold_auc(cv_truth, second[:n])
    )
    # the test score comes from the test rows only, with the weights chosen on CV
    assert selection.test_judgment_metric == pytest.approx(roc_auc_score(test_truth, blend[n:]))


def test_selection_keeps_a_dominant_model_alone_and_prefers_the_better_ranked_on_ties() -> None:
    cv_truth, test_truth, first, _, n = _noisy_views(seed=1)
    noise = np.random.default_rng(2).uniform(size=2 * n)
    frames = {
        5: _frame(first[:n], cv_truth, first[n:], test_truth),
        9: _frame(noise[:n], cv_truth, noise[n:], test_truth),
        2: _frame(first[:n], cv_truth, first[n:], test_truth),  # a copy of 5, ranked after it
    }
    selection = select(frames, "roc_auc")
    assert list(selection.weights) == [5]
    assert selection.cv_judgment_metric == pytest.approx(_fold_auc(cv_truth, first[:n]))


def test_selection_refuses_predictions_of_other_rows() -> None:
    cv_truth, test_truth, first, second, n = _noisy_views()
    other = _frame(second[:n], cv_truth, second[n:], test_truth)
    other.loc[0, "row"] = 99_999
    frames = {1: _frame(first[:n], cv_truth, first[n:], test_truth), 2: other}
    with pytest.raises(ValueError, match="classifier 2's predictions cover other rows"):
        select(frames, "roc_auc")
    with pytest.raises(ValueError, match="at least one candidate"):
        select({}, "roc_auc")


def test_ensemble_model_averages_aligned_probabilities(iris_path: str) -> None:
    data, schema = _data(iris_path)
    strong = build_pipeline(LOGREG, {"C": 1.0}, schema).fit(data.X_train, data.y_train)
    keep = data.y_train != data.classes[0]  # a member that never saw the first class
    partial = build_pipeline(LOGREG, {"C": 0.1}, schema).fit(data.X_train[keep], data.y_train[keep])
    model = EnsembleModel([(strong, 3), (partial, 1)], data.classes)
    expected = strong.predict_proba(data.X_test) * 3
    expected[:, 1:] += partial.predict_proba(data.X_test)
    np.testing.assert_allclose(model.predict_proba(data.X_test), expected / 4)
    assert list(model.predict(data.X_test)) == [
        data.classes[i] for i in (expected / 4).argmax(axis=1)
    ]
    assert repr(model) == "EnsembleModel(3 x Pipeline, 1 x Pipeline)"
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleModel([], data.classes)


# -- a datarun's ensemble --------------------------------------------------------------------
def _finished_datarun(hub: ModelHub, path: str, budget: int = 10, metric: str = "roc_auc"):
    request = DatarunRequest(path, methods=["logreg", "knn", "dt"], budget=budget, metric=metric)
    datarun = enter_data(hub, request).dataruns[0]
    Driver(hub, datarun_ids=[datarun.id]).run()
    return hub.get_datarun(datarun.id)


def test_a_finished_datarun_records_its_ensemble_once(hub: ModelHub, pollution_path: str) -> None:
    datarun = _finished_datarun(hub, pollution_path)
    assert datarun.status == DatarunStatus.COMPLETE
    classifiers = hub.classifiers(datarun.id, status="complete")
    assert all(c.predictions_location.endswith("/predictions.parquet") for c in classifiers)
    ensemble = hub.get_ensemble(datarun.id)
    assert ensemble is not None
    candidates = {c.id for c in hub.ensemble_candidates(datarun.id, 20)}
    assert set(ensemble.weights) <= candidates and all(w >= 1 for w in ensemble.weights.values())
    # finalizing again (another worker, the flow) keeps the first ensemble
    finalize(hub, datarun.id)
    summary = summarize(hub, datarun.id)
    assert hub.get_ensemble(datarun.id).id == ensemble.id
    assert build_ensemble(hub, datarun.id).id == ensemble.id
    assert [m["classifier_id"] for m in summary.ensemble] == list(ensemble.weights)
    assert f"load_ensemble({datarun.id})" in summary.to_markdown()

    # the recorded test score is what the ensemble of search-time models scores on the
    # datarun's test part; the final ensemble's members were refitted on every row
    members = [hub.get_classifier(i) for i in ensemble.weights]
    assert all(m.final_model_location.endswith("/final/model.pkl") for m in members)
    dataset = hub.get_dataset(datarun.dataset_id)
    data = load_train_test(
        dataset.train_path,
        None,
        "class",
        FeatureSchema.from_json(dataset.feature_schema),
        dataset.content_hash,
        datarun.seed,
        datarun.test_size,
    )
    model = hub.load_ensemble(datarun.id, final=False)
    auc = roc_auc_score(data.y_test, model.predict_proba(data.X_test)[:, 1])
    assert ensemble.test_judgment_metric == pytest.approx(auc, abs=1e-3)
    best = hub.best_classifier(datarun.id)
    assert ensemble.cv_judgment_metric >= best.cv_judgment_metric - 1e-9


def test_no_ensemble_before_the_datarun_completes(sqlite_hub: ModelHub, pollution_path: str):
    datarun = enter_data(sqlite_hub, DatarunRequest(pollution_path, budget=2)).dataruns[0]
    assert build_ensemble(sqlite_hub, datarun.id) is None  # no classifier yet
    assert summarize(sqlite_hub, datarun.id).ensemble is None
    with pytest.raises(NotFoundError, match="has no ensemble"):
        sqlite_hub.load_ensemble(datarun.id)
    with pytest.raises(NotFoundError, match="no datarun with id 999"):
        sqlite_hub.ensemble(999)


def test_refit_ensemble_fits_members_on_all_rows_within_the_time_given(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    hub = sqlite_hub
    datarun = _finished_datarun(hub, pollution_path, budget=8)
    weights = hub.ensemble(datarun.id).weights
    X = pd.read_csv(pollution_path).drop(columns=["class"])

    def probabilities(members) -> list[np.ndarray]:
        return [model.predict_proba(X) for model, _ in members]

    refitted = refit_ensemble(hub, datarun.id)
    assert [weight for _, weight in refitted.members] == list(weights.values())
    expected = [(refit_model(hub, i), w) for i, w in weights.items()]  # seeded: the same fits
    for got, want in zip(probabilities(refitted.members), probabilities(expected), strict=True):
        np.testing.assert_allclose(got, want)
    # no time left: every member keeps its stored model (fitted on the training part)
    stored = refit_ensemble(hub, datarun.id, within_seconds=0)
    kept = [(hub.load_model(i), w) for i, w in weights.items()]
    for got, want in zip(probabilities(stored.members), probabilities(kept), strict=True):
        np.testing.assert_allclose(got, want)
    for classifier_id in weights:
        estimate = refit_seconds(hub, hub.get_classifier(classifier_id), datarun)
        metrics = hub.load_metrics(classifier_id)
        fitted = metrics.loc[metrics["split"] == "test", "fit_seconds"].iloc[0]
        assert estimate == pytest.approx(fitted / (1 - datarun.test_size))


def test_ensemble_commands(tmp_path: Path, pollution_path: str, capsys) -> None:
    flags = ["--database-url", f"sqlite:///{tmp_path / 'atm.db'}"]
    flags += ["--artifact-root", str(tmp_path / "artifacts")]
    enter = ["enter_data", *flags, "--train-path", pollution_path, "--budget", "6"]
    assert cli.main([*enter, "--methods", "logreg", "dt"]) == 0
    assert cli.main(["ensemble", *flags, "1"]) == 2  # pending: chosen once it completes
    assert "its ensemble is chosen once it completes" in capsys.readouterr().err
    assert cli.main(["worker", *flags, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["ensemble", *flags, "1"]) == 0
    assert "Datarun 1 ensemble (f1: cv" in capsys.readouterr().out

    assert cli.main(["predict", *flags, "--ensemble", "1", pollution_path]) == 0
    printed = capsys.readouterr().out.split()
    hub = ModelHub(settings=make_settings(f"sqlite:///{tmp_path / 'atm.db'}", tmp_path))
    features = pd.read_csv(pollution_path).drop(columns=["class"])
    expected = hub.load_ensemble(1).predict(features)
    assert printed == [str(label) for label in expected]

    target = tmp_path / "out" / "ensemble.pkl"
    assert cli.main(["export", *flags, "--ensemble", "1", "--refit", str(target)]) == 0
    exported = pickle.loads(target.read_bytes())
    assert isinstance(exported, EnsembleModel)
    assert exported.predict(features).shape == (len(features),)
    assert cli.main(["export", *flags, "--ensemble", "2", str(tmp_path / "x.pkl")]) == 2
    assert "no datarun with id 2" in capsys.readouterr().err
    assert not (tmp_path / "x.pkl").exists()
    hub.close()


def test_upgrading_a_hub_of_revision_0004_keeps_its_classifiers(
    database_url: str, tmp_path: Path, pollution_path: str
) -> None:
    """Classifiers trained before 0005 have no predictions: such a datarun gets no ensemble."""
    hub = ModelHub(settings=make_settings(database_url, tmp_path))
    datarun = _finished_datarun(hub, pollution_path, budget=3)
    complete = [c.id for c in hub.classifiers(datarun.id, status="complete")]
    hub.close()
    engine = create_hub_engine(database_url)
    for revision in ("0004", "head"):
        with engine.connect() as connection, foreign_keys_off(connection), connection.begin():
            migrate(connection, revision)
    engine.dispose()
    hub = ModelHub(settings=make_settings(database_url, tmp_path))
    try:
        assert [c.id for c in hub.classifiers(datarun.id, status="complete")] == complete
        assert all(c.predictions_location is None for c in hub.classifiers(datarun.id))
        assert hub.get_ensemble(datarun.id) is None
        assert build_ensemble(hub, datarun.id) is None
    finally:
        hub.close()


@pytest.mark.slow
def test_predictions_are_stored_only_while_a_classifier_can_be_a_candidate(
    sqlite_hub: ModelHub, pollution_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier with CANDIDATES complete ones ranked ahead of it never becomes a candidate
    (the count only grows): it stores no predictions, and the final candidates all have them."""
    hub = sqlite_hub
    monkeypatch.setattr("atm_core.training.CANDIDATES", 2)
    monkeypatch.setattr("atm_core.results.CANDIDATES", 2)
    request = DatarunRequest(pollution_path, methods=["dt"], budget=12, metric="roc_auc")
    datarun = enter_data(hub, request).dataruns[0]
    Driver(hub, datarun_ids=[datarun.id]).run()
    done = sorted(hub.classifiers(datarun.id, status="complete"), key=lambda c: c.end_time)
    without = [c for c in done if c.predictions_location is None]
    assert without  # this seeded search does not improve on every classifier
    for classifier in without:
        earlier = done[: done.index(classifier)]
        ahead = [c for c in earlier if c.cv_judgment_metric >= classifier.cv_judgment_metric]
        assert len(ahead) >= 2
    top = hub.leaderboard(datarun.id, limit=2)["classifier_id"].tolist()
    assert [c.id for c in hub.ensemble_candidates(datarun.id, 2)] == top
    assert set(hub.ensemble(datarun.id).weights) <= set(top)


def test_standing_counts_the_classifiers_ranked_ahead(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    datarun = _finished_datarun(sqlite_hub, pollution_path, budget=4)
    scores = sorted(c.cv_judgment_metric for c in sqlite_hub.classifiers(datarun.id, "complete"))
    assert sqlite_hub.standing(datarun, 2.0).ahead == 0
    assert sqlite_hub.standing(datarun, -1.0).ahead == len(scores)
    assert sqlite_hub.standing(datarun, scores[-1]).ahead == scores.count(scores[-1])
    assert sqlite_hub.standing(datarun, 0.0).best.id == sqlite_hub.best_classifier(datarun.id).id
