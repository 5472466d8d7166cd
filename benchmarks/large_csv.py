"""Time and peak memory of ``atm enter_data`` and ``atm worker`` on a ~200 MB CSV (issue 18,
item 7 "Large files"; target: each peak at most 3x the file's size).

    .venv/bin/python benchmarks/large_csv.py                          # the code of this tree
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/large_csv.py --label before
    .venv/bin/python benchmarks/large_csv.py --rows 200000           # a quick look (~25 MB)

The CSV (seeded, written once to ``benchmarks/data/``, git-ignored) has 2M rows: 8 float
columns, 3 integer columns, 4 text columns (5 to 2,000 distinct values), ~2 % missing values in
six of them, and a text label (3 classes) that depends on some of them. Each command runs as
``python -m atm_core.cli ...`` in a fresh process from a scratch folder, with a fresh SQLite
ModelHub and artifact folder (so ``PYTHONPATH`` picks the version measured): first
``enter_data --methods logreg dt --budget 2`` (``--no-refit`` unless ``--refit``), then
``worker --quiet``. A sampler reads every 0.1 s the process's RSS and high-water mark (VmHWM)
and the unique memory (USS) of its children (the fit processes it forks share its data
copy-on-write); the peak reported is the largest of VmHWM and RSS + children's USS. Figures are
appended as a JSON line to ``benchmarks/out/large_csv.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from process_memory import MemorySampler
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
OUT = ROOT / "benchmarks" / "out"
MB = 1024 * 1024
ROWS = 2_000_000


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """The benchmark's CSV: numbers, integers, text categories, missing values, a text label."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for index in range(8):
        values = rng.normal(0, 10 ** (index % 4), rows).round(4)
        columns[f"num_{index}"] = values
    columns["int_0"] = rng.integers(0, 100, rows)
    columns["int_1"] = rng.integers(0, 100_000, rows)
    columns["int_2"] = rng.integers(-5, 5, rows)
    choices = {
        "colour": np.array(["red", "green", "blue", "dark grey", "white"]),
        "city": np.array([f"city_{i}" for i in range(60)]),
        "month": np.array(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        ),
        "product": np.array([f"P-{i:04d}" for i in range(2000)]),
    }
    for name, values in choices.items():
        columns[name] = values[rng.integers(0, len(values), rows)]
    frame = pd.DataFrame(columns)
    score = (
        frame["num_0"]
        + 0.2 * frame["num_1"]
        + (frame["colour"] == "red") * 1.5
        - (frame["month"].isin(["jan", "feb"])) * 1.0
        + frame["int_2"] * 0.3
        + rng.normal(0, 1, rows)
    )
    frame["label"] = np.where(score > 1.0, "yes", np.where(score < -1.0, "no", "maybe"))
    for name in ("num_1", "num_5", "int_1", "colour", "city", "product"):
        missing = rng.random(rows) < 0.02
        frame[name] = frame[name].astype(object).where(~missing, None)
    temporary = path.with_suffix(".tmp")
    frame.to_csv(temporary, index=False)
    temporary.rename(path)


def measure(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> dict[str, float]:
    """Run ``python -m atm_core.cli COMMAND``: wall seconds, CPU seconds, memory peaks."""
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "atm_core.cli", *command],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        sampler = MemorySampler(process.pid)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    sampled = sampler.stop()
    peaks = {
        "hwm_mb": sampled["worker_hwm_mb"],
        "tree_mb": sampled["tree_mb"],
        "children_uss_mb": sampled["children_uss_mb"],
        "peak_mb": max(sampled["worker_hwm_mb"], sampled["tree_mb"]),
    }
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} exited {code}; see {log}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, **peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--label", default="this tree", help="the version's name in the table")
    parser.add_argument("--methods", nargs="+", default=["logreg", "dt"])
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--refit", action="store_true", help="keep the final refit")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    console = Console()
    DATA.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    csv = DATA / f"large-{args.rows}.csv"
    if not csv.exists():
        console.print(f"writing {csv} ({args.rows:,} rows)")
        generate(csv, args.rows)
    size_mb = csv.stat().st_size / MB
    scratch = Path(tempfile.mkdtemp(prefix="atm-large-csv-"))
    env = {
        **os.environ,
        "ATM_DATABASE_URL": f"sqlite:///{scratch}/atm.db",
        "ATM_ARTIFACT_ROOT": str(scratch / "artifacts"),
    }
    where = subprocess.run(
        [sys.executable, "-c", "import atm_core; print(atm_core.__file__)"],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    console.print(f"atm_core from {where}; scratch {scratch}")
    enter = ["enter_data", "--train-path", str(csv), "--class-column", "label"]
    enter += ["--methods", *args.methods, "--budget", str(args.budget)]
    enter += [] if args.refit else ["--no-refit"]
    figures = {
        "enter_data": measure(enter, env, scratch, scratch / "enter_data.log"),
        "worker": measure(["worker", "--quiet"], env, scratch, scratch / "worker.log"),
    }
    record = {
        "label": args.label,
        "atm_core": where,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load": os.getloadavg(),
        "rows": args.rows,
        "file_mb": size_mb,
        "methods": args.methods,
        "budget": args.budget,
        "refit": args.refit,
        **figures,
    }
    with (OUT / "large_csv.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")

    table = Table(title=f"{args.label}: {csv.name}, {size_mb:.0f} MB, {args.rows:,} rows")
    for column in ("command", "wall s", "CPU s", "VmHWM MB", "RSS + fits' USS MB", "peak / file"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, figure in figures.items():
        table.add_row(
            name,
            f"{figure['wall_s']:.1f}",
            f"{figure['cpu_s']:.1f}",
            f"{figure['hwm_mb']:.0f}",
            f"{figure['tree_mb']:.0f}",
            f"{figure['peak_mb'] / size_mb:.2f}x",
        )
    console.print(table)
    if args.keep:
        console.print(f"kept {scratch}")
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
