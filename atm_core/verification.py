"""``atm verify``: are the stored files of complete classifiers still there, unaltered?

An object store can lose objects (a bucket replaced, a lifecycle rule, a hand). Each complete
classifier's model is read and checked against the sha256 the ModelHub recorded, and its
metrics and held-out predictions must still exist. Classifiers whose files are gone or altered
are flagged (``files_lost_at``): rankings, ensembles and loading leave them out. A datarun whose
ensemble had such a member gets its ensemble chosen again from the others.

What the hash protects: a model file changed or replaced in the store. What it does not: the
hash lives in the same database as the location, so whoever can write the database can point
a classifier at any file with a matching hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atm_core.errors import IntegrityError, NotFoundError
from atm_core.modelhub.hub import ModelHub
from atm_core.modelhub.models import Classifier, DatarunStatus
from atm_core.results import build_ensemble


@dataclass
class Verification:
    checked: int = 0
    lost: dict[int, str] = field(default_factory=dict)  # classifier id -> what is wrong
    ensembles_chosen_again: list[int] = field(default_factory=list)


def verify(hub: ModelHub, datarun_ids: list[int] | None = None) -> Verification:
    """Check the files of every complete classifier (of ``datarun_ids``, or of all dataruns).

    An unreachable store raises (:class:`~atm_core.artifacts.ArtifactStoreError`): an outage is
    not a loss, and nothing is flagged.
    """
    report = Verification()
    dataruns = [hub.get_datarun(i) for i in datarun_ids] if datarun_ids else hub.dataruns()
    for datarun in dataruns:
        lost_here = {}
        for classifier in hub.classifiers(datarun.id, status="complete"):
            if classifier.files_lost_at is not None:
                continue
            report.checked += 1
            problem = _problem(hub, classifier)
            if problem:
                lost_here[classifier.id] = problem
        hub.mark_files_lost(list(lost_here))
        report.lost.update(lost_here)
        ensemble = hub.get_ensemble(datarun.id)
        if ensemble is not None and set(ensemble.weights) & set(lost_here):
            hub.drop_ensemble(datarun.id)
            if datarun.status == DatarunStatus.COMPLETE:
                build_ensemble(hub, datarun.id)
            report.ensembles_chosen_again.append(datarun.id)
    return report


def _problem(hub: ModelHub, classifier: Classifier) -> str | None:
    try:
        hub.store.read_model(classifier.model_location, classifier.model_sha256)
        for location in (classifier.metrics_location, classifier.predictions_location):
            if location:
                hub.store.load_frame(location)
    except (NotFoundError, IntegrityError) as exc:
        return str(exc)
    return None
