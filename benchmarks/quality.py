"""Quality benchmark (issue #5): ATM against AutoGluon, FLAML, Optuna and untuned baselines.

    .venv/bin/python benchmarks/quality.py --markdown                       # everything, 60 s
    .venv/bin/python benchmarks/quality.py --budget 20 --datasets titanic breast_cancer
    .venv/bin/python benchmarks/quality.py --systems atm --atm-option tuner=gp_ei
    .venv/bin/python benchmarks/quality.py --seed 1                         # other seeds
    .venv/bin/python benchmarks/quality.py --repeat-from benchmarks/out/quality-*.json --markdown

Every dataset x system runs in its own process (``--one SYSTEM DATASET``) with
OMP/OPENBLAS/MKL_NUM_THREADS = ``--threads``, the same wall-clock budget and the suite's fixed
75/25 split; the process group is SIGKILLed after 3x the budget of fitting or of scoring.
``--seed`` seeds every system's own randomness (ATM's datarun, FLAML, Optuna's sampler and CV
folds, AutoGluon's holdout split, the untuned models); the split stays the suite's. Each run
writes a JSON record (test ROC AUC, accuracy, macro-F1, log loss, fit wall time, scoring time,
configurations tried, chosen model); the parent collects them into ``--output`` after every run
and prints per-dataset tables, mean ranks (a failed run ranks last) and ATM - untuned HGB per
dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
import suite
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "out"
SYSTEM_NAMES = ("atm", "flaml", "flaml_sklearn", "optuna", "autogluon", "hgb", "rf")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
KILL_FACTOR = 3.0  # a run is killed after this many budgets of fitting, or of scoring
FITTED_MARKER = "fitted"  # written by a run when its fit ends
MIN_SCORING = 600.0  # seconds scoring may take whatever the budget (AutoGluon's, on one thread)
# Idle OpenMP threads sleep instead of spinning: on a shared, busy machine spinning threads of a
# 2-thread fit make small HistGradientBoosting/LightGBM fits 5-20x slower (measured).
OMP_WAIT_POLICY = "PASSIVE"
HGB_TARGET = -0.005  # ATM may trail untuned HGB by at most this much AUC on any dataset
METRICS = (  # name, column, higher is better
    ("AUC", "auc", True),
    ("accuracy", "accuracy", True),
    ("macro-F1", "f1_macro", True),
    ("log loss", "log_loss", False),
)


# -- one run (child process) -----------------------------------------------------------------------
def system_label(system: str, atm_options: list[str]) -> str:
    """``atm`` or ``atm[tuner=gp_ei,...]`` when ATM options are given."""
    if system == "atm" and atm_options:
        return f"atm[{','.join(atm_options)}]"
    return system


def run_one(args: argparse.Namespace) -> int:
    """Fit one system on one dataset, score it on the test part, write the JSON record."""
    warnings.filterwarnings("ignore")
    import systems

    systems.SEED = args.seed  # this process runs this one system: its seed is the run's
    system, dataset = args.one
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "system": system_label(system, args.atm_option),
        "dataset": dataset,
        "ok": False,
        "error": None,
    }
    try:
        options = systems.parse_atm_options(args.atm_option) if system == "atm" else {}
        if system == "atm":
            options.setdefault("seed", args.seed)
        train, test, label = suite.load(dataset)
        classes = sorted(train[label].unique().tolist())
        started = time.perf_counter()
        try:
            fit = systems.SYSTEMS[system]
            fitted = fit(train, label, args.budget, args.threads, workdir, options)
        finally:
            record["fit_seconds"] = round(time.perf_counter() - started, 2)
        (workdir / FITTED_MARKER).touch()  # the parent's kill limit now times the scoring
        record.update(
            configs_tried=fitted.configs_tried,
            chosen_model=fitted.chosen_model,
            details=fitted.details,
        )
        scoring = time.perf_counter()
        record.update(systems.score(fitted.model, test, label, classes))
        record["score_seconds"] = round(time.perf_counter() - scoring, 2)
        record["ok"] = True
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        traceback.print_exc()
    Path(args.result).write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({k: v for k, v in record.items() if k != "details"}, default=str))
    return 0


# -- the driver ------------------------------------------------------------------------------------
def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_of(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def git_state() -> dict[str, Any]:
    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def launch(
    system: str,
    dataset: str,
    args: argparse.Namespace,
    rundir: Path,
    progress: Progress,
    task: Any,
) -> dict[str, Any]:
    """Run ``--one system dataset`` in a new session; SIGKILL its group after 3x the budget of
    fitting, or once fitted of scoring."""
    label = system_label(system, args.atm_option)
    workdir = rundir / f"{dataset}--{label}".replace("/", "_")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    result = workdir / "result.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        system,
        dataset,
        "--budget",
        str(args.budget),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--workdir",
        str(workdir),
        "--result",
        str(result),
    ]
    for option in args.atm_option if system == "atm" else []:
        command += ["--atm-option", option]
    env = dict(os.environ, **{name: str(args.threads) for name in THREAD_VARIABLES})
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    load_before = os.getloadavg()
    busy, own, children = (
        busy_seconds(),
        cpu_of(resource.RUSAGE_SELF),
        cpu_of(resource.RUSAGE_CHILDREN),
    )
    started = time.perf_counter()
    limit = KILL_FACTOR * args.budget
    phase = "fitting"
    killed = False
    with (workdir / "log.txt").open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        while process.poll() is None:
            elapsed = time.perf_counter() - started
            if phase == "fitting" and (workdir / FITTED_MARKER).exists():
                # scoring has a limit of its own: AutoGluon's predictions on a large test part
                # take a new process, its imports and model loading, and its 60-s model of
                # diamonds (LightGBM, 900 rounds x 5 classes) took minutes on a busy machine
                phase, limit = "scoring", elapsed + max(KILL_FACTOR * args.budget, MIN_SCORING)
            progress.update(task, description=f"{dataset} / {label}: {elapsed:4.0f} s")
            if elapsed > limit:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                killed = True
                break
            time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):  # fit processes or workers left behind
        os.killpg(process.pid, signal.SIGKILL)
    wall = time.perf_counter() - started
    used = cpu_of(resource.RUSAGE_CHILDREN) - children + cpu_of(resource.RUSAGE_SELF) - own
    record: dict[str, Any] = {"system": label, "dataset": dataset, "ok": False, "error": None}
    if result.exists() and not killed:
        record = json.loads(result.read_text())
    elif killed:
        record["error"] = f"killed at {limit:.0f} s (limit of {phase})"
    else:
        record["error"] = f"exited with code {process.returncode} without a result (see log)"
    record.update(
        returncode=process.returncode,
        killed=killed,
        wall_seconds=round(wall, 2),
        load_average_before=[round(v, 2) for v in load_before],
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        other_load_cores=round(max(busy_seconds() - busy - used, 0.0) / wall, 2),
        workdir=str(workdir),
    )
    if not args.keep_artifacts:
        shutil.rmtree(workdir / "artifacts", ignore_errors=True)
        (workdir / "train.parquet").unlink(missing_ok=True)
    return record


def run_all(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(args.output or OUT_DIR / f"quality-{stamp}.json")
    rundir = output.with_suffix("")
    rundir.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        suite.materialize(dataset)
    versions = {
        name: version(name)
        for name in ("scikit-learn", "flaml", "optuna", "lightgbm", "xgboost", "baytune")
    }
    if "autogluon" in args.systems:
        from systems import autogluon_version

        versions["autogluon.tabular (own venv)"] = autogluon_version()
    report: dict[str, Any] = {
        "meta": {
            "budget_seconds": args.budget,
            "threads": args.threads,
            "seed": args.seed,
            "datasets": args.datasets,
            "systems": [system_label(s, args.atm_option) for s in args.systems],
            "atm_options": args.atm_option,
            "kill_after_seconds": KILL_FACTOR * args.budget,
            "omp_wait_policy": OMP_WAIT_POLICY,
            "started": datetime.now().isoformat(timespec="seconds"),
            "load_average_start": [round(v, 2) for v in os.getloadavg()],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "versions": versions,
            "git": git_state(),
        },
        "runs": [],
    }
    console.print(
        f"quality benchmark: {len(args.datasets)} datasets x {len(args.systems)} systems, "
        f"budget {args.budget:g} s, {args.threads} threads, load {os.getloadavg()} -> {output}"
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("", total=len(args.datasets) * len(args.systems))
        for dataset in args.datasets:
            for system in args.systems:
                record = launch(system, dataset, args, rundir, progress, task)
                report["runs"].append(record)
                report["meta"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
                report["meta"]["finished"] = datetime.now().isoformat(timespec="seconds")
                output.write_text(json.dumps(report, indent=2, default=str))
                progress.console.print(run_line(record))
                progress.advance(task)
    return report


def run_line(record: dict[str, Any]) -> str:
    head = f"{record['dataset']:>14} {record['system']:<14}"
    if not record.get("ok"):
        return f"{head} [red]FAILED[/] {record.get('error')}"
    return (
        f"{head} auc {record['auc']:.4f}  acc {record['accuracy']:.4f}  "
        f"fit {record['fit_seconds']:6.1f} s  configs {record['configs_tried']:>4}  "
        f"{record['chosen_model']}  (other load {record['other_load_cores']:.2f} cores)"
    )


# -- tables ----------------------------------------------------------------------------------------
def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run; the last record wins when a (system, dataset) pair appears twice."""
    frame = pd.DataFrame(runs)
    for column in ("auc", "accuracy", "f1_macro", "log_loss", "fit_seconds", "configs_tried"):
        if column not in frame:
            frame[column] = math.nan
    frame.loc[~frame["ok"].astype(bool), ["auc", "accuracy", "f1_macro", "log_loss"]] = math.nan
    return frame.drop_duplicates(["system", "dataset"], keep="last").reset_index(drop=True)


