"""Expanding a method's conditional parameter tree into hyperpartitions.

The counts are checked twice: against numbers derived by hand from the JSON (explained below)
and against an independent count written here over the raw JSON, so a change of the catalogue
or of the enumeration that alters the search space cannot pass unnoticed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from atm_core.search.catalogue import builtin_methods, load_method, parse_method
from atm_core.search.hyperpartitions import HyperpartitionSpec, enumerate_hyperpartitions

# Partitions = product of the choices of every *multi-valued* categorical that is active.
EXPECTED_COUNTS = {
    "ada": 1,  # n_estimators, learning_rate: numeric only
    "bnb": 2,  # fit_prior {True, False}; _scale is a one-value constant
    "dt": 2,  # criterion {entropy, gini}
    "et": 2,  # criterion; n_estimators [100] is a constant
    "gnb": 1,  # nothing but the constant _scale_minmax (a partition with no tunable at all)
    "gp": 6,  # kernel: constant 1 + rbf 1 + matern x nu {0.5, 1.5, 2.5} 3 + rational_quadratic 1
    "hgb": 2,  # class_weight {None, balanced}
    "knn": 24,  # weights 2 x algorithm 3 x metric 4 (p and leaf_size are numeric children)
    "logreg": 4,  # solver {lbfgs, saga} x fit_intercept 2 (original 6: penalty/dual are gone)
    "mlp": 60,  # activation 4 x len(hidden_layer_sizes) 3 x solver (lbfgs 1 + sgd x 3 lr + adam 1)
    "mnb": 2,  # fit_prior {True, False}
    "pa": 4,  # learning_rate {pa1, pa2} x fit_intercept 2
    "rf": 2,  # criterion
    "sgd": 24,  # loss 4 x penalty 3 x learning_rate {constant, optimal} 2
    "svm": 4,  # kernel {rbf, poly, linear, sigmoid}
}


def _conditions(raw: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return raw.get("conditional_hyperparameters", raw.get("conditions", {}))


def _key(value: Any) -> str:
    return str(value)


def _count(raw: dict[str, Any], pending: list[str]) -> int:
    """Independent count over the raw JSON: sum over the values of each categorical."""
    if not pending:
        return 1
    name, rest = pending[0], pending[1:]
    spec = raw["hyperparameters"][name]
    if spec["type"] == "list":
        return len(spec["list_length"]) * _count(raw, rest)
    if "values" not in spec:
        return _count(raw, rest)
    children = _conditions(raw).get(name, {})
    return sum(_count(raw, rest + children.get(_key(value), [])) for value in spec["values"])


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_partition_count_matches_the_json(name: str) -> None:
    raw = json.loads(builtin_methods()[name].read_text())
    partitions = enumerate_hyperpartitions(load_method(name))
    assert len(partitions) == EXPECTED_COUNTS[name]
    assert _count(raw, list(raw["root_hyperparameters"])) == EXPECTED_COUNTS[name]
    assert len({p.categoricals for p in partitions}) == len(partitions), "partitions repeat"


def test_catalogue_totals() -> None:
    assert set(EXPECTED_COUNTS) == set(builtin_methods())
    assert sum(EXPECTED_COUNTS.values()) == 140
    # the default datarun methods (logreg, dt, knn)
    assert (
        sum(len(enumerate_hyperpartitions(load_method(m))) for m in ("logreg", "dt", "knn")) == 30
    )


def _active_names(raw: dict[str, Any], partition: HyperpartitionSpec) -> set[str]:
    """The parameters a configuration of ``partition`` must set, derived from the raw JSON."""
    chosen = partition.fixed_values()
    names: set[str] = set()
    queue = list(raw["root_hyperparameters"])
    while queue:
        name = queue.pop()
        spec = raw["hyperparameters"][name]
        if spec["type"] == "list":
            length = chosen[f"len({name})"]
            names.add(f"len({name})")
            names.update(f"{name}[{i}]" for i in range(length))
            continue
        names.add(name)
        if "values" in spec:
            queue.extend(_conditions(raw).get(name, {}).get(_key(chosen[name]), []))
    return names


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_each_partition_sets_exactly_the_active_parameters(name: str) -> None:
    """Roots plus the children of the chosen values, nothing more (no stray conditional)."""
    raw = json.loads(builtin_methods()[name].read_text())
    method = load_method(name)
    for partition in enumerate_hyperpartitions(method):
        tunable_names = [spec.name for spec in partition.tunables]
        assert len(tunable_names) == len(set(tunable_names))
        assert set(partition.fixed_values()) | set(tunable_names) == _active_names(raw, partition)
        assert not set(partition.fixed_values()) & set(tunable_names)
        for param, value in partition.categoricals:
            assert len(method.params[param].values) > 1
            assert value in method.params[param].values
        for param, value in partition.constants:
            assert method.params[param].values == (value,)
        assert all(spec.is_tunable for spec in partition.tunables)
        assert partition.method == name
        assert partition.estimator_class == method.estimator_class


def _by_choice(name: str) -> dict[tuple, HyperpartitionSpec]:
    return {p.categoricals: p for p in enumerate_hyperpartitions(load_method(name))}


def _tunables(partition: HyperpartitionSpec) -> list[str]:
    return [spec.name for spec in partition.tunables]


def test_gaussian_process_partitions() -> None:
    partitions = _by_choice("gp")
    assert set(partitions) == {
        (("kernel", "constant"),),
        (("kernel", "rbf"),),
        (("kernel", "matern"), ("nu", 0.5)),
        (("kernel", "matern"), ("nu", 1.5)),
        (("kernel", "matern"), ("nu", 2.5)),
        (("kernel", "rational_quadratic"),),
    }
    assert _tunables(partitions[(("kernel", "rational_quadratic"),)]) == ["length_scale", "alpha"]
    assert _tunables(partitions[(("kernel", "rbf"),)]) == []
    assert partitions[(("kernel", "rbf"),)].constants == (("_scale", True),)


def test_knn_conditionals_follow_algorithm_and_metric() -> None:
    for partition in enumerate_hyperpartitions(load_method("knn")):
        chosen = dict(partition.categoricals)
        names = _tunables(partition)
        assert ("p" in names) == (chosen["metric"] == "minkowski")
        assert ("leaf_size" in names) == (chosen["algorithm"] in ("ball_tree", "kd_tree"))
        assert names[0] == "n_neighbors"


def test_svm_kernel_children() -> None:
    partitions = {dict(p.categoricals)["kernel"]: _tunables(p) for p in _by_choice("svm").values()}
    assert partitions == {
        "rbf": ["C", "gamma"],
        "poly": ["C", "degree", "gamma", "coef0"],
        "linear": ["C"],
        "sigmoid": ["C", "gamma", "coef0"],
    }


def test_mlp_list_parameter_expands_per_length() -> None:
    """hidden_layer_sizes: the length is categorical, each layer size an int_exp tunable."""
    for partition in enumerate_hyperpartitions(load_method("mlp")):
        chosen = dict(partition.categoricals)
        length = chosen["len(hidden_layer_sizes)"]
        layers = [spec for spec in partition.tunables if spec.name.startswith("hidden_layer")]
        assert [spec.name for spec in layers] == [f"hidden_layer_sizes[{i}]" for i in range(length)]
        assert all(spec.type == "int_exp" and spec.range == (4, 256) for spec in layers)
        solver_children = {
            "lbfgs": set(),
            "sgd": {"learning_rate_init"},
            "adam": {"learning_rate_init", "beta_1", "beta_2"},
        }[chosen["solver"]]
        assert solver_children <= set(_tunables(partition))
        assert ("learning_rate" in chosen) == (chosen["solver"] == "sgd")


def test_sgd_eta0_only_with_constant_learning_rate() -> None:
    for partition in enumerate_hyperpartitions(load_method("sgd")):
        chosen = dict(partition.categoricals)
        assert ("eta0" in _tunables(partition)) == (chosen["learning_rate"] == "constant")
        assert ("l1_ratio" in _tunables(partition)) == (chosen["penalty"] == "elasticnet")


def test_enumeration_is_stable_and_labelled() -> None:
    method = load_method("logreg")
    first, second = enumerate_hyperpartitions(method), enumerate_hyperpartitions(method)
    assert first == second
    assert [p.label() for p in first] == [
        "logreg(solver=lbfgs, fit_intercept=True)",
        "logreg(solver=lbfgs, fit_intercept=False)",
        "logreg(solver=saga, fit_intercept=True)",
        "logreg(solver=saga, fit_intercept=False)",
    ]
    assert enumerate_hyperpartitions(load_method("gnb"))[0].label() == "gnb"
    assert first[0].fixed_values() == {
        "solver": "lbfgs",
        "fit_intercept": True,
        "class_weight": "balanced",
        "max_iter": 1000,
        "_scale": True,
    }


def _overlapping() -> dict[str, Any]:
    return {
        "name": "overlap",
        "class": "sklearn.svm.SVC",
        "hyperparameters": {
            "a": {"type": "string", "values": ["x", "w"]},
            "b": {"type": "string", "values": ["y", "z"]},
            "c": {"type": "string", "values": ["p", "q"]},
            "t": {"type": "float", "range": [0.0, 1.0]},
        },
        "root_hyperparameters": ["a", "b"],
        "conditional_hyperparameters": {"a": {"x": ["c", "t"]}, "b": {"y": ["c", "t"]}},
    }


def test_child_of_two_active_parents_is_set_once() -> None:
    """``c`` is activated by a=x and by b=y: with both it is still one choice, not two."""
    partitions = enumerate_hyperpartitions(parse_method(_overlapping(), "overlap"))
    # (a, b): (x, y) 2 values of c, (x, z) 2, (w, y) 2, (w, z) none -> 7
    assert len(partitions) == 7
    for partition in partitions:
        names = [name for name, _ in partition.categoricals]
        assert len(names) == len(set(names)), partition.categoricals
        assert _tunables(partition) in ([], ["t"])
    both = [p for p in partitions if p.categoricals[:2] == (("a", "x"), ("b", "y"))]
    assert sorted(dict(p.categoricals)["c"] for p in both) == ["p", "q"]


def test_nested_conditions_expand_recursively() -> None:
    document = {
        "name": "nested",
        "class": "sklearn.svm.SVC",
        "hyperparameters": {
            "kernel": {"type": "string", "values": ["rbf", "poly"]},
            "shape": {"type": "string", "values": ["wide", "narrow"]},
            "degree": {"type": "int", "range": [2, 5]},
            "gamma": {"type": "float_exp", "range": [0.001, 1.0]},
        },
        "root_hyperparameters": ["kernel"],
        "conditions": {"kernel": {"poly": ["shape"]}, "shape": {"narrow": ["degree"]}},
    }
    partitions = enumerate_hyperpartitions(parse_method(document, "nested"))
    assert [(p.categoricals, _tunables(p)) for p in partitions] == [
        ((("kernel", "rbf"),), []),
        ((("kernel", "poly"), ("shape", "wide")), []),
        ((("kernel", "poly"), ("shape", "narrow")), ["degree"]),
    ]
