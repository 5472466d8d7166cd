"""Probabilities for classifiers that only rank (SVC, SGD with a hinge loss).

Such a classifier is wrapped in a ``CalibratedClassifier``: a sigmoid per class on its decision
values, fitted on the out-of-fold (or holdout) decision values the evaluation computes anyway.
The stored model then answers ``predict_proba``, stores held-out probabilities and can join
an ensemble, without a single extra fit.
"""

from __future__ import annotations

import pickle
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import SVC

from atm_core.data.dataset import FeatureSchema, inspect_dataset
from atm_core.data.split import split_frames
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.ensemble import EnsembleModel, select
from atm_core.estimators import CalibratedClassifier
from atm_core.evaluation import evaluate
from atm_core.modelhub import ModelHub
from atm_core.pipeline import build_pipeline

SVC_PATH = "sklearn.svm.SVC"
SGD_PATH = "sklearn.linear_model.SGDClassifier"
LOGREG = "sklearn.linear_model.LogisticRegression"


class CountingSVC(SVC):
    """SVC counting its fits (class-wide): calibration must not add any."""

    fits: ClassVar[int] = 0

    def fit(self, X, y, sample_weight=None):
        CountingSVC.fits += 1
        return super().fit(X, y, sample_weight)


def _frame(n: int = 600, classes: int = 2, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    X, y = make_classification(
        n_samples=n,
        n_features=8,
        n_informative=4,
        n_classes=classes,
        n_clusters_per_class=1,
        flip_y=0.1,
        random_state=seed,
    )
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    return frame, pd.Series(np.array(["a", "b", "c"])[y], name="class")


def _split(frame: pd.DataFrame, y: pd.Series, cv_folds: int | None = None):
    schema = FeatureSchema.infer(frame)
    labelled = frame.assign(**{"class": y})
    return split_frames(labelled, None, "class", schema, 0, 0.3, cv_folds), schema


# -- the wrapper -------------------------------------------------------------------------------
def test_binary_probabilities_rank_like_the_decision_function() -> None:
    X, y = _frame()
    model = CalibratedClassifier(SVC(C=1.0)).fit(X.iloc[:400], y.iloc[:400])
    X_new, y_new = X.iloc[400:], y.iloc[400:]
    probabilities = model.predict_proba(X_new)
    assert probabilities.shape == (200, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert list(model.classes_) == ["a", "b"]
    decision = model.decision_function(X_new)
    truth = y_new == "b"
    assert roc_auc_score(truth, probabilities[:, 1]) == roc_auc_score(truth, decision)
    # probabilities grow with the decision value, strictly
    order = np.argsort(decision)
    assert np.all(np.diff(probabilities[order, 1]) > 0)
    # predict is the SVC's own decision
    np.testing.assert_array_equal(model.predict(X_new), model.estimator_.predict(X_new))
    # the maps are fitted on held-out values: the (binary) positive share is about right
    assert abs(probabilities[:, 1].mean() - truth.mean()) < 0.08


def test_fit_without_decisions_calibrates_on_its_own_cross_validation() -> None:
    X, y = _frame(300)
    model = CalibratedClassifier(SVC(C=0.5), cv=3).fit(X, y)
    held_out = cross_val_predict(
        SVC(C=0.5), X, y, cv=StratifiedKFold(n_splits=3), method="decision_function"
    )
    by_hand = CalibratedClassifier(SVC(C=0.5)).calibrate(held_out, y, estimator=model.estimator_)
    np.testing.assert_allclose(model.maps_, by_hand.maps_)
    # decisions given: those are used, and no cross-validation runs
    CountingSVC.fits = 0
    given = CalibratedClassifier(CountingSVC(C=0.5)).fit(X, y, decisions=held_out)
    assert CountingSVC.fits == 1
    np.testing.assert_allclose(given.maps_, by_hand.maps_)


def test_multiclass_one_vs_rest_values_become_normalised_probabilities() -> None:
    X, y = _frame(600, classes=3)
    model = CalibratedClassifier(SGDClassifier(loss="hinge", random_state=0)).fit(X, y)
    probabilities = model.predict_proba(X)
    assert probabilities.shape == (600, 3) and list(model.classes_) == ["a", "b", "c"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities > 0).all() and (probabilities < 1).all()
    decision = model.decision_function(X)
    np.testing.assert_array_equal(model.predict(X), model.classes_[decision.argmax(axis=1)])
    # each class's probability before normalisation is a non-decreasing map of its column
    for k in range(3):
        _, scale, slope, _ = model.maps_[k]
        assert slope >= 0 and scale > 0
        assert roc_auc_score(y == model.classes_[k], probabilities[:, k]) > 0.7


def test_platt_targets_keep_separable_data_off_0_and_1_and_never_invert_the_ranking() -> None:
    decisions = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    truth = np.array(["a", "a", "a", "b", "b", "b"])
    model = CalibratedClassifier(SVC()).calibrate(decisions, truth, estimator=_fitted_two_class())
    p = model.probabilities(decisions)[:, 1]
    # a finite slope, the fitted values near Platt's targets 1/5 and 4/5, not at 0 and 1
    assert 0.1 < p[0] < 0.2 and 0.8 < p[-1] < 0.9
    np.testing.assert_allclose(p + p[::-1], 1.0)  # symmetric data, symmetric map
    # decision values that rank the classes backwards: a flat map, not an inverted one
    backwards = CalibratedClassifier(SVC()).calibrate(
        -decisions, truth, estimator=_fitted_two_class()
    )
    assert backwards.maps_[0][2] == 0.0
    flat = backwards.probabilities(np.array([-5.0, 0.0, 5.0]))[:, 1]
    np.testing.assert_allclose(flat, flat[0])


def _fitted_two_class() -> SVC:
    return SVC().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), ["a", "a", "b", "b"])


