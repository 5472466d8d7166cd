"""Run the dashboard with uvicorn: open the ModelHub first (a bad database URL fails here, in
one line), log one line per request without query strings, and say where it listens without
showing the database's password."""

from __future__ import annotations

import logging
import socket
import sys

from rich.console import Console

from atm_core.errors import ConfigError
from atm_core.settings import Settings


def masked_database_url(url: str) -> str:
    from atm_core.modelhub.database import normalise_url

    return normalise_url(url).render_as_string(hide_password=True)


def check_port(host: str, port: int) -> None:
    """Fail in one line when the address is taken (uvicorn would log a traceback-ish error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("atm.dashboard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def serve(
    settings: Settings,
    console: Console,
    *,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    max_upload_bytes: int,
) -> None:
    import uvicorn

    from atm_core.dashboard.app import DashboardConfig, create_app
    from atm_core.dashboard.deployments import PrefectServer
    from atm_core.dashboard.queries import redact
    from atm_core.dashboard.security import is_loopback
    from atm_core.modelhub import ModelHub

    check_port(host, port)
    hub = ModelHub(settings=settings)
    prefect = PrefectServer.from_environment()
    config = DashboardConfig(
        settings,
        read_only=read_only,
        token=token,
        max_upload_bytes=max_upload_bytes,
        loopback_only=is_loopback(host),
        prefect=prefect,
    )
    app = create_app(config, hub)
    configure_logging()
    shown = f"[{host}]" if ":" in host else host
    rules = [
        "read-only" if read_only else "read-write",
        "token required" if token else "no token (loopback only)",
        f"uploads up to {max_upload_bytes / 2**20:g} MB",
    ]
    if prefect is not None:
        rules.append(f"Prefect server {prefect.where}")
    console.print(
        f"ATM dashboard on http://{shown}:{port} (API docs at /docs)\n"
        f"  ModelHub {masked_database_url(settings.database_url)}, "
        f"artifacts {redact(settings.artifact_root)}\n  {'; '.join(rules)}",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info", server_header=False)
