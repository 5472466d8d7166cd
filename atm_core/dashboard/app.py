"""The dashboard's web app: pages, the REST API under ``/api`` and its OpenAPI page at
``/docs``, over one ModelHub. Everything it serves is in this package or in installed Python
packages (plotly.js, Swagger UI): a browser needs no network beyond the dashboard."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from atm_core import __version__
from atm_core.dashboard import DEFAULT_MAX_UPLOAD_MB
from atm_core.dashboard.deployments import PrefectServer, PrefectServerError
from atm_core.dashboard.responses import one_line
from atm_core.dashboard.security import AccessLog, Guard
from atm_core.errors import ATMError, NotFoundError
from atm_core.modelhub import ModelHub
from atm_core.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("atm.dashboard")


@dataclass(frozen=True)
class DashboardConfig:
    """How one dashboard runs (``atm dashboard`` builds it from its flags and environment)."""

    settings: Settings
    read_only: bool = False
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20  # request bodies: uploads, rows
    loopback_only: bool = True  # answer only requests addressed to a loopback host name
    prefect: PrefectServer | None = None


def plotly_js() -> Path:
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


def swagger_files() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def create_app(config: DashboardConfig, hub: ModelHub | None = None) -> FastAPI:
    from atm_core.dashboard import actions, api, pages

    app = FastAPI(
        title="ATM dashboard",
        version=__version__,
        description="The ModelHub of Auto Tune Models: datasets, dataruns, hyperpartitions, "
        "classifiers, ensembles; enter dataruns and predict.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.config = config
    app.state.hub = hub if hub is not None else ModelHub(settings=config.settings)
    app.include_router(api.router)
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.mount("/static/swagger", StaticFiles(directory=swagger_files()), name="swagger")
    app.mount("/static/app", StaticFiles(directory=STATIC), name="app-static")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="ATM dashboard API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon.png",
        )

    add_error_handlers(app)
    app.add_middleware(Guard, token=config.token, loopback_only=config.loopback_only)
    app.add_middleware(AccessLog)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal is ``{"detail": "one line"}`` (pages: the line as text)."""

    def answer(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": message}, status_code=status)
        from atm_core.dashboard.pages import error_page

        return error_page(request, status, message)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return answer(request, 404, one_line(str(exc)))

    @app.exception_handler(PrefectServerError)
    async def prefect_failed(request: Request, exc: PrefectServerError) -> Response:
        return answer(request, 502, one_line(str(exc)))

    @app.exception_handler(ATMError)
    async def bad_input(request: Request, exc: ATMError) -> Response:
        return answer(request, 422, one_line(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(
                str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")
            )
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
        return answer(request, 422, "; ".join(problems) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return answer(request, exc.status_code, one_line(str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return answer(
            request, 500, f"internal error ({type(exc).__name__}); see the dashboard's log"
        )
