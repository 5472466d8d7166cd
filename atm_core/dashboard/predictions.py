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

from atm_core.errors import ConfigError
from atm_core.modelhub import ModelHub
from atm_core.prediction import load_predictor

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
    key = ("ensemble", ensemble) if ensemble is not None else ("classifier", classifier_id)
    predictor = cache.get(key, lambda: load_predictor(hub, classifier_id, ensemble))
    prediction = predictor.predict(frame, source, probabilities=True)
    answer: dict[str, Any] = {
        "model": {"ensemble": ensemble}
        if ensemble is not None
        else {"classifier_id": classifier_id},
        "predictions": prediction.labels.tolist(),
        "classes": prediction.classes.tolist(),
        "probabilities": None,
        "notes": prediction.notes,
    }
    if prediction.probabilities is not None:
        answer["probabilities"] = np.round(prediction.probabilities, 6).tolist()
    return answer
