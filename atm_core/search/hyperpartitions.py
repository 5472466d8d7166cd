"""Expand a method's conditional parameter tree into hyperpartitions.

A hyperpartition fixes every categorical choice (e.g. ``kernel=poly``); what remains free is a
space of numeric *tunables*. Parameters with a single value are *constants*: passed to the
estimator but not distinguishing partitions. A partition may have no tunable at all (the
original crashed on those); it then holds exactly one configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from atm_core.search.catalogue import Method, ParamSpec


@dataclass(frozen=True)
class HyperpartitionSpec:
    """A method with all categorical choices fixed; stored as JSON in the ModelHub."""

    method: str
    estimator_class: str
    categoricals: tuple[tuple[str, Any], ...]
    constants: tuple[tuple[str, Any], ...]
    tunables: tuple[ParamSpec, ...] = field(default=())

    def fixed_values(self) -> dict[str, Any]:
        """Categoricals and constants: the values every configuration of the partition shares."""
        return dict(self.categoricals) | dict(self.constants)

    def label(self) -> str:
        choices = ", ".join(f"{name}={value}" for name, value in self.categoricals)
        return f"{self.method}({choices})" if choices else self.method


def enumerate_hyperpartitions(method: Method) -> list[HyperpartitionSpec]:
    """All hyperpartitions of ``method``, in a stable order (root parameters first)."""
    return list(_expand(method, list(method.root), (), (), ()))


def _expand(
    method: Method,
    pending: list[str],
    categoricals: tuple[tuple[str, Any], ...],
    constants: tuple[tuple[str, Any], ...],
    tunables: tuple[ParamSpec, ...],
) -> Iterator[HyperpartitionSpec]:
    if not pending:
        yield HyperpartitionSpec(
            method=method.name,
            estimator_class=method.estimator_class,
            categoricals=categoricals,
            constants=constants,
            tunables=tunables,
        )
        return
    name, rest = pending[0], pending[1:]
    spec = method.params[name]
    if spec.is_tunable:
        yield from _expand(method, rest, categoricals, constants, (*tunables, spec))
        return
    values = spec.values or ()
    if len(values) == 1:
        value = values[0]
        yield from _expand(
            method,
            _queue(method, rest, name, value, categoricals, constants, tunables),
            categoricals,
            (*constants, (name, value)),
            tunables,
        )
        return
    for value in values:
        yield from _expand(
            method,
            _queue(method, rest, name, value, categoricals, constants, tunables),
            (*categoricals, (name, value)),
            constants,
            tunables,
        )


def _queue(
    method: Method,
    rest: list[str],
    name: str,
    value: Any,
    categoricals: tuple[tuple[str, Any], ...],
    constants: tuple[tuple[str, Any], ...],
    tunables: tuple[ParamSpec, ...],
) -> list[str]:
    """``rest`` plus the children ``name=value`` activates, each parameter set at most once.

    A child may be listed under two parents that are both active (``c`` under ``a=x`` and under
    ``b=y``); setting it twice would make contradictory partitions (``c=p`` and ``c=q``).
    """
    known = {name, *rest, *(n for n, _ in categoricals), *(n for n, _ in constants)}
    known.update(spec.name for spec in tunables)
    children = dict.fromkeys(method.children(name, value))
    return rest + [child for child in children if child not in known]
