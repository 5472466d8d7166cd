"""The read side of the REST API: datasets, dataruns, hyperpartitions, leaderboards,
classifiers with their metrics, ensembles; and the JSON document behind each page (``.../view``).

Lists are pages: ``{"items": [...], "total": N, "limit": L, "offset": O}``. An unknown id is
a 404 with ``{"detail": "no datarun with id 7 in the ModelHub"}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from atm_core.dashboard import queries, views
from atm_core.dashboard.responses import json_response
from atm_core.errors import NotFoundError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import ClassifierStatus, Datarun, DatarunStatus

router = APIRouter(prefix="/api", tags=["ModelHub"])
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
Offset = Annotated[int, Query(ge=0, description="items to skip")]


def hub_of(request: Request) -> ModelHub:
    return request.app.state.hub


@router.get("/datasets", summary="Datasets, newest first")
def datasets(request: Request, limit: Limit = 50, offset: Offset = 0) -> Response:
    with hub_of(request).transaction() as session:
        items, total = queries.list_datasets(session, limit, offset)
    return json_response(views.page(items, total, limit, offset))


@router.get("/datasets/{dataset_id}", summary="A dataset's metadata and feature columns")
def dataset(request: Request, dataset_id: int) -> Response:
    with hub_of(request).transaction() as session:
        return json_response(queries.dataset_detail(session, dataset_id))


@router.get("/datasets/{dataset_id}/view", summary="The dataset page's document")
def dataset_view(request: Request, dataset_id: int) -> Response:
    return json_response(views.dataset_view(hub_of(request), dataset_id))


@router.get("/dataruns", summary="Dataruns with progress, best score and method mix")
def dataruns(
    request: Request,
    status: Annotated[
        DatarunStatus | None, Query(description="only dataruns in this status")
    ] = None,
    dataset_id: Annotated[int | None, Query(description="only dataruns of this dataset")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    with hub_of(request).transaction() as session:
        items, total = queries.list_dataruns(session, status, dataset_id, limit, offset)
    return json_response(views.page(items, total, limit, offset))


@router.get("/dataruns/{datarun_id}", summary="A datarun: configuration, progress, best")
def datarun(request: Request, datarun_id: int) -> Response:
    with hub_of(request).transaction() as session:
        return json_response(queries.datarun_summary(session, datarun_id))


@router.get("/dataruns/{datarun_id}/view", summary="The datarun page's document (plots too)")
def datarun_view(request: Request, datarun_id: int) -> Response:
    return json_response(views.datarun_view(hub_of(request), datarun_id))


@router.get(
    "/dataruns/{datarun_id}/hyperpartitions",
    summary="Hyperpartitions with counts, best and mean score, status",
)
def hyperpartitions(request: Request, datarun_id: int) -> Response:
    with hub_of(request).transaction() as session:
        return json_response(queries.hyperpartitions(session, _datarun(session, datarun_id)))


@router.get("/dataruns/{datarun_id}/leaderboard", summary="Complete classifiers, best first")
def leaderboard(
    request: Request, datarun_id: int, limit: Limit = 50, offset: Offset = 0
) -> Response:
    with hub_of(request).transaction() as session:
        board, total = queries.leaderboard(session, _datarun(session, datarun_id), limit, offset)
    return json_response(views.page(board, total, limit, offset))


@router.get("/dataruns/{datarun_id}/classifiers", summary="A datarun's classifiers, by id")
def classifiers(
    request: Request,
    datarun_id: int,
    status: Annotated[ClassifierStatus | None, Query(description="only this status")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    with hub_of(request).transaction() as session:
        items, total = queries.classifiers(session, datarun_id, status, limit, offset)
    return json_response(views.page(items, total, limit, offset))


@router.get("/dataruns/{datarun_id}/ensemble", summary="A datarun's ensemble: members, weights")
def ensemble(request: Request, datarun_id: int) -> Response:
    with hub_of(request).transaction() as session:
        _datarun(session, datarun_id)
        found = queries.ensemble(session, datarun_id)
    if found is None:
        raise NotFoundError(
            f"datarun {datarun_id} has no ensemble: it is chosen when the datarun completes"
        )
    return json_response(found)


@router.get("/ensembles", summary="Every datarun's ensemble, newest datarun first")
def ensembles(request: Request, limit: Limit = 50, offset: Offset = 0) -> Response:
    with hub_of(request).transaction() as session:
        items, total = queries.list_ensembles(session, limit, offset)
    return json_response(views.page(items, total, limit, offset))


@router.get("/classifiers/{classifier_id}", summary="A classifier with its per-fold metrics")
def classifier(request: Request, classifier_id: int) -> Response:
    view = views.classifier_view(hub_of(request), classifier_id)
    return json_response({**view["classifier"], "metrics": view["metrics"], "notes": view["notes"]})


@router.get("/classifiers/{classifier_id}/view", summary="The classifier page's document")
def classifier_view(request: Request, classifier_id: int) -> Response:
    return json_response(views.classifier_view(hub_of(request), classifier_id))


@router.get(
    "/classifiers/{classifier_id}/model",
    summary="Download the model (a pickle, sha256-checked): its refit on every labelled row "
    "when there is one, else (or with search_time=true) the model its scores were measured on",
    response_class=Response,
)
def model(request: Request, classifier_id: int, search_time: bool = False) -> Response:
    blob = hub_of(request).model_bytes(classifier_id, final=not search_time)
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="classifier-{classifier_id}.pkl"'},
    )


def _datarun(session, datarun_id: int) -> Datarun:
    datarun = session.get(Datarun, datarun_id)
    if datarun is None:
        raise NotFoundError(f"no datarun with id {datarun_id} in the ModelHub")
    return datarun
