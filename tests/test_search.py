"""Selecting a hyperpartition and tuning its values: baytune's selectors and tuners, ours, custom.

Everything goes through ``propose()``, the function the worker calls with the ModelHub's history,
so what is tested is what a datarun does: which partition is picked for which history, what the
tuner proposes, and when a finite space is reported exhausted (``gridding_done``).
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from baytune import selection
from baytune.selection import UCB1
from baytune.tuning import GPEiTuner

from atm_core.errors import SearchError
from atm_core.search.catalogue import ParamSpec, load_method
from atm_core.search.hyperpartitions import HyperpartitionSpec, enumerate_hyperpartitions
from atm_core.search.proposal import Partition, SearchConfig, Trial, propose
from atm_core.search.rung_gains import RungScore, method_gains
from atm_core.search.selectors import SELECTORS, resolve_selector
from atm_core.search.space import TuningSpace
from atm_core.search.tuners import TUNERS, GPEiVelocityTuner, resolve_tuner

# GP fits on a handful of points and copula fits (gcp) warn as a matter of course
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:scipy.*"),
]

X = ParamSpec("x", "float", range=(0.0, 1.0))
N = ParamSpec("n", "int", range=(1, 9))
MIXED = (
    ParamSpec("x", "float", range=(0.0, 1.0)),
    ParamSpec("C", "float_exp", range=(1e-3, 1e3)),
    ParamSpec("depth", "int", range=(2, 20)),
    ParamSpec("width", "int_exp", range=(4, 256)),
)


def _partition(
    pid: int,
    tunables: tuple[ParamSpec, ...] = (X,),
    method: str = "m",
    scores: list[float | None] | None = None,
    constants: tuple[tuple[str, Any], ...] = (),
) -> Partition:
    spec = HyperpartitionSpec(
        method=method,
        estimator_class="sklearn.dummy.DummyClassifier",
        categoricals=(("choice", pid),),
        constants=constants,
        tunables=tunables,
    )
    trials = [Trial({"x": i / 100 + pid / 1000}, s) for i, s in enumerate(scores or [])]
    return Partition(pid, spec, trials)


def _run(
    partitions: list[Partition],
    config: SearchConfig,
    rounds: int,
    score: Callable[[dict[str, Any]], float | None] = lambda values: 0.5,
) -> tuple[list[tuple[int, dict[str, Any]]], list[int]]:
    """Propose ``rounds`` times, recording each proposal as a trial (as the worker does)."""
    by_id = {p.id: p for p in partitions}
    taken: list[tuple[int, dict[str, Any]]] = []
    exhausted: list[int] = []
    for _ in range(rounds):
        outcome = propose(partitions, config)
        exhausted = outcome.exhausted
        if outcome.proposal is None:
            break
        proposal = outcome.proposal
        by_id[proposal.hyperpartition_id].trials.append(
            Trial(proposal.values, score(proposal.values))
        )
        taken.append((proposal.hyperpartition_id, proposal.values))
    return taken, exhausted


def _in_range(values: dict[str, Any], tunables: tuple[ParamSpec, ...]) -> bool:
    for spec in tunables:
        low, high = spec.range
        value = values[spec.name]
        if not low <= value <= high:
            return False
        if spec.type.startswith("int") and not isinstance(value, int):
            return False
    return True


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """baytune draws from numpy's and Python's global generators: make every test repeatable."""
    np.random.seed(0)
    random.seed(0)


# -- selectors ---------------------------------------------------------------------------------
def test_every_selector_name_resolves_to_baytune() -> None:
    expected = {
        "uniform": selection.Uniform,
        "ucb1": selection.UCB1,
        "bestk": selection.BestKReward,
        "bestkvel": selection.BestKVelocity,
        "purebestkvel": selection.PureBestKVelocity,
        "recentk": selection.RecentKReward,  # subclassed: see the recentk test below
        "recentkvel": selection.RecentKVelocity,
        "hieralg": selection.HierarchicalByAlgorithm,
        "hiercost": selection.HierarchicalByAlgorithm,  # charged in seconds: tests below
    }
    assert set(SELECTORS) == set(expected)
    for name, cls in expected.items():
        assert issubclass(resolve_selector(name), cls), name


def test_unknown_selector_lists_the_choices() -> None:
    with pytest.raises(SearchError, match="unknown selector 'nosuchselector'") as caught:
        resolve_selector("nosuchselector")
    assert "ucb1" in str(caught.value) and "file.py:ClassName" in str(caught.value)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_runs_from_an_empty_history(name: str) -> None:
    """Selectors have special cases below K scores: all phases must work on real histories."""
    partitions = [_partition(1, method="a"), _partition(2, method="a"), _partition(3, method="b")]
    taken, _ = _run(partitions, SearchConfig(selector=name), rounds=15, score=lambda v: v["x"])
    assert len(taken) == 15
    assert {pid for pid, _ in taken} <= {1, 2, 3}


def test_uniform_selector_tries_every_partition() -> None:
    partitions = [_partition(pid) for pid in (1, 2, 3)]
    taken, _ = _run(partitions, SearchConfig(selector="uniform"), rounds=60)
    assert {pid for pid, _ in taken} == {1, 2, 3}


IMPROVING = [0.5, 0.6, 0.7, 0.8, 0.9]
FLAT_HIGH = [0.95] * 5


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        # reward selectors want the higher scores: the flat partition (2)
        ("ucb1", 2),
        ("bestk", 2),
        ("recentk", 2),
        ("hieralg", 2),
        ("hiercost", 2),
        # velocity selectors want the partition whose best scores still improve (1)
        ("bestkvel", 1),
        ("purebestkvel", 1),
        ("recentkvel", 1),
    ],
)
def test_reward_and_velocity_selectors_disagree(selector: str, expected: int) -> None:
    partitions = [
        _partition(1, method="a", scores=IMPROVING),
        _partition(2, method="b", scores=FLAT_HIGH),
    ]
    for _ in range(5):
        outcome = propose(partitions, SearchConfig(selector=selector, k_window=3))
        assert outcome.proposal.hyperpartition_id == expected


def test_k_window_reaches_the_selector() -> None:
    """Partition 1 has one great score and many poor ones: best-1 likes it, best-3 does not."""
    partitions = [
        _partition(1, scores=[0.95, 0.1, 0.1, 0.1, 0.1]),
        _partition(2, scores=[0.6] * 5),
    ]
    chosen = {
        k: propose(
            partitions, SearchConfig(selector="bestk", k_window=k)
        ).proposal.hyperpartition_id
        for k in (1, 3)
    }
    assert chosen == {1: 1, 3: 2}


def test_recentk_rewards_the_most_recent_scores() -> None:
    """Partition 1 started well and then failed, 2 the reverse: recent-3 wants 2, best-3 wants 1.

    baytune's RecentKReward kept the *oldest* k scores and chose 1.
    """
    partitions = [
        _partition(1, scores=[0.9, 0.9, 0.9, 0.1, 0.1, 0.1]),
        _partition(2, scores=[0.1, 0.1, 0.1, 0.5, 0.5, 0.5]),
    ]
    chosen = {
        name: propose(
            partitions, SearchConfig(selector=name, k_window=3)
        ).proposal.hyperpartition_id
        for name in ("recentk", "bestk")
    }
    assert chosen == {"recentk": 2, "bestk": 1}


def test_hieralg_chooses_the_method_first() -> None:
    """Method a averages 0.45 over its two partitions, method b 0.7: hieralg goes to b even
    though plain UCB1 would take a's best partition."""
    partitions = [
        _partition(1, method="a", scores=[0.9] * 20),
        _partition(2, method="a", scores=[0.0] * 20),
        _partition(3, method="b", scores=[0.7] * 20),
    ]
    hieralg = propose(partitions, SearchConfig(selector="hieralg")).proposal.hyperpartition_id
    ucb1 = propose(partitions, SearchConfig(selector="ucb1")).proposal.hyperpartition_id
    assert (hieralg, ucb1) == (3, 1)


