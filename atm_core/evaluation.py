"""Metrics, cross-validation and the judgment metric that ranks classifiers.

Binary problems use accuracy, cohen_kappa, f1, roc_auc, ap and mcc (the positive class is the
second label in sorted order, as in scikit-learn). Multiclass problems use accuracy,
rank_accuracy, cohen_kappa, f1_micro, f1_macro, roc_auc_micro and roc_auc_macro; ``f1`` and
``roc_auc`` mean their macro forms there. The judgment metric is the chosen metric's stratified
CV mean (``cv``; on large data, its value on a holdout from the training part), its value on the
held-out test part (``test``) or the CV mean minus two standard deviations (``mu_sigma``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning, UndefinedMetricWarning
from sklearn.metrics import average_precision_score, cohen_kappa_score, matthews_corrcoef
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from atm_core.data.split import TrainTest
from atm_core.errors import ConfigError
from atm_core.estimators import CalibratedClassifier
from atm_core.metric_names import BINARY_METRICS, MULTICLASS_METRICS

SCORE_TARGETS = ("cv", "test", "mu_sigma")
RANK_FRACTION = 0.33
PREDICT_ROWS = 65_536  # rows a fitted model answers for at a time


def silence_fit_warnings() -> None:
    """Convergence and undefined-metric warnings are expected while searching; hide them
    (once per process: every call would add filters)."""
    global _silenced
    if _silenced:
        return
    for category in (ConvergenceWarning, UndefinedMetricWarning, RuntimeWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*Precision is ill-defined.*")
    _silenced = True


_silenced = False


def class_scores(model: Any, X: pd.DataFrame, classes: list) -> np.ndarray | None:
    """Per-class scores aligned to ``classes``: probabilities, else the decision function."""
    if hasattr(model, "predict_proba"):
        raw = model.predict_proba(X)
    elif hasattr(model, "decision_function"):
        raw = model.decision_function(X)
    else:
        return None
    return align(raw, list(model.classes_), classes)


def align(raw: np.ndarray, model_classes: list, classes: list) -> np.ndarray:
    """A model's per-class scores (one column per class of ``model_classes``; a binary decision
    function's single column is the second class's) as columns of ``classes``; a class the model
    never saw scores 0 (probabilities) or -inf (decision values)."""
    raw = np.asarray(raw, dtype=float)
    if raw.ndim == 1:
        raw = np.column_stack([-raw, raw])
    aligned = np.full((raw.shape[0], len(classes)), -np.inf if raw.min() < 0 else 0.0)
    for column, label in enumerate(model_classes):
        if label in classes:
            aligned[:, classes.index(label)] = raw[:, column]
    return aligned


def compute_metrics(
    y_true: pd.Series, y_pred: np.ndarray, scores: np.ndarray | None, classes: list
) -> dict[str, float]:
    """Every metric of the problem type; NaN where one is undefined.

    The labels are compared as their positions in ``classes`` (sorted, as scikit-learn orders
    labels, so every metric is the same): on 600,000 text labels comparing the Python strings
    took 3 s and 130 MB.
    """
    names = BINARY_METRICS if len(classes) <= 2 else MULTICLASS_METRICS
    coded = _positions(y_true, y_pred, classes)
    if coded is None:  # a label outside ``classes``: compared as it is
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    else:
        y_true, y_pred = coded
        classes = list(range(len(classes)))
    return {name: metric_value(name, y_true, y_pred, scores, classes) for name in names}


def _positions(
    y_true: pd.Series, y_pred: np.ndarray, classes: list
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each label's position in ``classes`` (sorted, distinct), or None when a label is not
    one of them."""
    try:
        if list(classes) != sorted(classes):
            return None
        true = pd.Categorical(y_true, categories=classes).codes
        predicted = pd.Categorical(y_pred, categories=classes).codes
    except (TypeError, ValueError):
        return None
    if (true < 0).any() or (predicted < 0).any():
        return None
    return true, predicted


