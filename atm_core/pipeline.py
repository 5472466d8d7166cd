"""Turn a configuration (estimator class + hyperparameter values) into a scikit-learn pipeline.

The pipeline carries its own preprocessing, so a stored model predicts on raw rows: numbers are
imputed (median), string columns one-hot encoded (unseen categories are ignored, missing is a
category of its own), or with ``_ordinal`` numbered, then the special keys of the method JSON
add scaling and PCA. A classifier without ``predict_proba`` (SVC, SGD with a hinge loss) is
wrapped in a :class:`~atm_core.estimators.CalibratedClassifier`, so every stored model answers
``predict_proba``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OrdinalEncoder,
)

from atm_core.data.dataset import FeatureSchema
from atm_core.estimators import (
    BlockwiseOneHotEncoder,
    BlockwiseStandardScaler,
    CalibratedClassifier,
    ColumnMedianImputer,
    Float32Columns,
    PCAComponents,
    SparseColumns,
    StackedColumns,
    as_categories,
    as_float32,
    as_numbers,
)

SPECIAL_KEYS = ("_ordinal", "_scale", "_scale_minmax", "_pca", "_pca_dimensions", "_whiten")
MAX_CATEGORIES = 50
_LIST_LENGTH = re.compile(r"^len\((?P<name>.+)\)$")
_LIST_ELEMENT = re.compile(r"^(?P<name>.+)\[(?P<index>\d+)\]$")


def import_class(path: str) -> type:
    module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def estimator_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments: special keys removed, list parameters rebuilt as tuples."""
    kwargs: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    elements: dict[str, dict[int, Any]] = {}
    for name, value in values.items():
        if name in SPECIAL_KEYS:
            continue
        if match := _LIST_LENGTH.match(name):
            lengths[match["name"]] = int(value)
        elif match := _LIST_ELEMENT.match(name):
            elements.setdefault(match["name"], {})[int(match["index"])] = value
        else:
            kwargs[name] = value
    for name, length in lengths.items():
        items = elements.get(name, {})
        kwargs[name] = tuple(items[i] for i in range(length))
    return kwargs


# scikit-learn 1.8 made these estimators' n_jobs a no-op that warns (FutureWarning) on every fit.
NO_OP_N_JOBS = frozenset({"sklearn.linear_model.LogisticRegression"})


# Estimators whose preprocessing writes float32. A logistic regression fits in its input's
# precision: on the 100k benchmark set its 45,000 x 69 matrix took 12 MB instead of 25, the fit
# 1.03 s instead of 1.2, with the same scores to 5 decimals. Trees and forests convert their
# input to float32 themselves: given it, they skip that copy and fit the same trees.
FLOAT32_INPUT = frozenset(
    {
        "sklearn.linear_model.LogisticRegression",
        "sklearn.tree.DecisionTreeClassifier",
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.ExtraTreesClassifier",
    }
)


# Estimators that fit a sparse matrix to the same optimum as its dense, centred form when they
# fit an intercept (unpenalised, it absorbs the centring): see sparse_input.
SPARSE_INPUT = frozenset({"sklearn.linear_model.LogisticRegression"})


def build_pipeline(
    estimator_class: str,
    values: dict[str, Any],
    schema: FeatureSchema,
    *,
    random_state: int | None = None,
    n_jobs: int | None = None,
    calibrate: bool = True,
    sparse: bool = False,
) -> Pipeline:
    """An unfitted pipeline: preprocessing, optional scaling/PCA, then the estimator, which
    (``calibrate``, the default) a :class:`CalibratedClassifier` wraps when it has a decision
    function but no ``predict_proba``. With ``sparse``, a configuration that
    :func:`sparse_input` allows gets a sparse matrix (the same model up to the solver's
    tolerance, in a fraction of the memory); the others, their dense one."""
    cls = import_class(estimator_class)
    kwargs = estimator_kwargs(values)
    accepted = inspect.signature(cls.__init__).parameters
    if "random_state" in accepted and "random_state" not in kwargs:
        kwargs["random_state"] = random_state
    if (
        "n_jobs" in accepted
        and "n_jobs" not in kwargs
        and n_jobs is not None
        and estimator_class not in NO_OP_N_JOBS
    ):
        kwargs["n_jobs"] = n_jobs
    sparse = sparse and sparse_input(estimator_class, values)
    steps: list[tuple[str, Any]] = [
        (
            "preprocess",
            preprocessor(
                schema,
                ordinal=bool(values.get("_ordinal")),
                float32=estimator_class in FLOAT32_INPUT,
                sparse=sparse,
            ),
        )
    ]
    # Scaling works in place (copy=False): its input is the preprocessor's own new array.
    if values.get("_scale"):
        steps.append(("scale", BlockwiseStandardScaler(with_mean=not sparse, copy=False)))
    elif values.get("_scale_minmax"):
        steps.append(("scale", MinMaxScaler(clip=True, copy=False)))
    if values.get("_pca"):
        steps.append(
            (
                "pca",
                PCAComponents(
                    n_components=values.get("_pca_dimensions", 0.5),
                    whiten=bool(values.get("_whiten", False)),
                    random_state=random_state,
                ),
            )
        )
    estimator = cls(**kwargs)
    if calibrate and needs_calibration(estimator):
        estimator = CalibratedClassifier(estimator)
    steps.append(("estimator", estimator))
    return Pipeline(steps)


