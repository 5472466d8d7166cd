"""The dashboard in a real browser: Debian's chromium driven by playwright (never a downloaded
browser), over a finished demo datarun. It checks what a user looks at — the dataruns table,
the leaderboard, the best-so-far curves (one point per complete classifier), one score
distribution per method, a classifier's confusion matrix — and that a report draws offline.
Screenshots are saved in the test's tmp folder."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from atm_core.dashboard.app import DashboardConfig
from atm_core.dashboard.report import write_report
from atm_core.dataruns import enter_data
from atm_core.driver import Driver
from atm_core.options import DatarunRequest
from tests.dashboard_support import (
    METHODS,
    POLLUTION,
    Finished,
    LiveServer,
    complete_ids_best_first,
    finished_datarun,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.slow  # a real browser; make test-fast leaves it out
PLOTS = ["best_by_time", "best_by_classifier", "method_scores", "score_vs_seconds"]


def ensure_chromium() -> None:
    """Debian's chromium; installed with apt when missing (infra/test-services.sh does too)."""
    if CHROMIUM.exists():
        return
    sudo = [] if shutil.which("sudo") is None else ["sudo"]
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run([*sudo, *command], check=False, capture_output=True, timeout=900)
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium and `apt-get install -y chromium` did not install it")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_chromium()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    folder = tmp_path_factory.mktemp("dashboard-browser")
    return finished_datarun(f"sqlite:///{folder / 'atm.db'}", folder, budget=15)


@pytest.fixture(scope="module")
def server(finished: Finished) -> Iterator[LiveServer]:
    with LiveServer(DashboardConfig(finished.settings)) as live:
        yield live


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], errors


def wait_for_plots(page: Page, keys: list[str]) -> None:
    for key in keys:
        page.wait_for_selector(f"#plot-{key}[data-drawn='1'] .main-svg", timeout=30_000)


def trace_lengths(page: Page, key: str) -> dict[str, int]:
    """Per trace name, how many points the drawn plot holds."""
    return page.evaluate(
        """key => Object.fromEntries(document.getElementById('plot-' + key).data
              .map(t => [t.name, (t.x || t.y).length]))""",
        key,
    )


def test_dataruns_page_lists_the_datarun(page: Page, server: LiveServer, finished, tmp_path):
    page.goto(server.base + "/")
    page.wait_for_selector("#dataruns table tbody tr")
    rows = page.locator("#dataruns table tbody tr")
    assert rows.count() == 1
    text = rows.first.inner_text()
    assert f"#{finished.datarun_id}" in text and "pollution_1" in text and "complete" in text
    assert "15 / 15 classifiers" in text
    assert page.locator("#enter-form").count() == 1
    page.screenshot(path=tmp_path / "dataruns.png", full_page=True)
    assert (tmp_path / "dataruns.png").stat().st_size > 10_000


def test_datarun_page_draws_what_the_modelhub_holds(
    page: Page, server: LiveServer, finished, tmp_path
):
    hub = finished.hub()
    ranked = complete_ids_best_first(hub, finished.datarun_id)
    partitions = {hp.id: hp.method for hp in hub.hyperpartitions(finished.datarun_id)}
    per_method = Counter(
        partitions[c.hyperpartition_id] for c in hub.classifiers(finished.datarun_id, "complete")
    )
    hub.close()

    page.goto(f"{server.base}/dataruns/{finished.datarun_id}")
    wait_for_plots(page, [*PLOTS, "hyperpartitions"])

    # the leaderboard: every complete classifier (15 < 20 rows), best first
    rows = page.locator("#leaderboard table tbody tr")
    assert rows.count() == len(ranked)
    links = page.locator("#leaderboard table tbody tr td:nth-child(2)").all_inner_texts()
    assert links == [f"#{i}" for i in ranked]

    # best so far: one point per complete classifier on both curves, never decreasing
    assert trace_lengths(page, "best_by_time") == {"best so far": len(ranked)}
    by_count = trace_lengths(page, "best_by_classifier")
    assert by_count == {"each classifier": len(ranked), "best so far": len(ranked)}
    best = page.evaluate("document.getElementById('plot-best_by_classifier').data[1].y")
    assert best == sorted(best)
    assert page.locator("#plot-best_by_classifier .scatterlayer .trace").count() == 2

    # one distribution per method, with each method's complete classifiers
    boxes = trace_lengths(page, "method_scores")
    assert {name.split(" ")[0]: n for name, n in boxes.items()} == {
        m: per_method[m] for m in METHODS
    }
    assert page.locator("#plot-method_scores .boxlayer .trace").count() == len(METHODS)

    summary = page.locator("#summary").inner_text()
    assert f"classifier #{ranked[0]}" in summary and "15 / 15 classifiers" in summary
    assert page.locator("#ensemble table tbody tr").count() >= 1
    assert page.locator("#hyperpartitions table tbody tr").count() == len(partitions)

    page.screenshot(path=tmp_path / "datarun.png", full_page=True)
    assert (tmp_path / "datarun.png").stat().st_size > 50_000

    # a click on a point opens that classifier's page
    page.locator(f"#leaderboard a[href='/classifiers/{ranked[0]}']").click()
    wait_for_plots(page, ["confusion", "roc"])
    matrix = page.evaluate("document.getElementById('plot-confusion').data[0].z")
    assert sum(map(sum, matrix)) == 18  # the test part: 30 % of 60 rows
    assert page.locator("#metrics table tbody tr").count() == 6  # 5 folds and the test part
    page.screenshot(path=tmp_path / "classifier.png", full_page=True)


def test_report_draws_offline(browser: Browser, finished: Finished, tmp_path: Path):
    hub = finished.hub()
    report = write_report(hub, finished.datarun_id, tmp_path / "report.html")
    complete = len(complete_ids_best_first(hub, finished.datarun_id))
    hub.close()
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    opened = context.new_page()
    asked: list[str] = []
    opened.on("request", lambda request: asked.append(request.url))
    opened.goto(report.as_uri())
    wait_for_plots(opened, PLOTS)
    assert trace_lengths(opened, "best_by_classifier")["best so far"] == complete
    assert opened.locator("#leaderboard table tbody tr").count() == complete
    assert opened.locator("#leaderboard a").count() == 0  # no links out of a report
    assert [url for url in asked if not url.startswith(("file:", "data:"))] == []
    opened.screenshot(path=tmp_path / "report.png", full_page=True)
    context.close()


def test_datarun_page_follows_a_running_worker(page: Page, server: LiveServer, finished):
    """Opened before any classifier exists, the page fills in as a worker trains them, without
    a reload, and stops polling once the datarun is complete."""
    hub = finished.hub()
    entered = enter_data(hub, DatarunRequest(POLLUTION, methods=["dt"], budget=4))
    datarun_id = entered.dataruns[0].id
    page.goto(f"{server.base}/dataruns/{datarun_id}")
    page.wait_for_selector("#title .badge.pending")
    assert page.locator("#leaderboard table").count() == 0
    worker = threading.Thread(target=Driver(hub, datarun_ids=[datarun_id]).run)
    worker.start()
    try:
        page.wait_for_selector("#title .badge.complete", timeout=120_000)
    finally:
        worker.join()
        hub.close()
    assert page.locator("#leaderboard table tbody tr").count() >= 1
    assert "4 / 4 classifiers" in page.locator("#summary").inner_text()
    assert trace_lengths(page, "best_by_classifier")["best so far"] >= 1
