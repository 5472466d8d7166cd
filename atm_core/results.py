"""A datarun's results: the leaderboard (as parquet beside the models), its ensemble and a
summary."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd

from atm_core.artifacts import serialize_model
from atm_core.data.dataset import FeatureSchema
from atm_core.data.split import HOLDOUT_SHARE, load_all_rows
from atm_core.ensemble import CANDIDATES, EnsembleModel, select
from atm_core.errors import NotFoundError
from atm_core.isolation import ChildFailed, TimeLimitExceeded, fit_threads, run_isolated
from atm_core.metric_names import resolve_metric
from atm_core.modelhub.claims import time_limit
from atm_core.modelhub.hub import ModelHub
from atm_core.modelhub.models import Classifier, Datarun, DatarunStatus, Ensemble, utcnow
from atm_core.modelhub.reads import judgment
from atm_core.pipeline import (
    build_pipeline,
    fit_rows,
    refit_cost,
    stops_early,
    with_found_iterations,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass
class DatarunSummary:
    """Where a datarun stands and what its best classifier is."""

    datarun_id: int
    dataset: str
    status: str
    metric: str
    score_target: str
    classifiers: dict[str, int] = field(default_factory=dict)
    best_classifier_id: int | None = None
    best_method: str | None = None
    best_hyperparameters: dict[str, Any] | None = None
    best_judgment: float | None = None
    best_cv: float | None = None
    best_cv_stdev: float | None = None
    best_test: float | None = None
    model_location: str | None = None
    ensemble: list[dict[str, Any]] | None = None  # members: classifier_id, method, weight
    ensemble_cv: float | None = None
    ensemble_test: float | None = None
    leaderboard_location: str | None = None
    completed_now: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """The best model in a few lines, for the Prefect UI and the README of a run."""
        lines = [
            f"# Datarun {self.datarun_id} on `{self.dataset}`",
            "",
            f"Status **{self.status}**; classifiers: "
            + ", ".join(f"{count} {status}" for status, count in sorted(self.classifiers.items())),
            "",
        ]
        if self.best_classifier_id is None:
            lines.append("No classifier has completed yet.")
            return "\n".join(lines)
        lines += [
            f"## Best model: classifier {self.best_classifier_id} (`{self.best_method}`)",
            "",
            f"| {self.metric} | value |",
            "|---|---|",
            f"| judgment ({self.score_target}) | {self.best_judgment:.4f} |",
            f"| cv mean ± std | {self.best_cv:.4f} ± {self.best_cv_stdev:.4f} |",
            f"| test | {self.best_test:.4f} |",
            "",
            "Hyperparameters:",
            "",
            "```json",
            json.dumps(self.best_hyperparameters, indent=2, sort_keys=True),
            "```",
            "",
            f"Model: `{self.model_location}`",
            "",
            f"Load it with `ModelHub(url).load_model({self.best_classifier_id})`.",
        ]
        if self.ensemble:
            lines += [
                "",
                "## Ensemble",
                "",
                f"{ensemble_members_text(self.ensemble)}: "
                f"{self.metric} {self.ensemble_cv:.4f} out of fold, "
                f"{self.ensemble_test:.4f} on the test part.",
                "",
                f"Load it with `ModelHub(url).load_ensemble({self.datarun_id})`.",
            ]
        if self.leaderboard_location:
            lines += ["", f"Leaderboard: `{self.leaderboard_location}`"]
        return "\n".join(lines)


def ensemble_members_text(members: list[dict[str, Any]]) -> str:
    """``2 x hgb #14, 1 x rf #3``: a summary's ensemble members, best first."""
    return ", ".join(f"{m['weight']} x {m['method']} #{m['classifier_id']}" for m in members)


def leaderboard_records(board: pd.DataFrame) -> list[dict[str, Any]]:
    """Leaderboard rows as plain JSON-friendly records (hyperparameters as a JSON string)."""
    frame = board.copy()
    frame["hyperparameters"] = [
        json.dumps(values, sort_keys=True, default=str) for values in frame["hyperparameters"]
    ]
    return json.loads(frame.to_json(orient="records"))