def mean_ranks(frame: pd.DataFrame, column: str, higher: bool) -> pd.Series:
    """Mean rank over datasets (1 = best); a failed run or a missing value ranks last."""
    table = frame.pivot(index="dataset", columns="system", values=column)
    ranks = table.rank(axis=1, ascending=not higher, na_option="bottom", method="average")
    return ranks.mean()


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tables(report: dict[str, Any], systems: list[str] | None = None) -> list[tuple[str, list]]:
    """(title, rows) pairs, the first row being the header."""
    frame = runs_frame(report["runs"])
    if systems:
        frame = frame[frame["system"].isin(systems)]
    order = list(dict.fromkeys(frame["system"]))
    complete = frame.groupby("dataset")["system"].nunique() == len(order)
    datasets = [d for d in dict.fromkeys(frame["dataset"]) if complete[d]]
    ranked = frame[frame["dataset"].isin(datasets)]
    out: list[tuple[str, list]] = []

    header = [
        "system",
        *[f"mean {n} rank" for n, _, _ in METRICS],
        "mean AUC",
        "failed",
        "mean fit s",
    ]
    ranks = {column: mean_ranks(ranked, column, higher) for _, column, higher in METRICS}
    rows = [header]
    for system in sorted(order, key=lambda s: ranks["auc"][s]):
        mine = ranked[ranked["system"] == system]
        rows.append(
            [
                system,
                *[fmt(ranks[column][system], 2) for _, column, _ in METRICS],
                fmt(mine["auc"].mean()),
                str(int((~mine["ok"].astype(bool)).sum())),
                fmt(mine["fit_seconds"].mean(), 1),
            ]
        )
    out.append((f"Summary over {len(datasets)} datasets ({', '.join(datasets)})", rows))

    auc = frame.pivot(index="dataset", columns="system", values="auc")
    rows = [["dataset", *order]]
    for dataset in dict.fromkeys(frame["dataset"]):
        best = auc.loc[dataset].max()
        cells = []
        for system in order:
            value = auc.loc[dataset].get(system, math.nan)
            text = fmt(value) if not pd.isna(value) else "FAIL"
            cells.append(f"**{text}**" if value == best else text)
        rows.append([dataset, *cells])
    out.append(("Test ROC AUC (best in bold)", rows))

    atm_labels = [s for s in order if s.startswith("atm")]
    if "hgb" in order:
        for atm in atm_labels:
            rows = [["dataset", f"{atm} AUC", "hgb AUC", "difference", f">= {HGB_TARGET}"]]
            for dataset in dict.fromkeys(frame["dataset"]):
                a, h = auc.loc[dataset].get(atm, math.nan), auc.loc[dataset].get("hgb", math.nan)
                diff = a - h
                ok = "yes" if diff >= HGB_TARGET else "NO"
                rows.append(
                    [dataset, fmt(a), fmt(h), f"{diff:+.4f}", ok if not pd.isna(diff) else "-"]
                )
            out.append((f"{atm} - untuned HGB (target: never below {HGB_TARGET})", rows))

    for dataset in dict.fromkeys(frame["dataset"]):
        rows = [
            [
                "system",
                "AUC",
                "accuracy",
                "macro-F1",
                "log loss",
                "fit s",
                "configs",
                "chosen",
                "other load",
            ]
        ]
        for _, run in frame[frame["dataset"] == dataset].iterrows():
            rows.append(
                [
                    run["system"],
                    fmt(run["auc"]) if run["ok"] else "FAIL",
                    fmt(run["accuracy"]),
                    fmt(run["f1_macro"]),
                    fmt(run["log_loss"]),
                    fmt(run["fit_seconds"], 1),
                    fmt(run.get("configs_tried"), 0) if run["ok"] else "-",
                    str(run.get("chosen_model") if run["ok"] else run.get("error"))[:80],
                    fmt(run.get("other_load_cores"), 2),
                ]
            )
        out.append((f"{dataset}", rows))
    return out