def _costed(pid: int, method: str, scores: list[float | None], seconds: float) -> Partition:
    partition = _partition(pid, method=method, scores=scores)
    for trial in partition.trials:
        trial.seconds = seconds
    return partition


def test_hiercost_charges_a_method_the_seconds_it_took() -> None:
    """Close scores and equal counts; method b's configurations took 20 times longer: hiercost
    goes to the cheap method a whatever the seed, hieralg (which counts configurations) to b,
    whose mean score is a little higher."""
    partitions = [
        _costed(1, "a", [0.80, 0.82, 0.84, 0.86], seconds=1.0),
        _costed(2, "b", [0.81, 0.83, 0.85, 0.85], seconds=20.0),
    ]
    chosen = {seed: propose(partitions, SearchConfig(selector="hiercost", seed=seed))
              for seed in range(10)}  # fmt: skip
    assert {outcome.proposal.hyperpartition_id for outcome in chosen.values()} == {1}
    hieralg = {
        propose(partitions, SearchConfig(selector="hieralg", seed=seed)).proposal.hyperpartition_id
        for seed in range(10)
    }
    assert hieralg == {2}  # b's mean score is higher and the counts are equal


def test_hiercost_charges_configurations_stopped_at_their_limit() -> None:
    """Method b has one score, the best, and three configurations stopped at a 30 s limit:
    hieralg counts one pull for b and keeps choosing it; hiercost charges b its 100 s and goes
    to a, whose eight configurations took 1 s each."""
    partitions = [
        _costed(1, "a", [0.80] * 8, seconds=1.0),
        _costed(2, "b", [0.90, None, None, None], seconds=30.0),
    ]
    partitions[1].trials[0].seconds = 10.0
    assert propose(partitions, SearchConfig(selector="hieralg")).proposal.hyperpartition_id == 2
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 1


