"""Every location and tunable knob of ATM in one place.

Precedence, lowest to highest: built-in defaults < ``ATM_*`` environment variables <
the YAML file named by ``--config`` / ``ATM_CONFIG`` < command-line flags (passed as keyword
arguments). Nothing else in the code base hard-codes a path or a URL.

A plain frozen dataclass: every worker process loads its settings, and the settings library
this module used before (pydantic-settings) cost each one 8-11 MB and ~0.25 s of start-up.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from atm_core.errors import ConfigError

ENV_PREFIX = "ATM_"


def setting(
    default: Any,
    description: str,
    *,
    minimum: float | None = None,
    strict: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A field with its help text; ``minimum`` is a lower bound, excluded when ``strict``;
    ``choices`` are the values a text setting may take."""
    return field(
        default=default,
        metadata={
            "description": description,
            "minimum": minimum,
            "strict": strict,
            "choices": choices,
        },
    )


@dataclass(frozen=True)
class Settings:
    """ATM configuration; see the module docstring for where values come from."""

    database_url: str = setting("sqlite:///atm.db", "SQLAlchemy URL of the ModelHub database.")
    artifact_root: str = setting(
        "./artifacts", "Folder or fsspec URL (s3://bucket/prefix) for models and metrics."
    )
    lease_seconds: float = setting(
        60.0,
        "A running classifier whose worker stops heart-beating this long is reclaimed.",
        minimum=0,
        strict=True,
    )
    max_attempts: int = setting(
        2, "Runs of a classifier whose worker was lost before it counts as errored.", minimum=1
    )
    max_hyperpartition_errors: int = setting(
        3,
        "A hyperpartition is marked errored after more errored classifiers than this.",
        minimum=0,
    )
    threads: int = setting(
        1,
        "Threads per fit (OpenMP and n_jobs; BLAS uses one); scale out with workers.",
        minimum=1,
    )
    artifact_retries: int = setting(
        3, "Retries (with backoff) of a failed object-store read or write.", minimum=0
    )
    outage_patience_seconds: float = setting(
        1800.0, "How long a worker waits for a lost database or store.", minimum=0, strict=True
    )
    poll_seconds: float = setting(
        2.0,
        "How often an idle worker re-checks a datarun others are finishing.",
        minimum=0,
        strict=True,
    )
    custom_code: str = setting(
        "allow",
        "Whether workers run dataruns that import code of their own (a custom method's class, "
        "a selector or tuner file): allow, or refuse.",
        choices=("allow", "refuse"),
    )

    def __post_init__(self) -> None:
        """Convert each value to its field's type (environment values arrive as text) and
        check its bound; a ``ValueError`` names the setting."""
        for item in fields(self):
            kind = item.type if isinstance(item.type, str) else item.type.__name__
            value = _convert(item.name, kind, getattr(self, item.name))
            _check_bound(item.name, value, item.metadata)
            object.__setattr__(self, item.name, value)
        object.__setattr__(
            self, "artifact_root", self.artifact_root.rstrip("/") or self.artifact_root
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)


def names() -> list[str]:
    """The settings' names, in declaration order."""
    return [item.name for item in fields(Settings)]


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` are CLI flags (``None`` values are ignored)."""
    values: dict[str, Any] = _from_environment()
    source = config_file if config_file is not None else os.environ.get("ATM_CONFIG") or None
    if source is not None:
        path = Path(source)
        if not path.is_file():
            origin = "" if config_file is not None else " (from ATM_CONFIG)"
            raise ConfigError(f"config file not found: {path}{origin}")
        values.update(_from_yaml(path))
    values.update({key: value for key, value in overrides.items() if value is not None})
    unknown = sorted(set(values) - set(names()))
    if unknown:
        raise ConfigError(f"invalid settings: {unknown[0]}: no such setting")
    try:
        return Settings(**values)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


def _from_environment() -> dict[str, str]:
    """``ATM_<NAME>`` for each setting (case-insensitive, as shells differ); others ignored."""
    by_name = {key.upper(): value for key, value in os.environ.items()}
    wanted = {name: ENV_PREFIX + name.upper() for name in names()}
    return {name: by_name[env] for name, env in wanted.items() if env in by_name}


def _from_yaml(path: Path) -> dict[str, Any]:
    """A config file must be YAML holding a mapping; refuse anything else in one line."""
    import yaml  # only with a config file: most commands never read one

    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping of settings (key: value), "
            f"got a {type(document).__name__}"
        )
    return {str(key): value for key, value in document.items()}


def _convert(name: str, kind: str, value: Any) -> Any:
    """``value`` as ``kind`` (the annotation's name: str, int or float)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name}: expected {_NOUNS[kind]}, got {value!r}")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"{name}: expected text, got {value!r}")
    try:
        number = float(value) if kind == "float" else _integer(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {_NOUNS[kind]}, got {value!r}") from None
    if kind == "float" and not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return number


_NOUNS = {"str": "text", "int": "a whole number", "float": "a number"}


def _integer(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(value)


def _check_bound(name: str, value: Any, metadata: Any) -> None:
    choices = metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    minimum = metadata.get("minimum")
    if minimum is None:
        return
    if metadata.get("strict") and not value > minimum:
        raise ValueError(f"{name}: must be greater than {minimum}, got {value}")
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value}")
