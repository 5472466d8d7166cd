"""Enter data: validate a datarun request completely, then write it in one transaction.

Everything a user can get wrong is checked before the first write (options first, then the
data), so a refused request leaves no dataset, datarun or hyperpartition behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from atm_core import options as spec
from atm_core.data.dataset import DatasetInfo, read_dataset
from atm_core.data.loading import Table
from atm_core.data.parsed_cache import keep_parsed
from atm_core.data.split import folds_for, split_rows
from atm_core.errors import ATMError, ConfigError
from atm_core.metric_names import ALL_METRICS, resolve_metric
from atm_core.modelhub.hub import ModelHub
from atm_core.modelhub.models import Datarun, utcnow
from atm_core.options import DatarunRequest
from atm_core.rungs import top_rung
from atm_core.search.catalogue import Method, load_method
from atm_core.search.hyperpartitions import HyperpartitionSpec, enumerate_hyperpartitions
from atm_core.search.strategies import check_selector, check_tuner

__all__ = ["DatarunRequest", "EnteredData", "Ingested", "check_request", "enter_data"]

# The default datarun when no method is named: strong, fast learners first (warm start tries
# their default configurations in this order); knn, svm and mlp join on small data only,
# where their quadratic cost (knn, svm) or slow convergence (mlp) stays affordable.
PORTFOLIO = ("hgb", "rf", "logreg", "et")
SMALL_DATA_PORTFOLIO = ("knn", "svm", "mlp")
SMALL_DATA_ROWS = 10_000


@dataclass
class Ingested:
    """A validated request whose dataset is registered: everything needed to create dataruns."""

    dataset_id: int
    info: DatasetInfo
    options: dict[str, Any]  # the stored options, resolved (metric for the problem type...)
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


def validate_options(request: DatarunRequest) -> tuple[dict[str, Any], list[Method]]:
    """Check every option that does not need the data; return the options to store.

    Every problem is found before any is reported, so one message lists them all.
    """
    found = spec.problems(request)
    methods: list[Method] = []
    if request.methods is not None and not request.methods:
        found.append("no methods given: name at least one (e.g. --methods logreg dt knn)")
    elif isinstance(request.methods, list | tuple):
        for name in request.methods:
            _collect(found, lambda name=name: methods.append(load_method(name)))
        names = [method.name for method in methods]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            found.append(f"method '{duplicated[0]}' is given twice")
    if isinstance(request.selector, str):
        _collect(found, lambda: check_selector(request.selector))
    if isinstance(request.tuner, str):
        _collect(found, lambda: check_tuner(request.tuner))
    if isinstance(request.budget, int | float) and not isinstance(request.budget, bool):
        if request.budget_type == "walltime" and not request.budget > 0:
            found.append(f"budget must be more than 0 minutes, got {request.budget:g}")
        elif request.budget_type != "walltime" and (
            request.budget < 1 or request.budget != int(request.budget)
        ):
            found.append(
                "budget must be a whole number of classifiers of at least 1, "
                f"got {request.budget:g}"
            )
    if request.gridding == 1:
        found.append("gridding must be 0 (continuous) or at least 2 grid points")
    if isinstance(request.metric, str) and request.metric not in ALL_METRICS:
        found.append(f"unknown metric '{request.metric}': use one of {', '.join(ALL_METRICS)}")
    if request.cv_folds == 1:
        found.append("cv_folds must be 0 (a holdout instead of CV) or at least 2")
    if isinstance(request.test_size, float | int) and not 0 < request.test_size < 1:
        found.append(f"test_size must be between 0 and 1, got {request.test_size}")
    deadline = None
    if isinstance(request.deadline, str | datetime):
        try:
            deadline = parse_deadline(request.deadline)
        except ConfigError as exc:
            found.append(str(exc))
    if found:
        raise ConfigError("; ".join(found))
    stored = spec.stored_values(request)
    stored.update(
        budget_type="walltime" if request.budget_type == "walltime" else "classifier",
        deadline=deadline,
        budget=float(request.budget),
        time_limit=None if request.time_limit is None else float(request.time_limit),
        test_size=float(request.test_size),
    )
    return stored, methods


def _collect(found: list[str], check: Any) -> None:
    """Run ``check``; a user error it raises joins ``found`` instead of stopping the checks."""
    try:
        check()
    except ATMError as exc:
        found.append(str(exc))


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


def default_portfolio(info: DatasetInfo) -> list[str]:
    """The methods of a datarun that names none, for this dataset's size."""
    if info.n_examples <= SMALL_DATA_ROWS:
        return [*PORTFOLIO, *SMALL_DATA_PORTFOLIO]
    return list(PORTFOLIO)


