"""The model pipeline: preprocessing that travels with the model, special keys, labels.

A stored model is used later on raw rows (``hub.load_model(id).predict(df)``): gaps, categories
it never saw and extra columns must not break it, and it must answer in the user's labels.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from atm_core.data.dataset import FeatureSchema
from atm_core.estimators import (
    MISSING_CATEGORY,
    BlockwiseStandardScaler,
    Float32Columns,
    PCAComponents,
    StackedColumns,
    UnreadableNumbers,
    as_categories,
)
from atm_core.pipeline import MAX_CATEGORIES, build_pipeline, estimator_kwargs, preprocessor

LOGREG = "sklearn.linear_model.LogisticRegression"
HGB = "sklearn.ensemble.HistGradientBoostingClassifier"


@pytest.fixture
def mixed() -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers with gaps, a boolean, a category with gaps; labels 'yes'/'no'."""
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {
            "num": rng.normal(size=n),
            "other": rng.uniform(10, 20, size=n),
            "flag": rng.choice([True, False], n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame.loc[::7, "num"] = np.nan
    frame.loc[::9, "colour"] = None
    labels = np.where((frame["colour"] == "red") | (frame["num"] > 0.5), "yes", "no")
    return frame, labels


def test_estimator_kwargs_strip_special_keys_and_rebuild_lists() -> None:
    values = {
        "alpha": 0.1,
        "_scale": True,
        "_scale_minmax": False,
        "_pca": True,
        "_pca_dimensions": 0.5,
        "_whiten": True,
        "len(hidden_layer_sizes)": 2,
        "hidden_layer_sizes[0]": 16,
        "hidden_layer_sizes[1]": 8,
        "hidden_layer_sizes[2]": 99,  # left over from a longer list: not used
    }
    assert estimator_kwargs(values) == {"alpha": 0.1, "hidden_layer_sizes": (16, 8)}


def test_plain_pipeline_passes_values_and_random_state(mixed) -> None:
    frame, _ = mixed
    pipeline = build_pipeline(LOGREG, {"C": 0.5}, FeatureSchema.infer(frame), random_state=7)
    assert [name for name, _ in pipeline.steps] == ["preprocess", "estimator"]
    estimator = pipeline.named_steps["estimator"]
    assert isinstance(estimator, LogisticRegression)
    assert (estimator.C, estimator.random_state) == (0.5, 7)
    forest = build_pipeline(
        "sklearn.ensemble.RandomForestClassifier", {}, FeatureSchema.infer(frame), n_jobs=2
    )
    assert forest.named_steps["estimator"].n_jobs == 2


def test_predict_answers_in_the_original_labels(mixed) -> None:
    frame, labels = mixed
    pipeline = build_pipeline(LOGREG, {"C": 10.0}, FeatureSchema.infer(frame), random_state=0)
    pipeline.fit(frame, labels)
    predictions = pipeline.predict(frame)
    assert set(predictions) == {"yes", "no"}
    assert np.mean(predictions == labels) > 0.8  # it learnt something from the features
    numeric = pd.Series(labels).map({"no": 3, "yes": 8}).to_numpy()
    pipeline.fit(frame, numeric)
    assert set(pipeline.predict(frame)) == {3, 8}


def test_missing_numbers_are_imputed_with_the_training_median(mixed) -> None:
    frame, _ = mixed
    schema = FeatureSchema.infer(frame)
    transform = preprocessor(schema).fit(frame)
    names = list(transform.get_feature_names_out())
    rows = pd.DataFrame(
        {
            "num": [np.nan] + [1.0] * 29,
            "other": ["not a number"] + ["2"] * 29,
            "flag": [True] * 30,
            "colour": ["red"] * 30,
        }
    )
    out = transform.transform(rows)[0]
    assert out[names.index("num")] == pytest.approx(np.nanmedian(frame["num"]))
    # a stray word in a numeric column (1 cell in 30, within the tolerated share) is missing
    assert out[names.index("other")] == pytest.approx(frame["other"].median())
    assert out[names.index("flag")] == 1.0
    # ... a column of words is refused, naming the column
    with pytest.raises(UnreadableNumbers, match="column 'other': 1 of 1 values are not numbers"):
        transform.transform(rows.iloc[:1])


def test_categories_one_hot_missing_is_a_category_unseen_is_tolerated(mixed) -> None:
    frame, labels = mixed
    schema = FeatureSchema.infer(frame)
    assert schema.categorical == ("colour",)
    transform = preprocessor(schema).fit(frame)
    names = list(transform.get_feature_names_out())
    colour_columns = [name for name in names if name.startswith("colour_")]
    assert sorted(colour_columns) == [
        "colour___missing__",
        "colour_blue",
        "colour_green",
        "colour_red",
    ]
    rows = pd.DataFrame(
        {
            "num": [0.1, 0.2, 0.3],
            "other": [12.0, 13.0, 14.0],
            "flag": [False, True, False],
            "colour": ["purple", None, "red"],
        }
    )
    out = pd.DataFrame(transform.transform(rows), columns=names)[colour_columns]
    assert out.iloc[0].sum() == 0  # unseen: no category column lit
    assert out.iloc[1]["colour___missing__"] == 1
    assert out.iloc[2]["colour_red"] == 1
    pipeline = build_pipeline(LOGREG, {}, schema, random_state=0).fit(frame, labels)
    assert len(pipeline.predict(rows)) == 3


def test_ordinal_key_numbers_categories_in_one_column(mixed) -> None:
    frame, labels = mixed
    schema = FeatureSchema.infer(frame)
    pipeline = build_pipeline(HGB, {"_ordinal": True}, schema, random_state=0).fit(frame, labels)
    transform = pipeline.named_steps["preprocess"]
    names = list(transform.get_feature_names_out())
    assert names == [*schema.numeric, "colour"]  # one column, not one per category
    rows = pd.DataFrame(
        {
            "num": [0.1, 0.2, 0.3],
            "other": [12.0, 13.0, 14.0],
            "flag": [False, True, False],
            "colour": ["purple", None, "red"],
        }
    )
    colour = pd.DataFrame(transform.transform(rows), columns=names)["colour"].tolist()
    # alphabetical: __missing__ 0, blue 1, green 2, red 3; never seen: -1
    assert colour == [-1.0, 0.0, 3.0]
    assert set(pipeline.predict(rows)) <= {"yes", "no"}
    assert "_ordinal" not in pipeline.named_steps["estimator"].get_params()


def test_stacked_columns_equal_a_dense_column_transformer(mixed) -> None:
    frame, _ = mixed
    schema = FeatureSchema.infer(frame)
    stacked = preprocessor(schema)
    assert isinstance(stacked, StackedColumns)
    dense = ColumnTransformer(
        [(name, clone(branch), columns) for name, branch, columns in stacked.transformers],
        remainder="drop",
        verbose_feature_names_out=False,
    ).set_params(categorical__one_hot__sparse_output=False)
    out = stacked.fit_transform(frame)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, dense.fit_transform(frame))
    np.testing.assert_array_equal(stacked.transform(frame.iloc[::-1]), out[::-1])
    only_categories = preprocessor(FeatureSchema((), ("colour",))).fit_transform(frame)
    assert only_categories.dtype == np.float32 and only_categories.sum() == len(frame)


FOREST = "sklearn.ensemble.RandomForestClassifier"


def with_float64_matrix(pipeline: Pipeline) -> Pipeline:
    """The same pipeline, its preprocessing writing float64 (the blocks' common type)."""
    stacker = pipeline.named_steps["preprocess"]
    float64 = StackedColumns(**stacker.get_params(deep=False))
    return Pipeline([("preprocess", float64), *((n, clone(s)) for n, s in pipeline.steps[1:])])


def test_float32_estimators_get_a_float32_matrix_and_others_float64(mixed) -> None:
    frame, _ = mixed
    schema = FeatureSchema.infer(frame)
    for path in (LOGREG, FOREST, "sklearn.tree.DecisionTreeClassifier"):
        stacker = clone(build_pipeline(path, {}, schema).named_steps["preprocess"])
        assert isinstance(stacker, Float32Columns)  # clone keeps the class, hence the type
        assert stacker.fit_transform(frame).dtype == np.float32
    for path in (HGB, "sklearn.neighbors.KNeighborsClassifier", "sklearn.svm.SVC"):
        stacker = build_pipeline(path, {}, schema).named_steps["preprocess"]
        assert stacker.fit_transform(frame).dtype == np.float64


def test_a_forest_on_the_float32_matrix_grows_the_same_trees(mixed) -> None:
    frame, labels = mixed
    forest = build_pipeline(FOREST, {"n_estimators": 5}, FeatureSchema.infer(frame), random_state=0)
    reference = with_float64_matrix(forest)
    np.testing.assert_array_equal(
        forest.fit(frame, labels).predict_proba(frame),
        reference.fit(frame, labels).predict_proba(frame),
    )


def test_a_logistic_regression_fits_in_float32_to_the_same_model(mixed) -> None:
    frame, labels = mixed
    logreg = build_pipeline(LOGREG, {"C": 1.0, "_scale": True}, FeatureSchema.infer(frame))
    logreg.fit(frame, labels)
    reference = with_float64_matrix(logreg).fit(frame, labels)
    assert logreg.named_steps["estimator"].coef_.dtype == np.float32
    np.testing.assert_allclose(
        logreg.predict_proba(frame), reference.predict_proba(frame), atol=1e-4
    )
    assert (logreg.predict(frame) == reference.predict(frame)).all()


def test_as_categories_gives_strings_and_a_missing_category_sharing_one_object_each() -> None:
    frame = pd.DataFrame(
        {
            "number": [1, None, 3.5, 1],
            "text": pd.Series(["a", None, "b", "a"], dtype="str"),
            "objects": pd.Series(["a", None, "b", "a"], dtype=object),
            "flag": [True, False, None, True],
        }
    )
    out = as_categories(frame)
    assert out.dtype == object and out.shape == (4, 4)
    assert out.tolist() == [
        ["1.0", "a", "a", "True"],
        [MISSING_CATEGORY, MISSING_CATEGORY, MISSING_CATEGORY, "False"],
        ["3.5", "b", "b", MISSING_CATEGORY],
        ["1.0", "a", "a", "True"],
    ]
    assert all(out[0, column] is out[3, column] for column in range(4))  # one object each


def test_many_categories_are_capped() -> None:
    frame = pd.DataFrame({"word": [f"w{i % 300}" for i in range(900)], "x": range(900)})
    transform = preprocessor(FeatureSchema.infer(frame)).fit(frame)
    word_columns = [n for n in transform.get_feature_names_out() if n.startswith("word_")]
    assert 1 < len(word_columns) <= MAX_CATEGORIES


def test_extra_and_reordered_columns_at_predict_time(mixed) -> None:
    frame, labels = mixed
    pipeline = build_pipeline(LOGREG, {}, FeatureSchema.infer(frame), random_state=0)
    pipeline.fit(frame, labels)
    shuffled = frame[["colour", "flag", "other", "num"]].assign(row_id=range(len(frame)))
    np.testing.assert_array_equal(pipeline.predict(shuffled), pipeline.predict(frame))


def test_scale_key_standardises(mixed) -> None:
    frame, labels = mixed
    pipeline = build_pipeline(LOGREG, {"_scale": True}, FeatureSchema.infer(frame))
    pipeline.fit(frame, labels)
    assert isinstance(pipeline.named_steps["scale"], BlockwiseStandardScaler)
    scaled = pipeline[:-1].transform(frame)  # float32: a logistic regression's matrix
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-6)
    assert "_scale" not in pipeline.named_steps["estimator"].get_params()


