"""The method catalogue: the built-in JSON files and the validation of custom ones.

A method file is user input (``--methods path/to/my_method.json``): every mistake must come back
as a ``MethodError`` that names the file and the key, never as a KeyError deep in a worker.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from atm_core.data.dataset import inspect_dataset
from atm_core.data.split import split_frames
from atm_core.errors import MethodError
from atm_core.evaluation import evaluate
from atm_core.pipeline import SPECIAL_KEYS, build_pipeline, import_class
from atm_core.search.catalogue import (
    METHODS_DIR,
    ParamSpec,
    builtin_methods,
    load_method,
    parse_method,
    parse_method_file,
)
from atm_core.search.hyperpartitions import enumerate_hyperpartitions
from atm_core.search.proposal import Partition, SearchConfig, propose

# The 14 methods of the original ATM plus HistGradientBoosting.
ORIGINAL_METHODS = {
    "logreg",
    "svm",
    "sgd",
    "dt",
    "et",
    "rf",
    "gnb",
    "mnb",
    "bnb",
    "gp",
    "pa",
    "knn",
    "mlp",
    "ada",
}


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise AssertionError(f"key listed twice: {duplicated}")
    return dict(pairs)


def _raw(name: str) -> dict[str, Any]:
    return json.loads(builtin_methods()[name].read_text())


def _write(folder: Path, document: Any, name: str = "method.json") -> Path:
    path = folder / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


# -- the built-in catalogue --------------------------------------------------------------------
def test_builtin_catalogue_is_the_original_fourteen_plus_hgb() -> None:
    assert set(builtin_methods()) == ORIGINAL_METHODS | {"hgb"}
    assert all(path.parent == METHODS_DIR for path in builtin_methods().values())


@pytest.mark.parametrize("name", sorted(ORIGINAL_METHODS | {"hgb"}))
def test_builtin_method_parses_and_names_real_constructor_arguments(name: str) -> None:
    """A misspelt or removed scikit-learn argument (the original's ``n_iter``) must not ship."""
    path = builtin_methods()[name]
    json.loads(path.read_text(), object_pairs_hook=_reject_duplicate_keys)
    method = load_method(name)
    assert method.name == name
    assert method.source == str(path)
    accepted = inspect.signature(import_class(method.estimator_class)).parameters
    raw_params = _raw(name)["hyperparameters"]
    for param in raw_params:
        if param not in SPECIAL_KEYS:
            assert param in accepted, f"{name}: {param} is no argument of {method.estimator_class}"
    assert method.root, "every method sets at least one root parameter"


def test_original_json_typos_are_fixed() -> None:
    """NOTES #8: the defects of the original JSON files, one by one."""
    for name in ("rf", "et"):
        root = _raw(name)["root_hyperparameters"]
        assert "min_samples_split" in root and root.count("min_samples_leaf") == 1
    for name in builtin_methods():
        params = _raw(name)["hyperparameters"]
        assert "n_iter" not in params, name
        assert "auto" not in params.get("class_weight", {}).get("values", []), name
    for name in ("sgd", "pa"):
        assert "max_iter" in _raw(name)["root_hyperparameters"]
    assert "log" not in _raw("sgd")["hyperparameters"]["loss"]["values"]
    assert "log_loss" in _raw("sgd")["hyperparameters"]["loss"]["values"]
    assert load_method("logreg").params["tol"].range[1] <= 1e-2


def test_load_method_by_file_stem_and_by_path() -> None:
    by_name = load_method("dt")
    assert load_method("decision_tree") is by_name
    by_path = load_method(str(builtin_methods()["dt"]))
    assert by_path.params == by_name.params and by_path.root == by_name.root


def test_both_spellings_of_root_and_conditions_are_accepted(tmp_path: Path) -> None:
    """The docs say root_parameters/conditions, the original code read the long names."""
    document = _raw("gp")
    docs_spelling = {
        "name": document["name"],
        "class": document["class"],
        "hyperparameters": document["hyperparameters"],
        "root_parameters": document["root_hyperparameters"],
        "conditions": document["conditional_hyperparameters"],
    }
    old = load_method("gp")
    new = load_method(str(_write(tmp_path, docs_spelling)))
    assert (new.params, new.root, new.conditions) == (old.params, old.root, old.conditions)
    assert new.conditions["kernel"]["matern"] == ("nu",)


def test_every_parameter_type_is_parsed(tmp_path: Path) -> None:
    document = {
        "name": "everything",
        "class": "sklearn.tree.DecisionTreeClassifier",
        "hyperparameters": {
            "a_int": {"type": "int", "range": [2, 9]},
            "a_int_exp": {"type": "int_exp", "range": [1, 1000]},
            "a_float": {"type": "float", "range": [0.1, 0.9], "default": 0.5},
            "a_float_exp": {"type": "float_exp", "range": [1e-5, 1e5]},
            "a_int_cat": {"type": "int_cat", "values": [1, 2, None]},
            "a_float_cat": {"type": "float_cat", "values": [0.5, 1.5]},
            "a_string": {"type": "string", "values": ["x", "y", None]},
            "a_bool": {"type": "bool", "values": [True, False]},
            "a_constant": {"type": "int", "range": [7]},
            "layers": {
                "type": "list",
                "list_length": [1, 3],
                "element": {"type": "int", "range": [4, 8]},
            },
        },
        "root_hyperparameters": [
            "a_int",
            "a_int_exp",
            "a_float",
            "a_float_exp",
            "a_int_cat",
            "a_float_cat",
            "a_string",
            "a_bool",
            "a_constant",
            "layers",
        ],
    }
    method = load_method(str(_write(tmp_path, document)))
    params = method.params
    assert params["a_int"] == ParamSpec("a_int", "int", range=(2, 9))
    assert params["a_int_exp"].range == (1, 1000) and params["a_int_exp"].is_tunable
    assert params["a_float"].default == 0.5
    assert params["a_float_exp"] == ParamSpec("a_float_exp", "float_exp", range=(1e-5, 1e5))
    assert params["a_int_cat"].values == (1, 2, None) and not params["a_int_cat"].is_tunable
    assert params["a_float_cat"].values == (0.5, 1.5)
    assert params["a_string"].values == ("x", "y", None)
    assert params["a_bool"].values == (True, False)
    # a one-value range is a constant, not something to tune
    assert params["a_constant"].values == (7,)
    # a list becomes a categorical length and one element parameter per position
    assert params["len(layers)"] == ParamSpec("len(layers)", "int_cat", values=(1, 3))
    assert [name for name in params if name.startswith("layers[")] == [
        "layers[0]",
        "layers[1]",
        "layers[2]",
    ]
    assert params["layers[2]"].range == (4, 8)
    assert method.root[-1] == "len(layers)"
    assert method.children("len(layers)", 1) == ("layers[0]",)
    assert method.children("len(layers)", 3) == ("layers[0]", "layers[1]", "layers[2]")
    assert ParamSpec.from_json(params["a_float"].to_json()) == params["a_float"]


def test_bool_condition_keys_are_case_insensitive(tmp_path: Path) -> None:
    """The original wrote "True"; JSON writers tend to write "true": both must work."""
    for key in ("True", "true"):
        document = {
            "name": "cond",
            "class": "sklearn.linear_model.LogisticRegression",
            "hyperparameters": {
                "fit_intercept": {"type": "bool", "values": [True, False]},
                "intercept_scaling": {"type": "float", "range": [0.5, 2.0]},
            },
            "root_hyperparameters": ["fit_intercept"],
            "conditional_hyperparameters": {"fit_intercept": {key: ["intercept_scaling"]}},
        }
        method = parse_method(document, f"cond-{key}")
        assert method.children("fit_intercept", True) == ("intercept_scaling",)
        assert method.children("fit_intercept", False) == ()


# -- errors that name the file and the key -----------------------------------------------------
def _valid() -> dict[str, Any]:
    return {
        "name": "mine",
        "class": "sklearn.svm.SVC",
        "hyperparameters": {
            "C": {"type": "float_exp", "range": [0.01, 100.0]},
            "kernel": {"type": "string", "values": ["rbf", "poly"]},
            "degree": {"type": "int", "range": [2, 4]},
            "gamma": {"type": "float_exp", "range": [0.001, 1.0]},
        },
        "root_hyperparameters": ["C", "kernel"],
        "conditional_hyperparameters": {"kernel": {"poly": ["degree", "gamma"]}},
    }


def _set(path: str, value: Any):
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target = document
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()

INVALID = [
    # (what is wrong, change to a valid document, key the message must name, words it must say)
    ("unknown top key", _set("hyperparams", {}), "hyperparams", "unknown key"),
    ("missing name", _set("name", _DELETE), "name", "non-empty string"),
    ("class not importable", _set("class", "sklearn.svm.NoSuchSVC"), "class", "cannot import"),
    ("class module missing", _set("class", "nosuchpackage.Thing"), "class", "cannot import"),
    ("class without fit", _set("class", "collections.OrderedDict"), "class", "no fit"),
    ("class not a path", _set("class", "SVC"), "class", "import path"),
    ("hyperparameters not an object", _set("hyperparameters", []), "hyperparameters", "object"),
    ("no root list", _set("root_hyperparameters", _DELETE), "root_hyperparameters", "missing"),
    ("root not a list", _set("root_hyperparameters", "C"), "root_hyperparameters", "array"),
    ("root undefined", _set("root_hyperparameters", ["C", "nope"]), "root_hyperparameters", "nope"),
    ("both root spellings", _set("root_parameters", ["C"]), "root_parameters", "not both"),
    ("bad type", _set("hyperparameters/C/type", "double"), "hyperparameters.C.type", "double"),
    ("no range", _set("hyperparameters/C/range", _DELETE), "hyperparameters.C.range", "missing"),
    ("range shape", _set("hyperparameters/C/range", [1, 2, 3]), "hyperparameters.C.range", "low"),
    ("range text", _set("hyperparameters/C/range", ["a", 1]), "hyperparameters.C.range", "low"),
    ("low above high", _set("hyperparameters/degree/range", [5, 2]), "degree.range", "above"),
    ("int bound float", _set("hyperparameters/degree/range", [2, 4.5]), "degree.range", "integer"),
    ("log of zero", _set("hyperparameters/C/range", [0, 10]), "hyperparameters.C.range", "log"),
    (
        "default outside",
        _set("hyperparameters/C/default", 1e6),
        "hyperparameters.C.default",
        "within",
    ),
    ("extra param key", _set("hyperparameters/C/step", 2), "hyperparameters.C.step", "unknown"),
    ("no values", _set("hyperparameters/kernel/values", _DELETE), "kernel.values", "missing"),
    ("empty values", _set("hyperparameters/kernel/values", []), "kernel.values", "non-empty"),
    (
        "value twice",
        _set("hyperparameters/kernel/values", ["rbf", "rbf"]),
        "kernel.values",
        "twice",
    ),
    ("wrong value type", _set("hyperparameters/kernel/type", "bool"), "kernel.values", "bool"),
    ("param not object", _set("hyperparameters/C", 3), "hyperparameters.C", "object"),
    (
        "condition parent undefined",
        _set("conditional_hyperparameters", {"shape": {"x": ["C"]}}),
        "conditional_hyperparameters.shape",
        "not defined",
    ),
    (
        "condition on numeric",
        _set("conditional_hyperparameters", {"C": {"1": ["degree"]}}),
        "conditional_hyperparameters.C",
        "numeric",
    ),
    (
        "condition value unknown",
        _set("conditional_hyperparameters/kernel", {"sigmoid": ["gamma"]}),
        "conditional_hyperparameters.kernel.sigmoid",
        "not one of the values",
    ),
    (
        "condition child undefined",
        _set("conditional_hyperparameters/kernel", {"poly": ["coef0"]}),
        "conditional_hyperparameters.kernel.poly",
        "coef0",
    ),
    (
        "conditional also root",
        _set("root_hyperparameters", ["C", "kernel", "degree"]),
        "conditional_hyperparameters",
        "degree",
    ),
    (
        "list without lengths",
        _set(
            "hyperparameters/layers", {"type": "list", "element": {"type": "int", "range": [1, 2]}}
        ),
        "hyperparameters.layers.list_length",
        "positive integers",
    ),
    (
        "list without element",
        _set("hyperparameters/layers", {"type": "list", "list_length": [1, 2]}),
        "hyperparameters.layers.element",
        "definition",
    ),
]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_method_file_names_file_and_key(
    tmp_path: Path, change, key: str, words: str
) -> None:
    document = copy.deepcopy(_valid())
    change(document)
    path = _write(tmp_path, document, "my_method.json")
    with pytest.raises(MethodError) as caught:
        load_method(str(path))
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert words in message


def test_the_valid_document_of_the_error_table_is_valid(tmp_path: Path) -> None:
    """Each error case above changes one thing; the unchanged document must load."""
    method = load_method(str(_write(tmp_path, _valid())))
    assert method.children("kernel", "poly") == ("degree", "gamma")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"name": "x", "class": ', "invalid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        ("", "invalid JSON"),
    ],
)
def test_unparseable_method_file_names_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = _write(tmp_path, text, "broken.json")
    with pytest.raises(MethodError, match=words) as caught:
        load_method(str(path))
    assert str(path) in str(caught.value)


