"""The numeric space a tuner searches for one hyperpartition.

baytune has no log scale and no grid, so both live here: ``*_exp`` parameters are tuned on
log10 of their range, and with ``gridding=g`` each numeric parameter is tuned as an integer
index into ``g`` evenly spaced values (on the log scale for ``*_exp``). Integer grid points
that round to the same value are kept once, so a grid index always means a distinct value
(``int_exp`` [1, 10] with 10 points has 8). Encoding the stored values back into this space lets
any tuner learn from the ModelHub's history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from baytune.tuning import FloatHyperParam, IntHyperParam, Tunable

from atm_core.search.catalogue import ParamSpec


@dataclass(frozen=True)
class _Axis:
    spec: ParamSpec
    points: tuple[int | float, ...] = ()  # the grid's distinct values; () = continuous

    @classmethod
    def build(cls, spec: ParamSpec, gridding: int) -> _Axis:
        axis = cls(spec)
        if gridding <= 0:
            return axis
        low, high = axis._bounds()
        step = (high - low) / (gridding - 1)
        values = (axis._value(low + i * step) for i in range(gridding))
        return cls(spec, tuple(dict.fromkeys(values)))

    @property
    def log(self) -> bool:
        return self.spec.type.endswith("_exp")

    @property
    def integer(self) -> bool:
        return self.spec.type.startswith("int")

    @property
    def size(self) -> float:
        """How many distinct values the axis holds (``inf`` for a continuous float)."""
        if self.points:
            return len(self.points)
        if self.integer:
            low, high = self.spec.range  # type: ignore[misc]
            return int(high) - int(low) + 1
        return math.inf

    def values(self) -> tuple[int | float, ...] | None:
        """Every value of a finite axis (grid points or integers); None for a continuous float."""
        if self.points:
            return self.points
        if self.integer:
            low, high = self.spec.range  # type: ignore[misc]
            return tuple(range(int(low), int(high) + 1))
        return None

    def _bounds(self) -> tuple[float, float]:
        low, high = self.spec.range  # type: ignore[misc]
        return (math.log10(low), math.log10(high)) if self.log else (float(low), float(high))

    def _position(self, value: Any) -> float:
        low, high = self._bounds()
        position = math.log10(max(float(value), 1e-300)) if self.log else float(value)
        return min(max(position, low), high)

    def _value(self, position: float) -> int | float:
        value = 10**position if self.log else position
        if self.integer:
            return int(round(value))
        return float(value)

    def hyperparam(self) -> FloatHyperParam | IntHyperParam:
        if self.points:
            return IntHyperParam(min=0, max=len(self.points) - 1)
        low, high = self._bounds()
        if self.integer and not self.log:
            return IntHyperParam(min=int(low), max=int(high))
        return FloatHyperParam(min=low, max=high)

    def decode(self, raw: Any) -> int | float:
        if self.points:
            return self.points[int(raw)]
        low, high = self._bounds()
        return self._value(min(max(float(raw), low), high))

    def encode(self, value: Any) -> int | float:
        position = self._position(value)
        if self.points:
            distances = [abs(self._position(point) - position) for point in self.points]
            return distances.index(min(distances))
        if self.integer and not self.log:
            return int(round(position))
        return position


class TuningSpace:
    """Tunables of a hyperpartition as a baytune ``Tunable``, with value conversion both ways."""

    def __init__(self, tunables: Sequence[ParamSpec], gridding: int = 0) -> None:
        self.axes = [_Axis.build(spec, gridding) for spec in tunables]
        self.tunable = (
            Tunable({axis.spec.name: axis.hyperparam() for axis in self.axes})
            if self.axes
            else None
        )

    @property
    def cardinality(self) -> float:
        """Number of distinct configurations (``inf`` for a continuous space).

        Counted on the estimator values, not on baytune's: an ``int_exp`` axis is a float (log10)
        for the tuner but holds only ``high - low + 1`` integers.
        """
        return float(math.prod(axis.size for axis in self.axes))

    def untried(self, tried: set[tuple], limit: int = 10_000) -> list[dict[str, Any]] | None:
        """The configurations whose key is not in ``tried``; None when there are over ``limit``."""
        if self.cardinality > limit:
            return None
        axes = [axis.values() or () for axis in self.axes]
        names = [axis.spec.name for axis in self.axes]
        configurations = (dict(zip(names, combo, strict=True)) for combo in product(*axes))
        return [values for values in configurations if self.key(values) not in tried]

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
            round(encoded[axis.spec.name], 9) if not axis.points else encoded[axis.spec.name]
            for axis in self.axes
        )

    def defaults(self) -> dict[str, Any] | None:
        """The catalogue's default values, when every tunable declares one."""
        if not self.axes or any(axis.spec.default is None for axis in self.axes):
            return None
        return {axis.spec.name: axis.decode(axis.encode(axis.spec.default)) for axis in self.axes}