def test_the_wrapper_is_a_scikit_learn_estimator() -> None:
    X, y = _frame(200)
    model = CalibratedClassifier(SVC(C=2.0), cv=4)
    assert model.get_params()["estimator__C"] == 2.0 and model.get_params()["cv"] == 4
    model.set_params(estimator__C=0.3, cv=2)
    assert model.estimator.C == 0.3 and model.cv == 2
    copy = clone(model)
    assert copy.estimator is not model.estimator and copy.get_params()["estimator__C"] == 0.3
    assert not hasattr(copy, "maps_")
    model.fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(restored.classes_, model.classes_)
    with pytest.raises(ValueError, match="3 decision columns for 2 classes"):
        model.probabilities(np.zeros((4, 3)))


# -- build_pipeline and the evaluation ---------------------------------------------------------
def test_build_pipeline_wraps_exactly_the_classifiers_without_probabilities() -> None:
    schema = FeatureSchema(("x",), ())

    def final(path: str, values: dict, **kwargs):
        return build_pipeline(path, values, schema, **kwargs).named_steps["estimator"]

    assert isinstance(final(SVC_PATH, {"C": 2.0}), CalibratedClassifier)
    assert final(SVC_PATH, {"C": 2.0}).estimator.C == 2.0
    for loss in ("hinge", "squared_hinge"):
        assert isinstance(final(SGD_PATH, {"loss": loss}), CalibratedClassifier)
    for loss in ("log_loss", "modified_huber"):
        assert isinstance(final(SGD_PATH, {"loss": loss}), SGDClassifier)
    assert isinstance(final(SVC_PATH, {}, calibrate=False), SVC)
    wrapped = final(SVC_PATH, {}, random_state=3)
    assert wrapped.estimator.random_state == 3


