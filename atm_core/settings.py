"""Every location and tunable knob of ATM in one place.

Precedence, lowest to highest: built-in defaults < ``ATM_*`` environment variables <
the YAML file named by ``--config`` / ``ATM_CONFIG`` < command-line flags (passed as keyword
arguments). Nothing else in the code base hard-codes a path or a URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from atm_core.errors import ConfigError


class Settings(BaseSettings):
    """ATM configuration; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix="ATM_", extra="forbid")

    database_url: str = Field(
        "sqlite:///atm.db", description="SQLAlchemy URL of the ModelHub database."
    )
    artifact_root: str = Field(
        "./artifacts",
        description="Folder or fsspec URL (s3://bucket/prefix) for models and metrics.",
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A running classifier whose worker stops heart-beating this long is reclaimed.",
    )
    max_attempts: int = Field(
        2,
        ge=1,
        description="Runs of a classifier whose worker was lost before it counts as errored.",
    )
    max_hyperpartition_errors: int = Field(
        3,
        ge=0,
        description="A hyperpartition is marked errored after more errored classifiers than this.",
    )
    threads: int = Field(
        1,
        ge=1,
        description="Threads per fit (OpenMP and n_jobs; BLAS uses one); scale out with workers.",
    )
    artifact_retries: int = Field(
        3, ge=0, description="Retries (with backoff) of a failed object-store read or write."
    )
    outage_patience_seconds: float = Field(
        1800.0, gt=0, description="How long a worker waits for a lost database or store."
    )
    poll_seconds: float = Field(
        2.0, gt=0, description="How often an idle worker re-checks a datarun others are finishing."
    )

    @field_validator("artifact_root")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/") or value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        config_file = os.environ.get("ATM_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        sources.append(env_settings)
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` are CLI flags (``None`` values are ignored)."""
    overrides = {key: value for key, value in overrides.items() if value is not None}
    previous = os.environ.get("ATM_CONFIG")
    try:
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            _check_yaml(path)
            os.environ["ATM_CONFIG"] = str(path)
        elif previous:
            if not Path(previous).is_file():
                raise ConfigError(f"config file not found: {previous} (from ATM_CONFIG)")
            _check_yaml(Path(previous))
        try:
            return Settings(**overrides)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"invalid settings: {_first_error(exc)}") from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("ATM_CONFIG", None)
            else:
                os.environ["ATM_CONFIG"] = previous


def _check_yaml(path: Path) -> None:
    """A config file must be YAML holding a mapping; refuse anything else in one line."""
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if document is not None and not isinstance(document, dict):
        raise ConfigError(
            f"{path}: expected a YAML mapping of settings (key: value), "
            f"got a {type(document).__name__}"
        )


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
