"""Overhead and scale (issue #5): a raw scikit-learn loop vs `atm worker` vs the Prefect flow.

    .venv/bin/python benchmarks/overhead.py                   # every section (~15 min)
    .venv/bin/python benchmarks/overhead.py --sections first loop --datasets tiny \
        --backends sqlite-local                               # a quick look (~2 min)

Sections (``--sections``; see benchmarks/README.md for what each one measures):

* ``loop``: on the tiny and the mid dataset and on each backend, a datarun
  ``--methods dt logreg --gridding 2`` whose budget is the grid's size (every grid point once),
  run by one ``atm worker --stats``; then the same configurations, read back from its ModelHub,
  fitted by a plain loop (``build_pipeline`` + ``atm_core.evaluation.evaluate``).
* ``flow``: the same datarun by the ``atm`` flow in a fresh embedded Prefect (its server's
  start-up is measured and excluded).
* ``workers``: 1 vs 2 concurrent ``atm worker`` processes on the mid dataset.
* ``rss``: peak memory of one ``atm worker`` (and the fit processes it forks) on 100k rows.
* ``first``: ``atm worker`` start (Popen) to the first complete classifier row, median of 3.

Throughput is classifiers / window, the window running from the first classifier's
``start_time`` to the last one's ``end_time`` in the ModelHub (for the loop: reading the data
plus the loop). Every run starts on a fresh ModelHub; all figures go to
``benchmarks/out/overhead-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import suite
from prefect_overhead import server_start_seconds
from process_memory import MemorySampler
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from workers_throughput import BIN, PHASES, ROOT, as_time, database_url, percentile, start_moto

OUT_DIR = ROOT / "benchmarks" / "out"
DEMO_DATA = ROOT / "atm_core" / "demo_data"
TINY = {"pollution": DEMO_DATA / "pollution_1.csv", "iris": DEMO_DATA / "iris.csv"}
BACKENDS = ("sqlite-local", "mariadb-s3")
SECTIONS = ("loop", "flow", "workers", "rss", "first")
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MB = 1024 * 1024
IMPORTS = ("numpy", "pandas", "pyarrow", "scipy", "sklearn", "sqlalchemy", "baytune", "fsspec")


# -- machine ---------------------------------------------------------------------------------
def utcnow() -> datetime:
    """Naive UTC, as the ModelHub stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (steal included) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class LoadMeter:
    """CPU used by other users during a run, in cores: machine busy time minus ours.

    Ours = the measured processes (``stop(cpu)``), this script and the services we drive
    (MariaDB, moto); a run with more than ~0.2 cores of other load is worth repeating.
    """

    def __init__(self, services: list[int]) -> None:
        self.services = services
        self.started = time.perf_counter()
        self.busy = busy_seconds()
        self.service_cpu = process_cpu(services)
        self.own = own_cpu()

    def stop(self, measured_cpu: float) -> float:
        wall = time.perf_counter() - self.started
        others = (
            busy_seconds()
            - self.busy
            - measured_cpu
            - (process_cpu(self.services) - self.service_cpu)
            - (own_cpu() - self.own)
        )
        return max(others, 0.0) / wall


def wait_for_quiet(threshold: float, patience: float, console: Console) -> float:
    """Wait (at most ``patience`` s) until other processes use < ``threshold`` cores."""
    deadline = time.monotonic() + patience
    while True:
        busy, own = busy_seconds(), own_cpu()
        time.sleep(2)
        load = (busy_seconds() - busy - (own_cpu() - own)) / 2
        if load < threshold or time.monotonic() >= deadline:
            return load
        console.print(f"  [dim]other processes use {load:.2f} cores: waiting[/]")
        time.sleep(8)


def wait_rusage(process: subprocess.Popen) -> tuple[int, float]:
    """Reap ``process``: its exit code and the CPU seconds of it and its children."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"head": git("rev-parse", "HEAD"), "modified": git("status", "--short").splitlines()}


# -- backends, data, ATM ---------------------------------------------------------------------
@dataclass
class Backend:
    kind: str
    url: str
    artifact_root: str
    env: dict[str, str]
    folder: Path


class Infrastructure:
    """Fresh ModelHubs and artifact roots per run; one moto server; databases dropped at exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.moto: subprocess.Popen | None = None
        self.aws: dict[str, str] = {}
        self.drops: list = []
        self.runs = 0

    def fresh(self, kind: str, name: str) -> Backend:
        self.runs += 1
        folder = self.folder / f"{self.runs:02d}-{name}"
        folder.mkdir(parents=True)
        if kind == "sqlite-local":
            url, _ = database_url("sqlite", folder)
            return Backend(kind, url, str(folder / "artifacts"), {}, folder)
        url, drop = database_url("mariadb", folder)
        self.drops.append(drop)
        if self.moto is None:
            self.moto, self.aws = start_moto(self.folder)
        return Backend(kind, url, f"s3://bench/{folder.name}", dict(self.aws), folder)

    def service_pids(self) -> list[int]:
        import psutil

        pids = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "mariadbd"]
        return pids + ([self.moto.pid] if self.moto is not None else [])

    def close(self) -> None:
        for drop in self.drops:
            try:
                drop()
            except Exception as exc:  # keep dropping the others
                print(f"could not drop a benchmark database: {exc}", file=sys.stderr)
        if self.moto is not None:
            self.moto.terminate()
            self.moto.wait()


@dataclass
class InputData:
    """An ATM input file (ATM itself makes the 70/30 train/test split of it)."""

    key: str
    name: str
    path: str
    label: str
    rows: int
    columns: int


