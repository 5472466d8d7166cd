"""Stratified, seeded row splits of large tables: the rows ``train_test_split`` picks, in less
memory.

``train_test_split(rows, stratify=y)`` sorts ``y`` as Python objects when it holds text, and
gathers each part's rows in a Python list of numpy integers: on 2M rows it took 143-214 MB
above the labels, much of it kept by Python's allocator afterwards. :func:`stratified_rows`
does the same steps (scikit-learn's ``StratifiedShuffleSplit`` with the same random draws, in
the same order) on integer class codes, with numpy arrays only; ``tests/test_large_files.py``
checks that the rows are the same. Its two private helpers are restated here (as of
scikit-learn 1.9), so that ``atm enter_data``, which splits to count the parts' rows, does not
import scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

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
    n_train, n_test = part_sizes(len(codes), test_size, train_size)
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
    rng = np.random.mtrand._rand if seed is None else np.random.RandomState(seed)
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


def part_sizes(
    n_rows: int, test_size: float | int | None, train_size: float | int | None
) -> tuple[int, int]:
    """The train and test parts' rows, as scikit-learn's ``_validate_shuffle_split`` counts
    them (a fraction or a count each; the test part 0.25 when neither is given), with its
    ``ValueError``s."""
    if test_size is None and train_size is None:
        test_size = 0.25
    sizes = {"test_size": test_size, "train_size": train_size}
    for name, size in sizes.items():
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int | float | np.integer | np.floating):
            raise ValueError(f"Invalid value for {name}: {size}")
        fraction = isinstance(size, float | np.floating)
        if (fraction and not 0 < size < 1) or (not fraction and not 0 < size < n_rows):
            raise ValueError(
                f"{name}={size} should be either positive and smaller than the number of "
                f"samples {n_rows} or a float in the (0, 1) range"
            )
    both = [size for size in (train_size, test_size) if isinstance(size, float | np.floating)]
    if len(both) == 2 and sum(both) > 1:
        raise ValueError(
            f"The sum of test_size and train_size = {sum(both)}, should be in the (0, 1) "
            "range. Reduce test_size and/or train_size."
        )
    n_test = _rows(test_size, n_rows, math.ceil)
    n_train = _rows(train_size, n_rows, math.floor)
    if n_train is None:
        n_train = n_rows - n_test
    elif n_test is None:
        n_test = n_rows - n_train
    if n_train + n_test > n_rows:
        raise ValueError(
            f"The sum of train_size and test_size = {n_train + n_test}, should be smaller than "
            f"the number of samples {n_rows}. Reduce test_size and/or train_size."
        )
    if n_train == 0:
        raise ValueError(
            f"With n_samples={n_rows}, test_size={test_size} and train_size={train_size}, the "
            "resulting train set will be empty. Adjust any of the aforementioned parameters."
        )
    return int(n_train), int(n_test)


def _rows(size: float | int | None, n_rows: int, rounding: Callable[[float], int]) -> int | None:
    if size is None:
        return None
    return rounding(size * n_rows) if isinstance(size, float | np.floating) else int(size)


def _approximate_mode(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's ``_approximate_mode``: how many of ``n_draws`` come from each class, in
    proportion to ``counts``; the draws left by rounding down go to the largest remainders,
    ties broken by ``rng`` (the same draws as scikit-learn's, so the same rows)."""
    continuous = counts / counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