def refit_cost(model: Pipeline) -> float:
    """A plain ``fit`` of ``model`` in fits of the kind the search times (one fit of its
    estimator): 1, or more when a :class:`CalibratedClassifier` wraps it, whose plain fit
    cross-validates for its maps where the search gave it held-out decision values."""
    last = model.steps[-1][1]
    return last.plain_fit_cost() if isinstance(last, CalibratedClassifier) else 1.0


def stops_early(model: Pipeline) -> bool:
    """Whether the model's estimator may stop early (its iterations then depend on the fit)."""
    return bool(model.steps[-1][1].get_params().get("early_stopping", False))


def with_found_iterations(template: Pipeline, searched: Pipeline) -> Pipeline:
    """``template`` to refit with the iterations early stopping found for ``searched`` (the
    same configuration fitted at search time): a fixed count, no validation split.

    Stopping early again on every labelled row would set 10 % of them aside and run an
    unforeseeable number of iterations: on flights, histogram gradient boosting stopped at
    6 s on 120,000 rows and its refit on 200,000 was still running when its 10 s ran out."""
    fitted = searched.steps[-1][1]
    if getattr(fitted, "do_early_stopping_", False):
        template.steps[-1][1].set_params(max_iter=int(fitted.n_iter_), early_stopping=False)
    return template


def sparse_input(estimator_class: str, values: dict[str, Any]) -> bool:
    """Whether a configuration may fit a sparse matrix: a logistic regression with an
    intercept, scaled (or not) by the standard deviation alone.

    A sparse matrix cannot be centred, but with an unpenalised intercept (lbfgs, saga) the
    centring is absorbed by it: ``w.(x - m)/s + b = w.x/s + (b - w.m/s)``, the same penalty
    on ``w``, the same optimum and predictions. Without an intercept, or with a min-max
    scaling or a PCA, the model would change: those keep their dense matrix.
    """
    return (
        estimator_class in SPARSE_INPUT
        and bool(values.get("fit_intercept", True))
        and not values.get("_scale_minmax")
        and not values.get("_pca")
    )


def fit_rows(pipeline: Pipeline, load: Callable[[], tuple[Any, Any]]) -> Pipeline:
    """``pipeline.fit(X, y)`` on the rows ``load()`` returns, which are let go once the
    preprocessing has made its matrix (``Pipeline.fit`` keeps them to its end): a final
    refit's estimator fits without the 143 MB frame of 2M rows beside it."""
    X, y = load()
    for _, step in pipeline.steps[:-1]:
        X = step.fit_transform(X, y)  # the frame's last reference goes with the first step
    pipeline.steps[-1][1].fit(X, y)
    return pipeline


def needs_calibration(estimator: Any) -> bool:
    """A classifier that ranks (``decision_function``) but gives no probabilities: SVC without
    ``probability=True``, SGDClassifier with a hinge or squared hinge loss (pa, sgd)."""
    return hasattr(estimator, "decision_function") and not hasattr(estimator, "predict_proba")


def preprocessor(
    schema: FeatureSchema, *, ordinal: bool = False, float32: bool = False, sparse: bool = False
) -> StackedColumns:
    """Imputation, and one-hot encoding (or with ``ordinal`` numbering) for the schema's
    columns, into one matrix (with ``float32`` of that type; with ``sparse`` a float32 CSR
    matrix); other columns are dropped.

    Numbered categories (alphabetical order, -1 for one never seen) suit histogram gradient
    boosting: untuned on the benchmark suite's 5 datasets with categories, its test AUC moved
    by -0.0024 to +0.0074 (mean +0.0004) against one-hot, and on the 100k set it fitted 3x
    faster, on 16 columns instead of 67.
    """
    branches: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        branches.append(
            (
                "numeric",
                Pipeline(
                    [
                        (
                            "to_numbers",
                            FunctionTransformer(as_numbers, feature_names_out="one-to-one"),
                        ),
                        (
                            "impute",
                            ColumnMedianImputer(strategy="median", keep_empty_features=True),
                        ),
                        # the sparse matrix's values are float32: its numbers wait as such
                        *([("float32", float32_cast())] if sparse else []),
                    ]
                ),
                list(schema.numeric),
            )
        )
    if schema.categorical:
        branches.append(
            (
                "categorical",
                Pipeline(
                    [
                        (
                            "to_strings",
                            FunctionTransformer(as_categories, feature_names_out="one-to-one"),
                        ),
                        ("ordinal", numbered()) if ordinal else ("one_hot", one_hot()),
                    ]
                ),
                list(schema.categorical),
            )
        )
    # sparse_threshold=0: always one dense matrix (the one-hot block arrives sparse)
    stacker = SparseColumns if sparse else Float32Columns if float32 else StackedColumns
    return stacker(branches, remainder="drop", sparse_threshold=0, verbose_feature_names_out=False)


def float32_cast() -> FunctionTransformer:
    return FunctionTransformer(as_float32, feature_names_out="one-to-one")


def one_hot() -> BlockwiseOneHotEncoder:
    """A column per category (at most ``MAX_CATEGORIES``, the rarest grouped)."""
    return BlockwiseOneHotEncoder(
        handle_unknown="infrequent_if_exist",
        max_categories=MAX_CATEGORIES,
        dtype=np.float32,  # sparse and 0/1 exactly until stacked
    )


def numbered() -> OrdinalEncoder:
    """A number per category (at most ``MAX_CATEGORIES``), -1 for one never seen."""
    return OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=-1,
        max_categories=MAX_CATEGORIES,
        dtype=np.float64,
    )
