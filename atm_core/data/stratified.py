"""Stratified, seeded row splits of large tables: the rows ``train_test_split`` picks, in less
memory.

``train_test_split(rows, stratify=y)`` sorts ``y`` as Python objects when it holds text, and
gathers each part's rows in a Python list of numpy integers: on 2M rows it took 143-214 MB
above the labels, much of it kept by Python's allocator afterwards. :func:`stratified_rows`
does the same steps (scikit-learn's ``StratifiedShuffleSplit`` with the same random draws, in
the same order) on integer class codes, with numpy arrays only; ``tests/test_split_rows.py``
checks that the rows are the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection._split import _approximate_mode, _validate_shuffle_split
from sklearn.utils import check_random_state

from atm_core.memory import give_back


def label_codes(labels: pd.Series | np.ndarray) -> np.ndarray:
    """Each label's rank among the sorted distinct labels, what ``np.unique`` would number
    them (text compared by code point, as Python and Arrow both do): to stratify on."""
    codes = pd.factorize(labels, sort=True)[0]
    give_back(collect=False)  # glibc kept 37 MB of factorizing 2M text labels otherwise
    return codes


def stratified_rows(
    codes: np.ndarray,
    *,
    test_size: float | int | None = None,
    train_size: float | int | None = None,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split(np.arange(len(codes)), test_size=test_size, train_size=train_size,
    random_state=seed, stratify=codes)``: the positions of the train and test rows.

    ``codes``: integer class codes (:func:`label_codes`). Raises the ``ValueError``s
    ``train_test_split`` raises (a class with a single member, a part smaller than the
    number of classes), naming codes instead of labels.
    """
    n_train, n_test = _validate_shuffle_split(
        len(codes), test_size, train_size, default_test_size=0.25
    )
    classes, indices, counts = np.unique(codes, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            "The least populated classes in y have only 1 member, which is too few. The "
            "minimum number of groups for any class cannot be less than 2. Classes with too "
            f"few members are: {classes[counts < 2].tolist()}"
        )
    for size, name in ((n_train, "train_size"), (n_test, "test_size")):
        if size < len(classes):
            raise ValueError(
                f"The {name} = {size} should be greater or equal to the number of classes = "
                f"{len(classes)}"
            )
    by_class = np.split(np.argsort(indices, kind="stable"), np.cumsum(counts)[:-1])
    del indices
    rng = check_random_state(seed)
    train_counts = _approximate_mode(counts, n_train, rng)
    test_counts = _approximate_mode(counts - train_counts, n_test, rng)
    train, test = [], []
    for rows, count, n_in_train, n_in_test in zip(
        by_class, counts, train_counts, test_counts, strict=True
    ):
        shuffled = rows.take(rng.permutation(count), mode="clip")
        train.append(shuffled[:n_in_train])
        test.append(shuffled[n_in_train : n_in_train + n_in_test])
    train_rows, test_rows = (
        rng.permutation(np.concatenate(train)),
        rng.permutation(np.concatenate(test)),
    )
    del by_class, train, test
    give_back(collect=False)  # glibc kept ~40 MB of the 2M-row temporaries otherwise
    return train_rows, test_rows