def targets(report: dict[str, Any], systems: list[str] | None = None) -> list[str]:
    """Whether each ATM label meets the issue's targets (rank vs FLAML/Optuna, vs HGB)."""
    frame = runs_frame(report["runs"])
    if systems:
        frame = frame[frame["system"].isin(systems)]
    order = list(dict.fromkeys(frame["system"]))
    complete = frame.groupby("dataset")["system"].nunique() == len(order)
    ranked = frame[frame["dataset"].isin(complete[complete].index)]
    ranks = mean_ranks(ranked, "auc", True)
    auc = frame.pivot(index="dataset", columns="system", values="auc")
    lines = []
    for atm in (s for s in order if s.startswith("atm")):
        for rival in ("autogluon", "flaml", "optuna"):
            if rival in ranks:
                gap = ranks[rival] - ranks[atm]
                verdict = "met" if gap > 0 else f"MISSED by {abs(gap):.2f} rank"
                lines.append(
                    f"{atm} mean AUC rank {ranks[atm]:.2f} vs {rival} {ranks[rival]:.2f}: {verdict}"
                )
        if "hgb" in auc:
            diffs = (auc[atm] - auc["hgb"]).fillna(-math.inf)
            worst = diffs.idxmin()
            verdict = "met" if diffs.min() >= HGB_TARGET else "MISSED"
            lines.append(
                f"{atm} - hgb AUC worst on {worst}: {diffs.min():+.4f} (target >= {HGB_TARGET}): "
                f"{verdict}; below target on {int((diffs < HGB_TARGET).sum())} of {len(diffs)}"
            )
    return lines


