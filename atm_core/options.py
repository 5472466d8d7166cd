"""Every datarun option, declared once.

:class:`DatarunRequest` is the table of options: each field carries its default, help text,
bounds or choices and whether the dataruns table stores it. The ``atm`` flags
(:func:`add_datarun_flags`), the Prefect flow's parameters and the ``ATM(...).run()``
arguments (:func:`parameters`), the checks (:func:`problems`) and the stored columns
(:func:`stored_values`) are all derived from it, so a new option is one new field.

Light on purpose: ``atm --help`` builds its flags from this module without importing the data
stack.
"""

from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import MISSING, Field, dataclass, field, fields
from datetime import datetime
from typing import Any, get_type_hints

from atm_core.search import DEFAULT_SELECTOR, DEFAULT_TUNER

BUDGET_TYPES = ("classifier", "learner", "walltime")  # learner: the original's classifier
SCORE_TARGETS = ("cv", "test", "mu_sigma")


def option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    stored: bool = True,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A datarun option: ``stored`` ones are columns of the dataruns table; ``flag`` overrides
    the command-line flag derived from the name."""
    return field(
        default=default,
        metadata={
            "help": help,
            "minimum": minimum,
            "choices": choices,
            "stored": stored,
            "flag": flag,
            "metavar": metavar,
        },
    )


@dataclass
class DatarunRequest:
    """What a datarun is asked to be: the original ``enter_data`` options and defaults, except
    the selector (``hiercost``, chosen by measurement) and the default portfolio."""

    train_path: str | None = option(
        None, "CSV or parquet: a path, http(s) or s3:// URL", stored=False
    )
    class_column: str = option("class", "the label column", stored=False)
    test_path: str | None = option(
        None,
        "a separate test file (otherwise a stratified split of the training file)",
        stored=False,
    )
    methods: list[str] | None = option(
        None,
        "method codes or JSON files (default: hgb rf logreg et, plus knn svm mlp on data of "
        "up to 10,000 rows)",
        stored=False,
    )
    priority: int = option(1, "workers take higher-priority dataruns first")
    budget_type: str = option(
        "classifier",
        "what the budget counts: classifiers or walltime minutes",
        choices=BUDGET_TYPES,
    )
    budget: float = option(
        100, "classifiers, or minutes for a walltime budget (fractions of a minute allowed)"
    )
    deadline: str | datetime | None = option(
        None,
        "stop starting classifiers at this time (YYYY-MM-DD HH:MM local time, or ISO 8601)",
    )
    metric: str = option(
        "f1",
        "metric to optimise: accuracy, cohen_kappa, f1, roc_auc, ap, mcc (binary); "
        "rank_accuracy, f1_micro, f1_macro, roc_auc_micro, roc_auc_macro (multiclass)",
    )
    score_target: str = option(
        "cv", "judge by the CV mean, the test split, or CV mean - 2 std", choices=SCORE_TARGETS
    )
    tuner: str = option(DEFAULT_TUNER, "uniform, gp, gp_ei, gcp, gp_eivel or file.py:Class")
    selector: str = option(
        DEFAULT_SELECTOR,
        "uniform, ucb1, bestk, bestkvel, purebestkvel, recentk, recentkvel, hieralg, hiercost "
        "or file.py:Class",
    )
    r_minimum: int = option(2, "random trials before the tuner models", minimum=1)
    k_window: int = option(3, "history window of the k-selectors", minimum=1)
    gridding: int = option(
        0, "grid points per numeric parameter (0: continuous, otherwise at least 2)", minimum=0
    )
    run_per_partition: bool = option(
        False, "one datarun per hyperpartition (enter_data and worker only)", stored=False
    )
    seed: int = option(0, "seed of the train/test split, the folds and the models", minimum=0)
    test_size: float = option(
        0.3, "share of the training file held out as the test split (0 < x < 1)"
    )
    time_limit: float | None = option(
        None,
        "seconds one classifier may run (default: from the budget; 0: no limit)",
        minimum=0,
        metavar="SECONDS",
    )
    warm_start: bool = option(
        True,
        "start with each method's default configuration",
        flag="--no-warm-start",
    )
    fidelity: str = option(
        "auto",
        "auto: judge configurations on subsamples first and fully only the best (successive "
        "halving, on tables large enough to gain from it); full: every one fully",
        choices=("auto", "full"),
    )
    refit: bool = option(
        True,
        "when the search ends, refit the ensemble's members (or the best classifier) on every "
        "labelled row: the models that load_model, predict and export use",
        flag="--no-refit",
    )
    cv_folds: int | None = option(
        None,
        "CV folds (default 5; 3 above 10,000 training rows; a holdout (0) above 30,000, or above "
        "10,000 with a walltime budget or a deadline)",
        minimum=0,
    )
    description: str | None = option(None, "free text kept with the datarun")


def spec() -> tuple[Field, ...]:
    """The options, in declaration order."""
    return fields(DatarunRequest)


def defaults() -> dict[str, Any]:
    return {item.name: item.default for item in spec()}


def stored_names() -> list[str]:
    return [item.name for item in spec() if item.metadata["stored"]]


def kind(item: Field) -> str:
    """The option's value type: str, int, float, bool or list (the first of its annotation)."""
    annotation = item.type if isinstance(item.type, str) else str(item.type)
    for name in ("list", "bool", "int", "float", "str"):
        if annotation.startswith(name):
            return name
    raise TypeError(f"option {item.name}: unsupported annotation {annotation}")


