"""infra/stack.sh on real processes: `up` records the server, worker and moto processes
themselves, `up | tee` returns, `status` reports them, `down` stops every one of them and what
they started, and never signals a process it did not start.

Each test has a state folder of its own (ATM_INFRA_STATE: PID files, logs, Prefect home) and free
ports, so a developer's .infra/ and stack are never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

BIN = REPO / ".venv" / "bin"
NAMES = ("server", "worker", "s3")


def stack_env(state: Path, **extra: str) -> dict[str, str]:
    """This environment without PREFECT_*, ATM_* or AWS_* variables, plus the stack's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ATM_", "AWS_"))}
    env.update(
        ATM_INFRA_STATE=str(state),
        ATM_PREFECT_PORT=str(free_port()),
        ATM_S3_PORT=str(free_port()),
        ATM_DATABASE_URL=f"sqlite:///{state / 'atm.db'}",
        ATM_ARTIFACT_ROOT=str(state / "artifacts"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    env.update(extra)
    return env


def shell(env: dict[str, str], command: str, timeout: float, check: bool = True) -> str:
    """What ``bash -o pipefail -c command`` prints, run from the checkout in a session of its
    own. Its output goes to a file, not a pipe of ours: a command that does not return in time
    fails the test (and its session is killed) instead of hanging it."""
    out = Path(env["ATM_INFRA_STATE"]).parent / f"shell-{time.monotonic_ns()}.log"
    with out.open("w") as log:
        process = subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"`{command}` had not returned after {timeout} s:\n{out.read_text()}")
    text = out.read_text()
    assert code == 0 or not check, f"`{command}` exited {code}:\n{text}"
    return text


def stat(pid: int) -> list[str] | None:
    """Fields 3... of /proc/PID/stat (state, ppid, pgrp, session, ...); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else fields  # a zombie has ended


def start_time(pid: int) -> str | None:
    fields = stat(pid)
    return fields[19] if fields else None


def runs(pid: int, started: str) -> bool:
    """PID is still the process that started at ``started`` (not a reuse of its number)."""
    return start_time(pid) == started


def argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def family(leader: int) -> dict[int, str]:
    """Every live process in LEADER's session and their descendants, with start times."""
    parents, sessions = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat(int(entry.name))):
            parents[int(entry.name)], sessions[int(entry.name)] = int(fields[1]), int(fields[3])
    members = {pid for pid, session in sessions.items() if session == leader or pid == leader}
    grown = True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in members} - members
        members |= more
        grown = bool(more)
    return {pid: started for pid in members if (started := start_time(pid))}


def recorded(state: Path, name: str) -> tuple[int, str]:
    pid, started = (state / f"{name}.pid").read_text().split()
    return int(pid), started


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # moto answers / with an error: up
    except OSError:
        return False


