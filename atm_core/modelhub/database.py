"""Engines for every supported dialect, and the schema: checked when a hub opens, migrated on
purpose.

Opening a hub reads its schema revision (one query; alembic is not imported). A new, empty
database gets the schema, and so does an embedded SQLite file that is behind. A shared database
(MySQL/MariaDB, PostgreSQL) that is behind is refused with a pointer to ``atm db upgrade``:
upgrading it while workers of an older ATM run against it is the operator's decision.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with ``BEGIN
IMMEDIATE``: writers queue for the lock instead of failing with "database is locked" when two
deferred transactions both try to upgrade to writing. MySQL/MariaDB and PostgreSQL get pool
pre-ping (a dropped connection is replaced instead of failing the next query).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from atm_core.errors import ConfigError, HubUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions (a test holds the two equal): a hub already on it
# opens without importing alembic, 10 MB and 60 ms of every worker's start.
SCHEMA_HEAD = "0010"
SQLITE_BUSY_TIMEOUT_MS = 120_000
_DRIVERS = {
    "mysql": "mysql+mysqldb",
    "mariadb": "mariadb+mysqldb",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
}


def normalise_url(url: str) -> URL:
    """Parse a database URL, picking the drivers ATM ships (mysqlclient, psycopg 3)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL '{url}': {exc}") from None
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    return parsed


def create_hub_engine(url: str) -> Engine:
    parsed = normalise_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        return create_engine(
            parsed, pool_pre_ping=True, pool_recycle=1800, pool_size=5, max_overflow=10
        )
    except NoSuchModuleError as exc:
        raise ConfigError(f"unsupported database URL '{url}': {exc}") from None


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch a database to WAL once; concurrent first openers wait instead of failing.

    Changing the journal mode needs an exclusive lock and SQLite answers "database is locked"
    at once (its busy handler does not apply) while another connection opens the same new file.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision of the migration scripts, as alembic finds it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The hub's schema revision as alembic records it; None before the first migration."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


# MySQL client errors of a server that may come back (can't connect, gone away, lost
# connection, server shutdown); anything else at connection time (a wrong password, an
# unknown database) will not mend by waiting.
MYSQL_TRANSIENT = {2002, 2003, 2005, 2006, 2013, 1053}
POSTGRES_TRANSIENT = ("connection refused", "could not connect", "timeout", "shutting down")


def connection_error(engine: Engine, error: BaseException) -> HubUnavailable:
    """One line naming the ModelHub (its password masked) and what its driver said."""
    original = getattr(error, "orig", None) or error
    arguments = getattr(original, "args", ())
    code = arguments[0] if arguments and isinstance(arguments[0], int) else None
    said = str(arguments[1]) if code is not None and len(arguments) > 1 else str(original)
    said = " ".join(said.split()) or type(original).__name__
    if engine.dialect.name in ("mysql", "mariadb"):
        transient = code in MYSQL_TRANSIENT
    elif engine.dialect.name == "postgresql":
        transient = any(part in said.lower() for part in POSTGRES_TRANSIENT)
    else:
        transient = False
    where = engine.url.render_as_string(hide_password=True)
    return HubUnavailable(f"cannot use the ModelHub at {where}: {said}", transient)


def open_schema(engine: Engine) -> None:
    """Make sure the hub's schema is the one this ATM writes (see the module docstring)."""
    with engine.connect() as connection:
        current = current_revision(connection)
    if current == SCHEMA_HEAD:
        return
    if current is not None and _newer(current):
        raise ConfigError(_newer_message(current))
    # No revision yet: a new database (or one another process is creating right now; the
    # upgrade waits for it under the migration lock).
    if current is None or engine.dialect.name == "sqlite":
        upgrade_schema(engine)
        return
    raise ConfigError(
        f"the ModelHub at {engine.url.render_as_string(hide_password=True)} has schema revision "
        f"{current}, this ATM needs {SCHEMA_HEAD}: stop its workers, then run `atm db upgrade`"
    )


def _newer(revision: str) -> bool:
    return revision.isdigit() and int(revision) > int(SCHEMA_HEAD)


def _newer_message(revision: str) -> str:
    return (
        f"the ModelHub has schema revision {revision}, newer than this version of ATM knows; "
        "upgrade ATM"
    )


def migrate(connection: Connection, revision: str) -> None:
    """Upgrade or downgrade to ``revision`` on ``connection``, inside its transaction (on
    SQLite, call it within :func:`foreign_keys_off`)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    config.attributes["connection"] = connection
    current = current_revision(connection)
    script = ScriptDirectory.from_config(config)
    if revision == "head" or current is None:
        command.upgrade(config, revision)
        return
    ahead = revision in {r.revision for r in script.iterate_revisions(current, "base")}
    (command.downgrade if ahead else command.upgrade)(config, revision)


@contextmanager
def foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite only: foreign keys unchecked while migrations run. A batch migration recreates a
    table (copy, drop, rename), and SQLite would count the rows of other tables pointing at
    the dropped one as violations, even once they point at its copy. Set outside any
    transaction, where SQLite honours it."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def upgrade_schema(engine: Engine) -> str | None:
    """Upgrade the ModelHub to the newest schema; concurrent upgraders wait for one another.

    Returns the revision it started from (None for a new database).
    """
    from alembic.script import ScriptDirectory

    dialect = engine.dialect.name
    with engine.connect() as connection, foreign_keys_off(connection):
        if dialect in ("mysql", "mariadb"):
            connection.execute(text("SELECT GET_LOCK('atm_schema_migration', 300)"))
            connection.commit()  # the lock belongs to the session and outlives this transaction
        try:
            with connection.begin():
                if dialect == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(7206101)"))
                current = current_revision(connection)
                if current == SCHEMA_HEAD:
                    return current
                known = {
                    rev.revision
                    for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()
                }
                if current is not None and current not in known:
                    raise ConfigError(_newer_message(current))
                migrate(connection, "head")
                return current
        finally:
            if dialect in ("mysql", "mariadb"):
                connection.execute(text("SELECT RELEASE_LOCK('atm_schema_migration')"))
                connection.commit()
