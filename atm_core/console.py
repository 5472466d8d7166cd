"""Rich rendering for the command line: driver output, progress bar, tables.

Light on purpose (``atm status`` imports it): the selector and tuner modules load only when a
driver starts.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from atm_core.modelhub.claims import Claim
from atm_core.modelhub.hub import ModelHub
from atm_core.modelhub.models import BudgetType, Datarun, Dataset
from atm_core.modelhub.reads import judgment
from atm_core.progress import budget_progress
from atm_core.reporting import ClassifierResult, Reporter

LARGE_FILE_BYTES = 50 * 1024 * 1024  # reading a data file this large shows a progress bar


class ReadingProgress:
    """A progress bar per data file of at least ``threshold`` bytes while it is read (see
    :func:`atm_core.data.loading.reporting_reads`); smaller files show nothing."""

    def __init__(self, console: Console, threshold: int = LARGE_FILE_BYTES) -> None:
        self.console = console
        self.threshold = threshold
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, location: str, done: int, total: int | None) -> None:
        if total is None or total < self.threshold:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("reading {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
        if location not in self._tasks:
            self._tasks[location] = self._progress.add_task(location, total=total)
        self._progress.update(self._tasks[location], completed=done)

    def __enter__(self) -> ReadingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def new_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]datarun {task.fields[datarun]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
    )


def add_progress_task(progress: Progress, datarun: Datarun) -> TaskID:
    unit = "minutes" if datarun.budget_type == BudgetType.WALLTIME else "classifiers"
    return progress.add_task("", total=datarun.budget, datarun=datarun.id, unit=unit, best="-")


def update_progress(progress: Progress, task: TaskID, hub: ModelHub, datarun_id: int) -> None:
    """Show the spent budget and the best judgment metric so far."""
    now = hub.progress(datarun_id)
    best = now.best
    best_text = (
        "-" if best is None else f"{fmt(judgment(best, now.datarun.score_target))} (#{best.id})"
    )
    progress.update(task, completed=budget_progress(now).done, best=best_text)


class DatarunWatcher:
    """A progress bar for a datarun that runs elsewhere (a flow), read from the ModelHub."""

    def __init__(
        self,
        hub: ModelHub,
        run_key: str | None,
        console: Console,
        datarun_id: int | None = None,
        interval: float = 0.5,
    ) -> None:
        self.hub = hub
        self.run_key = run_key
        self.datarun_id = datarun_id
        self.interval = interval
        self.progress = new_progress(console)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="atm-progress", daemon=True)

    def _watch(self) -> None:
        task = None
        datarun_id = self.datarun_id
        while True:
            stopping = self._stop.wait(self.interval)
            try:
                if task is None:
                    found = (
                        [self.hub.get_datarun(datarun_id)]
                        if datarun_id is not None
                        else self.hub.dataruns_with_key(self.run_key or "")
                    )
                    if found:
                        datarun_id = found[0].id
                        task = add_progress_task(self.progress, found[0])
                if task is not None:
                    update_progress(self.progress, task, self.hub, datarun_id)
            except Exception:  # a display must never break the run it shows
                pass
            if stopping:
                return

    def __enter__(self) -> DatarunWatcher:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.progress.stop()


class ConsoleReporter(Reporter):
    """Prints what the original worker printed, above a progress bar per datarun."""

    def __init__(self, hub: ModelHub, console: Console, verbose: bool = True) -> None:
        self.hub = hub
        self.console = console
        self.verbose = verbose
        self.progress = new_progress(console)
        self._tasks: dict[int, Any] = {}

    def __enter__(self) -> ConsoleReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _print(self, *lines: str) -> None:
        if self.verbose:
            for line in lines:
                # soft_wrap: a long path stays on its line (logs are grepped, not only read)
                self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def _update(self, datarun_id: int) -> None:
        task = self._tasks.get(datarun_id)
        if task is not None:
            update_progress(self.progress, task, self.hub, datarun_id)

    def datarun_started(self, datarun: Datarun, dataset: Dataset) -> None:
        from atm_core.search.selectors import resolve_selector
        from atm_core.search.tuners import resolve_tuner

        selector = resolve_selector(datarun.selector)
        tuner = resolve_tuner(datarun.tuner)
        self._print(
            f"Computing on datarun {datarun.id} "
            f"({dataset.name}, {datarun.metric} {datarun.score_target.value})",
            f"Selector: {datarun.selector} ({selector.__module__}.{selector.__name__})",
            f"Tuner: {datarun.tuner} ({tuner.__module__}.{tuner.__name__})",
        )
        self._tasks[datarun.id] = add_progress_task(self.progress, datarun)
        self._update(datarun.id)

    def classifier_started(self, claim: Claim, method: str, values: dict[str, Any]) -> None:
        retry = f", attempt {claim.attempt}" if claim.attempt > 1 else ""
        rung = f", rung {claim.rung}" if claim.rung else ""
        lines = [
            f'Chose parameters for method "{method}" '
            f"(classifier {claim.classifier_id}{rung}{retry}):"
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
        lines = [f"{reason[0].upper()}{reason[1:]}!", f"Datarun {datarun.id} has ended."]
        ensemble = self.hub.get_ensemble(datarun.id)
        if ensemble is not None:
            lines.append(
                f"Ensemble: {ensemble.members_text()} "
                f"({datarun.metric} cv {fmt(ensemble.cv_judgment_metric)}, "
                f"test {fmt(ensemble.test_judgment_metric)}); "
                f"atm predict --ensemble {datarun.id} FILE"
            )
        self._print(*lines)

    def waiting(self, datarun: Datarun, running: int) -> None:
        self._update(datarun.id)

    def no_dataruns(self) -> None:
        self._print("No dataruns found. Exiting.")

    def datarun_skipped(self, datarun_id: int, reason: str) -> None:
        self.progress.console.print(
            f"Leaving datarun {datarun_id} to other workers: {reason}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def infrastructure_down(self, error: BaseException, retry_in: float) -> None:
        first_line = str(error).strip().splitlines()[:1] or [type(error).__name__]
        self.progress.console.print(
            f"Waiting for the ModelHub / artifact store ({first_line[0][:200]}); "
            f"retrying in {retry_in:.0f}s",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def infrastructure_back(self) -> None:
        self.progress.console.print("ModelHub and artifact store reachable again; resuming.")


def leaderboard_table(
    rows: list[dict[str, Any]], datarun: Datarun, width: int = 80, title: str | None = None
) -> Table:
    """Leaderboard rows (:meth:`Reads.leaderboard_rows`), fitted to ``width`` columns (the
    hyperpartition text is cut to fit)."""
    table = Table(
        title=title
        or f"Datarun {datarun.id} leaderboard ({datarun.metric}, {datarun.score_target.value})"
    )
    for column, minimum in (("rank", 4), ("id", 5), ("method", 6), ("judgment", 8)):
        table.add_column(
            column, justify="left" if column == "method" else "right", min_width=minimum
        )
    table.add_column("cv mean ± std", justify="right", min_width=13, no_wrap=True)
    table.add_column("test", justify="right", min_width=5)
    table.add_column(
        "hyperpartition", overflow="ellipsis", no_wrap=True, width=max(12, min(70, width - 63))
    )
    for row in rows:
        table.add_row(
            str(row["rank"]),
            str(row["classifier_id"]),
            row["method"],
            fmt(row["judgment_metric"]),
            f"{fmt(row['cv_judgment_metric'])} ± {fmt(row['cv_judgment_metric_stdev'])}",
            fmt(row["test_judgment_metric"]),
            row["hyperpartition"].removeprefix(row["method"]),
        )
    return table


def ensemble_table(hub: ModelHub, datarun: Datarun) -> Table:
    """The datarun's ensemble: members with their weights and their own scores."""
    ensemble = hub.ensemble(datarun.id)
    table = Table(
        title=f"Datarun {datarun.id} ensemble ({datarun.metric}: "
        f"cv {fmt(ensemble.cv_judgment_metric)}, test {fmt(ensemble.test_judgment_metric)})"
    )
    for column in ("weight", "id", "method", "cv mean ± std", "test"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for member, weight in hub.ensemble_members(ensemble):
        table.add_row(
            str(weight),
            str(member.id),
            member.method,
            f"{fmt(member.cv_judgment_metric)} ± {fmt(member.cv_judgment_metric_stdev)}",
            fmt(member.test_judgment_metric),
        )
    return table


def status_table(hub: ModelHub) -> Table:
    """Every datarun: its budget, classifier counts and best score (``atm status``)."""
    table = Table(title="Dataruns")
    for column in STATUS_COLUMNS:
        table.add_column(column)
    for row in hub.status_rows():
        datarun, best = row.datarun, row.best
        table.add_row(
            str(datarun.id),
            row.dataset_name,
            datarun.status.value,
            f"{datarun.budget:g} {datarun.budget_type.value}",
            str(row.counts.get("complete", 0))
            + (f" ({row.counts['files lost']} lost)" if row.counts.get("files lost") else ""),
            *(str(row.counts.get(status, 0)) for status in ("errored", "running")),
            "-" if best is None else f"{fmt(judgment(best, datarun.score_target))} (#{best.id})",
            f"{datarun.metric} {datarun.score_target.value}",
        )
    return table


STATUS_COLUMNS = (
    "id",
    "dataset",
    "status",
    "budget",
    "complete",
    "errored",
    "running",
    "best",
    "metric",
)