def metric_value(
    metric: str, y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None, classes: list
) -> float:
    """One metric as :func:`compute_metrics` names it; NaN where it is undefined (a score-based
    metric without ``scores``, a single class present).

    Accuracy, F1 and ROC AUC are computed here with numpy (equal to scikit-learn's, as a test
    checks): an ensemble's selection scores thousands of blends, and scikit-learn's input checks
    cost ~0.5 ms a call, 14 s for one 10-class datarun.
    """
    if metric in ("accuracy", "f1_micro"):  # micro F1 of single-label classes is accuracy
        return float(np.mean(y_true == y_pred))
    if metric == "cohen_kappa":
        return _safe(lambda: cohen_kappa_score(y_true, y_pred))
    if len(classes) <= 2:
        positive = classes[-1]
        if metric == "f1":
            return _f1(y_true == positive, y_pred == positive)
        if metric == "mcc":
            return _safe(lambda: matthews_corrcoef(y_true, y_pred))
        if scores is None:
            return math.nan
        truth = y_true == positive
        if metric == "roc_auc":
            return _auc(truth, scores[:, -1])
        if metric == "ap":
            return _safe(lambda: average_precision_score(truth, scores[:, -1]))
        raise ConfigError(f"unknown binary metric '{metric}'")
    if metric == "f1_macro":  # over the labels present in the truth or the predictions
        labels = np.unique(np.concatenate([y_true, y_pred]))
        return float(np.mean([_f1(y_true == label, y_pred == label) for label in labels]))
    if scores is None:
        return math.nan
    onehot = np.column_stack([y_true == label for label in classes])
    finite = np.where(np.isfinite(scores), scores, np.nanmin(scores[np.isfinite(scores)]) - 1)
    if metric == "rank_accuracy":
        return _rank_accuracy(onehot, finite)
    if metric == "roc_auc_macro":
        return _macro_auc(onehot, finite)
    if metric == "roc_auc_micro":
        return _auc(onehot.ravel(), finite.ravel())
    raise ConfigError(f"unknown multiclass metric '{metric}'")


def _f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of one class from boolean masks; 0 when it is neither true nor predicted."""
    true_positives = np.count_nonzero(truth & predicted)
    both = np.count_nonzero(truth) + np.count_nonzero(predicted)
    return 2 * true_positives / both if both else 0.0


def _auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of a boolean ``truth`` ranked by ``scores``: the Mann-Whitney statistic with
    average ranks for ties, as ``roc_auc_score`` computes it; NaN with a single class or a
    NaN score.

    Counted as the negatives each positive outscores (a tie counts half) against the sorted
    negatives: the same value as from the ranks of every score (both sums are exact), with a
    fifth of the temporaries (the micro AUC of a 600,000-row test part: 1.8M scores, ~85 MB
    for ``scipy.stats.rankdata``).
    """
    positives = int(np.count_nonzero(truth))
    negatives = len(truth) - positives
    if not positives or not negatives:
        return math.nan
    scores = np.asarray(scores, dtype=float)
    if np.isnan(scores).any():
        return math.nan
    truth = np.asarray(truth, dtype=bool)
    below = scores[~truth]
    below.sort()
    positive = scores[truth]
    beaten = np.searchsorted(below, positive, side="left")
    tied = np.searchsorted(below, positive, side="right") - beaten
    twice_wins = 2 * int(beaten.sum()) + int(tied.sum())  # an integer: exact
    return float(twice_wins / 2 / (positives * negatives))


def _rank_accuracy(onehot: np.ndarray, scores: np.ndarray) -> float:
    """Share of rows whose true class is among the top third (at least one) of ranked classes."""
    top = max(1, int(round(onehot.shape[1] * RANK_FRACTION)))
    ranked = np.argsort(-scores, axis=1)[:, :top]
    truth = onehot.argmax(axis=1)
    return float(np.mean(np.any(ranked == truth[:, None], axis=1)))


def _macro_auc(onehot: np.ndarray, scores: np.ndarray) -> float:
    aucs = [
        _auc(onehot[:, k], scores[:, k])
        for k in range(onehot.shape[1])
        if 0 < onehot[:, k].sum() < len(onehot)
    ]
    return float(np.mean(aucs)) if aucs else math.nan


def _safe(compute: Callable[[], float]) -> float:
    try:
        return float(compute())
    except ValueError:
        return math.nan