def annotation(item: Field) -> Any:
    """The option's annotation as a type (for signatures that Prefect and pydantic read)."""
    return get_type_hints(DatarunRequest)[item.name]


def flag(item: Field) -> str:
    return item.metadata["flag"] or "--" + item.name.replace("_", "-")


# -- front-ends -------------------------------------------------------------------------------
def add_datarun_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option, with the option's default and help."""
    groups = {
        "data": parser.add_argument_group("data"),
        "datarun": parser.add_argument_group("datarun"),
    }
    for item in spec():
        data = item.name in ("train_path", "test_path", "class_column")
        group = groups["data" if data else "datarun"]
        text = item.metadata["help"].replace("%", "%%")
        if item.metadata["choices"]:
            text += f" ({', '.join(item.metadata['choices'])})"
        if item.default not in (None, False, True):
            text += f" (default: {item.default})"
        value_kind = kind(item)
        if value_kind == "bool":
            action = "store_false" if item.default else "store_true"
            group.add_argument(flag(item), dest=item.name, action=action, help=text)
            continue
        extra: dict[str, Any] = {}
        if value_kind == "list":
            extra["nargs"] = "+"
        elif value_kind in ("int", "float"):
            extra["type"] = int if value_kind == "int" else float
        if item.metadata["metavar"]:
            extra["metavar"] = item.metadata["metavar"]
        group.add_argument(flag(item), dest=item.name, default=item.default, help=text, **extra)


def from_arguments(args: argparse.Namespace, **changes: Any) -> DatarunRequest:
    """The request the parsed flags describe."""
    values = {item.name: getattr(args, item.name) for item in spec()}
    values.update(changes)
    return DatarunRequest(**values)


def from_mapping(values: dict[str, Any], where: str = "") -> DatarunRequest:
    """A request from keyword arguments (a flow run, ``ATM.run``, a plan file entry); an
    unknown name is refused, naming it."""
    known = {item.name for item in spec()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise _config_error(f"{where}{unknown[0]} is not a datarun option")
    return DatarunRequest(**values)


def parameters(
    leading: list[inspect.Parameter] | None = None,
    trailing: list[inspect.Parameter] | None = None,
    positional: tuple[str, ...] = (),
) -> inspect.Signature:
    """A signature with one parameter per option (its default and annotation), for the flow
    and ``ATM.run``: ``leading`` and ``trailing`` add that front-end's own parameters. Options
    are keyword-only, except those named in ``positional`` (which must come first)."""
    options = [
        inspect.Parameter(
            item.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if item.name in positional
            else inspect.Parameter.KEYWORD_ONLY,
            default=item.default,
            annotation=annotation(item),
        )
        for item in spec()
    ]
    return inspect.Signature([*(leading or []), *options, *(trailing or [])])


def docstring_arguments(extra: dict[str, str] | None = None) -> str:
    """A Google-style ``Args:`` section (Prefect shows it in the run form) for every option."""
    lines = ["Args:"]
    for item in spec():
        lines.append(f"    {item.name}: {item.metadata['help']}")
    for name, text in (extra or {}).items():
        lines.append(f"    {name}: {text}")
    return "\n".join(lines)


# -- checks -----------------------------------------------------------------------------------
def problems(request: DatarunRequest) -> list[str]:
    """Every option that breaks its declared type, bound or choices, one message each."""
    found = []
    for item in spec():
        value = getattr(request, item.name)
        if value is None:
            if item.default is not None:
                found.append(f"{item.name} must be given")
            continue
        message = _check(item, value)
        if message:
            found.append(message)
    return found


def _check(item: Field, value: Any) -> str | None:
    name, value_kind = item.name, kind(item)
    if value_kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{name} must be an integer, got {value!r}"
    if value_kind == "float" and (
        not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)
    ):
        return f"{name} must be a number, got {value!r}"
    if value_kind == "bool" and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}"
    if value_kind == "list" and (
        not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value)
    ):
        return f"{name} must be a list of names, got {value!r}"
    if value_kind == "str" and item.name != "deadline" and not isinstance(value, str):
        return f"{name} must be text, got {value!r}"
    if item.name == "deadline" and not isinstance(value, str | datetime):
        return f"{name} must be a date and time, got {value!r}"
    minimum = item.metadata["minimum"]
    if minimum is not None and value < minimum:
        return f"{name} must be at least {minimum}, got {value}"
    choices = item.metadata["choices"]
    if choices and value not in choices:
        return f"unknown {name.replace('_', ' ')} '{value}': use one of {', '.join(choices)}"
    return None


def stored_values(request: DatarunRequest) -> dict[str, Any]:
    """The options the dataruns table keeps, as given (resolve them before storing)."""
    return {name: getattr(request, name) for name in stored_names()}


def _config_error(message: str) -> Exception:
    from atm_core.errors import ConfigError

    return ConfigError(message)


assert all(item.default is not MISSING for item in spec())  # every option has a default
