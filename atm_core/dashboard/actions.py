"""The write side of the REST API: enter a datarun, predict. Both are refused (403) on a
``--read-only`` dashboard and take JSON or a size-limited CSV/parquet upload.

A datarun is validated exactly as ``atm enter_data`` validates it (``atm_core.dataruns``), and
a refusal is a 422 with the same one-line message; nothing is written before it passes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from atm_core.dashboard import uploads
from atm_core.dashboard.predictions import ModelCache, predict, rows_frame
from atm_core.dashboard.queries import redact
from atm_core.dashboard.responses import json_response
from atm_core.dataruns import enter_data, validate_options
from atm_core.errors import ATMError, ConfigError
from atm_core.options import DatarunRequest, from_mapping, kind, spec

router = APIRouter(prefix="/api", tags=["actions"])
START = "start_flow_run"
KINDS = {item.name: kind(item) for item in spec()}


def _datarun_schema() -> dict[str, Any]:
    schema = TypeAdapter(DatarunRequest).json_schema()
    schema["properties"][START] = {
        "type": "boolean",
        "default": False,
        "description": "also start the atm/datarun deployment for it (needs PREFECT_API_URL)",
    }
    return schema


FILE_BODY = {"schema": {"type": "string", "format": "binary"}}
DATARUN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _datarun_schema()},
            "text/csv": FILE_BODY,
            "application/octet-stream": FILE_BODY,
        },
    }
}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "classifier_id": {"type": "integer"},
                        "ensemble": {"type": "integer", "description": "a datarun id"},
                        "rows": {"type": "array", "items": {"type": "object"}},
                    },
                    "required": ["rows"],
                }
            },
            "text/csv": FILE_BODY,
        },
    }
}


def refuse_if_read_only(request: Request) -> None:
    if request.app.state.config.read_only:
        raise HTTPException(403, "this dashboard is read-only (started with --read-only)")


def model_cache(request: Request) -> ModelCache:
    state = request.app.state
    if not hasattr(state, "models"):
        state.models = ModelCache()
    return state.models


# -- entering dataruns ------------------------------------------------------------------------
def datarun_request(options: dict[str, Any]) -> DatarunRequest:
    """A :class:`DatarunRequest` from JSON (or query-string) options: an unknown name is
    refused here, every value is checked by ``atm_core.dataruns`` as for ``atm enter_data``."""
    if not options.get("train_path"):
        raise ConfigError("train_path is required (a CSV or parquet file with a label column)")
    return from_mapping(options)


def query_options(request: Request) -> dict[str, Any]:
    """Datarun options from the query string of an upload, converted by each option's kind; a
    value that does not convert is passed on for the checks to name."""
    options: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        if KINDS.get(name) == "list":
            options.setdefault(name, []).extend(value.replace(",", " ").split())
        else:
            options[name] = convert(value, KINDS.get(name, "str"))
    return options


def convert(value: str, value_kind: str) -> Any:
    if value_kind == "bool" and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    for name, cast in (("int", int), ("float", float)):
        if value_kind == name:
            try:
                return cast(value)
            except ValueError:
                return value
    return value


def flag(options: dict[str, Any], name: str) -> bool:
    value = options.pop(name, False)
    if isinstance(value, str):
        value = convert(value, "bool")
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


@router.post(
    "/dataruns",
    status_code=201,
    summary="Enter a datarun (as `atm enter_data`)",
    description="JSON with the options of `atm enter_data` (`train_path` a path or URL), or "
    "a CSV/parquet file as the body with the options in the query string (`?class_column="
    "class&methods=logreg&methods=dt&budget=20&filename=data.csv`). `start_flow_run` also "
    "starts the `atm/datarun` deployment for it when PREFECT_API_URL is set. 422: the same "
    "one-line message as `atm enter_data`; 413: upload too large.",
    openapi_extra=DATARUN_BODY,
)
async def enter_datarun(request: Request) -> Response:
    refuse_if_read_only(request)
    config = request.app.state.config
    hub = request.app.state.hub
    body_type = uploads.body_kind(request)
    body = await uploads.read_body(request, config.max_upload_bytes)
    options = uploads.json_object(body) if body_type == uploads.JSON else query_options(request)
    start = flag(options, START)
    filename = options.pop("filename", None) if body_type == uploads.FILE else None
    if body_type == uploads.FILE:
        if options.get("train_path"):
            raise ConfigError("give train_path or upload a file, not both")
        if not body:
            raise ConfigError("the uploaded file is empty")
        options["train_path"] = "(upload)"
    datarun = datarun_request(options)
    validate_options(datarun)  # option errors before anything is stored or asked of Prefect
    if start and config.prefect is None:
        raise ConfigError(f"{START} needs a Prefect server: set PREFECT_API_URL for the dashboard")
    deployment = await run_in_threadpool(config.prefect.datarun_deployment) if start else None
    stored = None
    if body_type == uploads.FILE:
        key = uploads.upload_key(body, str(filename or "upload.csv"))
        if not await run_in_threadpool(hub.store.exists, key):
            stored = key
        datarun.train_path = await run_in_threadpool(hub.store.save_file, key, body)
    try:
        entered = await run_in_threadpool(enter_data, hub, datarun)
    except ATMError:
        if stored is not None:
            await run_in_threadpool(hub.store.delete_prefix, stored.rsplit("/", 1)[0])
        raise
    ids = [d.id for d in entered.dataruns]
    answer = {
        "dataset_id": entered.dataset_id,
        "datarun_ids": ids,
        "train_path": redact(entered.info.train_path),
        "metric": entered.metric,
        "partitions_per_method": entered.partitions_per_method,
        "pages": [f"/dataruns/{i}" for i in ids],
        "flow_runs": [],
    }
    for datarun_id in ids if deployment is not None else []:
        try:
            run = await run_in_threadpool(config.prefect.start_datarun, deployment, datarun_id)
        except ATMError as exc:
            raise HTTPException(
                502,
                f"datarun {datarun_id} was entered, but its flow run was not started: {exc} "
                f"(start it with `prefect deployment run atm/datarun --param datarun_id="
                f"{datarun_id}`, or run `atm worker`)",
            ) from None
        answer["flow_runs"].append({**run, "datarun_id": datarun_id})
    return json_response(answer, status_code=201)


# -- predictions ------------------------------------------------------------------------------
@router.post(
    "/predict",
    summary="Predict with a classifier or a datarun's ensemble",
    description='JSON `{"classifier_id": 5, "rows": [{...}, ...]}` (or `"ensemble": '
    "DATARUN_ID`), or a CSV/parquet file as the body with `?classifier_id=5` or `?ensemble="
    "1`. Answers `predictions`, `classes`, when the model has them `probabilities`, and "
    "`notes` on numeric cells read as missing.",
    openapi_extra=PREDICT_BODY,
)
async def predict_rows(request: Request) -> Response:
    refuse_if_read_only(request)
    config = request.app.state.config
    body_type = uploads.body_kind(request)
    body = await uploads.read_body(request, config.max_upload_bytes)
    if body_type == uploads.JSON:
        payload = uploads.json_object(body)
        unknown = sorted(set(payload) - {"classifier_id", "ensemble", "rows"})
        if unknown:
            raise ConfigError(
                f"unknown field '{unknown[0]}': use classifier_id or ensemble, and rows"
            )
        frame = rows_frame(payload.get("rows"))
        chosen = payload.get("classifier_id"), payload.get("ensemble")
        source = "the request"
    else:
        params = request.query_params
        chosen = tuple(
            convert(params[name], "int") if name in params else None
            for name in ("classifier_id", "ensemble")
        )
        name = uploads.safe_name(params.get("filename"))
        frame = await run_in_threadpool(uploads.read_frame, body, name)
        source = name
    answer = await run_in_threadpool(
        predict, request.app.state.hub, model_cache(request), frame, *chosen, source
    )
    return json_response(answer)