@dataclass
class Evaluation:
    """What one classifier's evaluation produced: the fitted model, its scores and, for a model
    with ``predict_proba``, its held-out class probabilities (see :func:`prediction_frame`)."""

    model: ClassifierMixin
    metrics: pd.DataFrame  # one row per CV fold plus one "test" row
    cv_judgment_metric: float
    cv_judgment_metric_stdev: float
    test_judgment_metric: float
    predictions: pd.DataFrame | None = None
    fit_rows: int = 0  # rows the stored model was fitted on

    @property
    def fit_seconds(self) -> float:
        """How long the stored model's fit took."""
        return float(self.metrics.loc[self.metrics["split"] == "test", "fit_seconds"].iloc[0])

    def judgment(self, score_target: str) -> float:
        if score_target == "test":
            return self.test_judgment_metric
        if score_target == "mu_sigma":
            return self.cv_judgment_metric - 2 * self.cv_judgment_metric_stdev
        return self.cv_judgment_metric


def evaluate(
    make_model: Callable[[], ClassifierMixin], data: TrainTest, metric: str, seed: int
) -> Evaluation:
    """Cross-validate on the training part, refit on all of it, score on the test part.

    With ``data.n_folds == 0`` (large data) a single fit replaces the ``k + 1``: the model is
    fitted on a stratified share of the training part, judged on the rest of it (one "cv"
    row, standard deviation 0) and scored on the untouched test part.

    A model whose last step is a :class:`CalibratedClassifier` (a classifier with a decision
    function only) is fitted without that step, every time; its sigmoid maps are fitted on the
    out-of-fold decision values the cross-validation computed (under a holdout, the holdout's),
    so the stored model answers ``predict_proba`` at no extra fit. Its scores, held-out
    probabilities included, are then computed from those probabilities, as the stored model
    gives them (on binary data a ranking metric is the same as on the decision values).
    """
    make_base, calibration = _calibration_of(make_model)
    if not data.n_folds:
        return _evaluate_on_holdout(make_base, calibration, data, metric)
    X, y, classes = data.X_train, data.y_train, data.classes
    fold_of = np.zeros(len(y), np.int8)
    held_out: list[tuple[np.ndarray, float, _Answers]] = []
    folds = StratifiedKFold(n_splits=data.n_folds, shuffle=True, random_state=seed)
    for index, (train_idx, valid_idx) in enumerate(folds.split(X, y)):
        _, seconds, [answers] = _fit_and_predict(
            make_base, X.iloc[train_idx], y.iloc[train_idx], [X.iloc[valid_idx]]
        )
        fold_of[valid_idx] = index
        held_out.append((valid_idx, seconds, answers))
    model, seconds, [tested] = _fit_and_predict(make_base, X, y, [data.X_test])
    if calibration is not None:
        started = time.perf_counter()
        answered = [(rows, answers) for rows, _, answers in held_out]
        decisions = _in_row_order(answered, len(y))
        model = _calibrated(model, calibration, decisions, y, [a for _, a in answered] + [tested])
        seconds += time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    out_of_fold: np.ndarray | None = np.zeros((len(y), len(classes)), np.float32)
    for index, (valid_idx, fit_seconds, answers) in enumerate(held_out):
        scores = answers.scores(classes)
        row = answers.row(y.iloc[valid_idx], scores, classes, fit_seconds)
        rows.append({"split": "cv", "fold": index, **row})
        if answers.is_proba and out_of_fold is not None:
            out_of_fold[valid_idx] = scores
        else:
            out_of_fold = None
    test_scores = tested.scores(classes)
    row = tested.row(data.y_test, test_scores, classes, seconds)
    rows.append({"split": "test", "fold": -1, **row})
    evaluation = _judged(model, rows, metric)
    evaluation.fit_rows = len(y)
    if out_of_fold is not None and tested.is_proba:
        every_row = np.arange(len(y))
        evaluation.predictions = prediction_frame(
            data, every_row, fold_of, out_of_fold, test_scores
        )
    return evaluation