@pytest.mark.parametrize("weighted", [False, True])
def test_blockwise_scaler_matches_one_block(
    monkeypatch: pytest.MonkeyPatch, weighted: bool
) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(loc=[5.0, -2.0, 1e4], scale=[1.0, 3.0, 50.0], size=(1000, 3))
    X[rng.random(X.shape) < 0.05] = np.nan  # ignored per column, as StandardScaler does
    weights = rng.uniform(0.5, 2.0, size=len(X)) if weighted else None
    monkeypatch.setattr(BlockwiseStandardScaler, "BLOCK_ROWS", 64)  # 16 blocks
    blocks = BlockwiseStandardScaler().fit(X.copy(), sample_weight=weights)
    whole = StandardScaler().fit(X, sample_weight=weights)
    np.testing.assert_allclose(blocks.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(blocks.var_, whole.var_, rtol=1e-10)
    np.testing.assert_allclose(blocks.n_samples_seen_, whole.n_samples_seen_, rtol=1e-12)
    in_place = X.copy()
    scaler = BlockwiseStandardScaler(copy=False).fit(in_place, sample_weight=weights)
    out = scaler.transform(in_place)
    assert out is in_place  # scaled where it lies, as the pipeline's step does
    np.testing.assert_allclose(out, whole.transform(X), rtol=1e-9, atol=1e-12)


def test_scale_minmax_key_maps_into_unit_interval(mixed) -> None:
    frame, labels = mixed
    pipeline = build_pipeline(LOGREG, {"_scale_minmax": True}, FeatureSchema.infer(frame))
    pipeline.fit(frame, labels)
    assert isinstance(pipeline.named_steps["scale"], MinMaxScaler)
    scaled = pipeline[:-1].transform(frame)
    assert scaled.min() == pytest.approx(0.0) and scaled.max() == pytest.approx(1.0)
    # MultinomialNB behind it needs non-negative input even for new extremes
    far = frame.head(2).assign(other=[-1e6, 1e6])
    assert pipeline[:-1].transform(far).min() >= 0.0


@pytest.mark.parametrize(
    ("dimensions", "expected"),
    [(0.5, 4), (3, 3), (0.01, 1), (100, 7)],
    ids=["fraction", "count", "at-least-one", "at-most-all"],
)
def test_pca_dimensions(mixed, dimensions: float, expected: int) -> None:
    """Below 1 a fraction of the 7 preprocessed features (round(3.5) = 4), else a count."""
    frame, labels = mixed
    schema = FeatureSchema.infer(frame)
    n_features = len(preprocessor(schema).fit(frame).get_feature_names_out())
    assert n_features == 7  # num, other, flag, 4 colour columns
    values = {"_scale": True, "_pca": True, "_pca_dimensions": dimensions}
    pipeline = build_pipeline(LOGREG, values, schema, random_state=0).fit(frame, labels)
    assert isinstance(pipeline.named_steps["pca"], PCAComponents)
    assert pipeline[:-1].transform(frame).shape == (len(frame), expected)


def test_whiten_gives_unit_variance_components(mixed) -> None:
    frame, labels = mixed
    values = {"_pca": True, "_pca_dimensions": 3, "_whiten": True}
    pipeline = build_pipeline(LOGREG, values, FeatureSchema.infer(frame), random_state=0)
    components = pipeline.fit(frame, labels)[:-1].transform(frame)
    # a logistic regression's matrix is float32: unit variance to float32's precision
    np.testing.assert_allclose(components.std(axis=0, ddof=1), 1.0, atol=1e-5)
    plain = build_pipeline(LOGREG, {"_pca": True, "_pca_dimensions": 3}, FeatureSchema.infer(frame))
    unwhitened = plain.fit(frame, labels)[:-1].transform(frame)
    assert unwhitened.std(axis=0, ddof=1)[0] > 1.5  # "other" spans 10..20: not unit variance


def test_fitted_pipeline_survives_pickling(mixed) -> None:
    frame, labels = mixed
    values = {"_scale": True, "_pca": True, "_pca_dimensions": 0.5}
    pipeline = build_pipeline(LOGREG, values, FeatureSchema.infer(frame), random_state=0)
    pipeline.fit(frame, labels)
    restored = pickle.loads(pickle.dumps(pipeline))
    np.testing.assert_array_equal(restored.predict(frame), pipeline.predict(frame))
    np.testing.assert_allclose(restored.predict_proba(frame), pipeline.predict_proba(frame))
