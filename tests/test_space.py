"""The numeric space of one hyperpartition: log scale for ``*_exp``, grids, value conversion.

Sampling goes through baytune's own ``Tunable.sample`` and our ``decode``, i.e. exactly what a
uniform tuner proposes, so the distributions checked here are the ones the search draws from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from atm_core.search.catalogue import ParamSpec
from atm_core.search.hyperpartitions import HyperpartitionSpec
from atm_core.search.proposal import Partition, SearchConfig, Trial, propose
from atm_core.search.space import TuningSpace

N_SAMPLES = 4000


def _draw(space: TuningSpace, name: str, n: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    np.random.seed(seed)
    raw = space.tunable.inverse_transform(space.tunable.sample(n))
    return np.array([space.decode(row)[name] for row in raw.to_dict(orient="records")])


def test_float_exp_is_log_uniform_within_range() -> None:
    """[1e-4, 1e4]: log-uniform puts the median at 1 (the geometric mean), uniform near 5000."""
    space = TuningSpace([ParamSpec("C", "float_exp", range=(1e-4, 1e4))])
    values = _draw(space, "C")
    assert values.min() >= 1e-4 and values.max() <= 1e4
    assert abs(math.log10(np.median(values))) < 0.2
    # each of the 8 decades gets about an eighth of the draws
    per_decade = np.histogram(np.log10(values), bins=8, range=(-4, 4))[0] / len(values)
    assert np.all(np.abs(per_decade - 1 / 8) < 0.03), per_decade
    assert values.min() < 1e-3 and values.max() > 1e3  # the whole range is reached


def test_int_exp_is_log_uniform_integers() -> None:
    space = TuningSpace([ParamSpec("width", "int_exp", range=(4, 256))])
    values = _draw(space, "width")
    assert all(isinstance(v, int | np.integer) for v in values[:50])
    assert values.min() >= 4 and values.max() <= 256
    assert 26 <= np.median(values) <= 40  # geometric mean 32; a uniform draw would give ~130
    assert np.mean(values < 16) == pytest.approx(1 / 3, abs=0.04)  # 4..16 is a third of the logs


def test_plain_float_and_int_are_uniform() -> None:
    space = TuningSpace(
        [ParamSpec("x", "float", range=(10.0, 20.0)), ParamSpec("n", "int", range=(1, 4))]
    )
    np.random.seed(1)
    raw = space.tunable.inverse_transform(space.tunable.sample(N_SAMPLES))
    decoded = [space.decode(row) for row in raw.to_dict(orient="records")]
    xs = np.array([d["x"] for d in decoded])
    ns = np.array([d["n"] for d in decoded])
    assert xs.min() >= 10.0 and xs.max() <= 20.0
    assert np.median(xs) == pytest.approx(15.0, abs=0.4)
    counts = np.bincount(ns, minlength=5)[1:] / len(ns)
    assert np.all(np.abs(counts - 0.25) < 0.03), counts  # both ends included, equally likely


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        (ParamSpec("a", "float", range=(0.0, 1.0)), 0.3),
        (ParamSpec("b", "float_exp", range=(1e-5, 10.0)), 0.02),
        (ParamSpec("c", "int", range=(1, 20)), 7),
        (ParamSpec("d", "int_exp", range=(4, 256)), 33),
    ],
)
def test_encode_decode_round_trip(spec: ParamSpec, value: float) -> None:
    """Stored values must map back into the tuner's space to learn from history."""
    space = TuningSpace([spec])
    assert space.decode(space.encode({spec.name: value})) == {spec.name: pytest.approx(value)}
    if spec.type.endswith("_exp"):
        assert space.encode({spec.name: value})[spec.name] == pytest.approx(math.log10(value))


def test_out_of_range_values_are_clamped() -> None:
    space = TuningSpace([ParamSpec("a", "float_exp", range=(0.01, 1.0))])
    assert space.decode({"a": 5.0}) == {"a": pytest.approx(1.0)}
    assert space.encode({"a": 1e-9}) == {"a": pytest.approx(-2.0)}


def test_cardinality() -> None:
    assert TuningSpace([]).cardinality == 1
    assert TuningSpace([ParamSpec("a", "float", range=(0.0, 1.0))]).cardinality == math.inf
    assert TuningSpace([ParamSpec("n", "int", range=(2, 5))]).cardinality == 4
    # an int_exp axis is a float to the tuner but holds only the integers of its range
    assert TuningSpace([ParamSpec("n", "int_exp", range=(1, 8))]).cardinality == 8
    two = TuningSpace(
        [ParamSpec("n", "int", range=(1, 3)), ParamSpec("m", "int_exp", range=(1, 4))]
    )
    assert two.cardinality == 12


def _grid(space: TuningSpace, name: str) -> list:
    size = space.tunable.hyperparams[name].cardinality
    return [space.decode({name: index})[name] for index in range(size)]


