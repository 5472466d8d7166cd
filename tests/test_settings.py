"""Settings: one object, precedence defaults < ATM_* env < YAML (--config / ATM_CONFIG) < flags."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import yaml

from atm_core import cli
from atm_core.errors import ConfigError
from atm_core.modelhub import ModelHub
from atm_core.settings import Settings, load_settings, names
from tests.conftest import run_python

ENV_VARS = [f"ATM_{name.upper()}" for name in names()] + ["ATM_CONFIG"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ATM_* variable of the surrounding shell may leak into a precedence test."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write_yaml(path: Path, content: dict | str) -> Path:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_defaults_are_the_embedded_ones() -> None:
    """Without any configuration ATM uses ./atm.db and ./artifacts, as the quickstart says."""
    settings = load_settings()
    assert settings.database_url == "sqlite:///atm.db"
    assert settings.artifact_root == "./artifacts"
    assert settings.lease_seconds > 0
    assert settings.max_hyperpartition_errors == 3


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATM_DATABASE_URL", "sqlite:///env.db")
    monkeypatch.setenv("ATM_ARTIFACT_ROOT", "s3://bucket/env/")
    monkeypatch.setenv("ATM_LEASE_SECONDS", "7.5")
    settings = load_settings()
    assert settings.database_url == "sqlite:///env.db"
    assert settings.artifact_root == "s3://bucket/env"  # trailing slash removed
    assert settings.lease_seconds == 7.5


@pytest.mark.parametrize("via", ["argument", "ATM_CONFIG"])
def test_yaml_overrides_environment(
    via: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A key set in the YAML file wins over the environment; other keys still come from env."""
    config = write_yaml(tmp_path / "atm.yaml", {"database_url": "sqlite:///yaml.db"})
    monkeypatch.setenv("ATM_DATABASE_URL", "sqlite:///env.db")
    monkeypatch.setenv("ATM_ARTIFACT_ROOT", "/env/artifacts")
    if via == "ATM_CONFIG":
        monkeypatch.setenv("ATM_CONFIG", str(config))
        settings = load_settings()
    else:
        settings = load_settings(config)
    assert settings.database_url == "sqlite:///yaml.db"
    assert settings.artifact_root == "/env/artifacts"


def test_flags_override_yaml_and_none_flags_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_yaml(
        tmp_path / "atm.yaml",
        {"database_url": "sqlite:///yaml.db", "artifact_root": "/yaml/artifacts"},
    )
    monkeypatch.setenv("ATM_DATABASE_URL", "sqlite:///env.db")
    settings = load_settings(config, database_url="sqlite:///flag.db", artifact_root=None)
    assert settings.database_url == "sqlite:///flag.db"
    assert settings.artifact_root == "/yaml/artifacts"


def test_config_argument_does_not_leak_into_the_environment(tmp_path: Path) -> None:
    """load_settings(config) must not leave ATM_CONFIG set for the next caller."""
    config = write_yaml(tmp_path / "atm.yaml", {"database_url": "sqlite:///yaml.db"})
    load_settings(config)
    assert "ATM_CONFIG" not in os.environ
    assert load_settings().database_url == "sqlite:///atm.db"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"lease_seconds": -1}, "lease_seconds"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ("database_url: [unclosed\n", "YAML"),
        ("- a\n- b\n", "mapping"),
    ],
    ids=["invalid-value", "unknown-key", "broken-yaml", "not-a-mapping"],
)
def test_bad_config_file_is_a_config_error(
    content: dict | str, expected: str, tmp_path: Path
) -> None:
    config = write_yaml(tmp_path / "atm.yaml", content)
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "atm.yaml", "")
    assert load_settings(config).database_url == "sqlite:///atm.db"


def test_missing_config_file_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")
    monkeypatch.setenv("ATM_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="ATM_CONFIG"):
        load_settings()


def test_modelhub_takes_its_locations_from_the_settings(tmp_path: Path) -> None:
    """ModelHub(url) uses the URL given and the artifact root of the settings."""
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}", artifact_root=str(tmp_path / "store")
    )
    hub = ModelHub(settings=settings)
    try:
        assert (tmp_path / "hub.db").is_file()
        assert hub.store.root == str(tmp_path / "store")
    finally:
        hub.close()


