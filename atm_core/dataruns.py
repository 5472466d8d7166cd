"""Enter data: validate a datarun request completely, then write it in one transaction.

Everything a user can get wrong is checked before the first write (options first, then the
data), so a refused request leaves no dataset, datarun or hyperpartition behind.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import yaml

from atm_core.data.dataset import DatasetInfo, inspect_dataset
from atm_core.data.split import split_frames
from atm_core.errors import ConfigError
from atm_core.evaluation import (
    BINARY_METRICS,
    MULTICLASS_ALIASES,
    MULTICLASS_METRICS,
    SCORE_TARGETS,
    resolve_metric,
)
from atm_core.modelhub.hub import DatarunOptions, ModelHub
from atm_core.modelhub.models import Datarun, utcnow
from atm_core.search import DEFAULT_SELECTOR, DEFAULT_TUNER
from atm_core.search.catalogue import Method, load_method
from atm_core.search.hyperpartitions import HyperpartitionSpec, enumerate_hyperpartitions
from atm_core.search.selectors import resolve_selector
from atm_core.search.tuners import resolve_tuner

# The default datarun when no method is named: strong, fast learners first (warm start tries
# their default configurations in this order); knn, svm and mlp join on small data only,
# where their quadratic cost (knn, svm) or slow convergence (mlp) stays affordable.
PORTFOLIO = ("hgb", "rf", "logreg", "et")
SMALL_DATA_PORTFOLIO = ("knn", "svm", "mlp")
SMALL_DATA_ROWS = 10_000
BUDGET_TYPES = {"classifier": "classifier", "learner": "classifier", "walltime": "walltime"}
ALL_METRICS = sorted({*BINARY_METRICS, *MULTICLASS_METRICS, *MULTICLASS_ALIASES})


@dataclass
class DatarunRequest:
    """What ``atm enter_data`` is asked to create: the original flags and defaults, except the
    selector (``hieralg``, chosen by measurement) and the portfolio when no methods are named."""

    train_path: str
    class_column: str = "class"
    test_path: str | None = None
    methods: list[str] | None = None  # None: the default portfolio for the data's size
    priority: int = 1
    budget_type: str = "classifier"
    budget: int = 100
    deadline: str | datetime | None = None
    metric: str = "f1"
    score_target: str = "cv"
    tuner: str = DEFAULT_TUNER
    selector: str = DEFAULT_SELECTOR
    r_minimum: int = 2
    k_window: int = 3
    gridding: int = 0
    run_per_partition: bool = False
    seed: int = 0
    test_size: float = 0.3
    time_limit: float | None = None
    warm_start: bool = True
    cv_folds: int | None = None
    description: str | None = None


@dataclass
class Ingested:
    """A validated request whose dataset is registered: everything needed to create dataruns."""

    dataset_id: int
    info: DatasetInfo
    options: DatarunOptions  # with the metric resolved for the problem type
    methods: list[Method]
    run_per_partition: bool = False


@dataclass
class EnteredData:
    """The result of entering data: the dataset, its dataruns and hyperpartition counts."""

    dataset_id: int
    info: DatasetInfo
    dataruns: list[Datarun]
    partitions_per_method: dict[str, int]
    metric: str
    requested_metric: str


def validate_options(request: DatarunRequest) -> tuple[DatarunOptions, list[Method]]:
    """Check every option that does not need the data; return the datarun options."""
    if request.methods is not None and not request.methods:
        raise ConfigError("no methods given: name at least one (e.g. --methods logreg dt knn)")
    methods = [load_method(name) for name in request.methods or ()]
    names = [method.name for method in methods]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"method '{duplicated[0]}' is given twice")
    resolve_selector(request.selector)
    resolve_tuner(request.tuner)
    budget_type = BUDGET_TYPES.get(request.budget_type)
    if budget_type is None:
        raise ConfigError(
            f"unknown budget type '{request.budget_type}': use classifier or walltime"
        )
    _check_int("budget", request.budget, minimum=1)
    _check_int("r_minimum", request.r_minimum, minimum=1)
    _check_int("k_window", request.k_window, minimum=1)
    _check_int("gridding", request.gridding, minimum=0)
    _check_int("priority", request.priority)
    _check_int("seed", request.seed, minimum=0)
    if request.gridding == 1:
        raise ConfigError("gridding must be 0 (continuous) or at least 2 grid points")
    if request.metric not in ALL_METRICS:
        raise ConfigError(f"unknown metric '{request.metric}': use one of {', '.join(ALL_METRICS)}")
    if request.score_target not in SCORE_TARGETS:
        raise ConfigError(
            f"unknown score target '{request.score_target}': use one of {', '.join(SCORE_TARGETS)}"
        )
    if request.time_limit is not None and (
        not isinstance(request.time_limit, int | float) or request.time_limit < 0
    ):
        raise ConfigError(
            f"time_limit must be a number of seconds >= 0, got {request.time_limit!r}"
        )
    if request.cv_folds is not None:
        _check_int("cv_folds", request.cv_folds, minimum=0)
        if request.cv_folds == 1:
            raise ConfigError("cv_folds must be 0 (a holdout instead of CV) or at least 2")
    if not 0 < request.test_size < 1:
        raise ConfigError(f"test_size must be between 0 and 1, got {request.test_size}")
    options = DatarunOptions(
        selector=request.selector,
        tuner=request.tuner,
        k_window=request.k_window,
        r_minimum=request.r_minimum,
        gridding=request.gridding,
        priority=request.priority,
        budget_type=budget_type,
        budget=request.budget,
        deadline=parse_deadline(request.deadline),
        metric=request.metric,
        score_target=request.score_target,
        seed=request.seed,
        test_size=request.test_size,
        time_limit=None if request.time_limit is None else float(request.time_limit),
        warm_start=bool(request.warm_start),
        cv_folds=request.cv_folds,
        description=request.description,
    )
    return options, methods


def parse_deadline(value: str | datetime | None) -> datetime | None:
    """A deadline as naive UTC; naive input is local time. It must lie in the future."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                f"cannot read deadline '{value}': use 'YYYY-MM-DD HH:MM' (local time) or ISO 8601"
            ) from None
    deadline = value.astimezone(UTC).replace(tzinfo=None)
    if deadline <= utcnow():
        raise ConfigError(f"deadline {value} is in the past")
    return deadline


