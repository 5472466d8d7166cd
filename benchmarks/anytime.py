"""The anytime curve (issue 16): the best test AUC against elapsed seconds, ATM and FLAML.

    .venv/bin/python benchmarks/anytime.py --dataset diamonds --budget 120

Each system runs once, in its own process with one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1),
on the suite's training rows for the whole budget, exactly as ``quality.py`` runs it. Then,
for every moment the system's own choice changed, that choice is scored on the suite's test
rows (the scoring time is not counted):

* ATM: the leaderboard's best complete classifier at that moment (highest rung, then its
  judgment metric), its model as stored during the search;
* FLAML: a trial with a new best validation loss, its configuration retrained from FLAML's log
  on the training rows (``retrain_from_log``), as FLAML does with its best one at the end.

The last point of each curve is the model the system hands back at the end (ATM: its final
ensemble refitted on every row; FLAML: its best model). Writes
``benchmarks/out/anytime-DATASET.json`` and the plot ``benchmarks/anytime-DATASET.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import suite
from systems import SEARCH_SHARE, _xy, fit_atm, roc_auc, score

BENCHMARKS = Path(__file__).resolve().parent
OUT_DIR = BENCHMARKS / "out"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def test_auc(model: Any, test: Any, label: str, classes: list) -> float:
    return score(model, test, label, classes)["auc"]


def atm_curve(dataset: str, budget: float, workdir: Path) -> dict[str, Any]:
    """ATM's default datarun; the best classifier's test AUC each time the best changed."""
    from atm_core.modelhub.models import utcnow
    from atm_core.modelhub.reads import judgment

    train, test, label = suite.load(dataset)
    classes = sorted(train[label].unique())
    started_at = utcnow()
    result = fit_atm(train, label, budget, 1, workdir)
    wall = (utcnow() - started_at).total_seconds()
    final_auc = test_auc(result.model, test, label, classes)

    from atm_core import ATM

    hub = ATM(
        database_url=f"sqlite:///{workdir.resolve()}/atm.db",
        artifact_root=str(workdir.resolve() / "artifacts"),
    ).hub
    [datarun] = hub.dataruns()
    finished = sorted(
        (c for c in hub.classifiers(datarun.id, status="complete") if c.end_time is not None),
        key=lambda c: c.end_time,
    )
    points, best, best_key = [], None, None
    for classifier in finished:
        key = (classifier.rung, judgment(classifier, datarun.score_target))
        if best_key is None or key > best_key:
            best, best_key = classifier, key
            model = hub.load_model(best.id, final=False)
            points.append(
                {
                    "seconds": (classifier.end_time - started_at).total_seconds(),
                    "auc": test_auc(model, test, label, classes),
                    "choice": f"{best.method} (classifier {best.id}, rung {best.rung})",
                }
            )
    points.append({"seconds": wall, "auc": final_auc, "choice": f"final: {result.chosen_model}"})
    return {
        "system": "atm",
        "wall_seconds": wall,
        "evaluations": len(hub.classifiers(datarun.id)),
        "points": points,
    }


def flaml_curve(dataset: str, budget: float, workdir: Path) -> dict[str, Any]:
    """FLAML (default estimators, one thread); each new best trial retrained and scored."""
    from flaml import AutoML

    train, test, label = suite.load(dataset)
    classes = sorted(train[label].unique())
    X, y = _xy(train, label)
    log = workdir / "flaml.log"
    metric = "roc_auc" if len(classes) == 2 else "roc_auc_ovr"
    automl = AutoML()
    started = time.perf_counter()
    automl.fit(
        X,
        y,
        task="classification",
        metric=metric,
        time_budget=SEARCH_SHARE * budget,
        n_jobs=1,
        seed=0,
        log_file_name=str(log),
        log_type="all",
        verbose=0,
    )
    wall = time.perf_counter() - started
    final_auc = test_auc(automl, test, label, classes)
    records = [json.loads(line) for line in log.read_text().splitlines() if '"record_id"' in line]
    points, best_loss = [], float("inf")
    for record in records:
        loss = record.get("validation_loss")
        if loss is None or loss >= best_loss:
            continue
        best_loss = loss
        again = AutoML()
        again.retrain_from_log(
            str(log),
            X,
            y,
            task="classification",
            train_best=False,
            train_full=True,
            record_id=record["record_id"],
            n_jobs=1,
        )
        proba = again.predict_proba(test.drop(columns=[label]))
        order = [list(again.classes_).index(c) for c in classes]
        points.append(
            {
                "seconds": record["wall_clock_time"],
                "auc": roc_auc(test[label], proba[:, order], classes),
                "choice": f"{record['learner']} (trial {record['record_id']})",
            }
        )
    points.append({"seconds": wall, "auc": final_auc, "choice": f"final: {automl.best_estimator}"})
    return {"system": "flaml", "wall_seconds": wall, "evaluations": len(records), "points": points}


CURVES = {"atm": atm_curve, "flaml": flaml_curve}


def run_child(system: str, dataset: str, budget: float, workdir: Path) -> dict[str, Any]:
    """One system in a process of its own, with one thread for every library."""
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "curve.json"
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, __file__, "--one", system, "--dataset", dataset]
    command += ["--budget", str(budget), "--workdir", str(workdir)]
    subprocess.run(command, env=env, check=True)
    return json.loads(output.read_text())


def plot(curves: list[dict[str, Any]], dataset: str, budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for curve in curves:
        xs = [p["seconds"] for p in curve["points"]]
        ys = [p["auc"] for p in curve["points"]]
        label = f"{curve['system']} ({curve['evaluations']} evaluations)"
        (line,) = axes.step(xs, ys, where="post", label=label)
        axes.plot(xs[-1:], ys[-1:], "o", color=line.get_color())  # the model handed back
    axes.axvline(budget, color="grey", linestyle=":", label=f"budget {budget:.0f} s")
    axes.set_xlabel("seconds since the call started")
    axes.set_ylabel("test ROC AUC of the current best")
    axes.set_title(f"Anytime curve: {dataset} (one thread; dot: the model handed back)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="diamonds", choices=list(suite.SUITE))
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per system")
    parser.add_argument("--systems", nargs="+", default=list(CURVES), choices=list(CURVES))
    parser.add_argument("--one", choices=list(CURVES), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        curve = CURVES[args.one](args.dataset, args.budget, args.workdir)
        (args.workdir / "curve.json").write_text(json.dumps(curve, indent=1))
        return 0
    suite.materialize(args.dataset)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    curves = []
    for system in args.systems:
        workdir = OUT_DIR / f"anytime-{stamp}" / system
        curve = run_child(system, args.dataset, args.budget, workdir)
        curves.append(curve)
        best = max(p["auc"] for p in curve["points"])
        print(
            f"{system}: {curve['evaluations']} evaluations in {curve['wall_seconds']:.1f} s, "
            f"final test AUC {curve['points'][-1]['auc']:.4f} (best seen {best:.4f})"
        )
    report = {"dataset": args.dataset, "budget": args.budget, "curves": curves}
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / f"anytime-{args.dataset}.json").write_text(json.dumps(report, indent=1))
    image = BENCHMARKS / f"anytime-{args.dataset}.png"
    plot(curves, args.dataset, args.budget, image)
    print(f"plot: {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
