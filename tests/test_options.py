"""One table of datarun options: every front-end takes each option, with the same default, and
the checks and the stored columns come from it."""

from __future__ import annotations

import inspect
import re
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect as schema_of

from atm_core import options
from atm_core.api import ATM
from atm_core.cli import build_parser
from atm_core.dataruns import DatarunRequest, validate_options
from atm_core.errors import ConfigError
from atm_core.modelhub.models import Datarun

# A value other than the default for each option, as a user would type it and as Python has it.
SAMPLES = {
    "train_path": ("data.csv", "data.csv"),
    "class_column": ("label", "label"),
    "test_path": ("test.csv", "test.csv"),
    "methods": (["logreg", "dt"], ["logreg", "dt"]),
    "priority": ("5", 5),
    "budget_type": ("walltime", "walltime"),
    "budget": ("7.5", 7.5),
    "deadline": ("2099-01-01 10:00", "2099-01-01 10:00"),
    "metric": ("roc_auc", "roc_auc"),
    "score_target": ("mu_sigma", "mu_sigma"),
    "tuner": ("gp", "gp"),
    "selector": ("ucb1", "ucb1"),
    "r_minimum": ("4", 4),
    "k_window": ("6", 6),
    "gridding": ("3", 3),
    "run_per_partition": (None, True),
    "seed": ("11", 11),
    "test_size": ("0.25", 0.25),
    "time_limit": ("30", 30.0),
    "warm_start": (None, False),
    "refit": (None, False),
    "fidelity": ("full", "full"),
    "cv_folds": ("3", 3),
    "description": ("nightly churn", "nightly churn"),
}


def flags_for(name: str) -> list[str]:
    item = next(i for i in options.spec() if i.name == name)
    text, _ = SAMPLES[name]
    if text is None:  # a switch
        return [options.flag(item)]
    return [options.flag(item), *(text if isinstance(text, list) else [text])]


def test_every_option_has_a_sample_here() -> None:
    assert set(SAMPLES) == {item.name for item in options.spec()}


@pytest.mark.parametrize("command", ["enter_data", "run"])
def test_cli_flags_have_the_spec_defaults_and_reach_the_request(command: str) -> None:
    parser = build_parser()
    defaults = options.from_arguments(parser.parse_args([command]))
    assert vars(defaults) == options.defaults()
    for name, (_, value) in SAMPLES.items():
        request = options.from_arguments(parser.parse_args([command, *flags_for(name)]))
        assert getattr(request, name) == value, name


def test_the_flow_takes_every_option_with_its_default_and_help() -> None:
    from flows.datarun import FLOW_PARAMETERS, datarun

    parameters = inspect.signature(datarun.fn).parameters
    assert list(parameters) == [item.name for item in options.spec()] + list(FLOW_PARAMETERS)
    schema = datarun.parameters.properties  # what Prefect's run form shows
    for item in options.spec():
        assert parameters[item.name].default == item.default, item.name
        assert schema[item.name].get("default") == item.default, item.name
        assert schema[item.name]["description"] == item.metadata["help"], item.name
    assert "database_url" not in schema, "a URL with a password must never be a parameter"


def test_atm_run_takes_every_option_with_its_default() -> None:
    parameters = inspect.signature(ATM.run).parameters
    for item in options.spec():
        assert parameters[item.name].default == item.default, item.name


def test_stored_options_are_datarun_columns() -> None:
    columns = {column.name for column in schema_of(Datarun).columns}
    assert set(options.stored_names()) <= columns
    stored, _ = validate_options(DatarunRequest("data.csv"))
    assert set(stored) == set(options.stored_names())


def test_every_problem_is_reported_at_once() -> None:
    request = DatarunRequest(
        "data.csv",
        budget=0,
        r_minimum="two",
        score_target="best",
        budget_type="hours",
        metric="loss",
        methods=["nope"],
        test_size=1.5,
        deadline="yesterday",
    )
    with pytest.raises(ConfigError) as refused:
        validate_options(request)
    message = str(refused.value)
    for part in (
        "budget must be a whole number of classifiers of at least 1, got 0",
        "r_minimum must be an integer, got 'two'",
        "unknown score target 'best': use one of cv, test, mu_sigma",
        "unknown budget type 'hours'",
        "unknown metric 'loss'",
        "unknown method 'nope'",
        "test_size must be between 0 and 1, got 1.5",
        "cannot read deadline 'yesterday'",
    ):
        assert part in message
    assert "\n" not in message


def test_unknown_option_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="budgets is not a datarun option"):
        options.from_mapping({"train_path": "x.csv", "budgets": 3})


def test_a_deadline_may_be_a_datetime() -> None:
    stored, _ = validate_options(DatarunRequest("x.csv", deadline=datetime(2099, 1, 1)))
    assert stored["deadline"] == datetime(2099, 1, 1)


def test_the_readme_table_lists_every_option_with_its_default() -> None:
    """The README's option table is written by hand: it must stay true to the spec."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        match = re.match(r"\| `(\w+)`[^|]*\|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip().strip("`")
    for item in options.spec():
        assert item.name in rows, f"README lacks option {item.name}"
        expected = "" if item.default is None else str(item.default)
        assert rows[item.name] == expected, item.name
