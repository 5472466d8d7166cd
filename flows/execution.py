"""The driver's Prefect plug-ins: classifiers trained as task runs (on whatever task runner the
flow has: threads, Dask), the datarun finalized as a task run, and the driver's events as run
logs and the UI's progress artifact."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from prefect.futures import PrefectFuture, as_completed

from atm_core.driver import Execution
from atm_core.modelhub.claims import Claim
from atm_core.modelhub.models import Datarun, Dataset
from atm_core.reporting import ClassifierResult, Reporter
from atm_core.settings import Settings
from flows.publish import ProgressArtifact
from flows.tasks import finalize_datarun, hub_for, run_logger, train_classifier


class PrefectExecution(Execution):
    """Each classifier is a ``classifier-N`` task run (retried on infrastructure faults); a
    completed datarun's ensemble and leaderboard are the ``finalize`` task run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def submit(self, claim: Claim) -> Hashable:
        return train_classifier.submit(self.settings, claim)

    def wait(self, handles: list[Hashable]) -> Hashable:
        futures: list[PrefectFuture[Any]] = handles  # type: ignore[assignment]
        return next(as_completed(futures))

    def outcome(self, handle: Hashable) -> ClassifierResult:
        return handle.result()  # type: ignore[attr-defined]

    def finalize(self, datarun_id: int) -> None:
        finalize_datarun(self.settings, datarun_id)

    def close(self) -> None:
        """Task runs end with the flow run; nothing is held here."""


class FlowReporter(Reporter):
    """The driver's events in the flow run's logs, and its budget as the UI's progress bar."""

    def __init__(self, settings: Settings, datarun_id: int) -> None:
        self.progress = ProgressArtifact(hub_for(settings), datarun_id)

    def datarun_started(self, datarun: Datarun, dataset: Dataset) -> None:
        self.progress.update(force=True)

    def classifier_finished(self, result: ClassifierResult) -> None:
        logger = run_logger()
        if result.status == "complete":
            logger.info(
                "classifier %d: %s %s %.4f +- %.4f, test %.4f%s",
                result.classifier_id,
                result.metric,
                result.score_target,
                result.cv_mean,
                result.cv_stdev,
                result.test,
                " - new best score!" if result.is_new_best else "",
            )
        else:
            last_line = (result.error or "").strip().splitlines()[-1:] or [result.status]
            logger.warning(
                "classifier %d %s: %s", result.classifier_id, result.status, last_line[0]
            )
        self.progress.update()

    def datarun_ended(self, datarun: Datarun, reason: str) -> None:
        run_logger().info("datarun %d has ended: %s", datarun.id, reason)
        self.progress.update(force=True)

    def waiting(self, datarun: Datarun, running: int) -> None:
        self.progress.update()

    def datarun_skipped(self, datarun_id: int, reason: str) -> None:
        run_logger().warning("leaving datarun %d to other workers: %s", datarun_id, reason)

    def infrastructure_down(self, error: BaseException, retry_in: float) -> None:
        first_line = str(error).strip().splitlines()[:1] or [type(error).__name__]
        run_logger().warning(
            "waiting for the ModelHub / artifact store (%s); retrying in %.0f s",
            first_line[0][:200],
            retry_in,
        )

    def infrastructure_back(self) -> None:
        run_logger().info("ModelHub and artifact store reachable again; resuming")
