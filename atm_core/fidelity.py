"""Fidelities: a configuration is judged cheaply first, and fully only if it earns it.

Successive halving (asynchronous, as in ASHA): rung 0 fits a configuration once on a
stratified subsample of the training part and judges it on a holdout of that subsample; each
rung above takes ETA (:mod:`atm_core.rungs`) times more rows; the top rung is the datarun's
full evaluation (its CV policy on the whole training part). A configuration is promoted to
the next rung when it ranks in the top 1/ETA of the configurations finished at its rung
(:func:`atm_core.modelhub.promotion.promote`). The test part is the same at every rung.

A table whose training part is small (a full evaluation is cheap) has one rung: every
configuration goes straight to the full evaluation. ``fidelity="full"`` asks for that on any
table.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from atm_core.data.split import HOLDOUT_SHARE, TrainTest
from atm_core.rungs import rung_rows


def at_rung(data: TrainTest, rung: int, top: int, seed: int) -> TrainTest:
    """``data`` as rung ``rung`` sees it: below the top, a stratified subsample of the training
    part (the same rows for every configuration of the rung), laid out for a holdout."""
    if rung >= top:
        return data
    rows = rung_rows(rung, top, len(data.y_train))
    kept, _ = _stratified(np.arange(len(data.y_train)), data.y_train, rows, seed + rung + 1)
    y = data.y_train.iloc[kept].reset_index(drop=True)
    judged = max(1, round(HOLDOUT_SHARE * len(y)))
    fit, judge = _stratified(np.arange(len(y)), y, len(y) - judged, seed)
    order = kept[np.concatenate([fit, judge])]
    return TrainTest(
        X_train=data.X_train.iloc[order].reset_index(drop=True),
        y_train=data.y_train.iloc[order].reset_index(drop=True),
        X_test=data.X_test,
        y_test=data.y_test,
        n_folds=0,
        n_fit=len(fit),
    )


def _stratified(rows: np.ndarray, y, keep: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``keep`` of ``rows`` and the rest, stratified by ``y`` when every class allows it."""
    try:
        return train_test_split(rows, train_size=keep, random_state=seed, stratify=y)
    except ValueError:  # a class too small to appear in both parts: a plain sample
        return train_test_split(rows, train_size=keep, random_state=seed)
