"""Metrics and the judgment metric, checked against scikit-learn computed independently.

The judgment metric ranks every classifier of a datarun, so ``cv`` must really be the mean over
the stratified folds of the training part, ``test`` the score on the held-out part and
``mu_sigma`` the CV mean minus two standard deviations.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import SVC

from atm_core.data.dataset import inspect_dataset
from atm_core.data.split import TrainTest, split_frames
from atm_core.errors import ConfigError
from atm_core.evaluation import class_scores, compute_metrics, evaluate, metric_value
from atm_core.metric_names import BINARY_METRICS, MULTICLASS_METRICS, resolve_metric
from atm_core.pipeline import build_pipeline

LOGREG = "sklearn.linear_model.LogisticRegression"


def _data(path: str, seed: int = 0) -> tuple[TrainTest, object]:
    info, train, test = inspect_dataset(path)
    return split_frames(train, test, "class", info.schema, seed, 0.3), info.schema


# -- which metric is computed ----------------------------------------------------------------------
def test_metric_names_per_problem_type() -> None:
    for metric in BINARY_METRICS:
        assert resolve_metric(metric, 2) == metric
    for metric in MULTICLASS_METRICS:
        assert resolve_metric(metric, 3) == metric
    assert resolve_metric("f1", 3) == "f1_macro"
    assert resolve_metric("roc_auc", 5) == "roc_auc_macro"


@pytest.mark.parametrize(
    ("metric", "k_classes", "words"),
    [
        ("ap", 3, "not valid for a 3-class problem"),
        ("mcc", 4, "not valid for a 4-class problem"),
        ("rank_accuracy", 2, "not valid for a binary problem"),
        ("f1_macro", 2, "not valid for a binary problem"),
        ("precision", 2, "not valid for a binary problem"),
    ],
)
def test_metric_that_does_not_fit_the_problem_is_a_config_error(
    metric: str, k_classes: int, words: str
) -> None:
    """The original let ap/mcc on multiclass error every classifier; refuse it up front."""
    with pytest.raises(ConfigError, match=words) as caught:
        resolve_metric(metric, k_classes)
    assert metric in str(caught.value)


# -- metric values -------------------------------------------------------------------------------
def test_binary_metrics_match_scikit_learn_with_the_last_label_positive() -> None:
    truth = np.array(["no", "no", "yes", "yes", "yes", "no", "yes", "no", "no", "no"])
    predicted = np.array(["no", "yes", "yes", "yes", "no", "no", "yes", "no", "yes", "no"])
    p_yes = np.array([0.1, 0.6, 0.8, 0.7, 0.4, 0.2, 0.9, 0.3, 0.55, 0.35])
    scores = np.column_stack([1 - p_yes, p_yes])
    metrics = compute_metrics(pd.Series(truth), predicted, scores, ["no", "yes"])
    assert list(metrics) == list(BINARY_METRICS)
    positive = (truth == "yes").astype(int)
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["f1"] == pytest.approx(f1_score(truth, predicted, pos_label="yes"))
    assert metrics["f1"] != pytest.approx(f1_score(truth, predicted, pos_label="no"))
    assert metrics["cohen_kappa"] == pytest.approx(cohen_kappa_score(truth, predicted))
    assert metrics["mcc"] == pytest.approx(matthews_corrcoef(truth, predicted))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(positive, p_yes))
    assert metrics["ap"] == pytest.approx(average_precision_score(positive, p_yes))


def test_multiclass_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    truth = np.array(classes * 10)
    proba = rng.dirichlet([1, 1, 1], size=30)
    proba[np.arange(30), np.arange(30) % 3] += 0.4  # informative but imperfect
    proba /= proba.sum(axis=1, keepdims=True)
    predicted = np.array(classes)[proba.argmax(axis=1)]
    metrics = compute_metrics(pd.Series(truth), predicted, proba, classes)
    assert list(metrics) == list(MULTICLASS_METRICS)
    onehot = np.column_stack([(truth == c).astype(int) for c in classes])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["f1_micro"] == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert metrics["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert metrics["cohen_kappa"] == pytest.approx(cohen_kappa_score(truth, predicted))
    assert metrics["roc_auc_macro"] == pytest.approx(
        roc_auc_score(truth, proba, multi_class="ovr", average="macro", labels=classes)
    )
    assert metrics["roc_auc_micro"] == pytest.approx(roc_auc_score(onehot, proba, average="micro"))
    # with 3 classes the top third is the top 1: rank accuracy is argmax accuracy here
    assert metrics["rank_accuracy"] == pytest.approx(metrics["accuracy"])


def test_rank_accuracy_is_a_fraction_of_the_top_third() -> None:
    """6 classes: top third = 2. True class ranked 1st, 2nd, 3rd, 6th -> 2 of 4 = 0.5.

    The original truncated this to an int (0 here).
    """
    classes = list("abcdef")
    scores = np.array(
        [
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # truth a: 1st
            [0.20, 0.50, 0.10, 0.10, 0.05, 0.05],  # truth a: 2nd
            [0.20, 0.50, 0.15, 0.10, 0.03, 0.02],  # truth c: 3rd
            [0.30, 0.20, 0.20, 0.15, 0.10, 0.05],  # truth f: 6th
        ]
    )
    truth = pd.Series(["a", "a", "c", "f"])
    predicted = np.array(classes)[scores.argmax(axis=1)]
    metrics = compute_metrics(truth, predicted, scores, classes)
    assert isinstance(metrics["rank_accuracy"], float)
    assert metrics["rank_accuracy"] == pytest.approx(0.5)
    assert metrics["accuracy"] == pytest.approx(0.25)


def test_without_scores_ranking_metrics_are_undefined() -> None:
    truth = pd.Series([0, 1, 0, 1])
    binary = compute_metrics(truth, np.array([0, 1, 1, 1]), None, [0, 1])
    assert math.isnan(binary["roc_auc"]) and math.isnan(binary["ap"])
    assert binary["accuracy"] == pytest.approx(0.75)
    multi = compute_metrics(pd.Series([0, 1, 2]), np.array([0, 1, 1]), None, [0, 1, 2])
    assert all(math.isnan(multi[m]) for m in ("rank_accuracy", "roc_auc_micro", "roc_auc_macro"))


@pytest.mark.parametrize("k_classes", [2, 4])
def test_metrics_computed_with_numpy_equal_scikit_learns(k_classes: int) -> None:
    """Accuracy, F1 and ROC AUC are computed with numpy for speed: scikit-learn gives the same,
    with tied scores, a class never predicted and a class absent from the truth."""
    rng = np.random.default_rng(k_classes)
    classes = [f"c{k}" for k in range(k_classes)]
    for _ in range(20):
        n = int(rng.integers(8, 60))
        present = classes if k_classes == 2 else classes[:-1]  # multiclass: last one absent
        y_true = np.asarray(rng.choice(present, n), dtype=object)
        y_true[:2] = present[:2]  # at least two classes present
        scores = np.round(rng.uniform(size=(n, k_classes)), 1)  # rounding makes ties
        y_pred = np.asarray(classes, dtype=object)[scores.argmax(axis=1)]
        y_pred[y_pred == classes[0]] = classes[1]  # one class never predicted
        got = compute_metrics(y_true, y_pred, scores, classes)
        if k_classes == 2:
            truth = (y_true == classes[1]).astype(int)
            expected = {
                "accuracy": accuracy_score(y_true, y_pred),
                "f1": f1_score(y_true, y_pred, pos_label=classes[1], zero_division=0),
                "roc_auc": roc_auc_score(truth, scores[:, 1]),
            }
        else:
            onehot = np.column_stack([(y_true == c).astype(int) for c in classes])
            expected = {
                "accuracy": accuracy_score(y_true, y_pred),
                "f1_micro": f1_score(y_true, y_pred, average="micro", zero_division=0),
                "f1_macro": f1_score(y_true, y_pred, average="macro", zero_division=0),
                "roc_auc_micro": roc_auc_score(onehot.ravel(), scores.ravel()),
                "roc_auc_macro": np.mean(
                    [roc_auc_score(onehot[:, k], scores[:, k]) for k in range(k_classes - 1)]
                ),
            }
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), name
    same = np.array(["c1"] * 5)
    assert math.isnan(metric_value("roc_auc", same, same, np.ones((5, 2)), classes[:2]))
    assert metric_value("f1", same, same, None, classes[:2]) == 1.0


def test_class_scores_align_columns_to_the_dataset_classes() -> None:
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    # a model that never saw class "b" (absent from its training fold): its column is 0
    partial = LogisticRegression().fit(X, ["a", "a", "a", "c", "c", "c"])
    aligned = class_scores(partial, X, ["a", "b", "c"])
    np.testing.assert_allclose(aligned[:, [0, 2]], partial.predict_proba(X))
    np.testing.assert_array_equal(aligned[:, 1], 0.0)
    # a binary decision function becomes two columns, the positive one last
    margin = SVC().fit(X, [0, 0, 0, 1, 1, 1])
    decision = margin.decision_function(X)
    np.testing.assert_allclose(
        class_scores(margin, X, [0, 1]), np.column_stack([-decision, decision])
    )
    assert class_scores(LabelOnly().fit(X, [0, 0, 0, 1, 1, 1]), X, [0, 1]) is None


# -- cross-validation and the judgment metric ---------------------------------------------
def test_cv_test_and_mu_sigma_on_pollution(pollution_path: str) -> None:
    data, schema = _data(pollution_path, seed=5)
    assert data.n_folds == 5

    def make_model():
        return build_pipeline(LOGREG, {"C": 0.3, "_scale": True}, schema, random_state=0)

    evaluation = evaluate(make_model, data, "f1", seed=5)
    frame = evaluation.metrics
    assert frame["split"].tolist() == ["cv"] * 5 + ["test"]
    assert frame["fold"].tolist() == [0, 1, 2, 3, 4, -1]
    assert set(BINARY_METRICS) <= set(frame.columns)
    assert (frame["fit_seconds"] > 0).all()

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=5)
    independent = cross_val_score(make_model(), data.X_train, data.y_train, cv=folds, scoring="f1")
    assert evaluation.cv_judgment_metric == pytest.approx(independent.mean())
    assert evaluation.cv_judgment_metric_stdev == pytest.approx(independent.std())
    assert frame.loc[frame["split"] == "cv", "f1"].to_numpy() == pytest.approx(independent)

    refit = make_model().fit(data.X_train, data.y_train)
    held_out = f1_score(data.y_test, refit.predict(data.X_test), pos_label=1)
    assert evaluation.test_judgment_metric == pytest.approx(held_out)
    np.testing.assert_array_equal(evaluation.model.predict(data.X_test), refit.predict(data.X_test))

    assert evaluation.judgment("cv") == pytest.approx(independent.mean())
    assert evaluation.judgment("test") == pytest.approx(held_out)
    assert evaluation.judgment("mu_sigma") == pytest.approx(
        independent.mean() - 2 * independent.std()
    )


def test_multiclass_evaluation_on_iris(iris_path: str) -> None:
    data, schema = _data(iris_path)

    def make_model():
        return build_pipeline(LOGREG, {"C": 0.05}, schema, random_state=0)

    evaluation = evaluate(make_model, data, resolve_metric("roc_auc", 3), seed=0)
    frame = evaluation.metrics
    assert set(MULTICLASS_METRICS) <= set(frame.columns)
    assert not set(frame.columns) & {"ap", "mcc", "f1", "roc_auc"}
    assert evaluation.cv_judgment_metric == pytest.approx(frame["roc_auc_macro"].iloc[:5].mean())
    assert frame["rank_accuracy"].tolist() == pytest.approx(frame["accuracy"].tolist())
    assert set(evaluation.model.predict(data.X_test)) <= set(data.classes)
    assert 0.5 < evaluation.test_judgment_metric <= 1.0


def test_evaluation_is_repeatable(iris_path: str) -> None:
    data, schema = _data(iris_path)

    def make_model():
        return build_pipeline(
            "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 10}, schema, random_state=0
        )

    first = evaluate(make_model, data, "accuracy", seed=1).metrics
    second = evaluate(make_model, data, "accuracy", seed=1).metrics
    timing = ["fit_seconds", "predict_seconds"]
    pd.testing.assert_frame_equal(first.drop(columns=timing), second.drop(columns=timing))


class LabelOnly(ClassifierMixin, BaseEstimator):
    """A real classifier with neither predict_proba nor decision_function."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.first_ = np.asarray(X)[:, 0].mean()
        return self

    def predict(self, X):
        return np.where(np.asarray(X)[:, 0] > self.first_, self.classes_[-1], self.classes_[0])


def test_ranking_judgment_needs_scores(pollution_path: str) -> None:
    data, _ = _data(pollution_path)
    evaluation = evaluate(LabelOnly, data, "accuracy", seed=0)
    assert 0.0 <= evaluation.cv_judgment_metric <= 1.0
    assert evaluation.metrics["roc_auc"].isna().all()
    with pytest.raises(ValueError, match="judgment metric 'roc_auc' is undefined"):
        evaluate(LabelOnly, data, "roc_auc", seed=0)
