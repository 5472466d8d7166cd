"""Ensembles of a datarun's classifiers, chosen on their held-out probabilities.

The final pick of a search is the luckiest of many cross-validated scores within their noise:
replayed on 42 finished benchmark dataruns (``benchmarks/selection.py``), the single best by CV
fell below untuned HistGradientBoosting by up to 0.0096 test AUC. Averaging several good models
is the remedy AutoML systems use (auto-sklearn, AutoGluon), and it keeps the test part honest:
members and weights are chosen on the training part's out-of-fold probabilities only. On 28
benchmark dataruns of 60 s the ensemble beat its datarun's best classifier in 21 (4 ties, 3
losses), and the worst test AUC against untuned HGB went from -0.0103 to -0.0036.

:func:`select` is greedy forward selection with replacement (Caruana et al., 2004, "Ensemble
selection from libraries of models"): each round adds the candidate, possibly again, whose
addition makes the averaged probabilities score best on the datarun's metric; a member's weight
is how often it was added, and the best-scoring round is kept. Scores are computed as a
classifier's are (the mean over CV folds), so the ensemble's stands beside theirs; the ensemble
is then scored once on the test part with the members' stored test probabilities.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atm_core.evaluation import class_scores, metric_value

CANDIDATES = 20  # the datarun's best classifiers (by its judgment) an ensemble is drawn from
ROUNDS = 20  # additions tried at most; the best-scoring round is kept
PATIENCE = 5  # rounds without a better score before the search stops


@dataclass(frozen=True)
class Selection:
    """An ensemble: member classifier ids with their weights (times added), best first."""

    weights: dict[int, int]
    cv_judgment_metric: float  # the metric on the out-of-fold probabilities it was chosen on
    test_judgment_metric: float  # the metric on the test part, untouched by the choice


def select(predictions: dict[int, pd.DataFrame], metric: str, rounds: int = ROUNDS) -> Selection:
    """Choose members and weights from candidates' prediction frames
    (:func:`atm_core.evaluation.prediction_frame`), given best first: ties go to the earlier.
    """
    if not predictions:
        raise ValueError("an ensemble needs at least one candidate with predictions")
    ids = list(predictions)
    first = predictions[ids[0]]
    keys = ["split", "row", "fold", "truth"]
    for classifier_id, frame in predictions.items():
        if not frame[keys].equals(first[keys]):
            raise ValueError(
                f"classifier {classifier_id}'s predictions cover other rows than "
                f"classifier {ids[0]}'s: they are not from the same datarun split"
            )
    columns = [column for column in first.columns if column.startswith("p")]
    classes = list(range(len(columns)))
    is_cv = (first["split"] == "cv").to_numpy()
    cv_truth, test_truth = first["truth"].to_numpy()[is_cv], first["truth"].to_numpy()[~is_cv]
    folds = first["fold"].to_numpy()[is_cv]
    fold_rows = [np.flatnonzero(folds == fold) for fold in np.unique(folds)]
    cv = {i: frame.loc[is_cv, columns].to_numpy(np.float64) for i, frame in predictions.items()}

    def score(probabilities: np.ndarray, truth: np.ndarray) -> float:
        predicted = probabilities.argmax(axis=1)
        value = metric_value(metric, truth, predicted, probabilities, classes)
        return -math.inf if math.isnan(value) else value

    def cv_score(probabilities: np.ndarray) -> float:
        return float(np.mean([score(probabilities[rows], cv_truth[rows]) for rows in fold_rows]))

    total = np.zeros_like(cv[ids[0]])
    added: Counter[int] = Counter()
    best_score, best_weights = -math.inf, {}
    best_size = 0
    for size in range(1, rounds + 1):
        if size - best_size > PATIENCE:
            break
        # the best addition; on a tie the better-ranked candidate (max of -rank)
        round_score, negative_rank = max(
            (cv_score((total + cv[i]) / size), -rank) for rank, i in enumerate(ids)
        )
        chosen = ids[-negative_rank]
        total += cv[chosen]
        added[chosen] += 1
        if round_score > best_score:
            best_score, best_weights, best_size = round_score, dict(added), size
    weights = {i: best_weights[i] for i in ids if i in best_weights}
    test = sum(
        weight * predictions[i].loc[~is_cv, columns].to_numpy(np.float64)
        for i, weight in weights.items()
    ) / sum(weights.values())
    return Selection(weights, best_score, score(test, test_truth))


class EnsembleModel:
    """Fitted classifiers averaged: ``predict_proba`` is the weighted mean of the members'
    probabilities (aligned on ``classes``), ``predict`` its most probable class."""

    def __init__(self, members: list[tuple[Any, float]], classes: list) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = members
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        classes = self.classes_.tolist()
        total = sum(weight * class_scores(model, X, classes) for model, weight in self.members)
        return total / sum(weight for _, weight in self.members)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __repr__(self) -> str:
        inner = ", ".join(f"{weight:g} x {type(model).__name__}" for model, weight in self.members)
        return f"EnsembleModel({inner})"
