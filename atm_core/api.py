"""The Python facade of the original ATM: ``ATM().run(...)`` returns a datarun result."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from atm_core import options as spec
from atm_core.artifacts import serialize_model
from atm_core.dataruns import enter_data
from atm_core.driver import Driver
from atm_core.errors import ATMError, NotFoundError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import Classifier, utcnow
from atm_core.reporting import Reporter
from atm_core.results import refit_ensemble, refit_model
from atm_core.settings import Settings, load_settings


def export_model(
    hub: ModelHub,
    classifier_id: int,
    path: str | Path,
    force: bool = False,
    refit: bool = False,
    final: bool = True,
) -> Path:
    """Write a classifier's model to a local pickle: the verified stored one (its final refit
    when there is one and ``final``; see :meth:`ModelHub.load_model`), or ``refit`` on every
    labelled row of its dataset now."""
    target = _export_target(path, force)
    if refit:
        hub.model_bytes(classifier_id)  # only a complete classifier is worth refitting
        blob = serialize_model(refit_model(hub, classifier_id))
    else:
        blob = hub.model_bytes(classifier_id, final)  # refuses a missing or tampered model
    return _write(target, blob)


def export_ensemble(
    hub: ModelHub,
    datarun_id: int,
    path: str | Path,
    force: bool = False,
    refit: bool = False,
    final: bool = True,
) -> Path:
    """Write a datarun's ensemble to a local pickle: its members' verified stored models, or
    each ``refit`` on every labelled row of the dataset (the ensemble to deploy)."""
    target = _export_target(path, force)
    hub.ensemble(datarun_id)  # refuses a datarun without one before any work
    model = refit_ensemble(hub, datarun_id) if refit else hub.load_ensemble(datarun_id, final)
    return _write(target, serialize_model(model))


def _export_target(path: str | Path, force: bool) -> Path:
    target = Path(path)
    if target.exists() and not force:
        raise ATMError(f"{target} exists; pass force=True (--force) to overwrite it")
    return target


def _write(target: Path, blob: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(blob)
    return target


def spawn_workers(settings: Settings, datarun_id: int, count: int) -> list[subprocess.Popen]:
    """``count`` more `atm worker` processes on one datarun, with this process's settings."""
    env = dict(os.environ)
    for name, value in settings.to_dict().items():
        if value is None:
            env.pop(f"ATM_{name.upper()}", None)
        else:
            env[f"ATM_{name.upper()}"] = str(value)
    env.pop("ATM_CONFIG", None)  # every setting is in the environment now
    command = [sys.executable, "-m", "atm_core.cli", "worker", "--quiet"]
    return [
        subprocess.Popen(
            [*command, "--dataruns", str(datarun_id)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]


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
            f"    budget: {datarun.budget:g} {datarun.budget_type.value}",
            f"    metric: {datarun.metric} ({datarun.score_target.value})",
            f"    classifiers: {len(classifiers)} {counts}",
        ]
        if best is not None:
            lines.append(
                f"    best: classifier {best.id} ({best.method}), cv {best.cv_judgment_metric:.3f} "
                f"+- {best.cv_judgment_metric_stdev:.3f}, test {best.test_judgment_metric:.3f}"
            )
        ensemble = self.hub.get_ensemble(self.id)
        if ensemble is not None:
            lines.append(
                f"    ensemble: {ensemble.members_text()}, cv {ensemble.cv_judgment_metric:.3f}, "
                f"test {ensemble.test_judgment_metric:.3f}"
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

    def refit_best_model(self) -> Any:
        """The best configuration fitted on every labelled row of the dataset."""
        return refit_model(self.hub, self.get_best_classifier().id)

    def export_best_classifier(
        self, path: str | Path, force: bool = False, refit: bool = False
    ) -> Path:
        return export_model(self.hub, self.get_best_classifier().id, path, force, refit)

    def load_ensemble(self) -> Any:
        """The ensemble chosen when the datarun completed (its members' stored models)."""
        return self.hub.load_ensemble(self.id)

    def refit_ensemble(self, within_seconds: float | None = None) -> Any:
        """The ensemble with its members fitted on every labelled row of the dataset (those
        whose estimated refit time fits ``within_seconds``, best first; the rest as stored)."""
        return refit_ensemble(self.hub, self.id, within_seconds)


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
        request = spec.from_mapping({"train_path": train_path, **options})
        entered = enter_data(self.hub, request)
        return [DatarunResult(self.hub, datarun.id) for datarun in entered.dataruns]

    def work(
        self,
        datarun_ids: list[int] | None = None,
        total_time: float | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        """Drive the dataruns in this process until they are done (``atm worker``)."""
        Driver(
            self.hub,
            datarun_ids=datarun_ids,
            total_time=total_time,
            reporter=reporter or Reporter(),
        ).run()

    def run(
        self,
        train_path: str | None = None,
        *,
        reporter: Reporter | None = None,
        workers: int = 1,
        **options: Any,
    ) -> DatarunResult:
        """Enter the data, drive the datarun until it ends, return its result.

        Takes every datarun option (see :mod:`atm_core.options`). ``workers`` > 1 starts that
        many more `atm worker` processes beside this one; they share the datarun through the
        ModelHub (use the ``threads`` setting for threads per fit).
        """
        started = utcnow()  # a walltime budget covers the whole call, reading the data included
        if workers < 1:
            raise ATMError(f"workers must be at least 1, got {workers}")
        if options.get("methods") is not None:
            options["methods"] = list(options["methods"])
        request = spec.from_mapping({"train_path": train_path, **options})
        entered = enter_data(self.hub, request, started_at=started)
        result = DatarunResult(self.hub, entered.dataruns[0].id)
        helpers = spawn_workers(self.settings, result.id, workers - 1)
        try:
            self.work([result.id], reporter=reporter)
        finally:
            for helper in helpers:
                _, errors = helper.communicate()
                if helper.returncode != 0:
                    raise ATMError(
                        f"a worker process failed ({helper.returncode}): "
                        + errors.decode(errors="replace").strip()[-500:]
                    )
        return result

    def load_model(self, classifier_id: int) -> Any:
        return self.hub.load_model(classifier_id)


# ``help(ATM.run)`` and editors show every datarun option with its default.
ATM.run.__signature__ = spec.parameters(  # type: ignore[attr-defined]
    leading=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)],
    trailing=[
        inspect.Parameter("reporter", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("workers", inspect.Parameter.KEYWORD_ONLY, default=1),
    ],
    positional=("train_path",),
)
