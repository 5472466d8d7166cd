"""How much of a datarun's budget is spent: a progress bar's numbers (light: no data stack)."""

from __future__ import annotations

from dataclasses import dataclass

from atm_core.modelhub.models import BudgetType, utcnow
from atm_core.modelhub.reads import DatarunProgress


@dataclass(frozen=True)
class BudgetProgress:
    done: float
    total: float
    unit: str  # "classifiers" or "minutes"

    @property
    def percent(self) -> float:
        return 100.0 if self.total <= 0 else min(100.0, 100.0 * self.done / self.total)


def budget_progress(progress: DatarunProgress) -> BudgetProgress:
    """How much of the datarun's budget is spent (classifiers or walltime minutes)."""
    datarun = progress.datarun
    if datarun.budget_type == BudgetType.WALLTIME:
        started = datarun.start_time or utcnow()
        end = datarun.end_time or utcnow()
        minutes = (end - started).total_seconds() / 60
        return BudgetProgress(min(minutes, datarun.budget), datarun.budget, "minutes")
    return BudgetProgress(progress.classifiers, datarun.budget, "classifiers")
