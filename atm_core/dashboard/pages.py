"""The HTML pages: each is a skeleton, the page's JSON document (:mod:`views`) and the script
that draws it (``static/dashboard.js``) and polls ``poll`` every few seconds while it is live.
A report (:mod:`report`) is the same page with every file inlined."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from atm_core.dashboard import views

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), cache_size=50
    )


def embedded_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` can end it early)."""
    text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(template: str, **context: Any) -> str:
    context.setdefault("inline", False)
    context.setdefault("read_only", False)
    context.setdefault("prefect", False)
    context.setdefault("poll", None)
    context.setdefault("plots", False)
    context["view_json"] = embedded_json(context.pop("view"))
    return environment().get_template(template).render(**context)


def respond(request: Request, template: str, **context: Any) -> HTMLResponse:
    config = request.app.state.config
    html = render(
        template, read_only=config.read_only, prefect=config.prefect is not None, **context
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    html = environment().get_template("error.html").render(status=status, message=message)
    return HTMLResponse(html, status_code=status)


def hub_of(request: Request):
    return request.app.state.hub


@router.get("/", response_class=HTMLResponse)
def dataruns_page(request: Request) -> HTMLResponse:
    view = views.dataruns_view(hub_of(request))
    return respond(
        request,
        "dataruns.html",
        page="dataruns",
        title="Dataruns",
        view=view,
        poll=f"/api/dataruns?limit={views.LIST_ROWS}",
    )


@router.get("/dataruns/{datarun_id}", response_class=HTMLResponse)
def datarun_page(request: Request, datarun_id: int) -> HTMLResponse:
    view = views.datarun_view(hub_of(request), datarun_id)
    return respond(
        request,
        "datarun.html",
        page="datarun",
        title=f"Datarun {datarun_id}",
        view=view,
        poll=f"/api/dataruns/{datarun_id}/view",
        plots=True,
    )


@router.get("/dataruns/{datarun_id}/report", response_class=HTMLResponse)
def datarun_report(request: Request, datarun_id: int) -> HTMLResponse:
    """The datarun page as one self-contained file (``atm report``), as a download."""
    from atm_core.dashboard.report import report_html

    html = report_html(hub_of(request), datarun_id)
    disposition = f'attachment; filename="datarun-{datarun_id}.html"'
    return HTMLResponse(html, headers={"Content-Disposition": disposition})


@router.get("/classifiers/{classifier_id}", response_class=HTMLResponse)
def classifier_page(request: Request, classifier_id: int) -> HTMLResponse:
    view = views.classifier_view(hub_of(request), classifier_id)
    return respond(
        request,
        "classifier.html",
        page="classifier",
        title=f"Classifier {classifier_id}",
        view=view,
        poll=f"/api/classifiers/{classifier_id}/view",
        plots=True,
    )


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: int) -> HTMLResponse:
    view = views.dataset_view(hub_of(request), dataset_id)
    return respond(
        request,
        "dataset.html",
        page="dataset",
        title=f"Dataset {dataset_id}",
        view=view,
        poll=f"/api/datasets/{dataset_id}/view",
    )
