"""``atm report``: a datarun's page as one HTML file that opens offline.

The page's document, stylesheet, script and plotly.js are inlined (plotly.js is most of the
~5 MB); links to other pages are shown as text, and nothing is polled.
"""

from __future__ import annotations

from pathlib import Path

from atm_core.dashboard import pages, views
from atm_core.dashboard.queries import iso
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import utcnow

STATIC = Path(__file__).resolve().parent / "static"


def inline_script(path: Path) -> str:
    """A script's text, safe inside ``<script>``: no ``</script`` can close it early."""
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script")


def report_html(hub: ModelHub, datarun_id: int) -> str:
    from atm_core.dashboard.app import plotly_js

    view = views.datarun_view(hub, datarun_id)
    view["live"] = False
    return pages.render(
        "datarun.html",
        page="datarun",
        title=f"Datarun {datarun_id}",
        view=view,
        inline=True,
        plots=True,
        generated=iso(utcnow()),
        css=(STATIC / "dashboard.css").read_text(encoding="utf-8"),
        app_js=inline_script(STATIC / "dashboard.js"),
        plotly_js=inline_script(plotly_js()),
    )


def write_report(hub: ModelHub, datarun_id: int, output: str | Path) -> Path:
    """Write the report (the datarun must exist: NotFoundError otherwise)."""
    html = report_html(hub, datarun_id)
    path = Path(output)
    path.write_text(html, encoding="utf-8")
    return path