def test_hiercost_rewards_rank_not_raw_score() -> None:
    """At equal cost, method a's best scores lead by 0.01 AUC: ranked, that is the whole range,
    and a is chosen; an untried method comes before both."""
    partitions = [
        _costed(1, "a", [0.95, 0.95, 0.95, 0.50], seconds=2.0),
        _costed(2, "b", [0.94, 0.94, 0.94, 0.94], seconds=2.0),
    ]
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 1
    partitions.append(_partition(3, method="c"))
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 3


def test_hiercost_counts_in_flight_configurations_at_their_method_s_median() -> None:
    """Method a (fast, scoring higher) has five configurations in flight, none recorded yet:
    charged at its median of 1 s they cost little, and a is chosen; without any recorded
    seconds at all, every configuration counts as one."""
    partitions = [
        _costed(1, "a", [0.90, 0.90, None, None, None, None, None], seconds=1.0),
        _costed(2, "b", [0.85, 0.85], seconds=8.0),
    ]
    for trial in partitions[0].trials[2:]:
        trial.seconds = None
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 1
    for partition in partitions:
        for trial in partition.trials:
            trial.seconds = None
    # by counts, a has 7 configurations to b's 2: b's bonus outweighs a's lead in rank
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 2


def test_hiercost_compares_methods_by_what_they_score_in_full() -> None:
    """At rung 0 forest a leads boosting b by 0.004 at equal cost and is chosen; b's
    configurations gain 0.010 more from the rungs above, and b is chosen."""
    partitions = [
        _costed(1, "a", [0.850, 0.848, 0.846, 0.844], seconds=2.0),
        _costed(2, "b", [0.846, 0.844, 0.842, 0.840], seconds=2.0),
    ]
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 1
    partitions[0].rung_gain, partitions[1].rung_gain = 0.002, 0.012
    assert propose(partitions, SearchConfig(selector="hiercost")).proposal.hyperpartition_id == 2