def absolute_location(path: str | None) -> str | None:
    """A local path made absolute (workers in other folders read it as it was meant); URLs
    (``s3://``, ``https://``) as given."""
    if not path or "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def check_request(request: DatarunRequest) -> tuple[DatasetInfo, dict[str, Any], list[Method]]:
    """Validate every option and the data itself; nothing is written."""
    info, options, methods, _ = _checked(request)
    return info, options, methods


def _checked(
    request: DatarunRequest,
) -> tuple[DatasetInfo, dict[str, Any], list[Method], tuple[Table, Table | None]]:
    """:func:`check_request`, and the tables read (a parsed copy is kept of them)."""
    options, methods = validate_options(request)
    if not request.train_path:
        raise ConfigError("train_path is required: a CSV or parquet file with a label column")
    info, train, test = read_dataset(
        absolute_location(request.train_path),
        request.class_column,
        absolute_location(request.test_path),
    )
    if request.methods is None:
        methods = [load_method(name) for name in default_portfolio(info)]
    metric = resolve_metric(request.metric, info.k_classes)
    # the split is made by the labels alone: the features are not copied to count its rows
    split = split_rows(
        train.frame[info.class_column],
        None if test is None else test.frame[info.class_column],
        options["seed"],
        options["test_size"],
        options["cv_folds"],
    )
    timed = options["budget_type"] == "walltime" or options["deadline"] is not None
    if options["cv_folds"] is None and timed:  # stored: every worker judges the same way
        options["cv_folds"] = folds_for(len(split.train), timed=True)
    rung = top_rung(len(split.train), options["fidelity"])
    stored = {**options, "metric": metric, "top_rung": rung, "train_rows": len(split.train)}
    return info, stored, methods, (train, test)


def ingest(hub: ModelHub, request: DatarunRequest) -> Ingested:
    """Check the request, then register its dataset (idempotent on the data's content) and
    keep its parsed rows in the artifact store for the workers
    (:mod:`atm_core.data.parsed_cache`)."""
    info, options, methods, (train, test) = _checked(request)
    dataset = hub.register_dataset(info)
    keep_parsed(hub.store, info.content_hash, train, test)
    return Ingested(dataset.id, info, options, methods, request.run_per_partition)


def create_dataruns(
    hub: ModelHub,
    ingested: Ingested,
    run_key: str | None = None,
    started_at: datetime | None = None,
) -> EnteredData:
    """Enumerate the methods' hyperpartitions and create the datarun(s) for an ingested dataset
    (``started_at``: see :meth:`ModelHub.create_dataruns`)."""
    partitions: list[HyperpartitionSpec] = []
    counts: dict[str, int] = {}
    for method in ingested.methods:
        method_partitions = enumerate_hyperpartitions(method)
        counts[method.name] = len(method_partitions)
        partitions.extend(method_partitions)
    groups = [[p] for p in partitions] if ingested.run_per_partition else [partitions]
    dataruns = hub.create_dataruns(
        ingested.info, ingested.options, groups, run_key=run_key, started_at=started_at
    )
    return EnteredData(
        dataruns[0].dataset_id, ingested.info, dataruns, counts, ingested.options["metric"], ""
    )


def enter_data(
    hub: ModelHub,
    request: DatarunRequest,
    run_key: str | None = None,
    started_at: datetime | None = None,
) -> EnteredData:
    """Validate ``request`` and register its dataset and datarun(s) with their hyperpartitions
    (``started_at``: see :meth:`ModelHub.create_dataruns`)."""
    entered = create_dataruns(hub, ingest(hub, request), run_key=run_key, started_at=started_at)
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
    requests = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "train_path" not in entry:
            raise ConfigError(f"{plan_path}: dataruns[{index}] needs at least a train_path")
        requests.append(spec.from_mapping(entry, where=f"{plan_path}: dataruns[{index}]."))
    return requests