def test_unknown_method_lists_the_builtin_names() -> None:
    with pytest.raises(MethodError) as caught:
        load_method("nosuchmethod")
    message = str(caught.value)
    assert "nosuchmethod" in message
    assert all(name in message for name in ("logreg", "hgb", "mlp"))


def test_missing_method_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(MethodError, match="not found") as caught:
        load_method(str(missing))
    assert str(missing) in str(caught.value)


def test_unreadable_method_file_is_a_method_error(tmp_path: Path) -> None:
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(MethodError, match="cannot read"):
        parse_method_file(folder)


CUSTOM_MODEL = '''
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class Threshold(ClassifierMixin, BaseEstimator):
    """Predicts the second class above the median of one feature, plus a margin."""

    def __init__(self, feature=0, margin=0.0):
        self.feature = feature
        self.margin = margin

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.cut_ = np.median(np.asarray(X)[:, self.feature]) + self.margin
        return self

    def predict(self, X):
        above = np.asarray(X)[:, self.feature] > self.cut_
        return np.where(above, self.classes_[-1], self.classes_[0])
'''


def test_custom_method_with_its_own_class_trains(
    tmp_path: Path, pollution_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs: any class with fit/predict, importable, described by a JSON file."""
    (tmp_path / "atm_test_threshold_model.py").write_text(CUSTOM_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    document = {
        "name": "threshold",
        "class": "atm_test_threshold_model.Threshold",
        "hyperparameters": {
            "feature": {"type": "int_cat", "values": [0, 5]},
            "margin": {"type": "float", "range": [-1.0, 1.0]},
        },
        "root_parameters": ["feature", "margin"],
    }
    method = load_method(str(_write(tmp_path, document, "threshold.json")))
    partitions = enumerate_hyperpartitions(method)
    assert [p.label() for p in partitions] == ["threshold(feature=0)", "threshold(feature=5)"]
    info, train, test = inspect_dataset(pollution_path)
    data = split_frames(train, test, "class", info.schema, seed=0, test_size=0.3)
    outcome = propose([Partition(i, p) for i, p in enumerate(partitions)], SearchConfig())
    values = outcome.proposal.values
    assert -1.0 <= values["margin"] <= 1.0

    def make_model():
        return build_pipeline(method.estimator_class, values, info.schema, random_state=0)

    evaluation = evaluate(make_model, data, "accuracy", seed=0)
    assert 0.0 <= evaluation.cv_judgment_metric <= 1.0
    assert set(evaluation.model.predict(data.X_test)) <= {0, 1}