def test_linear_grid_is_evenly_spaced_with_both_ends() -> None:
    space = TuningSpace([ParamSpec("x", "float", range=(0.0, 1.0))], gridding=5)
    assert _grid(space, "x") == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert space.cardinality == 5


def test_exp_grid_is_evenly_spaced_in_log() -> None:
    space = TuningSpace([ParamSpec("C", "float_exp", range=(1e-3, 1e3))], gridding=7)
    assert _grid(space, "C") == pytest.approx([1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3])


def test_int_grid_rounds_and_small_int_ranges_keep_every_integer() -> None:
    space = TuningSpace([ParamSpec("d", "int", range=(0, 100))], gridding=3)
    assert _grid(space, "d") == [0, 50, 100]
    # fewer integers than grid points: the integers are the grid, each proposed once
    small = ParamSpec("p", "int", range=(1, 3))
    assert TuningSpace([small], gridding=5).cardinality == 3
    spec = HyperpartitionSpec("m", "sklearn.dummy.DummyClassifier", (), (), (small,))
    partition = Partition(1, spec)
    while (outcome := propose([partition], SearchConfig(gridding=5))).proposal is not None:
        partition.trials.append(Trial(outcome.proposal.values, 0.5))
    assert sorted(trial.values["p"] for trial in partition.trials) == [1, 2, 3]


def test_int_exp_grid_points_are_distinct() -> None:
    """10 log-spaced points over [1, 10] round to 1, 1, 2, 2, 3, 4, 5, 6, 8, 10: 8 values.

    Repeated points made the same value proposable twice and the grid never exhausted.
    """
    space = TuningSpace([ParamSpec("n", "int_exp", range=(1, 10))], gridding=10)
    points = _grid(space, "n")
    assert points == [1, 2, 3, 4, 5, 6, 8, 10]
    assert space.cardinality == len(points)
    for index, value in enumerate(points):
        assert space.encode({"n": value}) == {"n": index}


def test_grid_with_many_parameters_is_a_product() -> None:
    space = TuningSpace(
        [
            ParamSpec("a", "float", range=(0.0, 1.0)),
            ParamSpec("b", "float_exp", range=(0.1, 10.0)),
            ParamSpec("c", "int", range=(1, 100)),
        ],
        gridding=4,
    )
    assert space.cardinality == 4**3
    keys = {
        space.key(space.decode({"a": i, "b": j, "c": k}))
        for i in range(4)
        for j in range(4)
        for k in range(4)
    }
    assert len(keys) == 64  # every grid point is its own configuration


def test_key_identifies_configurations() -> None:
    space = TuningSpace(
        [ParamSpec("a", "float", range=(0.0, 1.0)), ParamSpec("n", "int", range=(1, 9))]
    )
    assert space.key({"a": 0.5, "n": 3}) == space.key({"a": 0.5 + 1e-12, "n": 3})
    assert space.key({"a": 0.5, "n": 3}) != space.key({"a": 0.5, "n": 4})
    assert space.key({"a": 0.5, "n": 3, "kernel": "rbf"}) == space.key({"a": 0.5, "n": 3})


def test_defaults_only_when_every_tunable_declares_one() -> None:
    with_defaults = TuningSpace(
        [
            ParamSpec("a", "float", range=(0.0, 1.0), default=0.3),
            ParamSpec("C", "float_exp", range=(0.01, 100.0), default=1.0),
        ]
    )
    assert with_defaults.defaults() == {"a": pytest.approx(0.3), "C": pytest.approx(1.0)}
    on_grid = TuningSpace([ParamSpec("a", "float", range=(0.0, 1.0), default=0.3)], gridding=3)
    assert on_grid.defaults() == {"a": pytest.approx(0.5)}  # snapped to the nearest grid point
    partial = TuningSpace(
        [
            ParamSpec("a", "float", range=(0.0, 1.0), default=0.3),
            ParamSpec("b", "int", range=(1, 3)),
        ]
    )
    assert partial.defaults() is None
    assert TuningSpace([]).defaults() is None


def test_untried_lists_the_rest_of_a_small_finite_space() -> None:
    """The search falls back on this when a tuner keeps proposing taken integers."""
    space = TuningSpace(
        [ParamSpec("n", "int", range=(1, 3)), ParamSpec("k", "int_exp", range=(1, 2))]
    )
    assert len(space.untried(set())) == 6
    tried = {space.key({"n": 1, "k": 1}), space.key({"n": 3, "k": 2})}
    rest = space.untried(tried)
    assert len(rest) == 4 and {"n": 1, "k": 1} not in rest and {"n": 2, "k": 2} in rest
    assert space.untried(set(), limit=5) is None  # too many to list
    assert TuningSpace([ParamSpec("x", "float", range=(0.0, 1.0))]).untried(set()) is None