def test_cli_precedence_env_yaml_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`atm status` opens the ModelHub the highest-precedence source names (it creates it)."""
    env_db, yaml_db, flag_db = (tmp_path / f"{name}.db" for name in ("env", "yaml", "flag"))
    monkeypatch.setenv("ATM_DATABASE_URL", f"sqlite:///{env_db}")
    assert cli.main(["status"]) == 0
    assert env_db.is_file()

    config = write_yaml(tmp_path / "atm.yaml", {"database_url": f"sqlite:///{yaml_db}"})
    assert cli.main(["status", "--config", str(config)]) == 0
    assert yaml_db.is_file()

    monkeypatch.setenv("ATM_CONFIG", str(config))
    assert cli.main(["status", "--database-url", f"sqlite:///{flag_db}"]) == 0
    assert flag_db.is_file()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("content", "expected"),
    [("database_url: [unclosed\n", "YAML"), ({"lease_seconds": 0}, "lease_seconds")],
    ids=["broken-yaml", "invalid-value"],
)
def test_cli_bad_config_exits_2_with_one_line(
    content: dict | str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_yaml(tmp_path / "atm.yaml", content)
    assert cli.main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["status", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert not (tmp_path / "atm.db").exists()


def test_invalid_database_url_is_a_config_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["status", "--database-url", "nosuchdialect://x/y"]) == 2
    err = capsys.readouterr().err
    assert "nosuchdialect" in err
    assert "Traceback" not in err


def test_environment_values_are_converted_to_each_settings_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATM_THREADS", "2")
    monkeypatch.setenv("atm_poll_seconds", "0.5")  # names are case-insensitive, as in shells
    settings = load_settings()
    assert settings.threads == 2 and isinstance(settings.threads, int)
    assert settings.poll_seconds == 0.5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ATM_THREADS", "two", "threads: expected a whole number, got 'two'"),
        ("ATM_THREADS", "1.5", "threads: expected a whole number"),
        ("ATM_THREADS", "0", "threads: must be at least 1, got 0"),
        ("ATM_LEASE_SECONDS", "0", "lease_seconds: must be greater than 0"),
        ("ATM_POLL_SECONDS", "nan", "poll_seconds: expected a finite number"),
    ],
)
def test_a_bad_environment_value_is_a_config_error_naming_it(
    name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"invalid settings: {message}"):
        load_settings()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"threads": True}, "threads: expected a whole number, got True"),
        ({"database_url": 5}, "database_url: expected text"),
        ({"artifact_root": None}, "artifact_root: expected text, got None"),
    ],
)
def test_yaml_values_of_the_wrong_type_are_refused(
    content: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write_yaml(tmp_path / "atm.yaml", content))


def test_an_unknown_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="no_such_flag: no such setting"):
        load_settings(no_such_flag=1)


def test_settings_built_in_code_are_checked_and_copied_with_changes() -> None:
    with pytest.raises(ValueError, match="max_attempts: must be at least 1"):
        Settings(max_attempts=0)
    base = Settings()
    moved = base.replace(artifact_root="s3://bucket/run/")
    assert moved.artifact_root == "s3://bucket/run" and base.artifact_root == "./artifacts"
    with pytest.raises(ValueError, match="threads"):
        base.replace(threads=-1)


def test_settings_are_values_a_process_can_key_on_and_ship() -> None:
    """The flow keys its ModelHubs by settings and hands them to task processes pickled."""
    assert Settings(threads=2) == Settings(threads=2)
    assert hash(Settings(threads=2)) == hash(Settings(threads=2)) != hash(Settings())
    assert pickle.loads(pickle.dumps(Settings(threads=2))) == Settings(threads=2)
    assert Settings().to_dict()["database_url"] == "sqlite:///atm.db"


def test_a_worker_imports_no_settings_library() -> None:
    """Every worker process loads its settings: pydantic-settings cost each one 10 MB."""
    code = (
        "import sys; import atm_core.cli, atm_core.driver; "
        "atm_core.settings.load_settings(); print('pydantic' in sys.modules)"
    )
    assert run_python(code).strip() == "False"
