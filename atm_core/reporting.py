"""What a datarun driver tells its front-end: each classifier's result and the datarun's
events. The CLI prints them, the flow logs them; the default reporter is silent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atm_core.modelhub.claims import Claim
    from atm_core.modelhub.models import Datarun, Dataset


@dataclass
class ClassifierResult:
    """What happened to one classifier, for reporting."""

    classifier_id: int
    datarun_id: int
    method: str
    values: dict[str, Any]
    status: str  # complete | errored | lost | skipped
    metric: str = ""
    score_target: str = "cv"
    cv_mean: float | None = None
    cv_stdev: float | None = None
    test: float | None = None
    judgment: float | None = None
    previous_best: tuple[int, float, float | None] | None = None
    model_location: str | None = None
    metrics_location: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase

    @property
    def bookkeeping_seconds(self) -> float:
        """Time spent on the ModelHub and the artifact store rather than on fitting."""
        return sum(v for k, v in self.timings.items() if k != "fit")

    @property
    def is_new_best(self) -> bool:
        if self.status != "complete" or self.judgment is None:
            return False
        return self.previous_best is None or self.judgment > self.previous_best[1]


class Reporter:
    """Receives what a driver does. Every method is optional."""

    def datarun_started(self, datarun: Datarun, dataset: Dataset) -> None: ...

    def classifier_started(self, claim: Claim, method: str, values: dict[str, Any]) -> None: ...

    def classifier_finished(self, result: ClassifierResult) -> None: ...

    def datarun_ended(self, datarun: Datarun, reason: str) -> None: ...

    def waiting(self, datarun: Datarun, running: int) -> None: ...

    def datarun_skipped(self, datarun_id: int, reason: str) -> None: ...

    def no_dataruns(self) -> None: ...

    def infrastructure_down(self, error: BaseException, retry_in: float) -> None: ...

    def infrastructure_back(self) -> None: ...
