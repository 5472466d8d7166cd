"""Predict with a stored classifier or a datarun's ensemble (``POST /api/predict``).

Models come from ``hub.load_model`` / ``hub.load_ensemble`` (sha256-checked); a stored model
never changes, so the last few loaded stay in memory for the next request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from atm_core.data.dataset import FeatureSchema
from atm_core.errors import ConfigError, DataError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import Classifier, Datarun, Dataset

CACHED_MODELS = 8


class ModelCache:
    """The most recently used models, by ``("classifier", id)`` or ``("ensemble", id)``."""

    def __init__(self, size: int = CACHED_MODELS) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = load()
        with self._lock:
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model


def rows_frame(rows: Any) -> pd.DataFrame:
    """JSON rows (a list of ``{column: value}`` objects) as a frame."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ConfigError('rows must be a list of objects ({"column": value, ...})')
    if not rows:
        raise ConfigError("rows is empty: give at least one row to predict")
    return pd.DataFrame.from_records(rows)


def predict(
    hub: ModelHub,
    cache: ModelCache,
    frame: pd.DataFrame,
    classifier_id: int | None,
    ensemble: int | None,
    source: str,
) -> dict[str, Any]:
    """Labels (and class probabilities, when the model has them) for ``frame``'s rows."""
    if (classifier_id is None) == (ensemble is None):
        raise ConfigError("give classifier_id or ensemble (a datarun id), exactly one of them")
    for name, value in (("classifier_id", classifier_id), ("ensemble", ensemble)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if ensemble is not None:
        what, datarun_id = "ensemble", ensemble
        model = cache.get(("ensemble", ensemble), lambda: hub.load_ensemble(ensemble))
    else:
        what = "classifier"
        with hub.transaction() as session:
            classifier = session.get(Classifier, classifier_id)
            datarun_id = classifier.datarun_id if classifier is not None else None
        model = cache.get(("classifier", classifier_id), lambda: hub.load_model(classifier_id))
    with hub.transaction() as session:
        dataset = session.get(Dataset, session.get(Datarun, datarun_id).dataset_id)
        schema = FeatureSchema.from_json(dataset.feature_schema)
    missing = [column for column in schema.columns if column not in frame.columns]
    if missing:
        raise DataError(
            f"{source} lacks feature columns the {what} was trained on: {', '.join(missing)}"
        )
    try:
        labels = model.predict(frame)
        probabilities = model.predict_proba(frame) if hasattr(model, "predict_proba") else None
    except (ValueError, TypeError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot predict on {source}: {detail}") from None
    answer: dict[str, Any] = {
        "model": {what if what == "ensemble" else "classifier_id": ensemble or classifier_id},
        "predictions": np.asarray(labels).tolist(),
        "classes": np.asarray(model.classes_).tolist(),
        "probabilities": None,
    }
    if probabilities is not None:
        answer["probabilities"] = np.round(np.asarray(probabilities, dtype=float), 6).tolist()
    return answer