def prepare_input(key: str, name: str, folder: Path) -> InputData:
    """A bundled CSV as it is, or a suite dataset's training part written as parquet."""
    import pandas as pd

    if name in TINY:
        frame = pd.read_csv(TINY[name])
        return InputData(key, name, str(TINY[name]), "class", len(frame), frame.shape[1] - 1)
    train, _, label = suite.load(name)
    path = folder / f"{name}.parquet"
    train.to_parquet(path, index=False)
    return InputData(key, name, str(path), label, len(train), train.shape[1] - 1)


def setting_names(settings_class: type) -> set[str]:
    """The settings' names: a dataclass now, a pydantic model in commits before 2026-11-30."""
    if hasattr(settings_class, "model_fields"):
        return set(settings_class.model_fields)
    return {item.name for item in dataclasses.fields(settings_class)}


def thread_setting(threads: int) -> tuple[dict[str, str], str]:
    """ATM_THREADS when the settings have it, else the BLAS/OpenMP variables."""
    from atm_core.settings import Settings

    if "threads" in setting_names(Settings):
        return {"ATM_THREADS": str(threads)}, f"ATM_THREADS={threads}"
    env = dict.fromkeys(BLAS_VARIABLES, str(threads))
    return env, " ".join(f"{name}={threads}" for name in BLAS_VARIABLES)


def grid_size(methods: list[str], gridding: int) -> tuple[int, dict[str, list[int]]]:
    """Grid points per hyperpartition of each method, counted by ATM's own TuningSpace."""
    from atm_core.search.catalogue import load_method
    from atm_core.search.hyperpartitions import enumerate_hyperpartitions
    from atm_core.search.space import TuningSpace

    sizes = {
        method: [
            int(TuningSpace(spec.tunables, gridding).cardinality)
            for spec in enumerate_hyperpartitions(load_method(method))
        ]
        for method in methods
    }
    return sum(sum(s) for s in sizes.values()), sizes