def write_leaderboard(hub: ModelHub, datarun_id: int) -> str:
    """Store the full leaderboard as parquet under the artifact root; returns its location."""
    board = hub.leaderboard(datarun_id)
    frame = pd.DataFrame(leaderboard_records(board), columns=list(board.columns))
    return hub.store.save_frame(leaderboard_key(datarun_id), frame)


def leaderboard_key(datarun_id: int) -> str:
    return f"datarun-{datarun_id}/leaderboard.parquet"


def summarize(hub: ModelHub, datarun_id: int) -> DatarunSummary:
    """Where the datarun stands: classifier counts, its best classifier and its ensemble."""
    datarun = hub.get_datarun(datarun_id)
    row = next(r for r in hub.status_rows() if r.datarun.id == datarun_id)
    summary = DatarunSummary(
        datarun_id=datarun.id,
        dataset=row.dataset_name,
        status=datarun.status.value,
        metric=datarun.metric,
        score_target=datarun.score_target.value,
        classifiers=dict(row.counts),
    )
    best = row.best
    if best is not None:
        summary.best_classifier_id = best.id
        summary.best_method = best.method
        summary.best_hyperparameters = best.hyperparameters_values
        summary.best_judgment = judgment(best, datarun.score_target)
        summary.best_cv = best.cv_judgment_metric
        summary.best_cv_stdev = best.cv_judgment_metric_stdev
        summary.best_test = best.test_judgment_metric
        summary.model_location = best.model_location
    ensemble = hub.get_ensemble(datarun_id)
    if ensemble is not None:
        summary.ensemble = [
            {"classifier_id": member.id, "method": member.method, "weight": weight}
            for member, weight in hub.ensemble_members(ensemble)
        ]
        summary.ensemble_cv = ensemble.cv_judgment_metric
        summary.ensemble_test = ensemble.test_judgment_metric
    if datarun.status == DatarunStatus.COMPLETE:
        summary.leaderboard_location = hub.store.url(leaderboard_key(datarun_id))
    return summary


def build_ensemble(hub: ModelHub, datarun_id: int) -> Ensemble | None:
    """The datarun's ensemble, chosen (once) from its best classifiers' out-of-fold
    probabilities; None while no complete classifier has stored predictions."""
    existing = hub.get_ensemble(datarun_id)
    if existing is not None:
        return existing
    predictions = {}
    for candidate in hub.ensemble_candidates(datarun_id, CANDIDATES):
        try:
            predictions[candidate.id] = hub.load_predictions(candidate)
        except NotFoundError as exc:  # its files were lost: the others still make an ensemble
            log.warning("classifier %d left out of the ensemble: %s", candidate.id, exc)
    if not predictions:
        return None
    datarun = hub.get_datarun(datarun_id)
    metric = resolve_metric(datarun.metric, hub.get_dataset(datarun.dataset_id).k_classes)
    selection = select(predictions, metric)
    return hub.record_ensemble(
        datarun_id, selection.weights, selection.cv_judgment_metric, selection.test_judgment_metric
    )


def refit_model(hub: ModelHub, classifier_id: int) -> Any:
    """The classifier's configuration fitted on every labelled row of its dataset.

    A classifier's stored model was fitted on the datarun's training part only (so that its
    test score means something). Once a configuration is chosen, the rows held out for that
    score are better used for fitting: this is the model to deploy.
    """
    classifier = hub.get_classifier(classifier_id)
    X, y = _all_rows(hub, classifier.datarun_id)
    return _refitted(hub, classifier, X, y)


