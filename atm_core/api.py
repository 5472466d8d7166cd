"""The Python facade of the original ATM: ``ATM().run(...)`` returns a datarun result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from atm_core.dataruns import DEFAULT_METHODS, DatarunRequest, enter_data
from atm_core.errors import ATMError, NotFoundError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import Classifier
from atm_core.settings import load_settings
from atm_core.worker import Reporter, Worker


def export_model(hub: ModelHub, classifier_id: int, path: str | Path, force: bool = False) -> Path:
    """Copy a classifier's verified model pickle to a local file."""
    target = Path(path)
    if target.exists() and not force:
        raise ATMError(f"{target} exists; pass force=True (--force) to overwrite it")
    blob = hub.model_bytes(classifier_id)  # refuses a missing or tampered model first
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(blob)
    return target


class DatarunResult:
    """One datarun, as the original ``ATM.run`` returned it."""

    def __init__(self, hub: ModelHub, datarun_id: int) -> None:
        self.hub = hub
        self.id = datarun_id

    def __repr__(self) -> str:
        return f"<DatarunResult {self.id} ({self.datarun.status.value})>"

    @property
    def datarun(self):
        return self.hub.get_datarun(self.id)

    def describe(self) -> str:
        """A summary of the datarun and its best classifier; printed and returned."""
        datarun = self.datarun
        dataset = self.hub.get_dataset(datarun.dataset_id)
        classifiers = self.hub.classifiers(self.id)
        counts = pd.Series([c.status.value for c in classifiers]).value_counts().to_dict()
        best = self.hub.best_classifier(self.id)
        lines = [
            f"Datarun {datarun.id} on dataset {dataset.name} ({dataset.n_examples} rows, "
            f"{dataset.d_features} features, {dataset.k_classes} classes)",
            f"    status: {datarun.status.value}",
            f"    selector: {datarun.selector}, tuner: {datarun.tuner}",
            f"    budget: {datarun.budget} {datarun.budget_type.value}",
            f"    metric: {datarun.metric} ({datarun.score_target.value})",
            f"    classifiers: {len(classifiers)} {counts}",
        ]
        if best is not None:
            method = self.hub.get_hyperpartition(best.hyperpartition_id).method
            lines.append(
                f"    best: classifier {best.id} ({method}), cv {best.cv_judgment_metric:.3f} "
                f"+- {best.cv_judgment_metric_stdev:.3f}, test {best.test_judgment_metric:.3f}"
            )
        text = "\n".join(lines)
        print(text)
        return text

    def get_scores(self) -> pd.DataFrame:
        """Every complete classifier with its scores, best first."""
        return self.hub.leaderboard(self.id)

    def get_best_classifier(self) -> Classifier:
        best = self.hub.best_classifier(self.id)
        if best is None:
            raise NotFoundError(f"datarun {self.id} has no complete classifier")
        return best

    def load_best_model(self) -> Any:
        return self.hub.load_model(self.get_best_classifier().id)

    def export_best_classifier(self, path: str | Path, force: bool = False) -> Path:
        return export_model(self.hub, self.get_best_classifier().id, path, force=force)


class ATM:
    """``ATM(database_url, artifact_root).run(train_path=..., class_column=..., ...)``."""

    def __init__(
        self,
        database_url: str | None = None,
        artifact_root: str | None = None,
        *,
        config_file: str | None = None,
        **settings: Any,
    ) -> None:
        self.settings = load_settings(
            config_file, database_url=database_url, artifact_root=artifact_root, **settings
        )
        self.hub = ModelHub(settings=self.settings)

    def enter_data(self, train_path: str, **options: Any) -> list[DatarunResult]:
        """Create the datarun(s) without running them (``atm enter_data``)."""
        entered = enter_data(self.hub, DatarunRequest(train_path=train_path, **options))
        return [DatarunResult(self.hub, datarun.id) for datarun in entered.dataruns]

    def work(
        self,
        datarun_ids: list[int] | None = None,
        total_time: float | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        """Run a worker in this process until the dataruns are done (``atm worker``)."""
        Worker(
            self.hub,
            datarun_ids=datarun_ids,
            total_time=total_time,
            reporter=reporter or Reporter(),
        ).run()

    def run(
        self,
        train_path: str,
        class_column: str = "class",
        methods: list[str] | tuple[str, ...] = DEFAULT_METHODS,
        reporter: Reporter | None = None,
        **options: Any,
    ) -> DatarunResult:
        """Enter the data, work on the datarun until it ends, return its result."""
        result = self.enter_data(
            train_path, class_column=class_column, methods=list(methods), **options
        )[0]
        self.work([result.id], reporter=reporter)
        return result

    def load_model(self, classifier_id: int) -> Any:
        return self.hub.load_model(classifier_id)
