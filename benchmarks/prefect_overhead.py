"""What Prefect costs per classifier: the same datarun by the plain core worker and by the flow.

    .venv/bin/python benchmarks/prefect_overhead.py --budget 40 --method dt --dataset pollution

(a) the core driver alone: enter_data + ``atm_core.driver.Driver.run``, no Prefect at all;
(b) the ``atm`` flow in embedded mode (no server, no PREFECT_API_URL) with ``n_parallel`` 1 and 2:
ingest, enumerate, one task per classifier, finalize, UI artifacts.

Each run gets a fresh SQLite ModelHub and artifact folder; all runs share one warm process. The
embedded server's start-up is measured on its own (first no-op flow minus a second one) and
excluded from the flow timings, which start once it is up. Overhead per classifier =
(flow time - worker time) / budget; for n_parallel > 1 it is "vs one worker" and may be negative.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parent.parent / "atm_core" / "demo_data"
DATASETS = {"pollution": "pollution_1.csv", "iris": "iris.csv"}


@dataclass
class Timing:
    label: str
    seconds: list[float]
    classifiers: int
    complete: int
    train_seconds: float  # mean ModelHub start->end of one classifier

    @property
    def wall(self) -> float:
        return statistics.median(self.seconds)

    @property
    def per_second(self) -> float:
        return self.classifiers / self.wall


def embedded_prefect(home: Path, verbose: bool) -> None:
    """Embedded mode in a private home, set before Prefect is imported (it reads them once)."""
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if not verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "ERROR"


def fresh_settings(folder: Path, name: str):
    from atm_core.settings import load_settings

    run_folder = folder / name
    run_folder.mkdir(parents=True)
    return load_settings(
        database_url=f"sqlite:///{run_folder / 'atm.db'}",
        artifact_root=str(run_folder / "artifacts"),
        poll_seconds=0.1,
    )


def count(settings) -> tuple[int, int, float]:
    """Classifier rows, complete ones, and their mean training time from the ModelHub."""
    from atm_core.modelhub import ModelHub

    hub = ModelHub(settings=settings)
    try:
        rows = [c for d in hub.dataruns() for c in hub.classifiers(d.id)]
        durations = [
            (c.end_time - c.start_time).total_seconds() for c in rows if c.start_time and c.end_time
        ]
        complete = sum(c.status.value == "complete" for c in rows)
        return len(rows), complete, statistics.fmean(durations) if durations else float("nan")
    finally:
        hub.close()


def run_worker(settings, request) -> float:
    from atm_core.dataruns import enter_data
    from atm_core.driver import Driver
    from atm_core.modelhub import ModelHub

    hub = ModelHub(settings=settings)
    try:
        started = time.perf_counter()
        datarun_id = enter_data(hub, request).dataruns[0].id
        Driver(hub, datarun_ids=[datarun_id]).run()
        return time.perf_counter() - started
    finally:
        hub.close()


def run_flow(settings, request, n_parallel: int) -> float:
    from flows.cli import prepare_environment
    from flows.datarun import datarun

    prepare_environment(settings, verbose=False)  # the flow reads its settings there
    started = time.perf_counter()
    summary = datarun(
        train_path=request.train_path,
        methods=request.methods,
        budget=request.budget,
        n_parallel=n_parallel,
    )
    elapsed = time.perf_counter() - started
    assert summary["status"] == "complete", summary
    return elapsed


def server_start_seconds() -> tuple[float, float]:
    """(embedded server start, one empty flow run): the first no-op flow starts the server."""
    from prefect import flow

    @flow(name="atm-benchmark-noop")
    def noop() -> None:
        return None

    started = time.perf_counter()
    noop()
    first = time.perf_counter() - started
    started = time.perf_counter()
    noop()
    second = time.perf_counter() - started
    return first - second, second


def table(rows: list[Timing], worker: Timing, budget: int) -> str:
    lines = [
        "| runner | wall s | classifiers/s | complete | mean train s | overhead ms/classifier |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        overhead = "—" if row is worker else f"{1000 * (row.wall - worker.wall) / budget:+.0f}"
        lines.append(
            f"| {row.label} | {row.wall:.2f} | {row.per_second:.2f} | "
            f"{row.complete}/{row.classifiers} | {row.train_seconds:.3f} | {overhead} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=40, help="classifiers per datarun")
    parser.add_argument("--method", default="dt", help="a fast method shows Prefect's share")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="pollution")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2], help="flow n_parallel")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (median reported)")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's run logs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="atm-bench-") as scratch:
        folder = Path(scratch)
        embedded_prefect(folder / "prefect-home", args.verbose)
        from atm_core.dataruns import DatarunRequest
        from atm_core.evaluation import silence_fit_warnings

        silence_fit_warnings()
        train_path = str(DEMO_DATA / DATASETS[args.dataset])

        def request(budget: int) -> DatarunRequest:
            return DatarunRequest(train_path, methods=[args.method], budget=budget)

        run_worker(fresh_settings(folder, "warm-up"), request(3))  # imports, data cache, BLAS
        server_start, empty_flow = server_start_seconds()

        rows: list[Timing] = []
        plans = [("core worker", None)] + [(f"flow n_parallel={n}", n) for n in args.parallel]
        for label, n_parallel in plans:
            seconds = []
            for repeat in range(args.repeats):
                settings = fresh_settings(folder, f"{label.replace(' ', '_')}-{repeat}")
                if n_parallel is None:
                    seconds.append(run_worker(settings, request(args.budget)))
                else:
                    seconds.append(run_flow(settings, request(args.budget), n_parallel))
            classifiers, complete, train = count(settings)
            rows.append(Timing(label, seconds, classifiers, complete, train))
            print(f"  {label}: {statistics.median(seconds):.2f} s", file=sys.stderr)

    worker = rows[0]
    print(
        f"\n### Prefect overhead: {args.budget} x `{args.method}` on {args.dataset}, "
        f"{os.cpu_count()} CPUs, median of {args.repeats}\n"
    )
    print(table(rows, worker, args.budget))
    print(
        f"\nEmbedded Prefect server start-up (excluded above): {server_start:.1f} s; "
        f"an empty flow run: {1000 * empty_flow:.0f} ms (a fixed cost per flow run, included "
        "above)."
    )
    if len(rows) > 1:
        net = 1000 * (rows[1].wall - worker.wall - empty_flow) / args.budget
        print(f"Overhead per classifier of `{rows[1].label}` net of it: {net:+.0f} ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
