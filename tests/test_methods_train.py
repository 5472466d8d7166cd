"""One configuration of every hyperpartition of every built-in method trains and scores.

This is the original ``scripts/test_method.py`` as a test, on both demo datasets (pollution:
binary, iris: 3 classes), along the path a worker takes: catalogue -> hyperpartitions ->
tuning space -> pipeline -> evaluation. scikit-learn's FutureWarning and DeprecationWarning are
errors here: the catalogue must not lean on anything 1.9 is about to remove.

The configuration is the centre of each partition's space (the middle point of a 3-point grid,
the geometric centre for ``*_exp``): deterministic, and it keeps mlp's 60 partitions affordable
(random layer sizes up to 256 x 3 triple the run time). The judgment metric is roc_auc (macro
on iris), which needs predict_proba or decision_function: every method must be able to rank,
and every stored model must answer predict_proba with rows that sum to 1.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from atm_core import cli
from atm_core.data.dataset import FeatureSchema, inspect_dataset
from atm_core.data.split import TrainTest, split_frames
from atm_core.evaluation import evaluate
from atm_core.metric_names import resolve_metric
from atm_core.pipeline import build_pipeline
from atm_core.search.catalogue import builtin_methods, load_method
from atm_core.search.hyperpartitions import enumerate_hyperpartitions
from atm_core.search.space import TuningSpace
from tests.test_hyperpartitions import EXPECTED_COUNTS  # derivations explained there

DATASETS = ("pollution", "iris")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny fits: BLAS/OpenMP threads cost more than they give (5x on hgb with busy cores)."""
    with threadpool_limits(1):
        yield


def _data(request: pytest.FixtureRequest, dataset: str) -> tuple[TrainTest, object, str]:
    path = request.getfixturevalue(f"{dataset}_path")
    info, train, test = inspect_dataset(path)
    data = split_frames(train, test, info.class_column, info.schema, seed=0, test_size=0.3)
    # 2 folds instead of up to 5: every partition still fits 3 times (2 folds + the refit)
    data = dataclasses.replace(data, n_folds=2)
    return data, info.schema, resolve_metric("roc_auc", info.k_classes)


def _centre(space: TuningSpace) -> dict:
    if space.tunable is None:
        return {}
    middle = {name: hp.cardinality // 2 for name, hp in space.tunable.hyperparams.items()}
    return space.decode(middle)


def test_the_catalogue_is_checked_against_scikit_learn_1_9() -> None:
    assert sklearn.__version__.startswith("1.9.")
    assert sorted(builtin_methods()) == sorted(EXPECTED_COUNTS)


SLOW = {"mlp"}  # 60 partitions: 20-30 s each, left out of make test-fast


def methods() -> list:
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name in sorted(EXPECTED_COUNTS)
    ]


@pytest.mark.parametrize("method", methods())
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_hyperpartition_trains(
    request: pytest.FixtureRequest, dataset: str, method: str
) -> None:
    data, schema, metric = _data(request, dataset)
    partitions = enumerate_hyperpartitions(load_method(method))
    assert len(partitions) == EXPECTED_COUNTS[method]
    failures: list[str] = []
    for partition in partitions:
        space = TuningSpace(partition.tunables, gridding=3)
        values = partition.fixed_values() | _centre(space)

        def make_model(values=values, partition=partition):
            return build_pipeline(partition.estimator_class, values, schema, random_state=0)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)
                warnings.simplefilter("error", DeprecationWarning)
                warnings.simplefilter("ignore", ConvergenceWarning)  # short runs are expected
                evaluation = evaluate(make_model, data, metric, seed=0)
        except Exception as exc:  # collect them all: one report names every broken partition
            failures.append(f"{partition.label()} {values}: {type(exc).__name__}: {exc}")
            continue
        assert math.isfinite(evaluation.cv_judgment_metric), partition.label()
        assert 0.0 <= evaluation.test_judgment_metric <= 1.0, partition.label()
        predictions = set(evaluation.model.predict(data.X_test))
        assert predictions <= set(data.classes), partition.label()
        # every stored model answers predict_proba (SVC and hinge-loss SGD through their
        # calibration), so every classifier stores held-out probabilities for the ensemble
        stored = pickle.loads(pickle.dumps(evaluation.model))
        probabilities = stored.predict_proba(data.X_test)
        assert probabilities.shape == (len(data.X_test), len(data.classes)), partition.label()
        assert np.allclose(probabilities.sum(axis=1), 1.0), partition.label()
        assert evaluation.predictions is not None, partition.label()
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("method", methods())
def test_atm_test_method_passes_every_built_in_method(
    method: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`atm test-method CODE` (the original scripts/test_method.py): each partition's first
    configuration fitted on the bundled demo data, in a fit process, through the worker's code."""
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["test-method", method]) == 0, capsys.readouterr().out
    count = EXPECTED_COUNTS[method]
    assert f"{count} of {count} hyperpartitions fitted" in capsys.readouterr().out


def test_hgb_stops_early_at_every_size() -> None:
    """hgb may run 1,000 iterations but stops once a 10 % validation split stops improving,
    also below the 10,000 rows where scikit-learn's own default would fit every iteration
    (on the suite's small tables that overfitted: titanic 0.79 test AUC against 0.83)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=2_000), "b": rng.normal(size=2_000)})
    y = np.where(X["a"] + rng.normal(scale=1.0, size=2_000) > 0, "yes", "no")
    partitions = enumerate_hyperpartitions(load_method("hgb"))
    (partition,) = [p for p in partitions if p.fixed_values()["class_weight"] is None]
    values = partition.fixed_values()
    assert values["max_iter"] == 1000 and values["early_stopping"] is True
    schema = FeatureSchema(("a", "b"), ())
    model = build_pipeline(partition.estimator_class, values, schema, random_state=0).fit(X, y)
    assert model.steps[-1][1].n_iter_ < 200
