"""The numeric space a tuner searches for one hyperpartition.

baytune has no log scale and no grid, so both live here: ``*_exp`` parameters are tuned on
log10 of their range, and with ``gridding=g`` each numeric parameter is tuned as an integer
index into ``g`` evenly spaced values (on the log scale for ``*_exp``). Encoding the stored
values back into this space lets any tuner learn from the ModelHub's history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from baytune.tuning import FloatHyperParam, IntHyperParam, Tunable

from atm_core.search.catalogue import ParamSpec


@dataclass(frozen=True)
class _Axis:
    spec: ParamSpec
    grid: int  # number of grid points, 0 = continuous

    @property
    def log(self) -> bool:
        return self.spec.type.endswith("_exp")

    @property
    def integer(self) -> bool:
        return self.spec.type.startswith("int")

    def _bounds(self) -> tuple[float, float]:
        low, high = self.spec.range  # type: ignore[misc]
        return (math.log10(low), math.log10(high)) if self.log else (float(low), float(high))

    def hyperparam(self) -> FloatHyperParam | IntHyperParam:
        if self.grid:
            return IntHyperParam(min=0, max=self.grid - 1)
        low, high = self._bounds()
        if self.integer and not self.log:
            return IntHyperParam(min=int(low), max=int(high))
        return FloatHyperParam(min=low, max=high)

    def decode(self, raw: Any) -> int | float:
        low, high = self._bounds()
        if self.grid:
            position = low + int(raw) * (high - low) / (self.grid - 1)
        else:
            position = min(max(float(raw), low), high)
        value = 10**position if self.log else position
        if self.integer:
            return int(round(value))
        return float(value)

    def encode(self, value: Any) -> int | float:
        low, high = self._bounds()
        position = math.log10(max(float(value), 1e-300)) if self.log else float(value)
        position = min(max(position, low), high)
        if self.grid:
            return int(round((position - low) * (self.grid - 1) / (high - low)))
        if self.integer and not self.log:
            return int(round(position))
        return position


class TuningSpace:
    """Tunables of a hyperpartition as a baytune ``Tunable``, with value conversion both ways."""

    def __init__(self, tunables: Sequence[ParamSpec], gridding: int = 0) -> None:
        self.axes = [_Axis(spec, self._grid_size(spec, gridding)) for spec in tunables]
        self.tunable = (
            Tunable({axis.spec.name: axis.hyperparam() for axis in self.axes})
            if self.axes
            else None
        )

    @staticmethod
    def _grid_size(spec: ParamSpec, gridding: int) -> int:
        if gridding <= 0:
            return 0
        low, high = spec.range  # type: ignore[misc]
        if spec.type == "int" and high - low + 1 <= gridding:
            return 0  # fewer integers than grid points: the integers are the grid
        return gridding

    @property
    def cardinality(self) -> float:
        """Number of distinct configurations (``inf`` for a continuous space)."""
        return 1 if self.tunable is None else float(self.tunable.cardinality)

    def decode(self, proposal: dict[str, Any]) -> dict[str, Any]:
        """Tuner-space proposal to estimator values."""
        return {axis.spec.name: axis.decode(proposal[axis.spec.name]) for axis in self.axes}

    def encode(self, values: dict[str, Any]) -> dict[str, Any]:
        """Stored estimator values to the tuner's space."""
        return {axis.spec.name: axis.encode(values[axis.spec.name]) for axis in self.axes}

    def key(self, values: dict[str, Any]) -> tuple:
        """A hashable identity of a configuration in this space (for de-duplication)."""
        encoded = self.encode(values)
        return tuple(
            round(encoded[axis.spec.name], 9) if not axis.grid else encoded[axis.spec.name]
            for axis in self.axes
        )

    def defaults(self) -> dict[str, Any] | None:
        """The catalogue's default values, when every tunable declares one."""
        if not self.axes or any(axis.spec.default is None for axis in self.axes):
            return None
        return {axis.spec.name: axis.decode(axis.encode(axis.spec.default)) for axis in self.axes}
