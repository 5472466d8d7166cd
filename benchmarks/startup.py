"""Start-up: from a command's launch to its first classifier started, on a 1 MB CSV.

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--rows 12000]

The CSV is generated (seeded): numeric columns, two string columns, 5 % missing cells and a
string label. Each repeat starts from a fresh SQLite ModelHub and artifact folder and measures,
as whole processes, what a user waits for before the search begins:

* ``enter_data + worker``: ``atm enter_data`` run to its end, then ``atm worker`` launched;
  the figure runs from the first launch to the first classifier's ``start_time``.
* ``enter_data``: ``atm enter_data`` alone, from its launch to its end.
* ``ATM().run()``: one ``python -c`` process calling ``ATM(...).run(...)``.
* ``atm run``: the flow on an embedded Prefect (its temporary server's start included).

Reported: the median and every repeat, in a table. Target (issue 16): <= 2 s for the first two.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def write_csv(path: Path, rows: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows).round(4) for i in range(8)})
    frame["city"] = rng.choice(["Boston", "Cambridge", "Somerville", "Quincy"], size=rows)
    frame["plan"] = rng.choice(["basic", "plus", "pro"], size=rows)
    for column in ("x0", "x3", "city"):
        frame.loc[rng.random(rows) < 0.05, column] = None
    frame["label"] = np.where(frame["x1"] + rng.normal(scale=0.5, size=rows) > 0, "yes", "no")
    frame.to_csv(path, index=False)
    return path.stat().st_size


def first_start(database: Path) -> float | None:
    """The first classifier's start_time (epoch seconds), once there is one."""
    if not database.exists():
        return None
    try:
        with sqlite3.connect(database) as connection:
            row = connection.execute("SELECT min(start_time) FROM classifiers").fetchone()
    except sqlite3.OperationalError:
        return None
    if not row or row[0] is None:
        return None
    return datetime.fromisoformat(str(row[0])).replace(tzinfo=UTC).timestamp()


def wait_for_first(database: Path, process: subprocess.Popen, began: float) -> float:
    while True:
        started = first_start(database)
        if started is not None:
            return started - began
        if process.poll() is not None and first_start(database) is None:
            raise RuntimeError(f"{process.args[:3]} ended with no classifier started")
        time.sleep(0.02)


def measure(kind: str, csv: Path, folder: Path) -> float:
    database = folder / "atm.db"
    env_flags = ["--database-url", f"sqlite:///{database}", "--artifact-root", str(folder / "a")]
    options = ["--train-path", str(csv), "--class-column", "label", "--methods", "dt",
               "--budget", "2"]  # fmt: skip
    began = time.time()
    if kind == "enter_data":
        subprocess.run([BIN / "atm", "enter_data", *env_flags, *options], check=True,
                       capture_output=True)  # fmt: skip
        return time.time() - began
    if kind == "enter_data + worker":
        subprocess.run([BIN / "atm", "enter_data", *env_flags, *options], check=True,
                       capture_output=True)  # fmt: skip
        process = subprocess.Popen([BIN / "atm", "worker", "--quiet", *env_flags],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    elif kind == "ATM().run()":
        code = (
            "from atm_core import ATM; "
            f"ATM('sqlite:///{database}', '{folder / 'a'}').run(train_path='{csv}', "
            "class_column='label', methods=['dt'], budget=2)"
        )
        process = subprocess.Popen([sys.executable, "-c", code], cwd=folder,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    else:
        process = subprocess.Popen(
            [BIN / "atm", "run", *env_flags, *options], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={"PATH": str(BIN), "PREFECT_HOME": str(folder / "prefect"),
                 "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HOME": str(folder)},
        )  # fmt: skip
    try:
        return wait_for_first(database, process, began)
    finally:
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=12_000, help="about 1 MB")
    parser.add_argument("--kinds", nargs="+", default=[
        "enter_data", "enter_data + worker", "ATM().run()", "atm run"])  # fmt: skip
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="atm-startup-") as scratch:
        csv = Path(scratch) / "startup.csv"
        size = write_csv(csv, args.rows)
        table = Table(title=f"launch to first classifier started, {size / 1e6:.2f} MB CSV "
                      f"({args.rows} rows)")  # fmt: skip
        for column in ("command", "median s", "repeats s"):
            table.add_column(column)
        for kind in args.kinds:
            seconds = []
            for repeat in range(args.repeats):
                slug = "".join(c if c.isalnum() else "_" for c in kind)
                folder = Path(scratch) / f"{slug}-{repeat}"
                folder.mkdir()
                seconds.append(measure(kind, csv, folder))
            table.add_row(kind, f"{statistics.median(seconds):.2f}",
                          ", ".join(f"{s:.2f}" for s in seconds))  # fmt: skip
        console.print(table)
        load = Path("/proc/loadavg").read_text().split()[:3]
        console.print(f"load average {' / '.join(load)}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
