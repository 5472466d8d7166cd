"""Links into a running dashboard from elsewhere (the flow's best-model artifact, logs)."""

from __future__ import annotations

import os

DASHBOARD_URL_VARIABLE = "ATM_DASHBOARD_URL"


def dashboard_url(datarun_id: int) -> str | None:
    """The datarun's page on the dashboard at ``ATM_DASHBOARD_URL`` (for example
    ``http://atm.internal:8000``); None when that variable is unset or empty."""
    base = os.environ.get(DASHBOARD_URL_VARIABLE, "").strip()
    if not base:
        return None
    return f"{base.rstrip('/')}/dataruns/{int(datarun_id)}"
