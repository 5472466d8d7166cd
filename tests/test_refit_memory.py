"""The final refit's memory (issue 16): a logistic regression with an intercept fits a sparse
float32 matrix built in place, the pieces that build it work in blocks, and the refit runs in
a process of its own that reads the rows itself. Each piece gives what the dense, one-shot
version gives: the same matrix, the same medians, the same model up to the solver."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from atm_core.data.dataset import FeatureSchema
from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.estimators import (
    BlockwiseOneHotEncoder,
    BlockwiseStandardScaler,
    ColumnMedianImputer,
    SparseColumns,
    StackedColumns,
)
from atm_core.isolation import run_isolated
from atm_core.modelhub import ModelHub
from atm_core.pipeline import (
    build_pipeline,
    estimator_kwargs,
    fit_rows,
    preprocessor,
    sparse_input,
)
from atm_core.results import _all_rows, final_candidates

METHODS = Path(__file__).resolve().parents[1] / "atm_core" / "methods"
LOGREG = "sklearn.linear_model.LogisticRegression"
SCHEMA = FeatureSchema(("x0", "x1", "n"), ("colour", "city"))


def mixed_rows(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers (some missing), integers and text (some missing, one column with many values);
    3 classes that depend on both."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x0": rng.normal(0, 1, n),
            "x1": rng.normal(5, 10, n),
            "n": rng.integers(-3, 4, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "city": rng.choice([f"c{i}" for i in range(70)], n),
        }
    )
    score = frame["x0"] + 0.1 * frame["x1"] + (frame["colour"] == "red") + rng.normal(0, 1, n)
    labels = pd.Series(np.where(score > 1, "yes", np.where(score < 0, "no", "maybe")))
    frame.loc[rng.random(n) < 0.05, "x1"] = np.nan
    frame.loc[rng.random(n) < 0.05, "city"] = None
    return frame, labels


def logreg_values(**changes) -> dict:
    values = {"C": 1.0, "tol": 1e-4, "solver": "lbfgs", "fit_intercept": True,
              "class_weight": "balanced", "max_iter": 1000, "_scale": True}  # fmt: skip
    return {**values, **changes}


def test_which_configurations_fit_a_sparse_matrix() -> None:
    assert sparse_input(LOGREG, logreg_values())
    assert sparse_input(LOGREG, logreg_values(_scale=False))
    # without an intercept the centring changes the model; min-max and PCA need dense input
    assert not sparse_input(LOGREG, logreg_values(fit_intercept=False))
    assert not sparse_input(LOGREG, logreg_values(_scale=False, _scale_minmax=True))
    assert not sparse_input(LOGREG, logreg_values(_pca=True))
    assert not sparse_input("sklearn.ensemble.RandomForestClassifier", {})
    dense = build_pipeline(LOGREG, logreg_values(fit_intercept=False), SCHEMA, sparse=True)
    assert type(dense.named_steps["preprocess"]) is not SparseColumns
    assert dense.named_steps["scale"].with_mean
    chosen = build_pipeline(LOGREG, logreg_values(), SCHEMA, sparse=True)
    assert type(chosen.named_steps["preprocess"]) is SparseColumns
    assert not chosen.named_steps["scale"].with_mean
    assert type(build_pipeline(LOGREG, logreg_values(), SCHEMA).named_steps["preprocess"]) is not (
        SparseColumns
    )


class SmallBlocks(SparseColumns):
    BLOCK_ROWS = 7  # many blocks, and a last one that is not full


def test_the_sparse_matrix_holds_the_dense_matrix_values() -> None:
    X, y = mixed_rows(500)
    dense = preprocessor(SCHEMA, float32=True).fit_transform(X, y)
    for stacker in (SparseColumns, SmallBlocks):
        built = preprocessor(SCHEMA, sparse=True)
        built.__class__ = stacker
        matrix = built.fit_transform(X, y)
        assert sparse.issparse(matrix) and matrix.format == "csr"
        assert matrix.dtype == np.float32 and matrix.indices.dtype == np.int32
        np.testing.assert_array_equal(matrix.toarray(), dense)
        np.testing.assert_array_equal(built.transform(X.iloc[:40]).toarray(), dense[:40])
    # a dense block alone, and the float64 dense stacking, agree too
    only_numbers = FeatureSchema(SCHEMA.numeric, ())
    np.testing.assert_array_equal(
        preprocessor(only_numbers, sparse=True).fit_transform(X).toarray(),
        preprocessor(only_numbers).fit_transform(X).astype(np.float32),
    )
    assert type(preprocessor(SCHEMA)) is StackedColumns


def test_one_hot_in_blocks_is_one_hot_at_once() -> None:
    X, _ = mixed_rows(1000)
    cells = X[["colour", "city"]].astype(str).to_numpy(dtype=object)
    options = {"handle_unknown": "infrequent_if_exist", "max_categories": 50,
               "dtype": np.float32}  # fmt: skip
    whole = OneHotEncoder(**options).fit(cells)
    blocks = BlockwiseOneHotEncoder(**options).fit(cells)
    blocks.BLOCK_ROWS = 64
    expected = whole.transform(cells)
    found = blocks.transform(cells)
    assert sparse.issparse(found) and found.dtype == np.float32
    np.testing.assert_array_equal(found.toarray(), expected.toarray())
    unseen = np.array([["purple", "c1"], ["red", "nowhere"]], dtype=object)
    np.testing.assert_array_equal(
        blocks.transform(unseen).toarray(), whole.transform(unseen).toarray()
    )


def test_scaling_a_sparse_matrix_in_blocks_in_place() -> None:
    rng = np.random.default_rng(1)
    matrix = sparse.random(5000, 30, density=0.2, format="csr", dtype=np.float32, random_state=2)
    matrix.data *= rng.normal(0, 100, 30).astype(np.float32)[matrix.indices]
    expected = StandardScaler(with_mean=False).fit(matrix).transform(matrix)
    scaler = BlockwiseStandardScaler(with_mean=False, copy=False).fit(matrix)
    scaler.BLOCK_ROWS = 333
    scaled = scaler.transform(matrix)
    assert scaled is matrix  # in place
    np.testing.assert_array_equal(scaled.toarray(), expected.toarray())


def test_medians_a_column_at_a_time_are_simple_imputer_medians() -> None:
    rng = np.random.default_rng(3)
    for rows in (1, 2, 7, 1000, 1001):
        for dtype in (np.float64, np.float32):
            X = rng.normal(size=(rows, 4)).astype(dtype)
            X[rng.random((rows, 4)) < 0.3] = np.nan
            X[:, 2] = np.nan  # every value missing
            X[:, 3] = np.round(X[:, 3])  # ties
            for keep in (True, False):
                options = {"strategy": "median", "keep_empty_features": keep}
                expected = SimpleImputer(**options).fit(X)
                found = ColumnMedianImputer(**options).fit(X)
                assert found.statistics_.dtype == expected.statistics_.dtype
                np.testing.assert_array_equal(found.statistics_, expected.statistics_)
                with warnings.catch_warnings():  # keep=False drops the empty column, and says so
                    warnings.simplefilter("ignore", UserWarning)
                    np.testing.assert_array_equal(found.transform(X), expected.transform(X))


def test_sparse_and_dense_logistic_regressions_are_the_same_model() -> None:
    """The same optimum: in float64 at a tight tolerance the probabilities agree to 1e-5; in
    float32 at the catalogue's default tolerance as closely as float32 lets the solver go."""
    X, y = mixed_rows(4000)
    # saga converges slowly (on sparse input its intercept takes smaller steps): after 5,000
    # epochs it is within ~4e-4 of the optimum
    for solver, tol, within in (("lbfgs", 1e-10, 1e-5), ("saga", 1e-8, 1e-3)):
        probabilities = {}
        for layout in (False, True):
            values = logreg_values(solver=solver, tol=tol, max_iter=5000, C=0.5)
            model = build_pipeline(LOGREG, values, SCHEMA, random_state=0, sparse=layout)
            design = model[:-1].fit_transform(X, y)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model[-1].fit(design.astype(np.float64), y)
            probabilities[layout] = model[-1].predict_proba(design.astype(np.float64))
        assert np.abs(probabilities[True] - probabilities[False]).max() < within, solver
    # the check can fail: without an intercept, the uncentred matrix is another model
    values = logreg_values(fit_intercept=False, tol=1e-10)
    centred = build_pipeline(LOGREG, values, SCHEMA, random_state=0).fit(X, y)
    steps = [
        ("preprocess", preprocessor(SCHEMA, sparse=True)),
        ("scale", BlockwiseStandardScaler(with_mean=False)),
        ("estimator", LogisticRegression(**estimator_kwargs(values))),
    ]
    uncentred = Pipeline(steps)
    uncentred.fit(X, y)
    assert np.abs(centred.predict_proba(X) - uncentred.predict_proba(X)).max() > 0.05
    answers = {}
    for layout in (False, True):
        model = build_pipeline(LOGREG, logreg_values(), SCHEMA, random_state=0, sparse=layout)
        answers[layout] = model.fit(X, y).predict_proba(X)
    assert np.abs(answers[True] - answers[False]).max() < 0.02
    assert (answers[True].argmax(axis=1) == answers[False].argmax(axis=1)).mean() > 0.995