def markdown(report: dict[str, Any], systems: list[str] | None = None) -> str:
    meta = report.get("meta", {})
    parts = [
        f"Budget {meta.get('budget_seconds')} s, {meta.get('threads')} threads, "
        f"load average {meta.get('load_average_start')} -> {meta.get('load_average_end')}",
        "",
    ]
    for title, rows in tables(report, systems):
        parts += [f"### {title}", "", "| " + " | ".join(rows[0]) + " |"]
        parts.append("|" + "---|" * len(rows[0]))
        parts += ["| " + " | ".join(map(str, row)) + " |" for row in rows[1:]]
        parts.append("")
    parts += ["### Targets", "", *[f"* {line}" for line in targets(report, systems)], ""]
    return "\n".join(parts)


def show(report: dict[str, Any], console: Console, systems: list[str] | None = None) -> None:
    for title, rows in tables(report, systems):
        table = Table(title=title, title_justify="left")
        for column in rows[0]:
            table.add_column(column)
        for row in rows[1:]:
            table.add_row(*[str(cell).replace("**", "") for cell in row])
        console.print(table)
    for line in targets(report, systems):
        console.print(line)


def merge(paths: list[str]) -> dict[str, Any]:
    """Several result files as one report (later files win on repeated system x dataset)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = {"meta": dict(reports[0]["meta"]), "runs": []}
    for report in reports:
        merged["runs"] += report["runs"]
    if len(reports) > 1:
        merged["meta"]["load_average_end"] = reports[-1]["meta"].get("load_average_end")
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per system and dataset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=0, help="every system's own seed (the split stays fixed)"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["all"],
        choices=[*suite.SUITE, *suite.GROUPS],
        help="datasets or groups: small (the first 7), large (issue #16's 5), all",
    )
    parser.add_argument("--systems", nargs="+", default=list(SYSTEM_NAMES), choices=SYSTEM_NAMES)
    parser.add_argument(
        "--atm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a DatarunRequest option for the atm system (repeatable), e.g. tuner=gp_ei",
    )
    parser.add_argument(
        "--output", help="result JSON (default benchmarks/out/quality-<stamp>.json)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument(
        "--repeat-from", nargs="+", metavar="JSON", help="print the tables of saved result files"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="LABEL", help="with --repeat-from: these system labels only"
    )
    parser.add_argument("--keep-artifacts", action="store_true", help="keep ATM's model files")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.datasets = suite.expand(args.datasets)
    if args.one:
        return run_one(args)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.repeat_from:
        report = merge(args.repeat_from)
    else:
        if "atm" in args.systems and args.atm_option:
            from systems import parse_atm_options

            parse_atm_options(args.atm_option)  # refuse a bad option before any run
        report = run_all(args, console)
    text = markdown(report, args.only)
    if not args.repeat_from:
        runs = report["runs"]
        if runs:
            path = Path(runs[0]["workdir"]).parent.with_suffix(".md")
            path.write_text(text)
            console.print(f"results: {path.with_suffix('.json')} and {path}")
    if args.markdown:
        print(text)
    else:
        show(report, console, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