def run_checked(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
    return done.stdout


@dataclass
class Context:
    args: argparse.Namespace
    console: Console
    infra: Infrastructure
    folder: Path
    threads_env: dict[str, str]
    inputs: dict[str, InputData] = field(default_factory=dict)

    def data(self, key: str) -> InputData:
        if key not in self.inputs:
            name = {"tiny": self.args.tiny, "mid": self.args.mid, "100k": "synthetic_100k"}[key]
            self.inputs[key] = prepare_input(key, name, self.folder)
        return self.inputs[key]

    def env(self, backend: Backend) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ATM_", "PREFECT_", "AWS_"))
        }
        env.update(backend.env)
        env.update(self.threads_env)
        env.update(
            ATM_DATABASE_URL=backend.url,
            ATM_ARTIFACT_ROOT=backend.artifact_root,
            ATM_POLL_SECONDS="0.2",
        )
        return env

    def enter_data(
        self, backend: Backend, data: InputData, methods: list[str], budget: int, gridding: int
    ) -> dict[str, int]:
        """``atm enter_data``; returns the hyperpartitions per method it printed."""
        command = [str(BIN / "atm"), "enter_data", "--train-path", data.path]
        command += ["--class-column", data.label, "--methods", *methods, "--budget", str(budget)]
        if gridding:
            command += ["--gridding", str(gridding)]
        if self.args.time_limit is not None:
            command += ["--time-limit", str(self.args.time_limit)]
        out = run_checked(command, self.env(backend))
        return {m: int(n) for m, n in re.findall(r"method (\S+) has (\d+) hyperpartition", out)}

    def quiet(self) -> float:
        return wait_for_quiet(self.args.quiet_threshold, self.args.quiet_wait, self.console)

    def child(self, kind: str, spec: dict[str, Any], env: dict[str, str], folder: Path) -> dict:
        """Run ``_loop``/``_flow`` of this script in a fresh process; its result."""
        spec_path = folder / f"{kind}-spec.json"
        out_path = folder / f"{kind}-out.json"
        spec_path.write_text(json.dumps({**spec, "out": str(out_path)}))
        log = folder / f"{kind}.log"
        meter = LoadMeter(self.infra.service_pids())
        process = subprocess.Popen(
            [sys.executable, __file__, f"_{kind}", str(spec_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        code, cpu = wait_rusage(process)
        if code or not out_path.exists():
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the {kind} run failed (exit {code}):\n{tail}")
        result = json.loads(out_path.read_text())
        result["other_load_cores"] = meter.stop(cpu)
        return result


# -- reading results back --------------------------------------------------------------------
def read_classifiers(url: str) -> list[dict[str, Any]]:
    """Every classifier row with its estimator class, in id order."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT c.id, c.datarun_id, c.status, c.start_time, c.end_time,"
                    " c.hyperparameters_values, h.estimator_class, h.method"
                    " FROM classifiers c JOIN hyperpartitions h ON h.id = c.hyperpartition_id"
                    " ORDER BY c.id"
                )
            ).all()
    finally:
        engine.dispose()
    result = []
    for row in rows:
        values = row.hyperparameters_values
        result.append(
            {
                "id": row.id,
                "datarun_id": row.datarun_id,
                "status": str(row.status),
                "start": as_time(row.start_time),
                "end": as_time(row.end_time),
                "values": json.loads(values) if isinstance(values, str) else values,
                "estimator_class": row.estimator_class,
                "method": row.method,
            }
        )
    return result


def config_key(row: dict[str, Any]) -> str:
    return json.dumps([row["estimator_class"], row["values"]], sort_keys=True)


def window(rows: list[dict[str, Any]], started: datetime) -> dict[str, Any]:
    """Counts and the ModelHub window (first start_time to last end_time) of a run."""
    starts = [r["start"] for r in rows if r["start"] is not None]
    ends = [r["end"] for r in rows if r["end"] is not None]
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    seconds = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    return {
        "classifiers": len(rows),
        "statuses": statuses,
        "distinct_configurations": len({config_key(r) for r in rows}),
        "startup_seconds": (min(starts) - started).total_seconds() if starts else None,
        "window_seconds": seconds,
        "classifiers_per_second": len(rows) / seconds,
    }


def phase_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ms per phase, bookkeeping (all but fit) mean and p95, from --stats records."""
    if not records:
        return {}
    bookkeeping = [1000 * r["bookkeeping_seconds"] for r in records]
    return {
        "phase_ms_mean": {
            p: 1000 * statistics.fmean(r["timings"].get(p, 0.0) for r in records) for p in PHASES
        },
        "bookkeeping_ms_mean": statistics.fmean(bookkeeping),
        "bookkeeping_ms_p95": percentile(bookkeeping, 0.95),
        "step_ms_mean": 1000 * statistics.fmean(sum(r["timings"].values()) for r in records),
    }


def read_stats(paths: list[Path]) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in paths
        if path.exists()
        for line in path.read_text().split("\n")
        if line
    ]


# -- runs ------------------------------------------------------------------------------------
def run_workers(ctx: Context, backend: Backend, count: int, label: str) -> dict[str, Any]:
    """``count`` concurrent ``atm worker --stats`` processes until the datarun is done."""
    env = ctx.env(backend)
    stats = [backend.folder / f"{label}-stats-{i}.jsonl" for i in range(count)]
    meter = LoadMeter(ctx.infra.service_pids())
    started_at, started = utcnow(), time.perf_counter()
    processes = [
        subprocess.Popen(
            [str(BIN / "atm"), "worker", "--quiet", "--stats", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(backend.folder / f"{label}-worker-{i}.err").open("wb"),
        )
        for i, path in enumerate(stats)
    ]
    reaped = [wait_rusage(p) for p in processes]
    wall = time.perf_counter() - started
    cpu = sum(r[1] for r in reaped)
    other = meter.stop(cpu)
    rows = read_classifiers(backend.url)
    records = read_stats(stats)
    figures = {
        "workers": count,
        "backend": backend.kind,
        "exit_codes": [r[0] for r in reaped],
        "wall_seconds": wall,
        **window(rows, started_at),
        **phase_figures(records),
        "cpu_per_wall": cpu / wall,
        "other_load_cores": other,
    }
    figures["reserve_ms_p95"] = 1000 * percentile([r["timings"]["reserve"] for r in records], 0.95)
    figures["reserve_ms_max"] = 1000 * max(r["timings"]["reserve"] for r in records)
    # worker-seconds not spent in a classifier step: waiting for others, the tail, loop overhead
    busy = sum(sum(r["timings"].values()) for r in records)
    figures["idle_share"] = 1 - busy / (count * figures["window_seconds"])
    return {"figures": figures, "rows": rows, "records": records}


def run_loop(ctx: Context, backend: Backend, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The raw scikit-learn loop over the configurations of the datarun of ``rows``."""
    spec = {
        "database_url": backend.url,
        "artifact_root": backend.artifact_root,
        "datarun_id": rows[0]["datarun_id"],
        "threads": ctx.args.threads,
    }
    result = ctx.child("loop", spec, ctx.env(backend), backend.folder)
    evaluate = result.pop("evaluate_seconds")
    pickle = result.pop("pickle_seconds")
    keys = {r["id"]: config_key(r) for r in rows}
    ids = result.pop("classifier_ids")
    result["by_configuration"] = {keys[i]: t for i, t in zip(ids, evaluate, strict=True)}
    result.update(
        classifiers_per_second=result["classifiers"] / result["window_seconds"],
        evaluate_ms_mean=1000 * statistics.fmean(evaluate),
        pickle_ms_mean=1000 * statistics.fmean(pickle),
    )
    return result


def run_flow(
    ctx: Context, backend: Backend, data: InputData, methods: list[str], budget: int
) -> dict[str, Any]:
    """The ``atm`` flow in-process (in a child) with a fresh embedded Prefect."""
    parameters = {
        "train_path": data.path,
        "class_column": data.label,
        "methods": methods,
        "budget": budget,
        "gridding": ctx.args.gridding,
        "n_parallel": ctx.args.flow_parallel,
    }
    if ctx.args.time_limit is not None:
        parameters["time_limit"] = ctx.args.time_limit
    spec = {
        "parameters": parameters,
        "prefect_home": str(backend.folder / "prefect-home"),
        "database_url": backend.url,
        "artifact_root": backend.artifact_root,
    }
    result = ctx.child("flow", spec, ctx.env(backend), backend.folder)
    rows = read_classifiers(backend.url)
    records = result.pop("records")
    claims = result.pop("claim_seconds")
    started = datetime.fromisoformat(result.pop("started_at"))
    summary = result.pop("summary")
    figures = {**result, **window(rows, started), **phase_figures(records)}
    figures["flow_status"] = summary["status"]
    # next_claim runs in the flow, outside the task: its time is propose + reserve
    claim_ms = 1000 * sum(claims) / figures["classifiers"]
    figures["phase_ms_mean"]["propose"] = claim_ms  # propose and reserve together
    figures["bookkeeping_ms_mean"] += claim_ms
    figures["step_ms_mean"] += claim_ms
    # the rest of a classifier's time: Prefect's task run, states, futures and the UI artifact
    figures["prefect_ms_mean"] = non_fit(figures) - figures["bookkeeping_ms_mean"]
    figures["fixed_seconds"] = figures["flow_seconds"] - figures["window_seconds"]
    return {"figures": figures, "rows": rows, "records": records}


# -- sections --------------------------------------------------------------------------------
def fit_minus_loop(run: dict[str, Any], loop: dict[str, Any]) -> float:
    """Mean (fit phase - raw loop's evaluate) in ms, matched by configuration."""
    keys = {r["id"]: config_key(r) for r in run["rows"]}
    by_configuration = loop["by_configuration"]
    added = [
        r["timings"]["fit"] - by_configuration[keys[r["classifier_id"]]]
        for r in run["records"]
        if keys.get(r["classifier_id"]) in by_configuration
    ]
    return 1000 * statistics.fmean(added) if added else float("nan")


def section_compare(ctx: Context) -> dict[str, Any]:
    """(a) raw loop, (b) atm worker, (c) the flow on one grid, per dataset and backend."""
    args = ctx.args
    total, sizes = grid_size(args.methods, args.gridding)
    ctx.console.print(
        f"grid: {total} configurations ({', '.join(f'{m} {s}' for m, s in sizes.items())})"
    )
    results: dict[str, Any] = {"grid_size": total, "grid": sizes, "datasets": {}}
    for key in args.datasets:
        data = ctx.data(key)
        entry: dict[str, Any] = {"input": vars(data), "backends": {}}
        reference: set[str] | None = None
        runs: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (figures, rows and records)
        for kind in args.backends:
            figures: dict[str, Any] = {}
            backend = ctx.infra.fresh(kind, f"{key}-worker")
            partitions = ctx.enter_data(backend, data, args.methods, total, args.gridding)
            figures["hyperpartitions"] = partitions
            ctx.console.print(f"[bold]{key}[/] ({data.name}) on {kind}: atm worker")
            figures["quiet_before"] = ctx.quiet()
            worker = run_workers(ctx, backend, 1, "worker")
            figures["worker"] = worker["figures"]
            keys = {config_key(r) for r in worker["rows"]}
            reference = keys if reference is None else reference
            figures["worker"]["same_configurations"] = keys == reference
            runs.append((figures["worker"], worker))
            if "loop" in args.sections and "loop" not in entry:
                ctx.console.print(f"[bold]{key}[/]: raw scikit-learn loop")
                ctx.quiet()
                entry["loop"] = run_loop(ctx, backend, worker["rows"])
            if "flow" in args.sections:
                ctx.console.print(f"[bold]{key}[/] on {kind}: the atm flow")
                flow_backend = ctx.infra.fresh(kind, f"{key}-flow")
                figures["quiet_before_flow"] = ctx.quiet()
                flow = run_flow(ctx, flow_backend, data, args.methods, total)
                figures["flow"] = flow["figures"]
                figures["flow"]["same_configurations"] = {
                    config_key(r) for r in flow["rows"]
                } == reference
                runs.append((figures["flow"], flow))
            entry["backends"][kind] = figures
        if "loop" in entry:
            for run_figures, run in runs:
                run_figures["fit_minus_loop_ms_mean"] = fit_minus_loop(run, entry["loop"])
        results["datasets"][key] = entry
        ctx.console.print(compare_table(key, entry, total))
    return results


def section_workers(ctx: Context) -> dict[str, Any]:
    """Throughput of 1 vs N concurrent workers on the mid dataset."""
    args = ctx.args
    data = ctx.data("mid")
    total, sizes = grid_size(args.methods, args.workers_gridding)
    results: dict[str, Any] = {"input": vars(data), "grid_size": total, "grid": sizes, "runs": {}}
    for kind in args.workers_backends:
        runs = {}
        for count in args.workers:
            backend = ctx.infra.fresh(kind, f"workers-{count}")
            ctx.enter_data(backend, data, args.methods, total, args.workers_gridding)
            ctx.console.print(f"{count} worker(s) on {kind}, {total} classifiers")
            ctx.quiet()
            runs[str(count)] = run_workers(ctx, backend, count, f"w{count}")["figures"]
        results["runs"][kind] = runs
    ctx.console.print(workers_table(results))
    return results


def section_rss(ctx: Context) -> dict[str, Any]:
    """Peak memory of one ``atm worker`` (the fits it forks included) on the 100k set."""
    from atm_core.data.loading import read_table

    args = ctx.args
    data = ctx.data("100k")
    frame = read_table(data.path).frame
    in_memory = int(frame.memory_usage(deep=True).sum())
    del frame
    idle_backend = ctx.infra.fresh("sqlite-local", "rss-idle")
    idle = subprocess.Popen(
        [str(BIN / "atm"), "worker", "--quiet"],
        env=ctx.env(idle_backend),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    idle_sampler = MemorySampler(idle.pid)
    wait_rusage(idle)
    idle_hwm = idle_sampler.stop()["worker_hwm_mb"]
    backend = ctx.infra.fresh("sqlite-local", "rss")
    for method in args.rss_methods:
        ctx.enter_data(backend, data, [method], args.rss_budget, 0)
    ctx.console.print(f"peak RSS: {args.rss_methods} x {args.rss_budget} on {data.rows} rows")
    ctx.quiet()
    stats = backend.folder / "rss-stats.jsonl"
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "atm"), "worker", "--quiet", "--stats", str(stats)],
        env=ctx.env(backend),
        stdout=subprocess.DEVNULL,
        stderr=(backend.folder / "rss-worker.err").open("wb"),
    )
    sampler = MemorySampler(process.pid)
    code, cpu = wait_rusage(process)
    peaks = sampler.stop()
    rows = read_classifiers(backend.url)
    records = read_stats([stats])
    peak = max(peaks["tree_mb"], peaks["worker_hwm_mb"])
    limit = 4 * in_memory / MB + 300
    results = {
        "input": vars(data),
        "in_memory_mb": in_memory / MB,
        "idle_worker_hwm_mb": idle_hwm,
        "exit_code": code,
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": cpu,
        "classifiers": dict(Counter(r["method"] for r in rows)),
        "statuses": window(rows, utcnow())["statuses"],
        "fit_seconds": [r["timings"].get("fit") for r in records],
        "sampled": peaks,
        "peak_mb": peak,
        "limit_mb": limit,
    }
    table = Table(title=f"Peak memory of one atm worker on {data.name}", box=box.MARKDOWN)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("dataset as ATM reads it (memory_usage deep)", f"{in_memory / MB:.1f} MB")
    table.add_row("idle atm worker (empty ModelHub), VmHWM", f"{idle_hwm:.0f} MB")
    fits = ", ".join(
        f"{rec['method']} {rec['timings'].get('fit', 0):.1f} s ({rec['status']})" for rec in records
    )
    table.add_row("classifiers (fit phase)", fits)
    table.add_row("worker process VmHWM", f"{peaks['worker_hwm_mb']:.0f} MB")
    table.add_row("forked fits, unique memory (peak)", f"{peaks['children_uss_mb']:.0f} MB")
    table.add_row("worker RSS + forked fits' USS (peak)", f"{peaks['tree_mb']:.0f} MB")
    table.add_row("limit 4 x dataset + 300 MB", f"{limit:.0f} MB")
    ctx.console.print(table)
    return results


def idle_worker(ctx: Context, backend: Backend, repeats: int) -> dict[str, Any]:
    """``atm worker`` on an empty ModelHub (start, open it, exit), and its imports' cost."""
    env = ctx.env(backend)
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_checked([str(BIN / "atm"), "worker", "--quiet"], env)
        walls.append(time.perf_counter() - started)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN / "atm"), "worker", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    cumulative: dict[str, float] = {}
    total = 0.0
    for line in trace.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if not match:
            continue
        seconds = int(match[1]) / 1e6
        if len(match[2]) == 1:  # a top-level import
            total += seconds
        if match[3] in IMPORTS:
            cumulative[match[3]] = max(cumulative.get(match[3], 0.0), seconds)
    return {"median_seconds": statistics.median(walls), "imports_seconds": total, **cumulative}


def section_first(ctx: Context) -> dict[str, Any]:
    """Popen of ``atm worker`` to the first complete classifier row (polled), median of N."""
    args = ctx.args
    data = ctx.data("tiny")
    results: dict[str, Any] = {"input": vars(data), "method": args.first_method, "backends": {}}
    ctx.quiet()
    results["idle_worker"] = idle_worker(
        ctx, ctx.infra.fresh("sqlite-local", "idle"), args.first_repeats
    )
    for kind in args.first_backends:
        samples = []
        for repeat in range(args.first_repeats):
            backend = ctx.infra.fresh(kind, f"first-{repeat}")
            ctx.enter_data(backend, data, [args.first_method], 3, 0)
            ctx.quiet()
            engine = create_engine(backend.url)
            query = text("SELECT COUNT(*) FROM classifiers WHERE status = 'complete'")
            stats = backend.folder / "first-stats.jsonl"
            started_at, started = utcnow(), time.perf_counter()
            process = subprocess.Popen(
                [str(BIN / "atm"), "worker", "--quiet", "--stats", str(stats)],
                env=ctx.env(backend),
                stdout=subprocess.DEVNULL,
                stderr=(backend.folder / "first-worker.err").open("wb"),
            )
            observed = None
            while observed is None:
                with engine.connect() as connection:
                    if connection.execute(query).scalar():
                        observed = time.perf_counter() - started
                if observed is None and process.poll() is not None:
                    break
                time.sleep(0.025)
            process.wait()
            engine.dispose()
            if observed is None:
                raise SystemExit(f"atm worker stored no classifier: see {backend.folder}")
            rows = [r for r in read_classifiers(backend.url) if r["status"] == "complete"]
            first = min(rows, key=lambda r: r["end"])
            record = read_stats([stats])[0]
            samples.append(
                {
                    "observed_seconds": observed,
                    "stored_seconds": (first["end"] - started_at).total_seconds(),
                    "startup_seconds": (first["start"] - started_at).total_seconds(),
                    "first_classifier_timings": record["timings"],
                }
            )
        results["backends"][kind] = {
            "samples": samples,
            "median_observed_seconds": statistics.median(s["observed_seconds"] for s in samples),
            "median_stored_seconds": statistics.median(s["stored_seconds"] for s in samples),
            "median_startup_seconds": statistics.median(s["startup_seconds"] for s in samples),
        }
    table = Table(
        title=f"atm worker start to first stored classifier ({args.first_method} on {data.name})",
        box=box.MARKDOWN,
    )
    for column in ("backend", "observed (polled) s", "end_time - start s", "start-up s", "runs"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for kind, entry in results["backends"].items():
        table.add_row(
            kind,
            f"{entry['median_observed_seconds']:.2f}",
            f"{entry['median_stored_seconds']:.2f}",
            f"{entry['median_startup_seconds']:.2f}",
            ", ".join(f"{s['observed_seconds']:.2f}" for s in entry["samples"]),
        )
    idle = results["idle_worker"]
    table.caption = (
        f"An idle atm worker (empty SQLite ModelHub) starts and exits in "
        f"{idle['median_seconds']:.2f} s; imports (-X importtime) {idle['imports_seconds']:.2f} s"
        ", of which "
        + ", ".join(f"{name} {idle[name]:.2f}" for name in IMPORTS if name in idle)
        + " (nested, cumulative)"
    )
    ctx.console.print(table)
    return results


# -- tables and targets ----------------------------------------------------------------------
def non_fit(f: dict[str, Any]) -> float:
    """Everything but the fit lap, per classifier (ms): phases, between steps, Prefect."""
    return 1000 * f["window_seconds"] / f["classifiers"] - f["phase_ms_mean"]["fit"]


def new_table(title: str, columns: list[str], left: int) -> Table:
    """A markdown-boxed table whose first ``left`` columns are left-aligned, the rest right."""
    table = Table(title=title, box=box.MARKDOWN)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < left else "right")
    return table


def compare_table(key: str, entry: dict[str, Any], total: int) -> Table:
    data = entry["input"]
    columns = ["runner", "backend", "done", "window s", "clf/s", "ratio", "fit ms"]
    columns += ["bookkeeping ms", "non-fit ms", "start-up s", "other load"]
    title = f"{key}: {data['name']} ({data['rows']} rows), {total} configurations"
    table = new_table(title, columns, left=2)
    loop = entry.get("loop")
    if loop:
        table.add_row(
            "(a) raw loop",
            "-",
            str(loop["classifiers"]),
            f"{loop['window_seconds']:.1f}",
            f"{loop['classifiers_per_second']:.2f}",
            "",
            f"{loop['evaluate_ms_mean']:.0f}",
            "0",
            f"{1000 * loop['load_seconds'] / loop['classifiers']:.0f}",
            "-",
            f"{loop['other_load_cores']:.2f}",
        )
    for kind, figures in entry["backends"].items():
        worker = figures["worker"]
        ratio = ""
        if loop:
            ratio = f"{worker['classifiers_per_second'] / loop['classifiers_per_second']:.2f}x (a)"
        table.add_row(
            "(b) atm worker",
            kind,
            f"{worker['statuses'].get('complete', 0)}/{worker['classifiers']}",
            f"{worker['window_seconds']:.1f}",
            f"{worker['classifiers_per_second']:.2f}",
            ratio,
            f"{worker['phase_ms_mean']['fit']:.0f}",
            f"{worker['bookkeeping_ms_mean']:.0f}",
            f"{non_fit(worker):.0f}",
            f"{worker['startup_seconds']:.2f}",
            f"{worker['other_load_cores']:.2f}",
        )
        flow = figures.get("flow")
        if flow:
            table.add_row(
                "(c) flow",
                kind,
                f"{flow['statuses'].get('complete', 0)}/{flow['classifiers']}",
                f"{flow['window_seconds']:.1f}",
                f"{flow['classifiers_per_second']:.2f}",
                f"{flow['classifiers_per_second'] / worker['classifiers_per_second']:.2f}x (b)",
                f"{flow['phase_ms_mean']['fit']:.0f}",
                f"{flow['bookkeeping_ms_mean']:.0f}",
                f"{non_fit(flow):.0f}",
                f"{flow['server_start_seconds']:.1f}+{flow['fixed_seconds']:.1f}",
                f"{flow['other_load_cores']:.2f}",
            )
    return table


def phases_table(results: dict[str, Any]) -> Table:
    columns = ["dataset", "runner", "backend", "propose+reserve", "load", "fit", "store"]
    columns += ["record", "between steps (< 0: overlapped)", "Prefect", "fit - loop"]
    table = new_table("Where a classifier's time goes (mean ms)", columns, left=3)
    for key, entry in results["datasets"].items():
        for kind, figures in entry["backends"].items():
            for runner in ("worker", "flow"):
                f = figures.get(runner)
                if not f:
                    continue
                phases = f["phase_ms_mean"]
                between = 1000 * f["window_seconds"] / f["classifiers"] - f["step_ms_mean"]
                prefect = f.get("prefect_ms_mean")
                added = f.get("fit_minus_loop_ms_mean")
                table.add_row(
                    key,
                    runner,
                    kind,
                    f"{phases['propose'] + phases['reserve']:.1f}",
                    *(f"{phases[p]:.1f}" for p in ("load", "fit", "store", "record")),
                    "" if prefect is not None else f"{between:.1f}",
                    "" if prefect is None else f"{prefect:.1f}",
                    "" if added is None else f"{added:.1f}",
                )
    return table


def workers_table(results: dict[str, Any]) -> Table:
    columns = ["backend", "workers", "done", "window s", "clf/s", "speed-up", "fit ms"]
    columns += ["bookkeeping ms", "reserve p95/max ms", "idle", "other load"]
    title = f"1 vs 2 workers on {results['input']['name']}, {results['grid_size']} classifiers"
    table = new_table(title, columns, left=1)
    for kind, runs in results["runs"].items():
        base = runs.get("1")
        for count, f in runs.items():
            speedup = f["classifiers_per_second"] / base["classifiers_per_second"] if base else None
            table.add_row(
                kind,
                count,
                f"{f['statuses'].get('complete', 0)}/{f['classifiers']}",
                f"{f['window_seconds']:.1f}",
                f"{f['classifiers_per_second']:.2f}",
                "" if speedup is None else f"{speedup:.2f}x",
                f"{f['phase_ms_mean']['fit']:.0f}",
                f"{f['bookkeeping_ms_mean']:.0f}",
                f"{f['reserve_ms_p95']:.0f}/{f['reserve_ms_max']:.0f}",
                f"{100 * f['idle_share']:.0f}%",
                f"{f['other_load_cores']:.2f}",
            )
    return table


def verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    if met:
        return "met"
    return f"missed by {abs(value - target):.3g} ({100 * abs(value - target) / target:.0f}%)"


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue #5 that the sections run could measure."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float, target: float, at_least: bool, unit: str = "") -> None:
        rows.append(
            {
                "target": name,
                "value": value,
                "limit": target,
                "unit": unit,
                "verdict": verdict(value, target, at_least),
            }
        )

    compare = figures.get("compare", {})
    for key, entry in compare.get("datasets", {}).items():
        loop = entry.get("loop")
        for kind, f in entry["backends"].items():
            worker = f["worker"]
            if loop and key == "mid":
                ratio = worker["classifiers_per_second"] / loop["classifiers_per_second"]
                add(f"atm worker / raw loop, {key}, {kind}", ratio, 0.9, True, "x")
            if "flow" in f:
                ratio = f["flow"]["classifiers_per_second"] / worker["classifiers_per_second"]
                add(f"flow / atm worker, {key}, {kind}", ratio, 0.8, True, "x")
            if kind == "sqlite-local":
                add(
                    f"bookkeeping per classifier, {key}, atm worker, {kind}",
                    worker["bookkeeping_ms_mean"],
                    50,
                    False,
                    "ms",
                )
    for kind, runs in figures.get("workers", {}).get("runs", {}).items():
        if "1" in runs and "2" in runs:
            ratio = runs["2"]["classifiers_per_second"] / runs["1"]["classifiers_per_second"]
            add(f"2 workers / 1 worker, mid, {kind}", ratio, 1.8, True, "x")
    if "rss" in figures:
        rss = figures["rss"]
        add("peak RSS on the 100k set", rss["peak_mb"], rss["limit_mb"], False, "MB")
    for kind, entry in figures.get("first", {}).get("backends", {}).items():
        add(f"first stored classifier, {kind}", entry["median_observed_seconds"], 3.0, False, "s")
    return rows


def targets_table(rows: list[dict[str, Any]], load: str) -> Table:
    table = Table(title=f"Targets of issue #5 (load average {load})", box=box.MARKDOWN)
    for column in ("target", "measured", "target", "verdict"):
        table.add_column(column, justify="left" if column in ("target", "verdict") else "right")
    for row in rows:
        sign = "<=" if row["unit"] in ("ms", "MB", "s") else ">="
        table.add_row(
            row["target"],
            f"{row['value']:.3g} {row['unit']}",
            f"{sign} {row['limit']:.3g} {row['unit']}",
            row["verdict"],
        )
    return table


# -- children --------------------------------------------------------------------------------
def child_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """(a) The configurations of a datarun in a plain loop: what ATM does minus ATM."""
    import inspect

    from threadpoolctl import threadpool_limits

    from atm_core.artifacts import serialize_model
    from atm_core.data.dataset import FeatureSchema
    from atm_core.data.split import load_train_test
    from atm_core.evaluation import evaluate, resolve_metric, silence_fit_warnings
    from atm_core.modelhub import ModelHub
    from atm_core.pipeline import build_pipeline
    from atm_core.settings import load_settings

    silence_fit_warnings()  # as Worker.run does
    settings = load_settings(database_url=spec["database_url"], artifact_root=spec["artifact_root"])
    hub = ModelHub(settings=settings)
    datarun = hub.get_datarun(spec["datarun_id"])
    dataset = hub.get_dataset(datarun.dataset_id)
    schema = FeatureSchema.from_json(dataset.feature_schema)
    classes = {hp.id: hp.estimator_class for hp in hub.hyperpartitions(datarun.id)}
    configs = [
        (c.id, classes[c.hyperpartition_id], c.hyperparameters_values)
        for c in hub.classifiers(datarun.id)
    ]
    metric = resolve_metric(datarun.metric, dataset.k_classes)
    hub.close()
    split = [dataset.train_path, dataset.test_path, dataset.class_column, schema]
    split += [dataset.content_hash, datarun.seed, datarun.test_size]
    extra = {}
    if "cv_folds" in inspect.signature(load_train_test).parameters:
        extra["cv_folds"] = getattr(datarun, "cv_folds", None)
    n_jobs = settings.threads if "threads" in setting_names(type(settings)) else settings.n_jobs
    evaluate_seconds, pickle_seconds, errors = [], [], 0
    with threadpool_limits(limits=spec["threads"]):
        started = time.perf_counter()
        data = load_train_test(*split, **extra)
        load_seconds = time.perf_counter() - started
        for _, estimator_class, values in configs:
            make_model = functools.partial(
                build_pipeline,
                estimator_class,
                values,
                schema,
                random_state=datarun.seed,
                n_jobs=n_jobs,
            )
            began = time.perf_counter()
            try:
                evaluation = evaluate(make_model, data, metric, datarun.seed)
            except Exception:
                errors += 1
                evaluation = None
            evaluate_seconds.append(time.perf_counter() - began)
            began = time.perf_counter()
            if evaluation is not None:  # what the worker adds: timed, not in the window
                serialize_model(evaluation.model)
            pickle_seconds.append(time.perf_counter() - began)
    return {
        "classifiers": len(configs),
        "errors": errors,
        "load_seconds": load_seconds,
        "window_seconds": load_seconds + sum(evaluate_seconds),
        "evaluate_seconds": evaluate_seconds,
        "pickle_seconds": pickle_seconds,
        "classifier_ids": [c[0] for c in configs],
    }


def child_flow(spec: dict[str, Any]) -> dict[str, Any]:
    """(c) The ``atm`` flow in this process, on a fresh embedded Prefect, as ``atm run`` sets it."""
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    os.environ["PREFECT_HOME"] = spec["prefect_home"]
    from atm_core.settings import load_settings
    from flows.cli import prepare_environment

    prepare_environment(
        load_settings(database_url=spec["database_url"], artifact_root=spec["artifact_root"]),
        verbose=False,
    )
    server_start, empty_flow = server_start_seconds()

    import atm_core.driver
    import flows.datarun
    import flows.tasks

    records: list[dict[str, Any]] = []
    core = flows.tasks.core_train_classifier

    def recording(*args: Any, **kwargs: Any) -> Any:
        """The core call of the classifier task, with its per-phase timings kept."""
        result = core(*args, **kwargs)
        records.append(
            {
                "classifier_id": result.classifier_id,
                "status": result.status,
                "timings": dict(result.timings),
                "bookkeeping_seconds": result.bookkeeping_seconds,
            }
        )
        return result

    flows.tasks.core_train_classifier = recording
    claims: list[float] = []
    claim = atm_core.driver.next_claim

    def timed_claim(*args: Any, **kwargs: Any) -> Any:
        """The flow's proposal + reservation (``next_claim``), timed."""
        began = time.perf_counter()
        try:
            return claim(*args, **kwargs)
        finally:
            claims.append(time.perf_counter() - began)

    atm_core.driver.next_claim = timed_claim
    started_at, started = utcnow(), time.perf_counter()
    summary = flows.datarun.datarun(**spec["parameters"])
    return {
        "server_start_seconds": server_start,
        "empty_flow_seconds": empty_flow,
        "flow_seconds": time.perf_counter() - started,
        "started_at": started_at.isoformat(),
        "records": records,
        "claim_seconds": claims,
        "summary": summary,
    }


def run_child(kind: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = child_loop(spec) if kind == "_loop" else child_flow(spec)
    Path(spec["out"]).write_text(json.dumps(result, default=str))
    return 0


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--datasets", nargs="+", choices=["tiny", "mid"], default=["tiny", "mid"])
    parser.add_argument("--tiny", choices=sorted(TINY), default="pollution")
    parser.add_argument("--mid", choices=sorted(suite.SUITE), default="credit_data")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--methods", nargs="+", default=["dt", "logreg"])
    parser.add_argument("--gridding", type=int, default=2, help="grid of loop/flow (>= 2)")
    parser.add_argument("--flow-parallel", type=int, default=1, help="n_parallel of the flow")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers-gridding", type=int, default=3)
    parser.add_argument("--workers-backends", nargs="+", choices=BACKENDS, default=[BACKENDS[0]])
    parser.add_argument("--rss-methods", nargs="+", default=["hgb", "logreg"])
    parser.add_argument("--rss-budget", type=int, default=2, help="classifiers per method")
    parser.add_argument("--first-method", default="dt")
    parser.add_argument("--first-repeats", type=int, default=3)
    parser.add_argument("--first-backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=1, help="threads per fit (ATM_THREADS)")
    parser.add_argument("--time-limit", type=float, help="atm enter_data --time-limit")
    parser.add_argument(
        "--quiet-wait", type=float, default=120, help="seconds to wait for other load to go"
    )
    parser.add_argument("--quiet-threshold", type=float, default=0.3, help="cores")
    parser.add_argument("--output", help="default: benchmarks/out/overhead-<timestamp>.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    args = parser.parse_args(argv)
    if args.gridding < 2 or args.workers_gridding < 2:
        parser.error("gridding must be at least 2 (a grid enumerates a finite list)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_loop", "_flow"):
        return run_child(argv[0], argv[1])
    args = parse_args(argv)
    console = Console(width=max(Console().width, 150))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(args.output) if args.output else OUT_DIR / f"overhead-{stamp}.json"
    threads_env, threads_note = thread_setting(args.threads)
    figures: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": stamp,
        "cpus": os.cpu_count(),
        "git": git_state(),
        "threads": threads_note,
        "load_average_start": os.getloadavg(),
    }
    console.print(f"threads per worker: {threads_note}; load average {os.getloadavg()}")
    folder = Path(tempfile.mkdtemp(prefix="atm-overhead-"))
    infra = Infrastructure(folder)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (drop, stop moto)
    ctx = Context(args, console, infra, folder, threads_env)
    sections = {
        "compare": section_compare if {"loop", "flow"} & set(args.sections) else None,
        "workers": section_workers if "workers" in args.sections else None,
        "rss": section_rss if "rss" in args.sections else None,
        "first": section_first if "first" in args.sections else None,
    }
    try:
        for name, run in sections.items():
            if run is None:
                continue
            before = os.getloadavg()
            figures[name] = run(ctx)
            figures[name]["load_average"] = {"before": before, "after": os.getloadavg()}
            if name == "compare":
                console.print(phases_table(figures[name]))
    finally:
        infra.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        figures["load_average_end"] = os.getloadavg()
        figures["targets"] = targets(figures)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2, default=str))
    load = " / ".join(f"{v:.2f}" for v in figures["load_average_end"])
    console.print(targets_table(figures["targets"], load))
    console.print(f"figures: {output}" + (f"  (scratch: {folder})" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
