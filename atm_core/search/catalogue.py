"""Method definitions in the JSON format of the ATM documentation, validated on load.

A method file names an estimator class and its hyperparameters, which root parameters every
configuration sets and which parameters are only set under a condition on another one. Both
spellings the original accepted work: ``root_hyperparameters``/``root_parameters`` and
``conditional_hyperparameters``/``conditions``. A ``list`` parameter (mlp's
``hidden_layer_sizes``) is expanded here into a categorical length ``len(name)`` and element
parameters ``name[0]``, ``name[1]``..., so everything downstream only sees scalar parameters.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from atm_core.errors import MethodError

METHODS_DIR = Path(__file__).resolve().parent.parent / "methods"

NUMERIC_TYPES = frozenset({"int", "int_exp", "float", "float_exp"})
CATEGORICAL_TYPES = frozenset({"int_cat", "float_cat", "string", "bool"})
LIST_TYPE = "list"
ALL_TYPES = NUMERIC_TYPES | CATEGORICAL_TYPES | {LIST_TYPE}
_ROOT_KEYS = ("root_hyperparameters", "root_parameters")
_CONDITION_KEYS = ("conditional_hyperparameters", "conditions")
_KNOWN_KEYS = {"name", "class", "hyperparameters", "description", *_ROOT_KEYS, *_CONDITION_KEYS}


@dataclass(frozen=True)
class ParamSpec:
    """One scalar hyperparameter: a numeric range to tune or a list of values to choose from."""

    name: str
    type: str
    range: tuple[float, float] | None = None
    values: tuple[Any, ...] | None = None
    default: Any = None

    @property
    def is_tunable(self) -> bool:
        return self.values is None

    def to_json(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.range is not None:
            spec["range"] = list(self.range)
        if self.values is not None:
            spec["values"] = list(self.values)
        if self.default is not None:
            spec["default"] = self.default
        return spec

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> ParamSpec:
        return cls(
            name=spec["name"],
            type=spec["type"],
            range=tuple(spec["range"]) if "range" in spec else None,
            values=tuple(spec["values"]) if "values" in spec else None,
            default=spec.get("default"),
        )


@dataclass(frozen=True)
class Method:
    """A validated method definition."""

    name: str
    estimator_class: str
    params: dict[str, ParamSpec]
    root: tuple[str, ...]
    conditions: dict[str, dict[str, tuple[str, ...]]]
    source: str

    def children(self, param: str, value: Any) -> tuple[str, ...]:
        """Parameters that must also be set when ``param`` takes ``value``."""
        return self.conditions.get(param, {}).get(condition_key(value), ())


def condition_key(value: Any) -> str:
    """The key a condition uses for a value: ``str(value)`` as in the original ("True", "0.5")."""
    return str(value)


def builtin_methods() -> dict[str, Path]:
    """Built-in method names mapped to their JSON files."""
    return dict(_builtin_index())


@cache
def _builtin_index() -> tuple[tuple[str, Path], ...]:
    index = []
    for path in sorted(METHODS_DIR.glob("*.json")):
        with path.open() as handle:
            index.append((json.load(handle)["name"], path))
    return tuple(index)


def load_method(name_or_path: str) -> Method:
    """Load a built-in method by name (``logreg``) or file stem, or a custom one by JSON path."""
    builtins = builtin_methods()
    if name_or_path in builtins:
        return _load_cached(str(builtins[name_or_path]))
    by_stem = {path.stem: path for path in builtins.values()}
    if name_or_path in by_stem:
        return _load_cached(str(by_stem[name_or_path]))
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise MethodError(f"method file not found: {name_or_path}")
        return parse_method_file(path)
    raise MethodError(
        f"unknown method '{name_or_path}': use one of {', '.join(sorted(builtins))} "
        "or the path of a method JSON file"
    )


@cache
def _load_cached(path: str) -> Method:
    # A built-in's class is not imported here: `atm methods` lists the catalogue without
    # loading scikit-learn (tests import every built-in class and fit every partition).
    return parse_method_file(Path(path), check_class=False)


def parse_method_file(path: Path, check_class: bool = True) -> Method:
    """Read and validate one method file; errors name the file and the offending key."""
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MethodError(f"{path}: invalid JSON: {exc.msg} at line {exc.lineno}") from exc
    except OSError as exc:
        raise MethodError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_method(document, str(path), check_class)


def parse_method(document: Any, source: str, check_class: bool = True) -> Method:
    """Validate a method definition (already parsed JSON); ``check_class`` imports its
    estimator class to check it has ``fit`` and ``predict``."""
    where = _Where(source)
    if not isinstance(document, dict):
        raise where.error("", "the top level must be a JSON object")
    unknown = sorted(set(document) - _KNOWN_KEYS)
    if unknown:
        raise where.error(unknown[0], "unknown key")
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise where.error("name", "must be a non-empty string")
    estimator_class = document.get("class")
    if not isinstance(estimator_class, str) or "." not in estimator_class:
        raise where.error("class", "must be an import path such as sklearn.svm.SVC")
    if check_class:
        _check_importable(estimator_class, where)
    raw_params = document.get("hyperparameters")
    if not isinstance(raw_params, dict):
        raise where.error("hyperparameters", "must be an object of parameter definitions")
    root = _one_of(document, _ROOT_KEYS, where, list)
    conditions = _one_of(document, _CONDITION_KEYS, where, dict)

    params: dict[str, ParamSpec] = {}
    expansions: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {}
    for param_name, raw in raw_params.items():
        key = f"hyperparameters.{param_name}"
        if not isinstance(raw, dict):
            raise where.error(key, "must be an object with 'type' and 'range' or 'values'")
        if raw.get("type") == LIST_TYPE:
            length_param, element_params, length_conditions = _expand_list(param_name, raw, where)
            params[length_param.name] = length_param
            params.update({p.name: p for p in element_params})
            expansions[param_name] = (length_param.name, length_conditions)
        else:
            params[param_name] = _parse_param(param_name, raw, where)

    root_names = _parse_root(root, raw_params, expansions, where)
    parsed_conditions = _parse_conditions(conditions, params, raw_params, expansions, where)
    for _, (length_name, length_conditions) in expansions.items():
        parsed_conditions[length_name] = length_conditions
    conditional = {
        child
        for by_value in parsed_conditions.values()
        for kids in by_value.values()
        for child in kids
    }
    both = sorted(conditional & set(root_names))
    if both:
        raise where.error(
            f"{_CONDITION_KEYS[0]}", f"'{both[0]}' is conditional and must not be a root parameter"
        )
    return Method(
        name=name,
        estimator_class=estimator_class,
        params=params,
        root=tuple(root_names),
        conditions=parsed_conditions,
        source=source,
    )


class _Where:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> MethodError:
        location = f"{self.source}: {key}" if key else self.source
        return MethodError(f"invalid method {location}: {message}")


def _one_of(document: dict, keys: tuple[str, str], where: _Where, kind: type) -> Any:
    present = [key for key in keys if key in document]
    if len(present) > 1:
        raise where.error(present[1], f"give either '{keys[0]}' or '{keys[1]}', not both")
    if not present:
        if kind is list:
            raise where.error(keys[0], "missing (the list of root hyperparameters)")
        return {}
    value = document[present[0]]
    if not isinstance(value, kind):
        raise where.error(present[0], f"must be a JSON {'array' if kind is list else 'object'}")
    return value


def _check_importable(path: str, where: _Where) -> None:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise where.error("class", f"cannot import '{path}' ({exc})") from exc
    missing = [verb for verb in ("fit", "predict") if not callable(getattr(cls, verb, None))]
    if missing:
        raise where.error("class", f"'{path}' has no {' or '.join(missing)} method")


def _parse_param(name: str, raw: dict, where: _Where) -> ParamSpec:
    key = f"hyperparameters.{name}"
    kind = raw.get("type")
    if kind not in ALL_TYPES:
        raise where.error(f"{key}.type", f"'{kind}' is not one of {', '.join(sorted(ALL_TYPES))}")
    extra = sorted(set(raw) - {"type", "range", "values", "default"})
    if extra:
        raise where.error(f"{key}.{extra[0]}", "unknown key")
    if kind in NUMERIC_TYPES:
        if "range" not in raw:
            raise where.error(f"{key}.range", f"missing (a {kind} parameter needs [low, high])")
        bounds = raw["range"]
        if (
            not isinstance(bounds, list)
            or len(bounds) not in (1, 2)
            or not all(_is_number(b) for b in bounds)
        ):
            raise where.error(f"{key}.range", "must be [low, high] (or [value] for a constant)")
        if kind.startswith("int") and not all(float(b).is_integer() for b in bounds):
            raise where.error(f"{key}.range", f"{kind} bounds must be integers")
        cast = int if kind.startswith("int") else float
        bounds = [cast(b) for b in bounds]
        if len(bounds) == 1 or bounds[0] == bounds[1]:
            return ParamSpec(name, kind, values=(bounds[0],))
        low, high = bounds
        if low > high:
            raise where.error(f"{key}.range", f"low {low} is above high {high}")
        if kind.endswith("_exp") and low <= 0:
            raise where.error(f"{key}.range", f"{kind} needs a positive range (log scale)")
        default = raw.get("default")
        if default is not None and not (_is_number(default) and low <= default <= high):
            raise where.error(f"{key}.default", f"must be a number within [{low}, {high}]")
        return ParamSpec(name, kind, range=(low, high), default=default)
    if "values" not in raw:
        raise where.error(f"{key}.values", f"missing (a {kind} parameter needs a list of values)")
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise where.error(f"{key}.values", "must be a non-empty list")
    for value in values:
        if not _value_fits(kind, value):
            raise where.error(f"{key}.values", f"{json.dumps(value)} is not a valid {kind} value")
    if len({json.dumps(v) for v in values}) != len(values):
        raise where.error(f"{key}.values", "lists a value twice")
    return ParamSpec(name, kind, values=tuple(values))


def _expand_list(
    name: str, raw: dict, where: _Where
) -> tuple[ParamSpec, list[ParamSpec], dict[str, tuple[str, ...]]]:
    key = f"hyperparameters.{name}"
    lengths = raw.get("list_length")
    if (
        not isinstance(lengths, list)
        or not lengths
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in lengths)
    ):
        raise where.error(f"{key}.list_length", "must be a non-empty list of positive integers")
    element = raw.get("element")
    if not isinstance(element, dict):
        raise where.error(f"{key}.element", "must be a parameter definition")
    elements = [_parse_param(f"{name}[{i}]", element, where) for i in range(max(lengths))]
    length_param = ParamSpec(list_length_name(name), "int_cat", values=tuple(lengths))
    conditions = {condition_key(n): tuple(f"{name}[{i}]" for i in range(n)) for n in lengths}
    return length_param, elements, conditions


def list_length_name(name: str) -> str:
    return f"len({name})"


def _parse_root(root: list, raw_params: dict, expansions: dict, where: _Where) -> list[str]:
    key = "root_hyperparameters"
    names: list[str] = []
    for name in root:
        if not isinstance(name, str) or name not in raw_params:
            raise where.error(key, f"'{name}' is not defined under hyperparameters")
        resolved = expansions[name][0] if name in expansions else name
        if resolved in names:
            raise where.error(key, f"lists '{name}' twice")
        names.append(resolved)
    return names


def _parse_conditions(
    conditions: dict,
    params: dict[str, ParamSpec],
    raw_params: dict,
    expansions: dict,
    where: _Where,
) -> dict[str, dict[str, tuple[str, ...]]]:
    parsed: dict[str, dict[str, tuple[str, ...]]] = {}
    for parent, by_value in conditions.items():
        key = f"{_CONDITION_KEYS[0]}.{parent}"
        spec = params.get(parent)
        if spec is None:
            raise where.error(key, f"'{parent}' is not defined under hyperparameters")
        if spec.is_tunable:
            raise where.error(
                key, f"'{parent}' is numeric; only categorical parameters have conditions"
            )
        if not isinstance(by_value, dict):
            raise where.error(key, "must map parameter values to lists of parameter names")
        known = {_normalise_key(condition_key(v)): condition_key(v) for v in spec.values or ()}
        parsed[parent] = {}
        for value_key, children in by_value.items():
            canonical = known.get(_normalise_key(value_key))
            if canonical is None:
                raise where.error(
                    f"{key}.{value_key}", f"'{value_key}' is not one of the values of '{parent}'"
                )
            if not isinstance(children, list):
                raise where.error(f"{key}.{value_key}", "must be a list of parameter names")
            resolved = []
            for child in children:
                if child not in raw_params:
                    raise where.error(
                        f"{key}.{value_key}", f"'{child}' is not defined under hyperparameters"
                    )
                resolved.append(expansions[child][0] if child in expansions else child)
            parsed[parent][canonical] = tuple(resolved)
    return parsed


def _normalise_key(key: str) -> str:
    lowered = key.lower()
    if lowered in ("true", "false", "none", "null"):
        return "none" if lowered == "null" else lowered
    return key


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _value_fits(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int_cat":
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "float_cat":
        return value is None or _is_number(value)
    return value is None or isinstance(value, str | int | float | bool)
