"""Which classifier should a finished datarun hand over? Judgment rules replayed offline.

    .venv/bin/python benchmarks/selection.py benchmarks/out/tuner-*-seed*.json

For every ATM run in the given ``quality.py`` result files (their ModelHubs stay in the run's
work folder), each rule picks one complete classifier from the datarun's scores; the pick is
refitted on the benchmark's whole training part, as ``quality.py`` refits ATM's best, and
scored on the fixed test part. Rules:

* ``cv``: the highest cross-validated judgment metric (ATM's default ``score_target``);
* ``mu_sigma``: the highest ``cv - 2 stdev`` (ATM's ``mu_sigma`` target);
* ``cv+test``: the highest mean of the cross-validated score and the score on the datarun's
  own test split, i.e. judged on every labelled row the datarun holds instead of its folds.

A last column, ``handed over``, is the test AUC ``quality.py`` measured for what the run handed
over: the datarun's ensemble (refitted within the budget) for runs of the current code, the
``cv`` pick for runs made before ensembles (or with ``--atm-option final=best``).

The search itself is not replayed (a datarun judging by another rule would also have chosen
other hyperpartitions): this isolates the final choice. Prints test AUC per run and rule, mean
AUC and the worst difference to untuned HGB (``HGB``: its test AUC on the same fixed split,
as ``quality.py`` measured it; untuned with a fixed seed, it does not vary between runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import suite
from rich import box
from rich.console import Console
from rich.table import Table
from systems import score

ROOT = Path(__file__).resolve().parent.parent
RULES = {
    "cv": lambda c: c.cv_judgment_metric,
    "mu_sigma": lambda c: c.cv_judgment_metric - 2 * c.cv_judgment_metric_stdev,
    "cv+test": lambda c: (c.cv_judgment_metric + c.test_judgment_metric) / 2,
}
# Untuned HistGradientBoosting on the suite's fixed split (benchmarks/RESULTS.md).
HGB = {
    "breast_cancer": 0.9866,
    "digits": 0.9997,
    "credit_data": 0.8439,
    "hpc_data": 0.9572,
    "lending_club": 0.7405,
    "titanic": 0.8119,
    "synthetic_100k": 0.9467,
}


def picks(hub: Any, datarun_id: int) -> dict[str, Any]:
    """The classifier each rule picks (ties: the older one, as the leaderboard breaks them)."""
    from atm_core.modelhub.models import ClassifierStatus

    complete = [
        c
        for c in hub.classifiers(datarun_id)
        if c.status == ClassifierStatus.COMPLETE and c.test_judgment_metric is not None
    ]
    return {name: max(complete, key=lambda c: (rule(c), -c.id)) for name, rule in RULES.items()}


def refit_and_score(hub: Any, classifier: Any, dataset_name: str, threads: int) -> float:
    from atm_core.data.dataset import FeatureSchema
    from atm_core.isolation import fit_threads
    from atm_core.pipeline import build_pipeline

    train, test, label = suite.load(dataset_name)
    partition = hub.get_hyperpartition(classifier.hyperpartition_id)
    datarun = hub.get_datarun(classifier.datarun_id)
    schema = FeatureSchema.from_json(hub.get_dataset(datarun.dataset_id).feature_schema)
    model = build_pipeline(
        partition.estimator_class,
        classifier.hyperparameters_values,
        schema,
        random_state=datarun.seed,
        n_jobs=threads,
    )
    X, y = train.drop(columns=[label]), train[label]
    with fit_threads(threads):
        model.fit(X, y)
    return score(model, test, label, sorted(y.unique().tolist()))["auc"]


def replay(run: dict[str, Any], threads: int) -> dict[str, tuple[str, float]]:
    from atm_core.evaluation import silence_fit_warnings
    from atm_core.modelhub import ModelHub

    silence_fit_warnings()
    folder = ROOT / run["workdir"]
    with tempfile.TemporaryDirectory() as artifacts:
        hub = ModelHub(f"sqlite:///{folder / 'atm.db'}", artifact_root=artifacts)
        try:
            [datarun] = hub.dataruns()
            chosen = picks(hub, datarun.id)
            aucs: dict[int, float] = {}
            result = {}
            for rule, classifier in chosen.items():
                if classifier.id not in aucs:
                    aucs[classifier.id] = refit_and_score(hub, classifier, run["dataset"], threads)
                method = hub.get_hyperpartition(classifier.hyperpartition_id).method
                result[rule] = (f"{method} #{classifier.id}", aucs[classifier.id])
            return result
        finally:
            hub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="quality.py result JSON files")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    table = Table(title="Test AUC of each rule's pick", box=box.MARKDOWN)
    for column in ("run", "dataset", *RULES, "handed over"):
        table.add_column(column)
    per_rule: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in args.results:
        for run in json.loads(Path(path).read_text())["runs"]:
            if not run["ok"] or not run["system"].startswith("atm"):
                continue
            outcome = replay(run, args.threads)
            outcome["handed over"] = (run["chosen_model"], run["auc"])
            for rule, (_, auc) in outcome.items():
                per_rule[rule][Path(path).stem].append(auc - HGB[run["dataset"]])
            cells = [f"{auc:.4f} ({pick})" for pick, auc in outcome.values()]
            table.add_row(Path(path).stem, run["dataset"], *cells)
            console.print(f"{Path(path).stem} {run['dataset']}: {cells}")
    console.print(table)
    summary = Table(title="Per rule, over the runs", box=box.MARKDOWN)
    for column in ("rule", "mean AUC - HGB", "worst AUC - HGB", "runs below HGB - 0.005"):
        summary.add_column(column)
    for rule, runs in per_rule.items():
        differences = [d for run in runs.values() for d in run]
        below = sum(min(run) < -0.005 for run in runs.values())
        summary.add_row(
            rule,
            f"{statistics.fmean(differences):+.4f}",
            f"{min(differences):+.4f}",
            f"{below} of {len(runs)}",
        )
    console.print(summary)


if __name__ == "__main__":
    main()