def _evaluate_on_holdout(
    make_model: Callable[[], ClassifierMixin],
    calibration: CalibratedClassifier | None,
    data: TrainTest,
    metric: str,
) -> Evaluation:
    fit, judge = slice(None, data.n_fit), slice(data.n_fit, None)  # laid out by split_frames
    if not 0 < data.n_fit < len(data.y_train):
        raise ValueError(f"no holdout laid out in the training part (n_fit {data.n_fit})")
    model, seconds, (judged, tested) = _fit_and_predict(
        make_model,
        data.X_train.iloc[fit],
        data.y_train.iloc[fit],
        [data.X_train.iloc[judge], data.X_test],
    )
    if calibration is not None:  # on the holdout's decision values: no other rows are held out
        started = time.perf_counter()
        truth = data.y_train.iloc[judge]
        model = _calibrated(model, calibration, judged.raw, truth, [judged, tested])
        seconds += time.perf_counter() - started
    classes = data.classes
    judged_scores, test_scores = judged.scores(classes), tested.scores(classes)
    judged_row = judged.row(data.y_train.iloc[judge], judged_scores, classes, seconds)
    test_row = tested.row(data.y_test, test_scores, classes, seconds)
    rows = [{"split": "cv", "fold": 0, **judged_row}, {"split": "test", "fold": -1, **test_row}]
    evaluation = _judged(model, rows, metric)
    evaluation.fit_rows = data.n_fit
    if judged.is_proba and tested.is_proba:
        judged_rows = np.arange(data.n_fit, len(data.y_train))
        folds = np.zeros(len(judged_rows), np.int8)
        evaluation.predictions = prediction_frame(
            data, judged_rows, folds, judged_scores, test_scores
        )
    return evaluation


def prediction_frame(
    data: TrainTest,
    cv_rows: np.ndarray,
    cv_folds: np.ndarray,
    cv_probabilities: np.ndarray,
    test_probabilities: np.ndarray,
) -> pd.DataFrame:
    """Held-out class probabilities, one row per example: ``split`` "cv" (rows of the training
    part, each predicted by the fold's model that never saw it; ``row`` is the position in the
    training part, ``fold`` the fold) or "test" (every row of the test part, ``fold`` -1),
    ``truth`` (the index of the true class in ``data.classes``) and ``p0``..``p{k-1}``
    (float32, in the same class order). Ensembles are chosen on them."""
    codes = {
        "cv": pd.Categorical(data.y_train.iloc[cv_rows], categories=data.classes).codes,
        "test": pd.Categorical(data.y_test, categories=data.classes).codes,
    }
    positions = {"cv": cv_rows, "test": np.arange(len(data.y_test))}
    folds = {"cv": cv_folds, "test": np.full(len(data.y_test), -1, np.int8)}
    probabilities = {"cv": cv_probabilities, "test": test_probabilities}
    parts = []
    for split in ("cv", "test"):
        part = pd.DataFrame(
            np.asarray(probabilities[split], dtype=np.float32),
            columns=[f"p{k}" for k in range(len(data.classes))],
        )
        part.insert(0, "truth", codes[split].astype(np.int16))
        part.insert(0, "fold", folds[split].astype(np.int8))
        part.insert(0, "row", positions[split].astype(np.int32))
        part.insert(0, "split", split)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _judged(model: ClassifierMixin, rows: list[dict[str, Any]], metric: str) -> Evaluation:
    frame = pd.DataFrame(rows)
    cv_values = frame.loc[frame["split"] == "cv", metric].to_numpy(dtype=float)
    test_value = float(frame.loc[frame["split"] == "test", metric].iloc[0])
    if not np.all(np.isfinite(cv_values)) or not math.isfinite(test_value):
        raise ValueError(
            f"judgment metric '{metric}' is undefined for this model "
            "(it needs predict_proba or decision_function)"
        )
    return Evaluation(
        model=model,
        metrics=frame,
        cv_judgment_metric=float(cv_values.mean()),
        cv_judgment_metric_stdev=float(cv_values.std()),
        test_judgment_metric=test_value,
    )


@dataclass
class _Answers:
    """A fitted model's answers on one set of rows: its predicted labels and ``raw`` scores,
    ``predict_proba`` (``is_proba``), else ``decision_function``, else None, in the layout of
    the model's ``classes``."""

    labels: np.ndarray
    raw: np.ndarray | None
    is_proba: bool
    classes: list
    seconds: float  # predicting them

    def scores(self, classes: list) -> np.ndarray | None:
        return None if self.raw is None else align(self.raw, self.classes, classes)

    def row(
        self, truth: pd.Series, scores: np.ndarray | None, classes: list, fit_seconds: float
    ) -> dict[str, float]:
        """Every metric (from ``scores``, the answers' aligned scores), the fit's seconds (on
        every row of that fit) and the seconds to predict and score."""
        started = time.perf_counter()
        row = compute_metrics(truth, self.labels, scores, classes)
        row["fit_seconds"] = fit_seconds
        row["predict_seconds"] = self.seconds + time.perf_counter() - started
        return row


