"""A classifier's confusion matrix and ROC curves, from its stored held-out probabilities.

The probabilities (``predictions.parquet``, see :func:`atm_core.evaluation.prediction_frame`)
cover the test part of the datarun's split, which no model of the datarun was fitted on, so
these are the same rows the classifier's test score was computed on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ROC_POINTS = 200  # at most, per curve (thresholds thinned evenly beyond that)


def test_rows(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The test part's true class indices and class probabilities (one column per class)."""
    test = predictions[predictions["split"] == "test"]
    columns = [c for c in predictions.columns if c.startswith("p") and c[1:].isdigit()]
    columns.sort(key=lambda c: int(c[1:]))
    return test["truth"].to_numpy(np.int64), test[columns].to_numpy(np.float64)


def confusion(truth: np.ndarray, probabilities: np.ndarray) -> list[list[int]]:
    """Counts of true class (rows) against the most probable class (columns)."""
    k = probabilities.shape[1]
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, probabilities.argmax(axis=1)), 1)
    return matrix.tolist()


def roc_curves(truth: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> list[dict]:
    """The positive (last) class's curve on a binary problem, one-vs-rest curves otherwise;
    a class absent from the test part has none."""
    from sklearn.metrics import roc_auc_score, roc_curve

    k = probabilities.shape[1]
    wanted = [k - 1] if k == 2 else list(range(k))
    curves = []
    for index in wanted:
        positive = truth == index
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, index])
        if len(fpr) > ROC_POINTS:
            keep = np.unique(np.linspace(0, len(fpr) - 1, ROC_POINTS).round().astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        curves.append(
            {
                "label": classes[index],
                "auc": float(roc_auc_score(positive, probabilities[:, index])),
                "fpr": [round(float(v), 5) for v in fpr],
                "tpr": [round(float(v), 5) for v in tpr],
            }
        )
    return curves


def evaluate(predictions: pd.DataFrame, classes: list[Any]) -> dict[str, Any]:
    labels = [str(c) for c in classes]
    truth, probabilities = test_rows(predictions)
    return {
        "rows": len(truth),
        "classes": labels,
        "confusion": confusion(truth, probabilities),
        "roc": roc_curves(truth, probabilities, labels),
    }