def test_fit_rows_fits_what_pipeline_fit_fits() -> None:
    X, y = mixed_rows(800)
    tree = ("sklearn.tree.DecisionTreeClassifier", {"max_depth": 5})
    for estimator, values in ((LOGREG, logreg_values()), tree):
        expected = build_pipeline(estimator, values, SCHEMA, random_state=0).fit(X, y)
        found = fit_rows(build_pipeline(estimator, values, SCHEMA, random_state=0), lambda: (X, y))
        np.testing.assert_array_equal(found.predict_proba(X), expected.predict_proba(X))


def test_a_forked_call_without_a_time_limit_runs_in_another_process() -> None:
    assert run_isolated(os.getpid, None) == os.getpid()
    assert run_isolated(os.getpid, None, fork=True) != os.getpid()


def test_a_logistic_regression_refit_fits_a_sparse_matrix_in_its_own_process(
    sqlite_hub: ModelHub, tmp_path: Path
) -> None:
    X, y = mixed_rows(1500)
    path = tmp_path / "mixed.csv"
    X.assign(label=y).to_csv(path, index=False)
    # the catalogue's logistic regression, always with an intercept: a sparse refit
    method = json.loads(Path(METHODS, "logistic_regression.json").read_text())
    method["hyperparameters"]["fit_intercept"]["values"] = [True]
    method_path = tmp_path / "logreg_intercept.json"
    method_path.write_text(json.dumps(method))
    request = DatarunRequest(str(path), class_column="label", methods=[str(method_path)], budget=2)
    datarun_id = enter_data(sqlite_hub, request).dataruns[0].id
    Driver(sqlite_hub, datarun_ids=[datarun_id]).run()
    members = final_candidates(sqlite_hub, datarun_id)
    assert members
    rows, labels = _all_rows(sqlite_hub, datarun_id)
    dataset = sqlite_hub.get_dataset(sqlite_hub.get_datarun(datarun_id).dataset_id)
    schema = FeatureSchema.from_json(dataset.feature_schema)
    assert all(sparse_input(LOGREG, member.hyperparameters_values) for member in members)
    for member in members:
        final = sqlite_hub.load_model(member.id)
        values = member.hyperparameters_values
        layout = type(final.named_steps["preprocess"])
        assert (layout is SparseColumns) == sparse_input(LOGREG, values)
        assert final.named_steps["estimator"].n_features_in_ == len(schema.numeric) + 3 + 50
        dense = build_pipeline(LOGREG, values, schema, random_state=0).fit(rows, labels)
        found, expected = final.predict_proba(rows), dense.predict_proba(rows)
        assert np.abs(found - expected).max() < 0.02
        assert (found.argmax(axis=1) == expected.argmax(axis=1)).mean() > 0.99
