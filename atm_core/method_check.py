"""``atm test-method``: fit every hyperpartition of a method once, as a datarun would.

The counterpart of the original ``scripts/test_method.py``: before a custom method (or a
catalogue change) meets a real datarun, each of its hyperpartitions gets its first
configuration (the catalogue's defaults, or a random draw), is fitted once and scored on a
small dataset through the code a worker runs on large data (one fit judged on a holdout, then
the test part: predictions, probabilities or decision values, the metrics, the pickle), and is
reported OK or with its error.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from functools import partial

from sklearn.base import clone

from atm_core.artifacts import serialize_model
from atm_core.data.dataset import inspect_dataset
from atm_core.data.split import split_frames
from atm_core.evaluation import Evaluation, evaluate, silence_fit_warnings
from atm_core.isolation import ChildFailed, TimeLimitExceeded, run_isolated
from atm_core.metric_names import resolve_metric
from atm_core.pipeline import build_pipeline
from atm_core.search.catalogue import load_method
from atm_core.search.hyperpartitions import enumerate_hyperpartitions
from atm_core.search.proposal import Partition, SearchConfig, propose

TIME_LIMIT = 120.0  # seconds per hyperpartition: a hung fit is an error, not a hung command


@dataclass(frozen=True)
class PartitionCheck:
    label: str
    ok: bool
    score: float | None
    seconds: float
    error: str | None = None

    @property
    def error_line(self) -> str:
        """The error's last line: the exception and its message."""
        lines = (self.error or "").strip().splitlines()
        return lines[-1] if lines else ""


def check_method(
    method_name: str,
    dataset_path: str,
    class_column: str = "class",
    metric: str = "f1",
    seed: int = 0,
    time_limit: float | None = TIME_LIMIT,
) -> list[PartitionCheck]:
    """Fit each hyperpartition of ``method_name`` (a code or a JSON file) once on the data."""
    method = load_method(method_name)
    info, train, test = inspect_dataset(dataset_path, class_column)
    data = split_frames(train, test, info.class_column, info.schema, seed, 0.3, cv_folds=0)
    resolved = resolve_metric(metric, info.k_classes)
    silence_fit_warnings()
    checks = []
    for index, spec in enumerate(enumerate_hyperpartitions(method)):
        proposal = propose([Partition(index, spec)], SearchConfig(warm_start=True)).proposal
        assert proposal is not None  # a partition's first configuration always exists
        started = time.perf_counter()
        try:
            template = build_pipeline(
                spec.estimator_class, proposal.values, info.schema, random_state=seed, n_jobs=1
            )
            evaluation = run_isolated(
                partial(_fit_once, template, data, resolved, seed), time_limit
            )
        except (TimeLimitExceeded, ChildFailed) as exc:
            checks.append(_failed(spec.label(), started, str(exc)))
        except Exception:
            checks.append(_failed(spec.label(), started, traceback.format_exc()))
        else:
            checks.append(
                PartitionCheck(
                    spec.label(),
                    True,
                    evaluation.cv_judgment_metric,
                    time.perf_counter() - started,
                )
            )
    return checks


def _fit_once(template: object, data: object, metric: str, seed: int) -> Evaluation:
    evaluation = evaluate(partial(clone, template), data, metric, seed)
    serialize_model(evaluation.model)  # a model that cannot be stored cannot be complete
    evaluation.model = None  # the check's result travels back without it
    return evaluation


def _failed(label: str, started: float, error: str) -> PartitionCheck:
    return PartitionCheck(label, False, None, time.perf_counter() - started, error)
