"""Many `atm worker` processes on one datarun: throughput, bookkeeping time, lock waits.

    .venv/bin/python benchmarks/workers_throughput.py --workers 4 --budget 200 \
        --database mariadb --store s3

Sets up what it needs: a fresh database on the machine's MariaDB/PostgreSQL (account
atm_test, see infra/test-services.sh) or a SQLite file, and moto's S3 server on loopback or a
local folder. Each worker appends per-classifier timings (``atm worker --stats``); the report
splits a classifier's time into fitting and bookkeeping (proposal, the locked reservation,
reading the rows, storing the artifacts, recording the result).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVERS = {
    "mariadb": "mysql+mysqldb://atm_test:atm_test@127.0.0.1:3306",
    "postgresql": "postgresql+psycopg://atm_test:atm_test@127.0.0.1:5432",
}
PHASES = ("propose", "reserve", "load", "fit", "store", "record")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(kind: str, folder: Path) -> tuple[str, callable]:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'atm.db'}", lambda: None
    name = f"atm_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        SERVERS[kind] + ("/postgres" if kind == "postgresql" else ""), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as connection:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))

    return f"{SERVERS[kind]}/{name}", drop


def start_moto(folder: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=(folder / "moto.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    ).create_bucket(Bucket="bench")
    return process, env


def as_time(value):
    """SQLite hands back timestamps as text."""
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) else value


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument(
        "--database", choices=["sqlite", "mariadb", "postgresql"], default="mariadb"
    )
    parser.add_argument("--store", choices=["local", "s3"], default="s3")
    parser.add_argument("--methods", nargs="+", default=["logreg", "dt", "knn"])
    parser.add_argument("--dataset", default=str(ROOT / "atm_core/demo_data/pollution_1.csv"))
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()
    console = Console()

    folder = Path(tempfile.mkdtemp(prefix="atm-bench-"))
    url, drop_database = database_url(args.database, folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATM_", "PREFECT_"))}
    moto = None
    if args.store == "s3":
        moto, aws = start_moto(folder)
        env.update(aws)
        artifact_root = "s3://bench/artifacts"
    else:
        artifact_root = str(folder / "artifacts")
    env.update(ATM_DATABASE_URL=url, ATM_ARTIFACT_ROOT=artifact_root, ATM_POLL_SECONDS="0.2")
    try:
        subprocess.run(
            [
                str(BIN / "atm"),
                "enter_data",
                "--train-path",
                args.dataset,
                "--methods",
                *args.methods,
                "--budget",
                str(args.budget),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        stats = [folder / f"stats-{i}.jsonl" for i in range(args.workers)]
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [str(BIN / "atm"), "worker", "--quiet", "--stats", str(path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"w{i}.err").open("wb"),
            )
            for i, path in enumerate(stats)
        ]
        codes = [w.wait() for w in workers]
        wall = time.perf_counter() - started
        records = [
            json.loads(line)
            for path in stats
            if path.exists()
            for line in path.read_text().splitlines()
        ]
        engine = create_engine(url)
        with engine.connect() as connection:
            rows = dict(
                connection.execute(
                    text("SELECT status, COUNT(*) FROM classifiers GROUP BY status")
                ).all()
            )
            first_end, first_start = connection.execute(
                text("SELECT MIN(end_time), MIN(start_time) FROM classifiers")
            ).one()
        engine.dispose()
    finally:
        if moto is not None:
            moto.terminate()
        drop_database()

    per_phase = {p: [r["timings"].get(p, 0.0) for r in records] for p in PHASES}
    bookkeeping = [r["bookkeeping_seconds"] for r in records]
    figures = {
        "workers": args.workers,
        "budget": args.budget,
        "database": args.database,
        "store": args.store,
        "exit_codes": codes,
        "rows": rows,
        "wall_seconds": wall,
        "classifiers_per_second": len(records) / wall,
        "bookkeeping_ms_mean": 1000 * statistics.mean(bookkeeping),
        "bookkeeping_ms_p95": 1000 * percentile(bookkeeping, 0.95),
        "phase_ms_mean": {p: 1000 * statistics.mean(v) for p, v in per_phase.items()},
        "reserve_ms_p95": 1000 * percentile(per_phase["reserve"], 0.95),
        "reserve_ms_max": 1000 * max(per_phase["reserve"]),
        "first_classifier_seconds": (as_time(first_end) - as_time(first_start)).total_seconds(),
    }
    table = Table(
        title=f"{args.workers} workers x {args.budget} classifiers ({args.database} + {args.store})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("classifier rows by status", str(rows))
    table.add_row("wall time", f"{wall:.1f} s")
    table.add_row("throughput", f"{figures['classifiers_per_second']:.2f} classifiers/s")
    table.add_row(
        "bookkeeping per classifier (mean / p95)",
        f"{figures['bookkeeping_ms_mean']:.1f} / {figures['bookkeeping_ms_p95']:.1f} ms",
    )
    for phase in PHASES:
        table.add_row(f"  {phase} (mean)", f"{figures['phase_ms_mean'][phase]:.1f} ms")
    table.add_row(
        "locked reservation (p95 / max): lock waits",
        f"{figures['reserve_ms_p95']:.1f} / {figures['reserve_ms_max']:.1f} ms",
    )
    console.print(table)
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
