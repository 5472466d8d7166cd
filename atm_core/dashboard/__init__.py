"""The dashboard: web pages and a REST API over a ModelHub (``atm dashboard``, ``atm report``).

Importing this package stays cheap (no FastAPI, uvicorn or pandas): the ``atm`` command line
registers its commands from here, and the Prefect flow links to pages with
:func:`dashboard_url`. The web app itself is :func:`atm_core.dashboard.app.create_app`.
"""

from atm_core.dashboard.links import dashboard_url

DEFAULT_MAX_UPLOAD_MB = 100  # the largest request body (``atm dashboard --max-upload-mb``)
__all__ = ["DEFAULT_MAX_UPLOAD_MB", "dashboard_url"]
