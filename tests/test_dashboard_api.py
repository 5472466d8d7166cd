"""The dashboard's REST API on a real uvicorn server, over a finished demo datarun on SQLite and
on MariaDB: answers, bad input (422 with the one-line messages of ``atm enter_data``, 413,
415), read-only, the token and the loopback rules, and no secret in any answer."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from atm_core.dashboard.app import DashboardConfig
from atm_core.dataruns import enter_data
from atm_core.errors import ATMError
from atm_core.modelhub.models import Classifier, utcnow
from atm_core.options import DatarunRequest
from tests.conftest import fresh_database
from tests.dashboard_support import (
    POLLUTION,
    Finished,
    LiveServer,
    complete_ids_best_first,
    count_classifiers,
    finished_datarun,
)

TOKEN = "a-long-enough-dashboard-token-for-tests"
BUDGET = 8


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def finished(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Finished]:
    folder = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    with fresh_database(request.param, folder) as url:
        yield finished_datarun(url, folder, BUDGET)


@pytest.fixture(scope="module")
def server(finished: Finished) -> Iterator[LiveServer]:
    with LiveServer(DashboardConfig(finished.settings)) as live:
        yield live


@pytest.fixture
def hub(finished: Finished):
    instance = finished.hub()
    yield instance
    instance.close()


def one_line_detail(answer, status: int) -> str:
    assert answer.status == status, answer.body
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail
    return detail


# -- reading ----------------------------------------------------------------------------------
def test_dataruns_lists_the_datarun_with_progress_and_filters(server, finished, hub):
    page = server.get("/api/dataruns").json()
    assert page["total"] == 1 and len(page["items"]) == 1
    run = page["items"][0]
    ranked = complete_ids_best_first(hub, finished.datarun_id)
    assert run["id"] == finished.datarun_id and run["status"] == "complete"
    assert run["spent"] == BUDGET and run["percent"] == 100.0
    assert sum(run["classifiers"].values()) == BUDGET == run["classifiers_total"]
    assert run["classifiers"]["complete"] == len(ranked)
    best = hub.get_datarun(finished.datarun_id)
    assert run["best_score"] == pytest.approx(
        max(c.cv_judgment_metric for c in hub.classifiers(best.id, "complete"))
    )
    assert set(run["methods"]) == {"logreg", "dt", "knn"} and sum(run["methods"].values()) == BUDGET

    assert server.get("/api/dataruns?limit=1&offset=1").json()["items"] == []
    assert server.get("/api/dataruns?status=running").json()["total"] == 0
    assert server.get("/api/dataruns?status=complete").json()["total"] == 1
    assert server.get(f"/api/dataruns?dataset_id={run['dataset_id']}").json()["total"] == 1
    assert server.get("/api/dataruns?dataset_id=999").json()["total"] == 0
    assert "status" in one_line_detail(server.get("/api/dataruns?status=bogus"), 422)
    assert "limit" in one_line_detail(server.get("/api/dataruns?limit=0"), 422)


def test_datarun_hyperpartitions_and_leaderboard(server, finished, hub):
    datarun_id = finished.datarun_id
    ranked = complete_ids_best_first(hub, datarun_id)
    detail = server.get(f"/api/dataruns/{datarun_id}").json()
    assert detail["best_classifier_id"] == ranked[0]
    assert detail["selector"] == "hiercost" and detail["metric"] == "f1"

    partitions = server.get(f"/api/dataruns/{datarun_id}/hyperpartitions").json()
    assert len(partitions) == len(hub.hyperpartitions(datarun_id))
    assert sum(p["classifiers"] for p in partitions) == BUDGET
    assert sum(p["complete"] for p in partitions) == len(ranked)
    assert {p["status"] for p in partitions} <= {"incomplete", "gridding_done", "errored"}
    assert {p["method"] for p in partitions if p["classifiers"]} == {"logreg", "dt", "knn"}
    for p in partitions:
        if p["complete"]:
            assert p["mean"] <= p["best"] + 1e-12
        assert p["label"].startswith(p["method"])

    board = server.get(f"/api/dataruns/{datarun_id}/leaderboard?limit=100").json()
    assert board["total"] == len(ranked)
    assert [row["classifier_id"] for row in board["items"]] == ranked
    assert [row["rank"] for row in board["items"]] == list(range(1, len(ranked) + 1))
    second = server.get(f"/api/dataruns/{datarun_id}/leaderboard?limit=2&offset=2").json()
    assert [row["classifier_id"] for row in second["items"]] == ranked[2:4]
    assert second["items"][0]["rank"] == 3

    listed = server.get(f"/api/dataruns/{datarun_id}/classifiers?status=complete").json()
    assert sorted(c["id"] for c in listed["items"]) == sorted(ranked)


def test_classifier_metrics_predictions_and_model_download(server, finished, hub):
    best = complete_ids_best_first(hub, finished.datarun_id)[0]
    row = hub.get_classifier(best)
    answer = server.get(f"/api/classifiers/{best}").json()
    assert answer["model_sha256"] == row.model_sha256
    assert answer["model_location"] == row.model_location
    splits = [m["split"] for m in answer["metrics"]]
    assert splits.count("cv") == 5 and splits.count("test") == 1
    test_row = next(m for m in answer["metrics"] if m["split"] == "test")
    assert test_row["f1"] == pytest.approx(row.test_judgment_metric)
    assert test_row["fit_seconds"] > 0

    view = server.get(f"/api/classifiers/{best}/view").json()
    matrix = view["figures"]["confusion"]["data"][0]["z"]
    assert sum(map(sum, matrix)) == view["heldout"]["rows"] == 18  # 30 % of 60 rows
    assert view["figures"]["roc"]["data"][0]["name"].startswith("1 (AUC")

    download = server.get(f"/api/classifiers/{best}/model")
    assert download.status == 200
    assert download.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(download.body).hexdigest() == row.final_model_sha256  # best: refitted
    searched = server.get(f"/api/classifiers/{best}/model?search_time=true")
    assert hashlib.sha256(searched.body).hexdigest() == row.model_sha256


def test_ensembles(server, finished, hub):
    ensemble = hub.get_ensemble(finished.datarun_id)
    answer = server.get(f"/api/dataruns/{finished.datarun_id}/ensemble").json()
    assert {m["classifier_id"]: m["weight"] for m in answer["members"]} == ensemble.weights
    assert answer["cv_judgment_metric"] == pytest.approx(ensemble.cv_judgment_metric)
    listed = server.get("/api/ensembles").json()
    assert listed["total"] == 1 and listed["items"][0]["datarun_id"] == finished.datarun_id


def test_datasets(server, finished, hub):
    datasets = server.get("/api/datasets").json()
    assert datasets["total"] >= 1
    dataset = hub.get_dataset(hub.get_datarun(finished.datarun_id).dataset_id)
    answer = server.get(f"/api/datasets/{dataset.id}").json()
    assert answer["name"] == "pollution_1" and answer["n_examples"] == 60
    assert answer["k_classes"] == 2 and len(answer["features"]["numeric"]) == 15


def test_unknown_ids_are_404_in_one_line(server):
    assert one_line_detail(server.get("/api/dataruns/999"), 404) == (
        "no datarun with id 999 in the ModelHub"
    )
    assert "classifier" in one_line_detail(server.get("/api/classifiers/999"), 404)
    assert "dataset" in one_line_detail(server.get("/api/datasets/999"), 404)
    assert "integer" in one_line_detail(server.get("/api/dataruns/abc"), 422)
    page = server.get("/dataruns/999")
    assert page.status == 404 and "no datarun with id 999" in page.text


def test_openapi_document_and_offline_docs_page(server):
    paths = server.get("/openapi.json").json()["paths"]
    for path in ("/api/dataruns", "/api/predict", "/api/dataruns/{datarun_id}/leaderboard"):
        assert path in paths
    assert "text/csv" in paths["/api/dataruns"]["post"]["requestBody"]["content"]
    docs = server.get("/docs")
    assert docs.status == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert server.get("/static/swagger/swagger-ui-bundle.js").status == 200
    assert server.get("/static/plotly.min.js").status == 200


# -- entering dataruns ------------------------------------------------------------------------
BAD_REQUESTS = [
    {"methods": ["logreg", "nope"]},
    {"budget": 0},
    {"budget": "ten"},
    {"metric": "nope"},
    {"class_column": "missing"},
    {"train_path": "/no/such/file.csv"},
    {"selector": "nope"},
]


def test_entering_a_datarun_validates_like_enter_data(server, finished, hub):
    before = len(hub.dataruns()), len(hub.datasets())
    for changes in BAD_REQUESTS:
        options = {"train_path": POLLUTION, "budget": 3, **changes}
        with pytest.raises(ATMError) as refused:
            enter_data(hub, DatarunRequest(**options))
        detail = one_line_detail(server.post_json("/api/dataruns", options), 422)
        assert detail == str(refused.value), changes
    for options, words in [
        ({"train_path": POLLUTION, "budgett": 3}, "budgett is not a datarun option"),
        ({"train_path": POLLUTION, "methods": "logreg"}, "methods must be a list"),
        ({"budget": 3}, "train_path is required"),
        ({"train_path": 5}, "train_path must be text"),
    ]:
        assert words in one_line_detail(server.post_json("/api/dataruns", options), 422)
    json_type = {"Content-Type": "application/json"}
    refused = server.request("POST", "/api/dataruns", b"{nope", json_type)
    assert "not valid JSON" in one_line_detail(refused, 422)
    assert (len(hub.dataruns()), len(hub.datasets())) == before  # nothing half-written

    created = server.post_json(
        "/api/dataruns", {"train_path": POLLUTION, "methods": ["logreg"], "budget": 3}
    )
    assert created.status == 201, created.body
    answer = created.json()
    assert answer["partitions_per_method"] == {"logreg": 4} and answer["flow_runs"] == []
    new = hub.get_datarun(answer["datarun_ids"][0])
    assert new.budget == 3 and new.status.value == "pending"
    listed = server.get("/api/dataruns?status=pending").json()["items"]
    assert [r["id"] for r in listed] == answer["datarun_ids"]

    asked = server.post_json(
        "/api/dataruns", {"train_path": POLLUTION, "budget": 3, "start_flow_run": True}
    )
    assert "PREFECT_API_URL" in one_line_detail(asked, 422)


def test_uploaded_csv_becomes_a_dataset_in_the_artifact_store(server, hub):
    lines = Path(POLLUTION).read_bytes().splitlines(keepends=True)
    data = b"".join(lines[:-1])  # new content: the demo datarun's dataset has all the rows
    created = server.post_file(
        "/api/dataruns?methods=dt&budget=2&class_column=class&filename=../my%20data.csv", data
    )
    assert created.status == 201, created.body
    datarun = hub.get_datarun(created.json()["datarun_ids"][0])
    dataset = hub.get_dataset(datarun.dataset_id)
    assert dataset.name == "my_data" and dataset.content_hash
    assert "/uploads/" in dataset.train_path
    assert dataset.train_path.startswith(hub.store.root)
    assert hub.store.fs.cat_file(dataset.train_path) == data

    uploads_before = set(hub.store.fs.find(f"{hub.store.root}/uploads"))
    refused = server.post_file("/api/dataruns?budget=2&filename=bad.csv", b"\x00\x01binary")
    assert "bad.csv" in one_line_detail(refused, 422)
    other = b"".join(lines[:-2])
    refused = server.post_file("/api/dataruns?budget=2&class_column=nope&filename=p.csv", other)
    assert "nope" in one_line_detail(refused, 422)
    assert set(hub.store.fs.find(f"{hub.store.root}/uploads")) == uploads_before
    both = server.post_file(f"/api/dataruns?train_path={POLLUTION}", data)
    assert "not both" in one_line_detail(both, 422)


def test_uploads_over_the_limit_are_refused_with_413(finished, hub):
    data = Path(POLLUTION).read_bytes()
    before = len(hub.dataruns())
    config = DashboardConfig(finished.settings, max_upload_bytes=1000)
    with LiveServer(config) as small:
        refused = small.post_file("/api/dataruns?budget=2", data)
        assert "upload too large" in one_line_detail(refused, 413)
        rows = pd.read_csv(POLLUTION).drop(columns=["class"]).to_dict(orient="records")
        refused = small.post_json("/api/predict", {"classifier_id": 1, "rows": rows})
        assert "upload too large" in one_line_detail(refused, 413)
    assert len(hub.dataruns()) == before


def test_artifacts_on_s3(s3_root: str, tmp_path: Path):
    """Metrics, held-out predictions and models read from S3 (moto), and uploads kept there."""
    on_s3 = finished_datarun(f"sqlite:///{tmp_path / 'atm.db'}", tmp_path, 3, s3_root)
    hub = on_s3.hub()
    best = complete_ids_best_first(hub, on_s3.datarun_id)[0]
    with LiveServer(DashboardConfig(on_s3.settings)) as live:
        view = live.get(f"/api/classifiers/{best}/view").json()
        assert view["classifier"]["model_location"].startswith(s3_root)
        assert len(view["metrics"]) == 6 and view["notes"] == []
        assert sum(map(sum, view["figures"]["confusion"]["data"][0]["z"])) == 18
        model = live.get(f"/api/classifiers/{best}/model")
        stored = hub.get_classifier(best)
        assert hashlib.sha256(model.body).hexdigest() == stored.final_model_sha256
        lines = Path(POLLUTION).read_bytes().splitlines(keepends=True)
        created = live.post_file(
            "/api/dataruns?methods=dt&budget=2&filename=s3.csv", b"".join(lines[:-3])
        )
        assert created.status == 201, created.body
        dataset = hub.get_dataset(hub.get_datarun(created.json()["datarun_ids"][0]).dataset_id)
        assert dataset.train_path.startswith(f"{s3_root}/uploads/")
        assert dataset.train_path.endswith("/s3.csv")
    hub.close()


# -- predicting -------------------------------------------------------------------------------
def test_predict_with_a_classifier_or_the_ensemble(server, finished, hub):
    frame = pd.read_csv(POLLUTION).drop(columns=["Unnamed: 0", "class"], errors="ignore").head(7)
    best = complete_ids_best_first(hub, finished.datarun_id)[0]
    expected = hub.load_model(best).predict(frame).tolist()
    rows = frame.to_dict(orient="records")
    answer = server.post_json("/api/predict", {"classifier_id": best, "rows": rows}).json()
    assert answer["predictions"] == expected and answer["classes"] == [0, 1]
    assert len(answer["probabilities"]) == 7

    csv = frame.to_csv(index=False).encode()
    by_file = server.post_file(f"/api/predict?classifier_id={best}", csv).json()
    assert by_file["predictions"] == expected

    blend = hub.load_ensemble(finished.datarun_id)
    answer = server.post_file(f"/api/predict?ensemble={finished.datarun_id}", csv).json()
    assert answer["predictions"] == blend.predict(frame).tolist()
    assert answer["probabilities"][0] == pytest.approx(blend.predict_proba(frame)[0], abs=1e-6)

    missing = server.post_json("/api/predict", {"classifier_id": best, "rows": [{"x": 1}]})
    assert "lacks feature columns the classifier was trained on" in one_line_detail(missing, 422)
    both = server.post_json("/api/predict", {"classifier_id": best, "ensemble": 1, "rows": rows})
    assert "exactly one" in one_line_detail(both, 422)
    assert "classifier" in one_line_detail(
        server.post_json("/api/predict", {"classifier_id": 999, "rows": rows}), 404
    )
    pickle_bytes = io.BytesIO(hub.model_bytes(best)).getvalue()
    refused = server.post_file("/api/predict", pickle_bytes, "application/x-python-pickle")
    assert "unsupported content type" in one_line_detail(refused, 415)
    as_file = server.post_file(
        f"/api/predict?classifier_id={best}", pickle_bytes, "application/octet-stream"
    )
    assert "cannot parse" in one_line_detail(as_file, 422)  # parsed as data, never unpickled


# -- safety -----------------------------------------------------------------------------------
def test_read_only_refuses_every_post(finished, hub):
    before = count_classifiers(hub), len(hub.dataruns())
    with LiveServer(DashboardConfig(finished.settings, read_only=True)) as live:
        enter = live.post_json("/api/dataruns", {"train_path": POLLUTION, "budget": 2})
        assert "read-only" in one_line_detail(enter, 403)
        predict = live.post_json("/api/predict", {"classifier_id": 1, "rows": [{"a": 1}]})
        assert "read-only" in one_line_detail(predict, 403)
        assert live.get("/api/dataruns").status == 200
        page = live.get("/")
        assert page.status == 200 and 'id="enter-form"' not in page.text
    assert (count_classifiers(hub), len(hub.dataruns())) == before


def test_token_is_needed_by_every_page_and_api_call(finished):
    with LiveServer(DashboardConfig(finished.settings, token=TOKEN)) as live:
        for path in (
            "/api/dataruns",
            "/",
            f"/dataruns/{finished.datarun_id}",
            "/docs",
            "/openapi.json",
            "/static/plotly.min.js",
            "/static/app/dashboard.js",
        ):
            refused = live.get(path)
            assert refused.status == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in refused.text
        assert "ATM_DASHBOARD_TOKEN" in one_line_detail(live.get("/api/dataruns"), 401)
        wrong = "Bearer wrong-token-wrong-token"
        assert live.get("/api/dataruns", Authorization=wrong).status == 401
        assert live.get("/api/dataruns", Authorization=f"Bearer {TOKEN}").status == 200
        assert live.get(f"/api/dataruns?token={TOKEN}").status == 200

        opened = live.get(f"/dataruns/{finished.datarun_id}?token={TOKEN}&x=1")
        assert opened.status == 303
        assert opened.headers["location"] == f"/dataruns/{finished.datarun_id}?x=1"
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        session = cookie.split(";")[0]
        assert live.get("/", Cookie=session).status == 200
        assert live.get("/static/plotly.min.js", Cookie=session).status == 200
        assert live.get("/", Cookie="atm_dashboard_token=nope").status == 401
        posted = live.post_json(
            "/api/predict",
            {"ensemble": finished.datarun_id, "rows": []},
            Authorization=f"Bearer {TOKEN}",
        )
        assert "rows is empty" in one_line_detail(posted, 422)


def test_a_loopback_dashboard_answers_only_loopback_host_names(server):
    for host in ("evil.example", "evil.example:80", "10.0.0.1"):
        refused = server.get("/api/dataruns", Host=host)
        assert "loopback" in one_line_detail(refused, 400), host
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]:80"):
        assert server.get("/api/dataruns", Host=host).status == 200, host


def test_no_answer_shows_the_database_url_or_password(server, finished, hub):
    url = make_url(finished.settings.database_url)
    secrets = [finished.settings.database_url, url.render_as_string(hide_password=False)]
    if url.password:
        secrets.append(f":{url.password}@")
    best = complete_ids_best_first(hub, finished.datarun_id)[0]
    dataset_id = hub.get_datarun(finished.datarun_id).dataset_id
    paths = [
        "/",
        f"/dataruns/{finished.datarun_id}",
        f"/classifiers/{best}",
        f"/datasets/{dataset_id}",
        f"/dataruns/{finished.datarun_id}/report",
        "/openapi.json",
        "/api/dataruns",
        f"/api/dataruns/{finished.datarun_id}/view",
        f"/api/classifiers/{best}/view",
        f"/api/datasets/{dataset_id}/view",
        "/api/datasets",
        "/api/ensembles",
    ]
    for path in paths:
        answer = server.get(path)
        assert answer.status == 200, path
        for secret in secrets:
            assert secret not in answer.text, (path, secret)


def test_classifiers_with_lost_files_leave_the_rankings(tmp_path: Path):
    """One ranking for `atm leaderboard` and the dashboard: files `atm verify` found lost."""
    run = finished_datarun(f"sqlite:///{tmp_path / 'atm.db'}", tmp_path, 4)
    hub = run.hub()
    best, *rest = complete_ids_best_first(hub, run.datarun_id)
    with hub.transaction() as session:
        session.get(Classifier, best).files_lost_at = utcnow()
    with LiveServer(DashboardConfig(run.settings)) as live:
        board = live.get(f"/api/dataruns/{run.datarun_id}/leaderboard").json()
        assert [row["classifier_id"] for row in board["items"]] == rest
        assert [row["classifier_id"] for row in board["items"]] == [
            row["classifier_id"] for row in hub.leaderboard_rows(run.datarun_id)
        ]
        summary = live.get(f"/api/dataruns/{run.datarun_id}").json()
        assert summary["best_classifier_id"] == rest[0] and summary["files_lost"] == 1
        view = live.get(f"/api/classifiers/{best}/view").json()
        assert view["classifier"]["files_lost_at"] and "atm verify" in view["notes"][0]
    hub.close()
