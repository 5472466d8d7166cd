"""How fast the reading commands answer: ``atm --help``, ``status``, ``leaderboard``, ``methods``
as whole processes on a hub with many classifiers, against the floor of a Python process that
imports SQLAlchemy and rich.

    .venv/bin/python benchmarks/cli_speed.py                   # 1,000 classifiers, 7 runs each
    .venv/bin/python benchmarks/cli_speed.py --classifiers 5000 --runs 11
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/cli_speed.py  # another version

The hub (SQLite, in a temporary folder) is filled through the ORM of the code being measured:
one dataset, four dataruns, the classifiers spread over them with scores. Each command runs as
``python -m atm_core.cli ...`` (so ``PYTHONPATH`` picks the version); the median wall time is
reported, and the time of the queries themselves (the command's work in-process, imports
excluded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

COMMANDS = {
    "atm --help": ["--help"],
    "atm status": ["status"],
    "atm leaderboard 1": ["leaderboard", "1"],
    "atm methods": ["methods"],
}
FLOOR = "import sqlalchemy, sqlalchemy.orm, rich.console, rich.table"


def fill(url: str, root: str, classifiers: int) -> None:
    """A hub with ``classifiers`` complete classifiers over four dataruns."""
    import random

    from atm_core.dataruns import DatarunRequest, enter_data
    from atm_core.modelhub import ModelHub
    from atm_core.modelhub.models import Classifier, ClassifierStatus, utcnow

    hub = ModelHub(url, artifact_root=root)
    demo = Path(__file__).resolve().parents[1] / "atm_core" / "demo_data" / "pollution_1.csv"
    dataruns = [
        enter_data(
            hub, DatarunRequest(str(demo), methods=["logreg", "dt", "knn"], seed=seed)
        ).dataruns[0]
        for seed in range(4)
    ]
    rng = random.Random(0)
    with hub.transaction() as session:
        for index in range(classifiers):
            datarun = dataruns[index % len(dataruns)]
            partitions = hub.hyperpartitions(datarun.id)
            partition = partitions[index % len(partitions)]
            row = Classifier(
                datarun_id=datarun.id,
                hyperpartition_id=partition.id,
                host="bench",
                hyperparameters_values={"C": rng.random(), "index": index},
                config_key=f"{index:064d}",
                start_time=utcnow(),
                end_time=utcnow(),
                status=ClassifierStatus.COMPLETE,
                cv_judgment_metric=rng.random(),
                cv_judgment_metric_stdev=rng.random() / 10,
                test_judgment_metric=rng.random(),
                model_location=f"{root}/model-{index}.pkl",
                model_sha256="0" * 64,
                metrics_location=f"{root}/metrics-{index}.parquet",
            )
            if hasattr(Classifier, "method"):
                row.method = partition.method
            session.add(row)
    hub.close()


def timed(argv: list[str], env: dict[str, str], runs: int, cwd: str) -> float:
    """Median wall time of ``argv`` (run from ``cwd``: ``python -m`` imports from the working
    folder first, which must not be a checkout)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def in_process(args: list[str], env: dict[str, str], cwd: str) -> float:
    """The command's own work (queries, rendering), its imports done beforehand."""
    code = (
        "import io, contextlib, time, sys\n"
        "from atm_core.cli import main\n"
        "import atm_core.console, atm_core.modelhub\n"
        f"argv = {args!r}\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(argv)\n"  # warm: the hub's first connection and the first query
        "    started = time.perf_counter()\n"
        "    for _ in range(5):\n"
        "        main(argv)\n"
        "print((time.perf_counter() - started) / 5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifiers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        url, root = f"sqlite:///{folder}/atm.db", f"{folder}/artifacts"
        fill(url, root, args.classifiers)
        env = {**os.environ, "ATM_DATABASE_URL": url, "ATM_ARTIFACT_ROOT": root, "COLUMNS": "120"}
        table = Table(title=f"Reading commands on a hub of {args.classifiers} classifiers")
        for column in ("command", "process (median s)", "its own work (s)"):
            table.add_column(column, justify="left" if column == "command" else "right")
        floor = timed([sys.executable, "-c", FLOOR], env, args.runs, folder)
        table.add_row("python + SQLAlchemy + rich (the floor)", f"{floor:.3f}", "-")
        for name, argv in COMMANDS.items():
            whole = timed([sys.executable, "-m", "atm_core.cli", *argv], env, args.runs, folder)
            own = in_process(argv, env, folder) if argv != ["--help"] else float("nan")
            table.add_row(name, f"{whole:.3f}", "-" if own != own else f"{own:.3f}")
        console.print(table)
        where = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1])
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        console.print(f"code: {where} (HEAD {head}); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
