"""What each page shows, as one JSON document: the page embeds it, polls it for live updates
(``/api/.../view``) and a report inlines it, so the browser draws every page from one shape."""

from __future__ import annotations

import math
from typing import Any

from atm_core.artifacts import ArtifactStoreError
from atm_core.dashboard import heldout, plots, queries
from atm_core.errors import ATMError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import Classifier, Datarun

LEADERBOARD_ROWS = 20
LIST_ROWS = 100


def page(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    """A paginated answer: ``items`` and where they sit among ``total``."""
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def dataruns_view(hub: ModelHub, limit: int = LIST_ROWS, offset: int = 0) -> dict[str, Any]:
    with hub.transaction() as session:
        items, total = queries.list_dataruns(session, limit=limit, offset=offset)
    return {"dataruns": page(items, total, limit, offset), "live": True}


def datarun_view(hub: ModelHub, datarun_id: int) -> dict[str, Any]:
    """Everything the datarun page draws, read in one transaction."""
    with hub.transaction() as session:
        summary = queries.datarun_summary(session, datarun_id)
        datarun = session.get(Datarun, datarun_id)
        points = queries.classifier_points(session, datarun)
        partitions = queries.hyperpartitions(session, datarun)
        board, ranked = queries.leaderboard(session, datarun, limit=LEADERBOARD_ROWS)
        errors = queries.error_groups(session, datarun_id)
        ensemble = queries.ensemble(session, datarun_id)
    figures = plots.datarun_figures(points, list(summary["methods"]), partitions, summary["metric"])
    return {
        "datarun": summary,
        "leaderboard": page(board, ranked, LEADERBOARD_ROWS, 0),
        "hyperpartitions": partitions,
        "ensemble": ensemble,
        "errors": errors,
        "figures": figures,
        "live": summary["status"] != "complete",
    }


def classifier_view(hub: ModelHub, classifier_id: int) -> dict[str, Any]:
    """A classifier with its stored metrics and, when it has held-out probabilities, its
    confusion matrix and ROC curves. A missing or unreadable artifact is a note on the page."""
    with hub.transaction() as session:
        detail = queries.classifier_detail(session, classifier_id)
        row = session.get(Classifier, classifier_id)
    view: dict[str, Any] = {
        "classifier": detail,
        "metrics": None,
        "heldout": None,
        "notes": [],
        "figures": {},
        "live": detail["status"] == "running",
    }
    if row.files_lost_at is not None:
        view["notes"].append(
            f"`atm verify` found its stored files lost or altered on {detail['files_lost_at']} "
            "UTC: it is left out of rankings and ensembles"
        )
    if row.metrics_location:
        try:
            view["metrics"] = metric_records(hub.load_metrics(classifier_id))
        except (ATMError, ArtifactStoreError) as exc:
            view["notes"].append(f"metrics unavailable: {queries.redact(str(exc))}")
    if row.predictions_location:
        try:
            evaluation = heldout.evaluate(hub.load_predictions(row), detail["classes"])
        except (ATMError, ArtifactStoreError) as exc:
            view["notes"].append(f"held-out predictions unavailable: {queries.redact(str(exc))}")
        else:
            view["heldout"] = {"rows": evaluation["rows"], "classes": evaluation["classes"]}
            view["figures"] = {
                "confusion": plots.confusion_figure(evaluation["confusion"], evaluation["classes"]),
                "roc": plots.roc_figure(evaluation["roc"]),
            }
    elif detail["status"] == "complete":
        view["notes"].append(
            "no held-out probabilities stored: the model has no predict_proba, or 20 complete "
            "classifiers already ranked ahead of it when it finished (it could never join the "
            "ensemble)"
        )
    return view


def dataset_view(hub: ModelHub, dataset_id: int) -> dict[str, Any]:
    with hub.transaction() as session:
        dataset = queries.dataset_detail(session, dataset_id)
        items, total = queries.list_dataruns(session, dataset_id=dataset_id, limit=LIST_ROWS)
    return {"dataset": dataset, "dataruns": page(items, total, LIST_ROWS, 0), "live": True}


def metric_records(frame: Any) -> list[dict[str, Any]]:
    """The metrics parquet's rows (one per CV fold, then the test part) for JSON."""
    records = []
    for record in frame.to_dict(orient="records"):
        clean = {}
        for key, value in record.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[str(key)] = value
        records.append(clean)
    return records
