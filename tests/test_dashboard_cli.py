"""``atm dashboard`` and ``atm report`` as a user runs them (subprocesses), the cheap import
behind ``atm --help``, the dashboard without Prefect, and :func:`dashboard_url`."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from atm_core.dashboard import dashboard_url
from tests.conftest import REPO, free_port, fresh_database, run_python
from tests.dashboard_support import Finished, finished_datarun

ATM = str(Path(sys.executable).parent / "atm")
TOKEN = "another-long-dashboard-token-123"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    folder = tmp_path_factory.mktemp("dashboard-cli")
    return finished_datarun(f"sqlite:///{folder / 'atm.db'}", folder, budget=6)


def env_for(finished: Finished | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATM_", "PREFECT_API"))}
    if finished is not None:
        env["ATM_DATABASE_URL"] = finished.settings.database_url
        env["ATM_ARTIFACT_ROOT"] = finished.settings.artifact_root
    env.update(extra)
    return env


def atm(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ATM, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def wait_for(url: str, process: subprocess.Popen, headers: dict[str, str] | None = None) -> int:
    """The status of the first answer from ``url`` once the server is up."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status
        except urllib.error.HTTPError as refused:
            return refused.code
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"no answer from {url}")


def status_of(port: int, path: str) -> int:
    """The status of a GET, redirects not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_importing_the_commands_stays_cheap():
    loaded = run_python(
        """
        import sys
        import atm_core.dashboard, atm_core.dashboard.cli
        heavy = ("fastapi", "uvicorn", "pandas", "jinja2", "sklearn", "starlette")
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    assert loaded.strip() == "[]"
    shown = atm("--help", env=env_for())
    assert shown.returncode == 0
    assert re.search(r"dashboard\s+serve web pages", shown.stdout)
    assert "report" in shown.stdout


def test_an_open_address_needs_a_long_token():
    refused = atm("dashboard", "--host", "0.0.0.0", "--port", str(free_port()), env=env_for())
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("atm dashboard: error: refusing to listen on 0.0.0.0 without")
    short = atm(
        "dashboard", "--host", "0.0.0.0", env=env_for(ATM_DASHBOARD_TOKEN="short"), timeout=60
    )
    assert short.returncode == 2 and "too short" in short.stderr


@pytest.mark.services  # MariaDB: a database URL with a password
def test_dashboard_on_an_open_address_with_a_token_hides_secrets(tmp_path: Path):
    """On MariaDB (a URL with a password): the startup line masks it, every request needs the
    token, and the log holds neither the password nor the token given as ?token=."""
    port = free_port()
    with fresh_database("mariadb", tmp_path) as url:
        password = make_url(url).password
        env = env_for(ATM_DASHBOARD_TOKEN=TOKEN, ATM_ARTIFACT_ROOT=str(tmp_path / "artifacts"))
        log = (tmp_path / "dashboard.log").open("w+")
        process = subprocess.Popen(
            [ATM, "dashboard", "--host", "0.0.0.0", "--port", str(port), "--database-url", url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_for(f"{base}/api/dataruns", process) == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert wait_for(f"{base}/api/dataruns", process, bearer) == 200
            assert status_of(port, f"/?token={TOKEN}") == 303  # the cookie, then the page
            assert status_of(port, "/") == 401
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        log.seek(0)
        output = log.read()
    assert "ATM dashboard on http://0.0.0.0" in output and "***" in output
    assert f":{password}@" not in output and TOKEN not in output
    assert "GET /api/dataruns 401" in output and "GET /api/dataruns 200" in output


def test_report_is_one_self_contained_file(finished: Finished, tmp_path: Path):
    output = tmp_path / "report.html"
    done = atm("report", str(finished.datarun_id), "--output", str(output), env=env_for(finished))
    assert done.returncode == 0, done.stderr
    assert f"report of datarun {finished.datarun_id} written to {output}" in done.stdout
    html = output.read_text()
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S)  # inlined code aside
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)
    assert '<script src="' not in html and '<link rel="stylesheet"' not in html
    assert 'data-mode="report"' in html and "Plotly" in html
    document = re.search(r'<script type="application/json" id="atm-view">(.*?)</script>', html)
    view = json.loads(document.group(1))
    assert view["live"] is False and view["datarun"]["id"] == finished.datarun_id
    complete = view["datarun"]["classifiers"]["complete"]
    curve = view["figures"]["best_by_classifier"]["data"][1]
    assert curve["name"] == "best so far" and len(curve["x"]) == complete

    missing = atm("report", "99", "--output", str(tmp_path / "x.html"), env=env_for(finished))
    assert missing.returncode == 2
    assert missing.stderr.strip() == "atm report: error: no datarun with id 99 in the ModelHub"
    assert not (tmp_path / "x.html").exists()


BLOCK_PREFECT = """
import sys
class NoPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ModuleNotFoundError("No module named 'prefect' (blocked by the test)")
sys.meta_path.insert(0, NoPrefect())
"""


def test_the_dashboard_works_without_prefect(finished: Finished):
    code = (
        BLOCK_PREFECT
        + f"""
import threading, time, urllib.request
import uvicorn
from atm_core.cli import build_parser
from atm_core.dashboard.app import DashboardConfig, create_app
from atm_core.dashboard.report import report_html
from atm_core.settings import load_settings

settings = load_settings()
build_parser()  # every `atm` command registers, the flows' too, without Prefect
app = create_app(DashboardConfig(settings))
config = uvicorn.Config(app, host="127.0.0.1", port={free_port()}, log_level="error")
server = uvicorn.Server(config)
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
while not server.started:
    time.sleep(0.05)
for path in ("/", "/dataruns/{finished.datarun_id}", "/api/dataruns/{finished.datarun_id}/view"):
    with urllib.request.urlopen(f"http://127.0.0.1:{{server.config.port}}" + path) as answer:
        print(path, answer.status)
print("report", len(report_html(app.state.hub, {finished.datarun_id})) > 100_000)
server.should_exit = True
thread.join()
print("prefect loaded:", any(name.startswith("prefect") for name in sys.modules))
"""
    )
    printed = run_python(code, env=env_for(finished))
    assert printed.splitlines() == [
        "/ 200",
        f"/dataruns/{finished.datarun_id} 200",
        f"/api/dataruns/{finished.datarun_id}/view 200",
        "report True",
        "prefect loaded: False",
    ]


def test_dashboard_url(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ATM_DASHBOARD_URL", raising=False)
    assert dashboard_url(3) is None
    monkeypatch.setenv("ATM_DASHBOARD_URL", "  ")
    assert dashboard_url(3) is None
    monkeypatch.setenv("ATM_DASHBOARD_URL", "http://atm.internal:8000/")
    assert dashboard_url(3) == "http://atm.internal:8000/dataruns/3"


@pytest.fixture(autouse=True)
def _no_dashboard_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ATM_DASHBOARD_TOKEN", raising=False)
    yield
