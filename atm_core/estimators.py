"""Small scikit-learn compatible pieces the catalogue and the pipeline refer to by import path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import (
    RBF,
    ConstantKernel,
    Kernel,
    Matern,
    RationalQuadratic,
)
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._mask import _get_mask
from sklearn.utils.validation import check_is_fitted

MISSING_CATEGORY = "__missing__"
# The share of a numeric column's filled cells that may hold something else than a number
# ("n/a", "?") and be read as missing; a column beyond it is refused (``UnreadableNumbers``).
TOLERATED_UNREADABLE = 0.05


class UnreadableNumbers(ValueError):
    """Numeric columns whose cells are mostly not numbers: reading them as missing would
    predict from imputed values without a word."""


@dataclass(frozen=True)
class Unreadable:
    """A numeric column's cells that are not numbers."""

    column: str
    count: int
    filled: int  # cells that hold anything
    example: object

    @property
    def share(self) -> float:
        return self.count / self.filled if self.filled else 0.0

    def describe(self) -> str:
        return (
            f"column '{self.column}': {self.count} of {self.filled} values are not numbers "
            f"(e.g. {self.example!r})"
        )


def unreadable_numbers(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Unreadable]]:
    """``frame`` as floats, and per column the filled cells that are not numbers (they become
    missing). Raises ``UnreadableNumbers`` for columns beyond ``TOLERATED_UNREADABLE``."""
    numbers, found = {}, []
    for name, column in frame.items():
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            numbers[name] = column.astype("float64")
            continue
        values = pd.to_numeric(column, errors="coerce")
        filled = column.notna() & (column.astype("str").str.strip() != "")
        lost = filled & values.isna()
        if lost.any():
            example = column[lost].iloc[0]
            found.append(Unreadable(str(name), int(lost.sum()), int(filled.sum()), example))
        numbers[name] = values.astype("float64")
    refused = [u for u in found if u.share > TOLERATED_UNREADABLE]
    if refused:
        raise UnreadableNumbers(
            "; ".join(u.describe() for u in refused)
            + ": the model was trained on numbers in "
            + ("this column" if len(refused) == 1 else "these columns")
        )
    return pd.DataFrame(numbers, index=frame.index, columns=frame.columns), found