def test_rung_gains_chain_each_step_and_shrink_towards_every_method_s() -> None:
    """Each step's gain is the method's mean change there, shrunk by one pseudo configuration
    of the step's mean over every method; a method scored at rung 0 only gets that mean."""
    scores = [
        RungScore("a", 1, 0, 0.80), RungScore("a", 1, 1, 0.81), RungScore("a", 1, 2, 0.82),
        RungScore("a", 2, 0, 0.70), RungScore("a", 2, 1, 0.71),
        RungScore("b", 3, 0, 0.78), RungScore("b", 3, 1, 0.82),
        RungScore("c", 4, 0, 0.60),
    ]  # fmt: skip
    gains = method_gains(scores, top=2)
    step0 = (0.01 + 0.01 + 0.04) / 3  # every method's mean change from rung 0 to rung 1
    step1 = 0.01  # only a's configuration 1 was scored at rungs 1 and 2
    assert gains["a"] == pytest.approx((0.02 + step0) / 3 + (0.01 + step1) / 2)
    assert gains["b"] == pytest.approx((0.04 + step0) / 2 + step1)
    assert gains["c"] == pytest.approx(step0 + step1)
    assert gains["b"] > gains["c"] > gains["a"]
    assert method_gains(scores, top=0) == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_errored_and_running_trials_are_not_scores() -> None:
    """None (errored or in flight) must not reach the selector as a score."""
    partitions = [
        _partition(1, scores=[None, None, None, 0.9, 0.9]),
        _partition(2, scores=[0.2, 0.2]),
    ]
    for name in SELECTORS:
        assert propose(partitions, SearchConfig(selector=name)).proposal is not None


