"""What the dashboard tests share: a finished demo datarun and a real uvicorn server on a
loopback port, spoken to over plain HTTP (http.client: redirects are not followed)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import func, select

from atm_core.dashboard.app import DashboardConfig, create_app
from atm_core.dataruns import enter_data
from atm_core.driver import Driver
from atm_core.modelhub import ModelHub
from atm_core.modelhub.models import Classifier, ClassifierStatus
from atm_core.options import DatarunRequest
from atm_core.settings import Settings
from tests.conftest import DEMO_DATA, free_port, make_settings

POLLUTION = str(DEMO_DATA / "pollution_1.csv")
METHODS = ["logreg", "dt", "knn"]


@dataclass
class Finished:
    """A completed datarun of the quickstart (pollution_1; logreg, dt, knn)."""

    settings: Settings
    datarun_id: int
    folder: Path

    def hub(self) -> ModelHub:
        return ModelHub(settings=self.settings)


def finished_datarun(
    database_url: str, folder: Path, budget: int, artifact_root: str | None = None
) -> Finished:
    settings = make_settings(database_url, folder)
    if artifact_root is not None:
        settings = settings.replace(artifact_root=artifact_root)
    hub = ModelHub(settings=settings)
    try:
        entered = enter_data(hub, DatarunRequest(POLLUTION, methods=METHODS, budget=budget))
        Driver(hub).run()
        return Finished(settings, entered.dataruns[0].id, folder)
    finally:
        hub.close()


def complete_ids_best_first(hub: ModelHub, datarun_id: int) -> list[int]:
    """The datarun's complete classifiers as the leaderboard ranks them (cv score, then id)."""
    with hub.transaction() as session:
        return list(
            session.scalars(
                select(Classifier.id)
                .where(
                    Classifier.datarun_id == datarun_id,
                    Classifier.status == ClassifierStatus.COMPLETE,
                )
                .order_by(Classifier.cv_judgment_metric.desc(), Classifier.id)
            )
        )


def count_classifiers(hub: ModelHub) -> int:
    with hub.transaction() as session:
        return session.scalar(select(func.count(Classifier.id))) or 0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class LiveServer:
    """The dashboard app on a real uvicorn server in a thread, on a free loopback port."""

    def __init__(self, config: DashboardConfig) -> None:
        self.port = free_port()
        self.app = create_app(config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the dashboard server stopped while starting"
            assert time.monotonic() < deadline, "the dashboard server did not start in 30 s"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.app.state.hub.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            connection.close()

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def post_json(self, path: str, data: Any, **headers: str) -> Answer:
        headers = {"Content-Type": "application/json", **headers}
        return self.request("POST", path, json.dumps(data).encode(), headers)

    def post_file(self, path: str, data: bytes, content_type: str = "text/csv") -> Answer:
        return self.request("POST", path, data, {"Content-Type": content_type})