def _check_int(name: str, value: object, minimum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")


def default_portfolio(info: DatasetInfo) -> list[str]:
    """The methods of a datarun that names none, for this dataset's size."""
    if info.n_examples <= SMALL_DATA_ROWS:
        return [*PORTFOLIO, *SMALL_DATA_PORTFOLIO]
    return list(PORTFOLIO)


def check_request(request: DatarunRequest) -> tuple[DatasetInfo, DatarunOptions, list[Method]]:
    """Validate every option and the data itself; nothing is written."""
    options, methods = validate_options(request)
    info, train, test = inspect_dataset(request.train_path, request.class_column, request.test_path)
    if request.methods is None:
        methods = [load_method(name) for name in default_portfolio(info)]
    metric = resolve_metric(request.metric, info.k_classes)
    split_frames(
        train,
        test,
        info.class_column,
        info.schema,
        options.seed,
        options.test_size,
        options.cv_folds,
    )
    return info, replace(options, metric=metric), methods


def ingest(hub: ModelHub, request: DatarunRequest) -> Ingested:
    """Check the request, then register its dataset (idempotent on the data's content)."""
    info, options, methods = check_request(request)
    dataset = hub.register_dataset(info)
    return Ingested(dataset.id, info, options, methods, request.run_per_partition)


def create_dataruns(hub: ModelHub, ingested: Ingested, run_key: str | None = None) -> EnteredData:
    """Enumerate the methods' hyperpartitions and create the datarun(s) for an ingested dataset."""
    partitions: list[HyperpartitionSpec] = []
    counts: dict[str, int] = {}
    for method in ingested.methods:
        method_partitions = enumerate_hyperpartitions(method)
        counts[method.name] = len(method_partitions)
        partitions.extend(method_partitions)
    groups = [[p] for p in partitions] if ingested.run_per_partition else [partitions]
    dataruns = hub.create_dataruns(ingested.info, ingested.options, groups, run_key=run_key)
    return EnteredData(
        dataruns[0].dataset_id, ingested.info, dataruns, counts, ingested.options.metric, ""
    )


def enter_data(hub: ModelHub, request: DatarunRequest, run_key: str | None = None) -> EnteredData:
    """Validate ``request`` and register its dataset and datarun(s) with their hyperpartitions."""
    entered = create_dataruns(hub, ingest(hub, request), run_key=run_key)
    entered.requested_metric = request.metric
    return entered


def load_plan(path: str | Path) -> list[DatarunRequest]:
    """Dataruns listed in a YAML file: ``dataruns:`` entries with ``enter_data`` options."""
    plan_path = Path(path)
    if not plan_path.is_file():
        raise ConfigError(f"plan file not found: {plan_path}")
    try:
        document = yaml.safe_load(plan_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{plan_path}: invalid YAML: {exc}") from None
    entries = document.get("dataruns") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{plan_path}: expected a non-empty list under 'dataruns'")
    allowed = {f.name for f in fields(DatarunRequest)}
    requests = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "train_path" not in entry:
            raise ConfigError(f"{plan_path}: dataruns[{index}] needs at least a train_path")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ConfigError(
                f"{plan_path}: dataruns[{index}].{unknown[0]} is not a datarun option"
            )
        requests.append(DatarunRequest(**entry))
    return requests