@pytest.mark.prefect
def test_up_status_down_on_real_processes(tmp_path: Path):
    state = tmp_path / "infra"
    env = stack_env(state)
    port, s3_port = env["ATM_PREFECT_PORT"], env["ATM_S3_PORT"]
    started: dict[int, str] = {}
    try:
        # `up | tee` returns: no process left behind holds the pipe
        for component, timeout in (("s3", 60), ("prefect", 180)):
            copy = tmp_path / f"up-{component}.log"
            out = shell(env, f"infra/stack.sh up {component} | tee {copy}", timeout)
            assert copy.read_text() == out
        assert "prefect worker (pool atm): up (pid" in out

        pids = {name: recorded(state, name) for name in NAMES}
        commands = {
            "server": [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"],
            "worker": [str(BIN / "prefect"), "worker", "start", "--pool", "atm"],
            "s3": [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", s3_port],
        }
        for name, (pid, since) in pids.items():
            # the PID file names the component's own process (not a shell around it), which
            # leads a session of its own and heeds SIGINT (a background job's ignored it)
            assert runs(pid, since), name
            assert argv(pid)[1 : 1 + len(commands[name])] == commands[name], argv(pid)
            fields = stat(pid)
            assert int(fields[2]) == int(fields[3]) == pid, f"{name}: pgrp/session {fields[2:4]}"
            ignored = int(
                Path(f"/proc/{pid}/status").read_text().split("SigIgn:")[1].split()[0], 16
            )
            assert not ignored & (1 << (signal.SIGINT - 1)), f"{name} ignores SIGINT"
            started |= family(pid)
        assert argv(pids["server"][0])[-2:] == ["--port", port]
        # the server streams flow-run logs, for `prefect deployment run --watch`
        environ = Path(f"/proc/{pids['server'][0]}/environ").read_bytes().split(b"\0")
        assert b"PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true" in environ
        assert b"PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true" in environ
        assert answers(f"http://127.0.0.1:{port}/api/health")
        assert answers(f"http://127.0.0.1:{s3_port}")

        status = shell(env, "infra/stack.sh status", 30)
        assert (
            f"prefect server: healthy at http://127.0.0.1:{port} (pid {pids['server'][0]})"
            in status
        )
        assert f"prefect worker: running (pid {pids['worker'][0]})" in status
        assert f"s3: up at http://127.0.0.1:{s3_port} (pid {pids['s3'][0]})" in status

        down = shell(env, "infra/stack.sh down all", 120)
        for name, (pid, _) in pids.items():
            # gracefully, without SIGKILL; a worker in the middle of a poll can outlast
            # SIGTERM's 10 s on a loaded machine and then stops on the SIGINT that follows
            graceful = ("SIGTERM", "SIGINT") if name == "worker" else ("SIGTERM",)
            assert any(f"{name}: stopped (pid {pid} on {sig})" in down for sig in graceful), down
        still = [
            f"{pid}: {' '.join(argv(pid))}" for pid, since in started.items() if runs(pid, since)
        ]
        assert not still, f"left running after down:\n{down}\n" + "\n".join(still)
        assert not list(state.glob("*.pid"))

        status = shell(env, "infra/stack.sh status", 30)
        for line in ("prefect server: down", "prefect worker: down", "s3: down"):
            assert line in status, status
        assert not answers(f"http://127.0.0.1:{port}/api/health")
    finally:
        shell(env, "infra/stack.sh down all", 120, check=False)
        for pid, since in started.items():  # a last resort: never leave a stack behind
            if runs(pid, since):
                os.kill(pid, signal.SIGKILL)


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_down_spares_reused_pids_and_kills_what_ignores_its_signals(tmp_path: Path):
    state = tmp_path / "infra"
    state.mkdir()
    env = stack_env(state, ATM_INFRA_STOP_SECONDS="1")
    bystander = subprocess.Popen(["sleep", "300"])
    # a server that ignores SIGTERM and SIGINT, its child in a session of its own (as a
    # worker's flow runs are)
    stubborn = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, str(BIN / "prefect"), "server", "start"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    child = int(stubborn.stdout.readline())
    child_started = start_time(child)
    # what an older stack.sh recorded for its worker: the shell around it
    legacy = '"$0" -c "import time; time.sleep(300)" "$1" worker start; true'
    shell_around = subprocess.Popen(["bash", "-c", legacy, sys.executable, str(BIN / "prefect")])
    try:
        children = Path(f"/proc/{shell_around.pid}/task/{shell_around.pid}/children")
        deadline = time.monotonic() + 10
        while not (worker := children.read_text().split()) and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = int(worker[0])
        # a PID file whose PID now names another process (a different start time)
        since = start_time(bystander.pid)
        (state / "s3.pid").write_text(f"{bystander.pid} {int(since) - 1}\n")
        (state / "server.pid").write_text(f"{stubborn.pid} {start_time(stubborn.pid)}\n")
        (state / "worker.pid").write_text(f"{shell_around.pid}\n")

        down = shell(env, "infra/stack.sh down all", 60)

        assert bystander.poll() is None, down
        assert f"s3: not running (stale PID file removed: pid {bystander.pid}" in down
        assert (
            f"server: killed (pid {stubborn.pid} outlived SIGTERM, SIGINT; "
            "SIGKILL to 2 process(es))" in down
        ), down
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
        assert not runs(child, child_started)
        assert f"worker: stopped (pid {worker} on SIGTERM)" in down, down
        assert shell_around.wait(timeout=10) == 0
        assert not list(state.glob("*.pid"))

        # an older PID file (no start time) whose PID is now some other program's
        (state / "worker.pid").write_text(f"{bystander.pid}\n")
        down = shell(env, "infra/stack.sh down prefect", 60)
        assert f"worker: not running (stale PID file removed: pid {bystander.pid}" in down
        assert "server: not running" in down
        assert bystander.poll() is None
        assert not list(state.glob("*.pid"))
    finally:
        for process in (bystander, stubborn, shell_around):
            process.kill()
            process.wait()
        if runs(child, child_started):
            os.kill(child, signal.SIGKILL)
