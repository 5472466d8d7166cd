"""Rich rendering for the command line: worker output, progress bar, tables."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atm_core.modelhub.claims import Claim
from atm_core.modelhub.hub import ModelHub, judgment
from atm_core.modelhub.models import BudgetType, Datarun, Dataset, utcnow
from atm_core.search.selectors import resolve_selector
from atm_core.search.tuners import resolve_tuner
from atm_core.worker import ClassifierResult, Reporter


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


class ConsoleReporter(Reporter):
    """Prints what the original worker printed, above a progress bar per datarun."""

    def __init__(self, hub: ModelHub, console: Console, verbose: bool = True) -> None:
        self.hub = hub
        self.console = console
        self.verbose = verbose
        self.progress = Progress(
            TextColumn("[bold]datarun {task.fields[datarun]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[int, Any] = {}

    def __enter__(self) -> ConsoleReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _print(self, *lines: str) -> None:
        if self.verbose:
            for line in lines:
                self.progress.console.print(line, highlight=False, markup=False)

    def _update(self, datarun_id: int) -> None:
        task = self._tasks.get(datarun_id)
        if task is None:
            return
        datarun = self.hub.get_datarun(datarun_id)
        best = self.hub.best_classifier(datarun_id)
        best_text = (
            "-" if best is None else f"{fmt(judgment(best, datarun.score_target))} (#{best.id})"
        )
        if datarun.budget_type == BudgetType.WALLTIME:
            started = datarun.start_time or utcnow()
            done = min((utcnow() - started).total_seconds() / 60, datarun.budget)
        else:
            done = len(self.hub.classifiers(datarun_id))
        self.progress.update(task, completed=done, best=best_text)

    def datarun_started(self, datarun: Datarun, dataset: Dataset) -> None:
        selector = resolve_selector(datarun.selector)
        tuner = resolve_tuner(datarun.tuner)
        self._print(
            f"Computing on datarun {datarun.id} "
            f"({dataset.name}, {datarun.metric} {datarun.score_target.value})",
            f"Selector: {datarun.selector} ({selector.__module__}.{selector.__name__})",
            f"Tuner: {datarun.tuner} ({tuner.__module__}.{tuner.__name__})",
        )
        unit = "minutes" if datarun.budget_type == BudgetType.WALLTIME else "classifiers"
        self._tasks[datarun.id] = self.progress.add_task(
            "", total=datarun.budget, datarun=datarun.id, unit=unit, best="-"
        )
        self._update(datarun.id)

    def classifier_started(self, claim: Claim, method: str, values: dict[str, Any]) -> None:
        retry = f", attempt {claim.attempt}" if claim.attempt > 1 else ""
        lines = [
            f'Chose parameters for method "{method}" (classifier {claim.classifier_id}{retry}):'
        ]
        lines += [f"    {name} = {value}" for name, value in sorted(values.items())]
        self._print(*lines)

    def classifier_finished(self, result: ClassifierResult) -> None:
        if result.status == "complete":
            lines = [
                f"Judgment metric ({result.metric}, {result.score_target}): "
                f"{fmt(result.cv_mean)} +- {fmt(result.cv_stdev)}"
                + (
                    f" (test {fmt(result.test)})"
                    if result.score_target == "cv"
                    else f" -> {fmt(result.judgment)}"
                )
            ]
            if result.is_new_best:
                if result.previous_best is None:
                    lines.append("New best score! (first complete classifier)")
                else:
                    best_id, best_score, best_std = result.previous_best
                    lines.append(
                        f"New best score! Previous best (classifier {best_id}): "
                        f"{fmt(best_score)} +- {fmt(best_std)}"
                    )
            lines += [
                f"Saving model in: {result.model_location}",
                f"Saving metrics in: {result.metrics_location}",
                f"Saved classifier {result.classifier_id}.",
            ]
            self._print(*lines)
        elif result.status == "errored":
            last = (result.error or "").strip().splitlines()[-1:] or ["unknown error"]
            self._print(
                f"Error in classifier {result.classifier_id}: {last[0]} (stored in the ModelHub)"
            )
        self._update(result.datarun_id)

    def datarun_ended(self, datarun: Datarun, reason: str) -> None:
        self._update(datarun.id)
        self._print(f"{reason[0].upper()}{reason[1:]}!", f"Datarun {datarun.id} has ended.")

    def waiting(self, datarun: Datarun, running: int) -> None:
        self._update(datarun.id)

    def no_dataruns(self) -> None:
        self._print("No dataruns found. Exiting.")


def leaderboard_table(board: pd.DataFrame, datarun: Datarun, title: str | None = None) -> Table:
    table = Table(
        title=title
        or f"Datarun {datarun.id} leaderboard ({datarun.metric}, {datarun.score_target.value})"
    )
    for column in (
        "rank",
        "classifier",
        "method",
        "hyperpartition",
        "judgment",
        "cv mean ± std",
        "test",
    ):
        table.add_column(
            column, justify="right" if column not in ("method", "hyperpartition") else "left"
        )
    for row in board.itertuples():
        table.add_row(
            str(row.rank),
            str(row.classifier_id),
            row.method,
            row.hyperpartition,
            fmt(row.judgment_metric),
            f"{fmt(row.cv_judgment_metric)} ± {fmt(row.cv_judgment_metric_stdev)}",
            fmt(row.test_judgment_metric),
        )
    return table


def status_table(hub: ModelHub) -> Table:
    table = Table(title="Dataruns")
    for column in (
        "id",
        "dataset",
        "status",
        "budget",
        "complete",
        "errored",
        "running",
        "best",
        "metric",
    ):
        table.add_column(column)
    for datarun in hub.dataruns():
        dataset = hub.get_dataset(datarun.dataset_id)
        counts = {"complete": 0, "errored": 0, "running": 0}
        for classifier in hub.classifiers(datarun.id):
            counts[classifier.status.value] += 1
        best = hub.best_classifier(datarun.id)
        table.add_row(
            str(datarun.id),
            dataset.name,
            datarun.status.value,
            f"{datarun.budget} {datarun.budget_type.value}",
            str(counts["complete"]),
            str(counts["errored"]),
            str(counts["running"]),
            "-" if best is None else f"{fmt(judgment(best, datarun.score_target))} (#{best.id})",
            f"{datarun.metric} {datarun.score_target.value}",
        )
    return table
