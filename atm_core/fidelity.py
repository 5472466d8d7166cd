"""Fidelities: a configuration is judged cheaply first, and fully only if it earns it.

Successive halving (asynchronous, as in ASHA): rung 0 fits a configuration once on a
stratified subsample of the training part and judges it on a holdout of that subsample; each
rung above takes ETA (:mod:`atm_core.rungs`) times more rows; the top rung is the datarun's
full evaluation (its CV policy on the whole training part). A rung fits 80 % of its rows and
judges on the rest, never on fewer than MIN_JUDGED_ROWS (predictions cost less than fits). A
configuration is promoted to the next rung when it ranks in the top 1/ETA of its method's
configurations finished at its rung (:func:`atm_core.modelhub.promotion.promote`). Below the
top, the test score is measured on a stratified subsample of the test part as large as the
rung (the same rows for every configuration of the rung): predictions on a whole large test
part (57,000 rows of fertility) at every rung are time the search can use.

A table whose training part is small (a full evaluation is cheap) has one rung: every
configuration goes straight to the full evaluation. ``fidelity="full"`` asks for that on any
table.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from atm_core.data.split import HOLDOUT_SHARE, TrainTest
from atm_core.data.stratified import label_codes, stratified_rows
from atm_core.rungs import rung_rows

# a rung's fit is judged on at least this many rows (or all it does not fit): a ROC AUC near
# 0.63 (fertility) judged on 1,000 rows has a standard error near 0.02 (Hanley and McNeil),
# more than the gaps between the configurations it ranks
MIN_JUDGED_ROWS = 5_000


def at_rung(data: TrainTest, rung: int, top: int, seed: int) -> TrainTest:
    """``data`` as rung ``rung`` sees it: below the top, a stratified subsample of the training
    part (the same rows for every configuration of the rung) laid out for a holdout of at least
    MIN_JUDGED_ROWS, and a stratified sample of the test part as large as the rung."""
    if rung >= top:
        return data
    rows = rung_rows(rung, top, len(data.y_train))
    codes = label_codes(data.y_train)
    fitted = rows - max(1, round(HOLDOUT_SHARE * rows))
    judged = min(max(rows - fitted, MIN_JUDGED_ROWS), len(codes) - fitted)
    kept, _ = _stratified(codes, fitted + judged, seed + rung + 1)
    fit, judge = _stratified(codes[kept], fitted, seed)
    order = kept[np.concatenate([fit, judge])]
    X_test, y_test = data.X_test, data.y_test
    if rows < len(y_test):
        tested, _ = _stratified(label_codes(y_test), rows, seed + rung + 1)
        tested.sort()
        X_test = X_test.iloc[tested].reset_index(drop=True)
        y_test = y_test.iloc[tested].reset_index(drop=True)
    return TrainTest(
        X_train=data.X_train.iloc[order].reset_index(drop=True),
        y_train=data.y_train.iloc[order].reset_index(drop=True),
        X_test=X_test,
        y_test=y_test,
        n_folds=0,
        n_fit=len(fit),
    )


def _stratified(codes: np.ndarray, keep: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``keep`` of the rows and the rest, stratified by their class ``codes`` when every class
    allows it (the rows ``train_test_split`` picks, see :mod:`atm_core.data.stratified`)."""
    if keep >= len(codes):
        return np.arange(len(codes)), np.arange(0)
    try:
        return stratified_rows(codes, train_size=keep, seed=seed)
    except ValueError:  # a class too small to appear in both parts: a plain sample
        return train_test_split(np.arange(len(codes)), train_size=keep, random_state=seed)
