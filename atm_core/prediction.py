"""Predict with a stored classifier or a datarun's ensemble, the rows checked first against
what the model was trained on: every feature column present, numeric columns holding numbers.

``atm predict`` and the dashboard's ``POST /api/predict`` both come through here. Labels come
back as the training file had them (value and type: integers, floats or exact strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atm_core.data.dataset import FeatureSchema
from atm_core.errors import DataError, NotFoundError
from atm_core.estimators import UnreadableNumbers, unreadable_numbers
from atm_core.modelhub import ModelHub


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray | None  # columns in ``classes`` order, when the model has them
    notes: list[str]  # cells read as missing, within the tolerated share


@dataclass(frozen=True)
class Predictor:
    """A loaded model (sha256-verified) and the feature schema it was trained on."""

    model: Any
    what: str  # "classifier" or "ensemble"
    schema: FeatureSchema

    def predict(self, frame: pd.DataFrame, source: str, probabilities: bool = False) -> Prediction:
        """Labels (and with ``probabilities`` class probabilities) for ``frame``'s rows; a
        ``DataError`` naming ``source`` for rows the model cannot read."""
        missing = [column for column in self.schema.columns if column not in frame.columns]
        if missing:
            raise DataError(
                f"{source} lacks feature columns the {self.what} was trained on: "
                + ", ".join(missing)
            )
        try:
            _, unreadable = unreadable_numbers(frame[list(self.schema.numeric)])
        except UnreadableNumbers as exc:
            raise DataError(f"cannot predict on {source}: {exc}") from None
        try:
            labels = self.model.predict(frame)
            probas = None
            if probabilities and hasattr(self.model, "predict_proba"):
                probas = np.asarray(self.model.predict_proba(frame), dtype=float)
        except (ValueError, TypeError) as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot predict on {source}: {detail}") from None
        notes = [f"{u.describe()}: read as missing" for u in unreadable]
        return Prediction(np.asarray(labels), np.asarray(self.model.classes_), probas, notes)


def load_predictor(
    hub: ModelHub,
    classifier_id: int | None = None,
    ensemble: int | None = None,
    final: bool = True,
) -> Predictor:
    """A classifier's model or (``ensemble``, a datarun id) a datarun's ensemble; by default
    the models refitted on every labelled row (see ``ModelHub.load_model``)."""
    if ensemble is not None:
        model, datarun_id, what = hub.load_ensemble(ensemble, final), ensemble, "ensemble"
    elif classifier_id is not None:
        model = hub.load_model(classifier_id, final)
        datarun_id, what = hub.get_classifier(classifier_id).datarun_id, "classifier"
    else:
        raise NotFoundError("give a classifier id or a datarun id for its ensemble")
    dataset = hub.get_dataset(hub.get_datarun(datarun_id).dataset_id)
    return Predictor(model, what, FeatureSchema.from_json(dataset.feature_schema))
