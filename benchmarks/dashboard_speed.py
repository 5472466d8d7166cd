"""How fast the dashboard answers on a datarun of 5,000 classifiers (target: < 1 s of server
time for its page and for each API call).

    .venv/bin/python benchmarks/dashboard_speed.py                      # SQLite in a temp folder
    .venv/bin/python benchmarks/dashboard_speed.py --database-url mysql://user:pw@127.0.0.1/db
    .venv/bin/python benchmarks/dashboard_speed.py --classifiers 20000 --repeats 9 --no-browser

The datarun is the quickstart's dataset entered as usual (``enter_data``: logreg, dt, knn,
svm, rf and mlp: 96 hyperpartitions), then 5,000 classifier rows inserted through the ORM with
realistic values: scores per method, fit times from a log-normal, a few percent errored with
tracebacks of a handful of kinds, and for the 20 best a stored model, metrics and held-out
predictions (as a worker stores them), and an ensemble of five of them.

The dashboard runs on a real uvicorn server on loopback. Each request is timed by the server
(its ``Server-Timing`` header: from the request's arrival to the response's first byte, which
for these non-streaming answers includes building the whole body) and by the client (wall
time, with HTTP on loopback); the table shows medians and maxima over ``--repeats``. With
chromium at /usr/bin/chromium, it also times a browser from opening the datarun page to all
its plots drawn (``--no-browser`` skips that).
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atm_core.artifacts import serialize_model  # noqa: E402
from atm_core.dashboard.app import DashboardConfig, create_app  # noqa: E402
from atm_core.dataruns import enter_data  # noqa: E402
from atm_core.modelhub import ModelHub  # noqa: E402
from atm_core.modelhub.models import (  # noqa: E402
    Classifier,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    Ensemble,
    ErrorKind,
    Hyperpartition,
    utcnow,
)
from atm_core.options import DatarunRequest  # noqa: E402
from atm_core.settings import load_settings  # noqa: E402

POLLUTION = REPO / "atm_core" / "demo_data" / "pollution_1.csv"
METHODS = ["logreg", "dt", "knn", "svm", "rf", "mlp"]
SCORES = {  # mean and spread of the cv f1 of each method's classifiers
    "logreg": (0.72, 0.05), "dt": (0.64, 0.08), "knn": (0.70, 0.05),
    "svm": (0.71, 0.07), "rf": (0.75, 0.04), "mlp": (0.66, 0.10),
}  # fmt: skip
ERRORS = [
    "ValueError: Expected n_neighbors <= n_samples_fit, but n_neighbors = {n}, n_samples_fit = 33",
    "time limit: stopped after {n} s",
    "ConvergenceWarning: lbfgs failed to converge after {n} iterations",
    "MemoryError: Unable to allocate {n} MiB for an array",
]
BEST_WITH_FILES = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_datarun(hub: ModelHub, classifiers: int, seed: int = 0) -> int:
    """A datarun entered as usual, then ``classifiers`` rows inserted through the ORM."""
    rng = random.Random(seed)
    entered = enter_data(hub, DatarunRequest(str(POLLUTION), methods=METHODS, budget=classifiers))
    datarun_id = entered.dataruns[0].id
    partitions = [(hp.id, hp.method) for hp in hub.hyperpartitions(datarun_id)]
    started = utcnow() - timedelta(hours=3)
    clock = started
    rows = []
    for index in range(classifiers):
        hp_id, method = rng.choice(partitions)
        seconds = rng.lognormvariate(-0.5, 1.0)
        clock += timedelta(seconds=rng.uniform(0.5, 3.0))
        mean, spread = SCORES[method]
        cv = min(0.99, max(0.0, rng.gauss(mean, spread)))
        errored = rng.random() < 0.05
        row = Classifier(
            datarun_id=datarun_id,
            hyperpartition_id=hp_id,
            method=method,
            host="bench",
            hyperparameters_values={
                "C": round(10 ** rng.uniform(-3, 3), 5),
                "tol": round(10 ** rng.uniform(-5, -2), 7),
                "max_iter": rng.choice([100, 500, 1000]),
                "_scale": rng.random() < 0.5,
            },
            config_key=f"{index:064x}",
            start_time=clock,
            end_time=clock + timedelta(seconds=seconds),
            attempts=1,
        )
        if errored:
            message = rng.choice(ERRORS).format(n=rng.randint(2, 900))
            row.status = ClassifierStatus.ERRORED
            row.error_kind = ErrorKind.MODEL
            row.error_message = (
                "Traceback (most recent call last):\n"
                + ('  File "sklearn/base.py", line 1365, in wrapper\n' * 12)
                + message
            )
        else:
            row.status = ClassifierStatus.COMPLETE
            row.cv_judgment_metric = cv
            row.cv_judgment_metric_stdev = abs(rng.gauss(0.08, 0.03))
            row.test_judgment_metric = min(1.0, max(0.0, cv + rng.gauss(0, 0.05)))
        rows.append(row)
    with hub.transaction() as session:
        session.add_all(rows)
        datarun = session.get(Datarun, datarun_id)
        datarun.status = DatarunStatus.COMPLETE
        datarun.start_time, datarun.end_time = started, clock
    store_best_files(hub, datarun_id)
    return datarun_id


def store_best_files(hub: ModelHub, datarun_id: int) -> None:
    """What a worker stores for the best classifiers: a model, metrics, held-out predictions;
    and an ensemble of the best five."""
    from sklearn.tree import DecisionTreeClassifier

    frame = pd.read_csv(POLLUTION).drop(columns=["Unnamed: 0"], errors="ignore")
    X, y = frame.drop(columns=["class"]), frame["class"]
    blob = serialize_model(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y))
    rng = np.random.default_rng(0)
    with hub.transaction() as session:
        best = (
            session.query(Classifier)
            .filter(
                Classifier.datarun_id == datarun_id,
                Classifier.status == ClassifierStatus.COMPLETE,
            )
            .order_by(Classifier.cv_judgment_metric.desc(), Classifier.id)
            .limit(BEST_WITH_FILES)
            .all()
        )
        for classifier in best:
            metrics = pd.DataFrame(
                [{"split": "cv", "fold": k, "f1": classifier.cv_judgment_metric,
                  "fit_seconds": 0.1, "predict_seconds": 0.01} for k in range(5)]
                + [{"split": "test", "fold": -1, "f1": classifier.test_judgment_metric,
                    "fit_seconds": 0.1, "predict_seconds": 0.01}]
            )  # fmt: skip
            truth = rng.integers(0, 2, 60)
            p1 = np.clip(truth * 0.6 + rng.uniform(0, 0.4, 60), 0, 1).astype(np.float32)
            predictions = pd.DataFrame(
                {
                    "split": ["cv"] * 42 + ["test"] * 18,
                    "row": np.r_[np.arange(42), np.arange(18)].astype(np.int32),
                    "fold": np.r_[np.arange(42) % 5, np.full(18, -1)].astype(np.int8),
                    "truth": truth.astype(np.int16),
                    "p0": 1 - p1,
                    "p1": p1,
                }
            )
            prefix = hub.store.classifier_prefix(datarun_id, classifier.id, 1)
            files = hub.store.save_classifier_files(prefix, blob, metrics, predictions)
            classifier.model_location = files.model.location
            classifier.model_sha256 = files.model.sha256
            classifier.metrics_location = files.metrics_location
            classifier.predictions_location = files.predictions_location
        session.add(
            Ensemble(
                datarun_id=datarun_id,
                members=[[c.id, 2 if i == 0 else 1] for i, c in enumerate(best[:5])],
                cv_judgment_metric=best[0].cv_judgment_metric + 0.01,
                test_judgment_metric=best[0].test_judgment_metric,
            )
        )


class Server:
    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[float, float, int]:
        """(server ms, wall ms, bytes) of one request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Content-Type": "text/csv"} if body is not None else {}
        begun = time.perf_counter()
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        wall = (time.perf_counter() - begun) * 1000
        connection.close()
        if answer.status >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:200]!r}")
        server = float(answer.getheader("server-timing").split("dur=")[1])
        return server, wall, len(data)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()


