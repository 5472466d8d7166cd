"""``atm dashboard`` and ``atm report``, added to the ``atm`` command line through the
``atm.cli`` entry point group. Importing this module stays cheap (``atm --help``): FastAPI,
uvicorn and pandas are imported by the commands when they run."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console

from atm_core.dashboard import DEFAULT_MAX_UPLOAD_MB
from atm_core.errors import ConfigError
from atm_core.settings import Settings

TOKEN_VARIABLE = "ATM_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16


def dashboard_token(host: str) -> str | None:
    """``ATM_DASHBOARD_TOKEN``, required on any address but loopback."""
    from atm_core.dashboard.security import is_loopback

    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_VARIABLE} is too short: use {MIN_TOKEN_LENGTH} characters or more "
            "(python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without {TOKEN_VARIABLE}: set it (16+ characters) "
            "so that every page and API call needs it, or keep the default --host 127.0.0.1"
        )
    return token


def cmd_dashboard(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    token = dashboard_token(args.host)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    from atm_core.dashboard.server import serve

    serve(
        settings,
        console,
        host=args.host,
        port=args.port,
        token=token,
        read_only=args.read_only,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
    )
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.dashboard.report import write_report
    from atm_core.modelhub import ModelHub

    hub = ModelHub(settings=settings)
    path = write_report(hub, args.datarun_id, args.output or f"datarun-{args.datarun_id}.html")
    size = path.stat().st_size / 2**20
    console.print(
        f"report of datarun {args.datarun_id} written to {path} ({size:.1f} MB, opens offline)",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def register(commands: Any, command: Any) -> None:
    """Add ``dashboard`` and ``report`` to the ``atm`` command line."""
    dashboard = command(
        "dashboard", cmd_dashboard, "serve web pages and a REST API over the ModelHub"
    )
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs ATM_DASHBOARD_TOKEN)",
    )
    dashboard.add_argument("--port", type=int, default=8000, help="default 8000")
    dashboard.add_argument(
        "--read-only", action="store_true", help="refuse entering dataruns and predicting"
    )
    dashboard.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help="largest accepted request body: uploaded data files, prediction rows "
        f"(default {DEFAULT_MAX_UPLOAD_MB})",
    )
    report = command(
        "report", cmd_report, "write a datarun's dashboard page as one self-contained HTML file"
    )
    report.add_argument("datarun_id", type=int)
    report.add_argument("--output", help="the HTML file to write (default: datarun-N.html)")
