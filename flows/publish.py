"""Results in the Prefect UI: progress, leaderboard table and best-model markdown artifacts.

Keys are stable per datarun (``atm-datarun-<id>-...``) so the UI keeps each one's history.
"""

from __future__ import annotations

import math
import time
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from atm_core.dashboard import dashboard_url
from atm_core.modelhub import ModelHub
from atm_core.progress import budget_progress
from atm_core.results import DatarunSummary, ensemble_members_text

LEADERBOARD_ROWS = 10


def artifact_key(datarun_id: int, what: str) -> str:
    return f"atm-datarun-{datarun_id}-{what}"


class ProgressArtifact:
    """A progress bar in the UI that follows the datarun's budget.

    Updated at most once per ``MIN_INTERVAL`` seconds unless forced: each update is a query of
    the ModelHub and a call of Prefect's API (5.5 ms on the embedded server), and on a tiny
    dataset, ten classifiers a second, updating after each one took 6-7 % of the flow's
    throughput.
    """

    MIN_INTERVAL = 1.0

    def __init__(self, hub: ModelHub, datarun_id: int) -> None:
        self.hub = hub
        self.datarun_id = datarun_id
        self._id: UUID | None = None
        self._updated = -math.inf

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._updated < self.MIN_INTERVAL:
            return
        self._updated = now
        progress = budget_progress(self.hub.progress(self.datarun_id))
        description = (
            f"Datarun {self.datarun_id}: {progress.done:.0f} of {progress.total:.0f} "
            f"{progress.unit}"
        )
        if self._id is None:
            self._id = create_progress_artifact(
                progress=progress.percent,
                key=artifact_key(self.datarun_id, "progress"),
                description=description,
            )
        else:
            update_progress_artifact(self._id, progress=progress.percent, description=description)


def leaderboard_table(hub: ModelHub, summary: DatarunSummary) -> list[dict[str, str]]:
    """The top of the leaderboard as a person reads it: scores to 4 decimals, the score that
    ranks first, the test score before the long hyperparameter text."""
    rows = []
    for row in hub.leaderboard_rows(summary.datarun_id, limit=LEADERBOARD_ROWS):
        scores = {
            f"{summary.metric} ({summary.score_target})": _decimals(row["judgment_metric"]),
            "test": _decimals(row["test_judgment_metric"]),
        }
        if summary.score_target != "cv":
            scores["cv mean"] = _decimals(row["cv_judgment_metric"])
        rows.append(
            {
                "rank": str(row["rank"]),
                "classifier": str(row["classifier_id"]),
                "method": row["method"],
                **scores,
                "cv std": _decimals(row["cv_judgment_metric_stdev"]),
                "hyperparameters": ", ".join(
                    f"{name}={_short(value)}"
                    for name, value in sorted(row["hyperparameters"].items())
                ),
            }
        )
    return rows


def _decimals(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def publish_results(hub: ModelHub, summary: DatarunSummary) -> None:
    """The top of the leaderboard as a table, the best model as markdown."""
    create_table_artifact(
        table=leaderboard_table(hub, summary),
        key=artifact_key(summary.datarun_id, "leaderboard"),
        description=f"Top {LEADERBOARD_ROWS} classifiers of datarun {summary.datarun_id} "
        f"({summary.metric}, {summary.score_target})",
    )
    markdown = summary.to_markdown()
    link = dashboard_url(summary.datarun_id)
    if link:
        markdown += f"\n\n[The datarun on the dashboard]({link})"
    create_markdown_artifact(
        markdown=markdown,
        key=artifact_key(summary.datarun_id, "best-model"),
        description=f"Best model of datarun {summary.datarun_id}",
    )


def result_line(summary: DatarunSummary) -> str:
    """The flow run's last log line: the datarun, its best score and its ensemble."""
    parts = [f"datarun {summary.datarun_id} is {summary.status}"]
    if summary.best_classifier_id is None:
        parts.append("no classifier completed")
    else:
        parts.append(
            f"best {summary.metric} {summary.best_judgment:.4f} "
            f"(classifier {summary.best_classifier_id}, {summary.best_method})"
        )
    if summary.ensemble:
        parts.append(
            f"ensemble {ensemble_members_text(summary.ensemble)}: "
            f"cv {summary.ensemble_cv:.4f}, test {summary.ensemble_test:.4f}"
        )
    link = dashboard_url(summary.datarun_id)
    if link:
        parts.append(link)
    return "; ".join(parts)