def refit_ensemble(
    hub: ModelHub, datarun_id: int, within_seconds: float | None = None
) -> EnsembleModel:
    """The datarun's ensemble with its members refitted on all labelled rows (see
    :func:`refit_model`): the ensemble to deploy.

    With ``within_seconds``, members are refitted best first while their estimated refit time
    (see :func:`refit_seconds`) fits in what is left; the others keep their stored models. An
    ensemble has several members (up to 11 distinct ones in the 60-s benchmark runs), so its
    refit costs several fits: this keeps a budget that the refit belongs to.
    """
    ensemble = hub.ensemble(datarun_id)
    datarun = hub.get_datarun(datarun_id)
    deadline = None if within_seconds is None else time.monotonic() + within_seconds
    X, y = _all_rows(hub, datarun_id)
    members = []
    for classifier_id, weight in ensemble.weights.items():
        classifier = hub.get_classifier(classifier_id)
        if (
            deadline is None
            or time.monotonic() + refit_seconds(hub, classifier, datarun) <= deadline
        ):
            members.append((_refitted(hub, classifier, X, y), weight))
        else:
            members.append((hub.load_model(classifier_id), weight))
    dataset = hub.get_dataset(datarun.dataset_id)
    return EnsembleModel(members, list(dataset.class_labels))


def refit_seconds(hub: ModelHub, classifier: Classifier, datarun: Datarun) -> float:
    """A classifier's refit time on all labelled rows, estimated from its stored model's fit
    (on the training part, or on its fit share under a holdout), scaled by rows, times the
    fits a refit makes for one of the search (a calibrated model's refit cross-validates for
    its maps: :func:`~atm_core.pipeline.refit_cost`)."""
    fits = refit_cost(_template(hub, classifier, datarun))
    if classifier.fit_seconds is not None and classifier.fit_rows:
        rows = hub.get_dataset(datarun.dataset_id).n_examples
        return fits * classifier.fit_seconds * rows / classifier.fit_rows
    metrics = hub.load_metrics(classifier.id)  # recorded before revision 0008
    fitted = float(metrics.loc[metrics["split"] == "test", "fit_seconds"].iloc[0])
    share = 1 - datarun.test_size
    if (metrics["split"] == "cv").sum() == 1:  # a holdout: the model saw its fit share only
        share *= 1 - HOLDOUT_SHARE
    return fits * fitted / share


def _all_rows(hub: ModelHub, datarun_id: int) -> tuple[pd.DataFrame, pd.Series]:
    return _rows_loader(hub, hub.get_datarun(datarun_id))()


def _rows_loader(hub: ModelHub, datarun: Datarun) -> Callable[[], tuple[pd.DataFrame, pd.Series]]:
    """What reads every labelled row of the datarun's dataset, bound to plain values: a
    refit's own process calls it without touching the database."""
    dataset = hub.get_dataset(datarun.dataset_id)
    return partial(
        load_all_rows,
        dataset.train_path,
        dataset.test_path,
        dataset.class_column,
        FeatureSchema.from_json(dataset.feature_schema),
        dataset.content_hash,
        hub.store,
    )


def _template(hub: ModelHub, classifier: Classifier, datarun: Datarun) -> Pipeline:
    """The classifier's configuration as an unfitted pipeline, as its refit fits it."""
    return build_pipeline(
        hub.get_hyperpartition(classifier.hyperpartition_id).estimator_class,
        classifier.hyperparameters_values,
        FeatureSchema.from_json(hub.get_dataset(datarun.dataset_id).feature_schema),
        random_state=datarun.seed,
        n_jobs=hub.settings.threads,
        sparse=True,
    )


def _refit_template(hub: ModelHub, classifier: Classifier, datarun: Datarun) -> Pipeline:
    """What a refit fits: the configuration, with the iterations its search-time fit stopped
    at (see :func:`~atm_core.pipeline.with_found_iterations`), when its model is at hand. Only
    a configuration that stops early has its search-time model read (a forest's pickle can
    weigh hundreds of MB, which the worker would hold for nothing)."""
    template = _template(hub, classifier, datarun)
    if not stops_early(template):
        return template
    try:
        searched = hub.load_model(classifier.id, final=False)
    except NotFoundError:  # its files were found lost: refit it as configured
        return template
    return with_found_iterations(template, searched)


def _refitted(hub: ModelHub, classifier: Classifier, X: pd.DataFrame, y: pd.Series) -> Any:
    model = _refit_template(hub, classifier, hub.get_datarun(classifier.datarun_id))
    with fit_threads(hub.settings.threads):
        return model.fit(X, y)