def test_cross_validation_calibrates_on_out_of_fold_values_without_an_extra_fit() -> None:
    X, y = _frame()
    data, schema = _split(X, y)
    assert data.n_folds == 5

    def make_model():
        return build_pipeline("tests.test_calibration.CountingSVC", {"C": 1.0}, schema)

    CountingSVC.fits = 0
    evaluation = evaluate(make_model, data, "roc_auc", seed=3)
    assert CountingSVC.fits == data.n_folds + 1  # the folds and the refit, nothing more
    model = evaluation.model
    assert isinstance(model.named_steps["estimator"], CalibratedClassifier)

    # scores: the same as the uncalibrated SVC's on its decision function (binary: same ranks)
    raw = build_pipeline(SVC_PATH, {"C": 1.0}, schema, calibrate=False)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    out_of_fold = cross_val_predict(
        raw, data.X_train, data.y_train, cv=folds, method="decision_function"
    )
    refit = clone(raw).fit(data.X_train, data.y_train)
    test_decision = refit.decision_function(data.X_test)
    assert evaluation.test_judgment_metric == pytest.approx(
        roc_auc_score(data.y_test == "b", test_decision)
    )
    np.testing.assert_array_equal(model.predict(data.X_test), refit.predict(data.X_test))

    # the stored held-out probabilities: the maps fitted on the out-of-fold values, applied
    predictions = evaluation.predictions
    assert predictions is not None
    cv = predictions[predictions["split"] == "cv"]
    test = predictions[predictions["split"] == "test"]
    assert cv["row"].tolist() == list(range(len(data.y_train)))
    maps = CalibratedClassifier(SVC()).calibrate(
        out_of_fold, data.y_train, estimator=refit.named_steps["estimator"]
    )
    np.testing.assert_allclose(
        cv[["p0", "p1"]].to_numpy(), maps.probabilities(out_of_fold), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        test[["p0", "p1"]].to_numpy(), model.predict_proba(data.X_test), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(model.named_steps["estimator"].maps_, maps.maps_)
    assert roc_auc_score(data.y_train == "b", cv["p1"]) == pytest.approx(
        roc_auc_score(data.y_train == "b", out_of_fold)
    )


def test_a_holdout_calibrates_on_the_holdouts_values_with_one_fit() -> None:
    X, y = _frame(900, classes=3)
    data, schema = _split(X, y, cv_folds=0)
    assert data.n_folds == 0 and 0 < data.n_fit < len(data.y_train)

    def make_model():
        values = {"C": 1.0, "_scale": True}
        return build_pipeline("tests.test_calibration.CountingSVC", values, schema)

    CountingSVC.fits = 0
    evaluation = evaluate(make_model, data, "roc_auc_macro", seed=0)
    assert CountingSVC.fits == 1
    model = evaluation.model
    judged = data.X_train.iloc[data.n_fit :]
    wrapper = model.named_steps["estimator"]
    by_hand = CalibratedClassifier(SVC()).calibrate(
        model.decision_function(judged),
        data.y_train.iloc[data.n_fit :],
        estimator=wrapper.estimator_,
    )
    np.testing.assert_allclose(wrapper.maps_, by_hand.maps_)
    cv = evaluation.predictions[evaluation.predictions["split"] == "cv"]
    assert cv["row"].tolist() == list(range(data.n_fit, len(data.y_train)))
    np.testing.assert_allclose(cv[["p0", "p1", "p2"]].sum(axis=1), 1.0, rtol=1e-5)
    probabilities = model.predict_proba(data.X_test)
    assert probabilities.shape == (len(data.y_test), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    # the test score is computed from what the stored model answers
    assert evaluation.test_judgment_metric == pytest.approx(
        roc_auc_score(data.y_test, probabilities, multi_class="ovr", average="macro")
    )


# -- ensembles and stored models ---------------------------------------------------------------
def test_an_ensemble_with_an_svc_member_gives_probabilities(pollution_path: str) -> None:
    info, train, test = inspect_dataset(pollution_path)
    data = split_frames(train, test, "class", info.schema, 0, 0.3)
    svc = evaluate(
        lambda: build_pipeline(SVC_PATH, {"C": 3.0, "_scale": True}, info.schema),
        data,
        "roc_auc",
        0,
    )
    logreg = evaluate(
        lambda: build_pipeline(LOGREG, {"C": 0.1, "_scale": True}, info.schema), data, "roc_auc", 0
    )
    selection = select({1: svc.predictions, 2: logreg.predictions}, "roc_auc")
    assert 0.5 < selection.cv_judgment_metric <= 1.0
    ensemble = EnsembleModel([(svc.model, 1.0), (logreg.model, 2.0)], data.classes)
    probabilities = ensemble.predict_proba(data.X_test)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    expected = (
        svc.model.predict_proba(data.X_test) + 2 * logreg.model.predict_proba(data.X_test)
    ) / 3
    np.testing.assert_allclose(probabilities, expected)
    assert set(ensemble.predict(data.X_test)) <= set(data.classes)


def test_a_datarun_of_svms_stores_models_and_an_ensemble_with_probabilities(
    sqlite_hub: ModelHub, pollution_path: str
) -> None:
    hub = sqlite_hub
    request = DatarunRequest(pollution_path, methods=["svm", "pa"], budget=6, metric="roc_auc")
    datarun = enter_data(hub, request).dataruns[0]
    Driver(hub, datarun_ids=[datarun.id]).run()
    complete = hub.classifiers(datarun.id, status="complete")
    assert len(complete) >= 4
    X = pd.read_csv(pollution_path).drop(columns=["class"])
    for classifier in complete:
        assert classifier.predictions_location is not None
        probabilities = hub.load_model(classifier.id).predict_proba(X)
        assert probabilities.shape == (len(X), 2)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    ensemble = hub.load_ensemble(datarun.id)
    np.testing.assert_allclose(ensemble.predict_proba(X).sum(axis=1), 1.0)