def as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as floats; a stray non-number becomes missing (a few per column at
    most, see ``TOLERATED_UNREADABLE``)."""
    return unreadable_numbers(frame)[0]


def as_categories(frame: pd.DataFrame) -> np.ndarray:
    """Categorical columns as strings, missing values as their own category.

    Each cell refers to its column's one string object per category, not to a string of its
    own: 52,500 rows x 4 columns made 210,000 strings (12 MB), now 55, and take half the time.
    A pandas ``category`` column (text as ATM reads a CSV) gives its codes and categories
    as they are, without a string per row first.
    """
    out = np.empty(frame.shape, dtype=object)
    for index, (_, column) in enumerate(frame.items()):
        if isinstance(column.dtype, pd.CategoricalDtype):  # missing: code -1
            codes, categories = column.cat.codes.to_numpy(), column.cat.categories.astype("str")
        else:
            codes, categories = pd.factorize(column.astype("str"))  # missing: code -1
        labels = np.append(np.asarray(categories, dtype=object), MISSING_CATEGORY)
        out[:, index] = labels[codes]
    return out


def as_float32(X: np.ndarray) -> np.ndarray:
    return np.asarray(X, dtype=np.float32)


class StackedColumns(ColumnTransformer):
    """``ColumnTransformer`` that writes its branches' blocks into one preallocated matrix.

    ``np.hstack`` needs every block dense next to the result; here a sparse block (one-hot) is
    written straight into its columns and never exists dense on its own: on the 100k benchmark
    set a logistic regression's preprocessing peaked 6 MB lower (36.4 MB over the data it
    holds, from 42.5). Sparse or frame output is left to ``ColumnTransformer``.
    """

    dtype: type | None = None  # of the matrix; None: the blocks' common type

    def _hstack(self, Xs, *, n_samples):
        if self.sparse_output_ or not all(
            isinstance(X, np.ndarray) or sparse.issparse(X) for X in Xs
        ):
            return super()._hstack(Xs, n_samples=n_samples)
        dtype = self.dtype or np.result_type(*(X.dtype for X in Xs))
        out = np.zeros((n_samples, sum(X.shape[1] for X in Xs)), dtype)
        start = 0
        for X in Xs:
            if sparse.issparse(X):
                X = sparse.csr_array(X)
                rows = np.repeat(np.arange(n_samples), np.diff(X.indptr))
                out[rows, start + X.indices] = X.data
            else:
                out[:, start : start + X.shape[1]] = X
            start += X.shape[1]
        return out


class Float32Columns(StackedColumns):
    """``StackedColumns`` writing a float32 matrix: half the memory, for estimators that fit in
    float32 or convert their input to it (a class of its own, so ``clone`` keeps it)."""

    dtype = np.float32


class BlockwiseOneHotEncoder(OneHotEncoder):
    """``OneHotEncoder`` whose sparse ``transform`` of an array encodes ``BLOCK_ROWS`` rows at
    a time: at once, it holds a code per cell and index arrays of every value beside the
    result (4 text columns of 2M rows: 295 MB over its input). Stacked, the blocks are the
    same matrix."""

    BLOCK_ROWS = 262_144

    def transform(self, X):
        if not (self.sparse_output and isinstance(X, np.ndarray) and len(X) > self.BLOCK_ROWS):
            return super().transform(X)
        rows = range(0, len(X), self.BLOCK_ROWS)
        blocks = [
            super(BlockwiseOneHotEncoder, self).transform(X[i : i + self.BLOCK_ROWS]) for i in rows
        ]
        return sparse.vstack(blocks, format="csr")


class SparseColumns(StackedColumns):
    """``StackedColumns`` writing one float32 CSR matrix: a dense block's every value, a sparse
    block's (one-hot) stored values, row by row, into arrays allocated once.

    A final refit of a logistic regression on 2M rows: 4 text columns one-hot encoded into
    118 columns, 11 numbers: the dense float32 matrix takes 1,032 MB, this one 240 MB.
    (``ColumnTransformer``'s own sparse stacking converts each block to coordinates first.)
    """

    dtype = np.float32
    BLOCK_ROWS = 262_144

    def _hstack(self, Xs, *, n_samples):
        if not all(isinstance(X, np.ndarray) or sparse.issparse(X) for X in Xs):
            return super()._hstack(Xs, n_samples=n_samples)
        blocks = [sparse.csr_array(X) if sparse.issparse(X) else X for X in Xs]
        lengths = [np.diff(X.indptr) if sparse.issparse(X) else X.shape[1] for X in blocks]
        per_row = sum(lengths, np.zeros(n_samples, np.int64))
        nnz = int(per_row.sum())
        index = np.int32 if max(nnz, sum(X.shape[1] for X in blocks)) < 2**31 else np.int64
        indptr = np.zeros(n_samples + 1, index)
        np.cumsum(per_row, out=indptr[1:])
        data, indices = np.empty(nnz, self.dtype), np.empty(nnz, index)
        cursor = indptr[:-1].astype(np.int64)  # where each row's next value goes
        start = 0
        for X, length in zip(blocks, lengths, strict=True):
            if sparse.issparse(X):  # a block of rows at a time: its positions are small
                for first in range(0, n_samples, self.BLOCK_ROWS):
                    rows = slice(first, first + self.BLOCK_ROWS)
                    values = slice(
                        X.indptr[first], X.indptr[min(first + self.BLOCK_ROWS, n_samples)]
                    )
                    offsets = np.arange(values.start, values.stop)
                    positions = np.repeat(cursor[rows] - X.indptr[:-1][rows], length[rows])
                    positions += offsets
                    data[positions], indices[positions] = X.data[values], start + X.indices[values]
                cursor += length
            else:
                for column in range(X.shape[1]):
                    data[cursor], indices[cursor] = X[:, column], start + column
                    cursor += 1
            start += X.shape[1]
        return sparse.csr_matrix((data, indices, indptr), shape=(n_samples, start), copy=False)


class ColumnMedianImputer(SimpleImputer):
    """``SimpleImputer`` whose median strategy takes each column's median on its own.

    ``SimpleImputer`` takes the medians of a masked copy of the whole matrix: on 2M rows x 11
    numbers (a final refit) 11.3 s and 735 MB above its input; a column at a time, a copy of
    one column. The same medians: the middle value, or the mean of the middle two.
    """

    def _dense_fit(self, X, strategy, missing_values, fill_value):
        if strategy != "median":
            return super()._dense_fit(X, strategy, missing_values, fill_value)
        missing = _get_mask(X, missing_values)
        self._fit_indicator(missing)
        empty = 0 if self.keep_empty_features else np.nan
        medians = [
            np.median(X[~missing[:, j], j]) if not missing[:, j].all() else empty
            for j in range(X.shape[1])
        ]
        return np.asarray(medians, dtype=X.dtype)


class BlockwiseStandardScaler(StandardScaler):
    """``StandardScaler`` whose ``fit`` reads a dense array ``BLOCK_ROWS`` rows at a time.

    Its one-shot variance makes a temporary as large as the data (28 MB for 52,500 rows x 67
    columns, the largest allocation of a logistic regression's fit on the 100k benchmark set);
    the blocks are combined by ``partial_fit``'s incremental mean and variance (the same
    figures to ~1e-15). Other inputs (sparse, data frames) are fitted as one block.
    """

    BLOCK_ROWS = 4096

    def fit(self, X, y=None, sample_weight=None):
        if not isinstance(X, np.ndarray) or X.ndim != 2 or len(X) <= self.BLOCK_ROWS:
            return super().fit(X, y, sample_weight)
        weights = None if sample_weight is None else np.asarray(sample_weight)
        for start in range(0, len(X), self.BLOCK_ROWS):
            rows = slice(start, start + self.BLOCK_ROWS)
            block = (X[rows], y, None if weights is None else weights[rows])
            if start == 0:
                super().fit(*block)
            else:
                self.partial_fit(*block)
        return self

    def transform(self, X, copy=None):
        """Scales a CSR matrix in place (``copy`` False) ``BLOCK_ROWS`` rows at a time:
        ``StandardScaler`` makes a float64 array of its every stored value to multiply by (2M
        rows of a final refit: 240 MB). Other inputs as ``StandardScaler`` does."""
        in_place = not (self.copy if copy is None else copy)
        if not (sparse.issparse(X) and X.format == "csr" and in_place):
            return super().transform(X, copy)
        for start in range(0, X.shape[0], self.BLOCK_ROWS):
            block = X[start : start + self.BLOCK_ROWS]  # a copy: scaled, then written back
            values = slice(X.indptr[start], X.indptr[start] + block.nnz)
            X.data[values] = super().transform(block, copy=False).data
        return X


class PCAComponents(TransformerMixin, BaseEstimator):
    """PCA whose size is a count or, below 1, a fraction of the features seen at fit time."""

    def __init__(self, n_components: float = 0.5, whiten: bool = False, random_state=None):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None):
        n_features = np.asarray(X).shape[1]
        limit = max(1, min(n_features, np.asarray(X).shape[0]))
        wanted = self.n_components
        count = int(round(wanted * n_features)) if 0 < wanted < 1 else int(wanted)
        self.pca_ = PCA(
            n_components=min(max(count, 1), limit),
            whiten=self.whiten,
            random_state=self.random_state,
        ).fit(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        return self.pca_.transform(X)


class KernelGPClassifier(ClassifierMixin, BaseEstimator):
    """Gaussian process classifier configured by kernel *name*, as the method JSON describes it."""

    def __init__(
        self,
        kernel: str = "rbf",
        nu: float = 1.5,
        length_scale: float = 1.0,
        alpha: float = 1.0,
        random_state=None,
        n_jobs=None,
    ):
        self.kernel = kernel
        self.nu = nu
        self.length_scale = length_scale
        self.alpha = alpha
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _kernel(self) -> Kernel:
        builders = {
            "constant": lambda: ConstantKernel(),
            "rbf": lambda: RBF(),
            "matern": lambda: Matern(nu=self.nu),
            "rational_quadratic": lambda: RationalQuadratic(
                length_scale=self.length_scale, alpha=self.alpha
            ),
        }
        if self.kernel not in builders:
            raise ValueError(f"unknown kernel {self.kernel!r}: use one of {', '.join(builders)}")
        return builders[self.kernel]()

    def fit(self, X, y):
        self.model_ = GaussianProcessClassifier(
            kernel=self._kernel(), random_state=self.random_state, n_jobs=self.n_jobs
        ).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict(X)

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(X)


class CalibratedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A classifier that has only a decision function (SVC without ``probability=True``, SGD
    with a hinge loss), given ``predict_proba`` by a sigmoid map of its decision values per
    class (Platt scaling), fitted on decision values of rows the model did not see.

    * Binary: one sigmoid of the decision value gives the second class's probability.
      Multiclass: one sigmoid per one-vs-rest column, normalised to sum to 1.
    * Each map is non-decreasing (its slope is kept >= 0), so on binary data the probabilities
      rank rows exactly as the decision function does: the same ROC AUC.
    * ``predict`` is the wrapped estimator's own: the stored model decides as it did before it
      had probabilities. ``predict_proba``'s most probable class can differ on borderline rows,
      as ``SVC(probability=True)``'s does.
    * Where the decision values come from: ATM's evaluation fits the wrapped estimator itself
      and calls :meth:`calibrate` with the out-of-fold (or holdout) values its cross-validation
      computed anyway, so calibration costs no extra fit. A plain ``fit(X, y)`` (a refit on
      every labelled row) computes them by a ``cv``-fold cross-validation of its own: ``cv``
      more fits. ``fit(X, y, decisions=...)`` takes them from the caller.
    """

    def __init__(self, estimator=None, cv: int = 3):
        self.estimator = estimator
        self.cv = cv

    def fit(self, X, y, decisions=None):
        """Fit the estimator on (X, y) and the maps on ``decisions`` (held-out decision values
        of the same rows, in ``decision_function``'s layout) or on a ``cv``-fold CV's."""
        y = np.asarray(y)
        estimator = clone(self.estimator).fit(X, y)
        if decisions is None:
            smallest = int(np.unique(y, return_counts=True)[1].min())
            folds = StratifiedKFold(n_splits=max(2, min(self.cv, smallest)))
            decisions = cross_val_predict(
                clone(self.estimator), X, y, cv=folds, method="decision_function"
            )
        return self.calibrate(decisions, y, estimator=estimator)

    def plain_fit_cost(self) -> float:
        """What :meth:`fit` without ``decisions`` costs, in fits of the estimator on all its
        rows (fit time taken as proportional to rows): that fit, and the cross-validation's
        ``cv`` fits on ``(cv - 1) / cv`` of the rows each. (Fewer folds when a class has fewer
        than ``cv`` rows: an overestimate there.) The search's fits cost 1 (see the class)."""
        folds = max(2, self.cv)
        return 1.0 + folds * (folds - 1) / folds

    def calibrate(self, decisions, y, estimator=None):
        """Fit the maps on ``decisions``, held-out decision values of rows whose classes are
        ``y``. ``estimator``: the fitted model to wrap (the ``estimator`` parameter's
        configuration, fitted elsewhere); without it, the one ``fit`` fitted."""
        if estimator is not None:
            self.estimator_ = estimator
        check_is_fitted(self, "estimator_")
        self.classes_ = np.asarray(self.estimator_.classes_)
        values = self._columns(decisions)
        y = np.asarray(y)
        targets = (
            (y == self.classes_[1])[:, None]
            if len(self.classes_) == 2
            else y[:, None] == self.classes_[None, :]
        )
        self.maps_ = np.array([_platt(values[:, j], targets[:, j]) for j in range(values.shape[1])])
        return self

    def decision_function(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X)

    def predict(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        return self.probabilities(self.decision_function(X))

    def probabilities(self, decisions) -> np.ndarray:
        """Class probabilities (columns in ``classes_`` order) of decision values."""
        check_is_fitted(self, "maps_")
        values = self._columns(decisions)
        centre, scale, slope, intercept = self.maps_.T
        positive = expit(slope * (values - centre) / scale + intercept)
        if len(self.classes_) == 2:
            return np.column_stack([1.0 - positive[:, 0], positive[:, 0]])
        total = positive.sum(axis=1, keepdims=True)
        uniform = np.full_like(positive, 1.0 / positive.shape[1])
        return np.where(total > 0, positive / np.where(total > 0, total, 1.0), uniform)

    def _columns(self, decisions) -> np.ndarray:
        """Decision values as a finite 2-D array: one column (binary) or one per class."""
        values = np.asarray(decisions, dtype=np.float64)
        values = values.reshape(len(values), -1)
        expected = 1 if len(self.classes_) == 2 else len(self.classes_)
        if values.shape[1] != expected:
            raise ValueError(
                f"{values.shape[1]} decision columns for {len(self.classes_)} classes "
                f"(expected {expected})"
            )
        finite = np.isfinite(values)
        if not finite.all():  # an infinite margin is the most extreme finite one
            low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0, 0)
            values = np.nan_to_num(values, nan=0.0, posinf=high, neginf=low)
        return values


def _platt(values: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    """(centre, scale, slope, intercept) of ``p = expit(slope * (v - centre) / scale +
    intercept)`` fitted by maximum likelihood to Platt's targets, (n+ + 1) / (n+ + 2) for the
    class and 1 / (n- + 2) for the rest (they keep the map from going to 0 or 1 on separable
    data). The values are standardised first; the slope is bounded below by 0."""
    centre = float(values.mean()) if len(values) else 0.0
    scale = float(values.std()) if len(values) else 1.0
    scale = scale if scale > 0 else 1.0
    z = (values - centre) / scale
    positives = int(truth.sum())
    negatives = len(truth) - positives
    target = np.where(truth, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        f = params[0] * z + params[1]
        # -[t log p + (1 - t) log(1 - p)] with p = expit(f), without overflow
        value = np.sum(target * np.logaddexp(0, -f) + (1 - target) * np.logaddexp(0, f))
        error = expit(f) - target
        return float(value), np.array([error @ z, error.sum()])

    start = np.array([1.0, np.log((positives + 1) / (negatives + 1))])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0, None), (None, None)])
    return centre, scale, float(result.x[0]), float(result.x[1])