def browser_draw_seconds(url: str, repeats: int) -> list[float] | None:
    """Seconds from opening the datarun page in chromium to its five plots drawn."""
    if not Path("/usr/bin/chromium").exists():
        return None
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    keys = ["best_by_time", "best_by_classifier", "method_scores", "score_vs_seconds",
            "hyperpartitions"]  # fmt: skip
    timings = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            begun = time.perf_counter()
            page.goto(url)
            for key in keys:
                page.wait_for_selector(f"#plot-{key}[data-drawn='1']", timeout=60_000)
            timings.append(time.perf_counter() - begun)
            page.close()
        browser.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classifiers", type=int, default=5000)
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    console = Console(width=110)
    with tempfile.TemporaryDirectory(prefix="atm-dashboard-bench-") as folder:
        settings = load_settings(
            database_url=args.database_url or f"sqlite:///{folder}/atm.db",
            artifact_root=f"{folder}/artifacts",
        )
        hub = ModelHub(settings=settings)
        with console.status(f"building a datarun of {args.classifiers:,} classifiers"):
            begun = time.perf_counter()
            datarun_id = build_datarun(hub, args.classifiers)
            built = time.perf_counter() - begun
        with hub.transaction() as session:
            best = (
                session.query(Classifier.id)
                .filter(Classifier.datarun_id == datarun_id, Classifier.model_location.isnot(None))
                .order_by(Classifier.cv_judgment_metric.desc())
                .first()[0]
            )
            partitions = session.query(Hyperpartition).filter_by(datarun_id=datarun_id).count()
        dataset_id = hub.get_datarun(datarun_id).dataset_id
        console.print(
            f"datarun {datarun_id}: {args.classifiers:,} classifiers over {partitions} "
            f"hyperpartitions, built in {built:.1f} s ({hub!r})",
            highlight=False,
        )
        rows = pd.read_csv(POLLUTION).drop(columns=["class"]).to_csv(index=False).encode()
        calls = [
            ("datarun page (HTML, all plots' data)", "GET", f"/dataruns/{datarun_id}", None),
            ("dataruns page", "GET", "/", None),
            ("classifier page", "GET", f"/classifiers/{best}", None),
            ("dataset page", "GET", f"/datasets/{dataset_id}", None),
            ("GET /api/dataruns", "GET", "/api/dataruns", None),
            ("GET /api/dataruns/{id}", "GET", f"/api/dataruns/{datarun_id}", None),
            ("GET /api/dataruns/{id}/view", "GET", f"/api/dataruns/{datarun_id}/view", None),
            ("GET .../hyperpartitions", "GET", f"/api/dataruns/{datarun_id}/hyperpartitions",
             None),
            ("GET .../leaderboard?limit=1000", "GET",
             f"/api/dataruns/{datarun_id}/leaderboard?limit=1000", None),
            ("GET .../classifiers?limit=1000", "GET",
             f"/api/dataruns/{datarun_id}/classifiers?limit=1000", None),
            ("GET .../ensemble", "GET", f"/api/dataruns/{datarun_id}/ensemble", None),
            ("GET /api/ensembles", "GET", "/api/ensembles", None),
            ("GET /api/classifiers/{id}", "GET", f"/api/classifiers/{best}", None),
            ("GET /api/classifiers/{id}/view", "GET", f"/api/classifiers/{best}/view", None),
            ("GET /api/classifiers/{id}/model", "GET", f"/api/classifiers/{best}/model", None),
            ("GET /api/datasets", "GET", "/api/datasets", None),
            ("POST /api/predict (60 CSV rows)", "POST", f"/api/predict?classifier_id={best}",
             rows),
            ("report (HTML, plotly.js inlined)", "GET", f"/dataruns/{datarun_id}/report", None),
        ]  # fmt: skip
        server = Server(create_app(DashboardConfig(settings), hub))
        table = Table(
            title=f"dashboard over {args.classifiers:,} classifiers, median of {args.repeats}",
            box=box.SIMPLE_HEAVY,
        )
        for column in ("request", "bytes", "server ms", "server max", "wall ms", "< 1 s"):
            table.add_column(column, justify="left" if column == "request" else "right")
        worst = 0.0
        try:
            for name, method, path, body in calls:
                server.call(method, path, body)  # warm: the first call imports and caches
                measured = [server.call(method, path, body) for _ in range(args.repeats)]
                server_ms = [m[0] for m in measured]
                worst = max(worst, max(server_ms))
                table.add_row(
                    name,
                    f"{measured[0][2]:,}",
                    f"{statistics.median(server_ms):.1f}",
                    f"{max(server_ms):.1f}",
                    f"{statistics.median(m[1] for m in measured):.1f}",
                    "yes" if max(server_ms) < 1000 else "NO",
                )
            console.print(table)
            console.print(f"slowest answer: {worst:.0f} ms of server time", highlight=False)
            if not args.no_browser:
                drawn = browser_draw_seconds(
                    f"http://127.0.0.1:{server.port}/dataruns/{datarun_id}", args.repeats
                )
                if drawn:
                    console.print(
                        f"chromium: datarun page opened to all 5 plots drawn in "
                        f"{statistics.median(drawn):.2f} s (median of {len(drawn)}, max "
                        f"{max(drawn):.2f} s)",
                        highlight=False,
                    )
        finally:
            server.stop()
            hub.close()


if __name__ == "__main__":
    main()