def _fit_and_predict(
    make_model: Callable[[], ClassifierMixin],
    X_fit: pd.DataFrame,
    y_fit: pd.Series,
    evaluations: list[pd.DataFrame],
) -> tuple[ClassifierMixin, float, list[_Answers]]:
    """Fit once, then answer on each frame; also returns the fit's seconds."""
    model = make_model()
    started = time.perf_counter()
    model.fit(X_fit, y_fit)
    fit_seconds = time.perf_counter() - started
    answers = []
    for X_eval in evaluations:
        predicted = time.perf_counter()
        labels, raw, is_proba = _predict(model, X_eval)
        classes = list(model.classes_)
        answers.append(_Answers(labels, raw, is_proba, classes, time.perf_counter() - predicted))
    return model, fit_seconds, answers


def _predict(model: ClassifierMixin, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Labels and raw scores (``predict_proba``, else ``decision_function``, else None) and
    whether they are probabilities, ``PREDICT_ROWS`` rows at a time: the preprocessed matrix
    of a large part is never whole (600,000 test rows one-hot encoded into 129 float32
    columns: 310 MB, in the fit process). Each row's answers do not depend on the others'."""
    is_proba = hasattr(model, "predict_proba")
    scores = model.predict_proba if is_proba else getattr(model, "decision_function", None)
    blocks = (
        [X]
        if len(X) <= PREDICT_ROWS
        else [X.iloc[start : start + PREDICT_ROWS] for start in range(0, len(X), PREDICT_ROWS)]
    )
    labels, raw = [], []
    for block in blocks:
        labels.append(np.asarray(model.predict(block)))
        if scores is not None:
            raw.append(np.asarray(scores(block), dtype=float))
    if len(blocks) == 1:
        return labels[0], raw[0] if raw else None, is_proba
    return np.concatenate(labels), np.concatenate(raw) if raw else None, is_proba


def _calibration_of(
    make_model: Callable[[], ClassifierMixin],
) -> tuple[Callable[[], ClassifierMixin], CalibratedClassifier | None]:
    """What to fit and the calibration to add after: a model whose last step is a
    :class:`CalibratedClassifier` is fitted with the estimator it wraps in that step's place."""
    template = make_model()
    last = template[-1] if isinstance(template, Pipeline) else template
    if not isinstance(last, CalibratedClassifier):
        return make_model, None

    def make_base() -> ClassifierMixin:
        model = make_model()
        if isinstance(model, Pipeline):
            name, wrapper = model.steps[-1]
            return Pipeline([*model.steps[:-1], (name, wrapper.estimator)])
        return model.estimator

    return make_base, last


def _calibrated(
    model: ClassifierMixin,
    calibration: CalibratedClassifier,
    decisions: np.ndarray,
    truth: pd.Series,
    answers: list[_Answers],
) -> ClassifierMixin:
    """``model`` (fitted without ``calibration``) with its last step wrapped by it, the maps
    fitted on held-out ``decisions`` of rows whose classes are ``truth``; ``answers`` (decision
    values of this configuration) become the probabilities the calibrated model gives."""
    final = model[-1] if isinstance(model, Pipeline) else model
    wrapper = clone(calibration).calibrate(decisions, truth, estimator=final)
    for answer in answers:
        answer.raw = wrapper.probabilities(answer.raw)
        answer.is_proba, answer.classes = True, list(wrapper.classes_)
    if isinstance(model, Pipeline):
        return Pipeline([*model.steps[:-1], (model.steps[-1][0], wrapper)])
    return wrapper


def _in_row_order(parts: list[tuple[np.ndarray, _Answers]], n_rows: int) -> np.ndarray:
    """The folds' decision values as one array, each row at its position in the training part."""
    first = parts[0][1].raw
    if first is None:
        raise ValueError("a calibrated classifier's estimator has no decision_function")
    out = np.zeros((n_rows, *first.shape[1:]), np.float64)
    for rows, answers in parts:
        if answers.raw is None or answers.raw.shape[1:] != first.shape[1:]:
            raise ValueError("the CV folds' models disagree on the classes: cannot calibrate")
        out[rows] = answers.raw
    return out