# -- custom selectors and tuners by file path ----------------------------------------------------
def _plugin(folder: Path, source: str, name: str = "plugin.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


CUSTOM_SELECTORS = """
    from baytune.selection.selector import Selector

    class PickK(Selector):
        '''Takes the k-th partition (1-based) in id order: shows k_window reaches it.'''

        def __init__(self, choices, k=1):
            super().__init__(choices)
            self.k = k

        def select(self, choice_scores):
            return sorted(self.choices)[self.k - 1]

    class Stranger(Selector):
        def select(self, choice_scores):
            return 99

    class NotASelector:
        pass
"""


def test_custom_selector_from_a_file(tmp_path: Path) -> None:
    path = _plugin(tmp_path, CUSTOM_SELECTORS)
    partitions = [_partition(pid) for pid in (4, 5, 6)]
    for k, expected in ((1, 4), (2, 5), (3, 6)):
        config = SearchConfig(selector=f"{path}:PickK", k_window=k)
        assert propose(partitions, config).proposal.hyperpartition_id == expected


def test_custom_selector_choosing_a_non_candidate_is_refused(tmp_path: Path) -> None:
    path = _plugin(tmp_path, CUSTOM_SELECTORS)
    with pytest.raises(SearchError, match="chose 99"):
        propose([_partition(1), _partition(2)], SearchConfig(selector=f"{path}:Stranger"))


CUSTOM_TUNERS = """
    import numpy as np
    from baytune.tuning.tuners.base import BaseTuner

    class FractionTuner(BaseTuner):
        '''Always proposes min_trials / 10 of every range: shows r_minimum reaches it.'''

        def __init__(self, tunable, min_trials=1):
            super().__init__(tunable)
            self.min_trials = min_trials

        def _propose(self, num_proposals, allow_duplicates):
            return np.full((num_proposals, self.tunable.dimensions), self.min_trials / 10)
"""


def test_custom_tuner_from_a_file(tmp_path: Path) -> None:
    path = _plugin(tmp_path, CUSTOM_TUNERS)
    partition = _partition(1, tunables=(X, ParamSpec("y", "float", range=(10.0, 20.0))))
    config = SearchConfig(tuner=f"{path}:FractionTuner", r_minimum=3)
    first = propose([partition], config)
    assert first.proposal.values["x"] == pytest.approx(0.3)
    assert first.proposal.values["y"] == pytest.approx(13.0)
    # it can only repeat itself: once its point is taken it is overruled, never repeated
    partition.trials.append(Trial(first.proposal.values, 0.5))
    second = propose([partition], config)
    assert second.proposal.values["x"] != pytest.approx(0.3)
    assert 10.0 <= second.proposal.values["y"] <= 20.0 and second.exhausted == []


def test_module_path_plugins_work_too() -> None:
    assert resolve_selector("baytune.selection:UCB1") is UCB1
    assert resolve_tuner("baytune.tuning:GPEiTuner") is GPEiTuner


@pytest.mark.parametrize("resolve", [resolve_selector, resolve_tuner], ids=["selector", "tuner"])
def test_custom_class_errors_are_specific(tmp_path: Path, resolve) -> None:
    kind = "selector" if resolve is resolve_selector else "tuner"
    selectors = _plugin(tmp_path, CUSTOM_SELECTORS, "selectors.py")
    broken = _plugin(tmp_path, "raise RuntimeError('boom at import')\n", "broken.py")
    missing = tmp_path / "absent.py"

    with pytest.raises(SearchError, match=f"custom {kind} file not found") as caught:
        resolve(f"{missing}:Anything")
    assert str(missing) in str(caught.value)

    with pytest.raises(SearchError, match="class 'Nope' not found") as caught:
        resolve(f"{selectors}:Nope")
    assert str(selectors) in str(caught.value)

    wrong = "PickK" if kind == "tuner" else "NotASelector"
    with pytest.raises(SearchError, match="must be a subclass of baytune"):
        resolve(f"{selectors}:{wrong}")

    with pytest.raises(SearchError, match="fails to import: boom at import"):
        resolve(f"{broken}:Anything")

    with pytest.raises(SearchError, match=r"must look like path/to/file\.py:ClassName"):
        resolve(f"{selectors}:")

    with pytest.raises(SearchError, match="cannot be imported"):
        resolve("no_such_module_for_atm:Thing")


# -- tuners ------------------------------------------------------------------------------------
def test_every_tuner_name_resolves() -> None:
    assert set(TUNERS) == {"uniform", "gp", "gp_ei", "gcp", "gp_eivel"}
    for name, cls in TUNERS.items():
        assert resolve_tuner(name) is cls
    assert issubclass(TUNERS["gp_eivel"], GPEiTuner)
    with pytest.raises(SearchError, match="unknown tuner 'nosuchtuner'") as caught:
        resolve_tuner("nosuchtuner")
    assert "gp_eivel" in str(caught.value)


def _history(n: int) -> list[Trial]:
    rng = np.random.default_rng(n)
    trials = []
    for _ in range(n):
        values = {
            "x": float(rng.uniform()),
            "C": float(10 ** rng.uniform(-3, 3)),
            "depth": int(rng.integers(2, 21)),
            "width": int(rng.integers(4, 257)),
        }
        trials.append(Trial(values, -((values["x"] - 0.7) ** 2)))
    return trials


@pytest.mark.parametrize("tuner", sorted(TUNERS))
def test_tuner_proposes_new_values_within_range(tuner: str) -> None:
    partition = _partition(1, tunables=MIXED)
    partition.trials = _history(6)
    proposal = propose([partition], SearchConfig(tuner=tuner, r_minimum=2)).proposal
    values = {name: proposal.values[name] for name in ("x", "C", "depth", "width")}
    assert _in_range(values, MIXED)
    space = TuningSpace(MIXED)
    assert space.key(values) not in {space.key(t.values) for t in partition.trials}
    assert proposal.values["choice"] == 1  # the partition's fixed values come along


def test_exp_parameters_are_proposed_on_a_log_scale() -> None:
    """Through propose(): medians near the geometric means (1 and 32), never out of range."""
    tunables = (
        ParamSpec("C", "float_exp", range=(1e-4, 1e4)),
        ParamSpec("width", "int_exp", range=(4, 256)),
    )
    proposals = [
        propose([_partition(1, tunables=tunables)], SearchConfig()).proposal.values
        for _ in range(400)
    ]
    cs = np.array([values["C"] for values in proposals])
    widths = np.array([values["width"] for values in proposals])
    assert abs(np.log10(np.median(cs))) < 0.4 and cs.min() >= 1e-4 and cs.max() <= 1e4
    assert 24 <= np.median(widths) <= 43 and widths.min() >= 4 and widths.max() <= 256


@pytest.mark.parametrize("tuner", ["gp", "gp_ei", "gcp", "gp_eivel"])
def test_r_minimum_counts_scores_not_errors_or_running(tuner: str) -> None:
    """Three errored/in-flight trials and one score, r_minimum 2: too few scores to fit a model.

    The tuner must propose at random; it used to fit nothing and then predict with it.
    """
    partition = _partition(1, tunables=MIXED)
    partition.trials = _history(4)
    for trial in partition.trials[:3]:
        trial.score = None
    proposal = propose([partition], SearchConfig(tuner=tuner, r_minimum=2)).proposal
    assert _in_range(proposal.values, MIXED)


def test_gp_tuner_exploits_only_after_r_minimum_scores() -> None:
    """Scores peak at x = 0.8. With r_minimum 1 the GP proposes near the peak; with r_minimum
    above the number of scores it must still be drawing uniformly."""
    history = [Trial({"x": float(x)}, -((x - 0.8) ** 2)) for x in np.linspace(0, 1, 8)]

    def proposals(r_minimum: int) -> np.ndarray:
        xs = []
        for _ in range(12):
            partition = _partition(1, tunables=(X,))
            partition.trials = list(history)
            outcome = propose([partition], SearchConfig(tuner="gp", r_minimum=r_minimum))
            xs.append(outcome.proposal.values["x"])
        return np.array(xs)

    fitted = proposals(r_minimum=1)
    random_phase = proposals(r_minimum=20)
    assert np.all(np.abs(fitted - 0.8) < 0.1), fitted
    assert random_phase.std() > 0.15 and np.abs(random_phase - 0.8).max() > 0.3, random_phase
    assert np.all((random_phase >= 0) & (random_phase <= 1))


class _RecordingVelocityTuner(GPEiVelocityTuner):
    """The real tuner, noting how many candidates it samples: 1 = uniform, many = GP-EI."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sampled: list[int] = []

    def _sample(self, num_proposals, allow_duplicates):
        self.sampled.append(num_proposals)
        return super()._sample(num_proposals, allow_duplicates)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.5] * 6, [1]),  # best scores stalled: velocity 0, probability of uniform exp(0) = 1
        ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [1000]),  # improving fast: exp(-100 * 0.2), GP-EI
    ],
    ids=["stalled-uniform", "improving-gp"],
)
def test_gp_eivel_falls_back_to_uniform_when_scores_stall(scores, expected) -> None:
    space = TuningSpace([X])
    tuner = _RecordingVelocityTuner(space.tunable, min_trials=2)
    tuner.record([{"x": i / 10} for i in range(len(scores))], scores)
    proposal = tuner.propose(1)
    assert tuner.sampled == expected
    assert 0.0 <= proposal["x"] <= 1.0


def test_gp_eivel_runs_a_search() -> None:
    partition = _partition(1, tunables=(X,))
    taken, _ = _run(
        [partition], SearchConfig(tuner="gp_eivel", r_minimum=2), 10, lambda v: -abs(v["x"] - 0.3)
    )
    xs = [values["x"] for _, values in taken]
    assert len(set(xs)) == 10 and all(0.0 <= x <= 1.0 for x in xs)


def test_catalogue_defaults_come_first() -> None:
    tunables = (
        ParamSpec("x", "float", range=(0.0, 1.0), default=0.25),
        ParamSpec("C", "float_exp", range=(0.01, 100.0), default=1.0),
    )
    partition = _partition(1, tunables=tunables)
    taken, _ = _run([partition], SearchConfig(), rounds=2)
    assert taken[0][1]["x"] == pytest.approx(0.25) and taken[0][1]["C"] == pytest.approx(1.0)
    assert taken[1][1]["x"] != pytest.approx(0.25)


# -- finite spaces: gridding and exhaustion -----------------------------------------------------
@pytest.mark.parametrize("tuner", sorted(TUNERS))
def test_grid_is_walked_without_repeats_then_exhausted(tuner: str) -> None:
    """3 x 3 grid: 9 distinct proposals (some errored), then the partition is gridding_done."""
    partition = _partition(1, tunables=(X, N))
    calls = iter(range(100))

    def score(values: dict[str, Any]) -> float | None:
        return None if next(calls) % 3 == 2 else values["x"] - values["n"] / 10

    taken, exhausted = _run(
        [partition], SearchConfig(tuner=tuner, gridding=3, r_minimum=2), rounds=12, score=score
    )
    points = [(values["x"], values["n"]) for _, values in taken]
    assert len(points) == 9 and len(set(points)) == 9
    assert set(points) == {(x, n) for x in (0.0, 0.5, 1.0) for n in (1, 5, 9)}
    assert exhausted == [1]
    again = propose([partition], SearchConfig(tuner=tuner, gridding=3))
    assert again.proposal is None and again.exhausted == [1]


def test_in_flight_trials_take_their_grid_point() -> None:
    """A configuration another worker is training must not be proposed again."""
    partition = _partition(1, tunables=(N,))
    grid = TuningSpace((N,), gridding=3)
    taken_by_others = [grid.decode({"n": 0}), grid.decode({"n": 2})]
    partition.trials = [Trial(values, None) for values in taken_by_others]
    outcome = propose([partition], SearchConfig(gridding=3))
    assert outcome.proposal.values["n"] == 5


def test_int_exp_without_grid_never_repeats_and_exhausts() -> None:
    """[1, 6] on a log scale holds six integers: six proposals, then exhausted (it used to
    repeat values forever and report an infinite space)."""
    for tuner in ("uniform", "gp"):
        partition = _partition(1, tunables=(ParamSpec("k", "int_exp", range=(1, 6)),))
        taken, exhausted = _run(
            [partition], SearchConfig(tuner=tuner, r_minimum=2), rounds=10, score=lambda v: v["k"]
        )
        assert sorted(values["k"] for _, values in taken) == [1, 2, 3, 4, 5, 6], tuner
        assert exhausted == [1]


def test_partition_without_tunables_holds_one_configuration() -> None:
    """gnb has nothing to tune (the original crashed on it): one classifier, then exhausted."""
    (gnb,) = enumerate_hyperpartitions(load_method("gnb"))
    partition = Partition(7, gnb)
    first = propose([partition], SearchConfig(tuner="gp_ei", selector="ucb1"))
    assert first.proposal.values == {"_scale_minmax": True}
    partition.trials.append(Trial(first.proposal.values, 0.8))
    second = propose([partition], SearchConfig(tuner="gp_ei", selector="ucb1"))
    assert second.proposal is None and second.exhausted == [7]


def test_exhausted_partitions_are_skipped_and_reported() -> None:
    """Partition 1 is done, 2 has a two-point grid left: proposals go to 2 until both are done."""
    single = _partition(1, tunables=(), constants=(("_scale", True),))
    single.trials.append(Trial({"_scale": True}, 0.9))
    two_points = _partition(2, tunables=(X,))
    taken, exhausted = _run([single, two_points], SearchConfig(selector="ucb1", gridding=2), 5)
    assert [(pid, values["x"]) for pid, values in sorted(taken, key=lambda t: t[1]["x"])] == [
        (2, 0.0),
        (2, 1.0),
    ]
    assert sorted(exhausted) == [1, 2]
    assert all(values["choice"] == 2 for _, values in taken)


def test_continuous_space_is_never_exhausted() -> None:
    partition = _partition(1, tunables=(X,))
    taken, exhausted = _run([partition], SearchConfig(), rounds=30)
    assert len({values["x"] for _, values in taken}) == 30 and exhausted == []