def final_candidates(hub: ModelHub, datarun_id: int) -> list[Classifier]:
    """What a finished search refits on all rows: its ensemble's members, else its best
    classifier; best first."""
    ensemble = hub.get_ensemble(datarun_id)
    if ensemble is not None:
        return [member for member, _ in hub.ensemble_members(ensemble)]
    best = hub.best_classifier(datarun_id)
    return [] if best is None else [best]


REFIT_MARGIN = 1.25  # estimates from one fit are rough: reserve a quarter more
FINALIZE_SECONDS = 2.0  # choosing the ensemble, reading every row, the fit process, storing
MAX_REFIT_SHARE = 0.5  # a refit that would take more of a timed datarun is not reserved for


def refit_reserve(hub: ModelHub, datarun: Datarun) -> float:
    """Seconds a timed datarun (walltime budget or deadline) keeps free for its end: its best
    classifier's estimated refit on every labelled row and the finalizing around it; 0 for an
    untimed datarun or one that does not refit.

    A refit estimated at more than half of the datarun's time is not reserved for: the
    search keeps the time (a rung-0 fit on 3,111 rows scaled to 200,000 would otherwise end a
    60 s search after 5 s), and the best keeps its search-time model unless, when the search
    ends, the refit fits in what is left."""
    end = time_limit(datarun)
    if not datarun.refit or end is None:
        return 0.0
    best = hub.best_classifier(datarun.id)
    if best is None:
        return FINALIZE_SECONDS
    refit = REFIT_MARGIN * refit_seconds(hub, best, datarun)
    whole = (end - (datarun.start_time or utcnow())).total_seconds()
    return FINALIZE_SECONDS + (refit if refit <= MAX_REFIT_SHARE * whole else 0.0)


def refit_final_models(hub: ModelHub, datarun_id: int) -> list[int]:
    """Refit the final candidates on every labelled row and store them beside their
    search-time models (``final_model_location``), best first, each while its estimated time
    fits before the datarun's end (walltime budget or deadline): a refit never overruns the
    budget; a candidate left out keeps its search-time model. Safe to repeat. Returns the ids
    refitted now."""
    datarun = hub.get_datarun(datarun_id)
    todo = [c for c in final_candidates(hub, datarun_id) if c.final_model_location is None]
    if not datarun.refit or not todo:
        return []
    rows = _rows_loader(hub, datarun)
    end = time_limit(datarun)
    done = []
    for classifier in todo:
        remaining = None if end is None else (end - utcnow()).total_seconds()
        if remaining is not None and refit_seconds(hub, classifier, datarun) > remaining:
            log.info("classifier %d keeps its search-time model: no time left", classifier.id)
            continue
        template = _refit_template(hub, classifier, datarun)
        try:  # in a process of its own, stopped at the datarun's end; see _fitted_blob
            blob = run_isolated(partial(_fitted_blob, template, rows, hub.settings.threads),
                                remaining, fork=True)  # fmt: skip
        except (TimeLimitExceeded, ChildFailed) as exc:
            log.warning("classifier %d keeps its search-time model: %s", classifier.id, exc)
            continue
        key = f"datarun-{datarun_id}/classifier-{classifier.id}/final/model.pkl"
        stored = hub.store.save_model(key, blob)
        hub.record_final_model(classifier.id, stored.location, stored.sha256)
        done.append(classifier.id)
    return done


def _fitted_blob(
    template: Any, rows: Callable[[], tuple[pd.DataFrame, pd.Series]], threads: int
) -> bytes:
    """A refit in its own process: it reads every labelled row (from the dataset's parsed
    copy; the database is not touched), lets them go once they are a matrix, and leaves with
    all it allocated, so the worker keeps only its own data. On 2M rows, a logistic regression
    peaked at 1,956 MB in the worker with its dense matrix; see benchmarks/RESULTS.md."""
    with fit_threads(threads):
        return serialize_model(fit_rows(template, rows))


def finalize(hub: ModelHub, datarun_id: int) -> str:
    """A complete datarun's ensemble (chosen once), its final models (refitted on every
    labelled row) and leaderboard parquet; safe to repeat. Returns the leaderboard's
    location."""
    build_ensemble(hub, datarun_id)
    refit_final_models(hub, datarun_id)
    return write_leaderboard(hub, datarun_id)
