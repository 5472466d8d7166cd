"""AutoGluon as a peer of the quality benchmark, run by the interpreter of its own virtualenv
(``benchmarks/.venv-autogluon``, made by ``setup_autogluon.sh``): AutoGluon pins pandas below
2.4 and cannot live in the project's venv.

    # fit within a time limit; with --test also predict it and write the test metrics
    benchmarks/.venv-autogluon/bin/python benchmarks/peers/autogluon_runner.py fit \\
        --train train.parquet --test test.parquet --label label --time-limit 60 \\
        --seed 0 --threads 1 --model-dir /tmp/ag --output result.json
    # predict with a fitted predictor: prediction and p0..p{k-1} (in the order of "classes")
    benchmarks/.venv-autogluon/bin/python benchmarks/peers/autogluon_runner.py predict \\
        --model-dir /tmp/ag --data rows.parquet --output predictions.parquet

``fit`` runs ``TabularPredictor(label, eval_metric="roc_auc" | "roc_auc_ovr_macro").fit(train,
time_limit=..., num_cpus=threads, num_gpus=0)`` with the default preset (medium_quality). The
seed sets the learner's ``random_state`` (its holdout split); AutoGluon's models keep their
own default seeds (0). The thread variables (OMP/OPENBLAS/MKL_NUM_THREADS) are set to
``--threads`` before numpy loads unless the caller set them. Files are parquet or CSV (by
suffix). Test metrics come from ``benchmarks/systems.py``'s ``score``, the function that
scores every other system of the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PRESET = "medium_quality"  # AutoGluon's default, named so the record says which


def read_table(path: str):
    import pandas as pd

    return pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)


class FittedPredictor:
    """A ``TabularPredictor`` behind the interface ``systems.score`` expects. ``predict`` and
    ``predict_proba`` of the same frame share one prediction (``predict_from_proba``): the
    models of a 60-s fit can take a minute to predict a large test part on one thread."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.classes_ = list(predictor.class_labels)
        self._last: tuple[object, object] | None = None

    def _probabilities(self, X):
        if self._last is None or self._last[0] is not X:
            self._last = (X, self.predictor.predict_proba(X, as_multiclass=True))
        return self._last[1]

    def predict(self, X):
        return self.predictor.predict_from_proba(self._probabilities(X)).to_numpy()

    def predict_proba(self, X):
        probabilities = self._probabilities(X)[self.classes_].to_numpy(dtype=float)
        # float32 inside AutoGluon: rows sum to 1 within ~1e-7, which log_loss warns about
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def fit(args: argparse.Namespace) -> int:
    from autogluon.tabular import TabularPredictor

    started = time.perf_counter()
    train = read_table(args.train)
    n_classes = train[args.label].nunique()
    metric = "roc_auc" if n_classes == 2 else "roc_auc_ovr_macro"
    predictor = TabularPredictor(
        label=args.label,
        eval_metric=metric,
        path=args.model_dir,
        problem_type="binary" if n_classes == 2 else "multiclass",
        verbosity=args.verbosity,
        learner_kwargs={"random_state": args.seed},
    )
    fit_started = time.perf_counter()
    predictor.fit(
        train,
        time_limit=args.time_limit,
        presets=PRESET,
        num_cpus=args.threads,
        num_gpus=0,
    )
    fitted = time.perf_counter()
    board = predictor.leaderboard(silent=True)
    trained = [name for name in board["model"] if not name.startswith("WeightedEnsemble")]
    best = predictor.model_best
    record = {
        "system": "autogluon",
        "preset": PRESET,
        "eval_metric": metric,
        "time_limit": args.time_limit,
        "threads": args.threads,
        "seed": args.seed,
        "classes": [c.item() if hasattr(c, "item") else c for c in predictor.class_labels],
        "fit_seconds": round(fitted - fit_started, 2),
        "process_seconds": round(fitted - started, 2),  # with the imports and the data read
        "models_trained": len(trained),
        "model_best": best,
        "ensemble_weights": _ensemble_weights(predictor, best),
        "leaderboard": [
            {
                "model": row.model,
                "score_val": None if row.score_val != row.score_val else round(row.score_val, 5),
                "fit_time": round(float(row.fit_time), 2),
            }
            for row in board.itertuples()
        ],
        "versions": _versions(),
    }
    if args.test:
        sys.path.insert(0, str(HERE.parent))
        from systems import score  # one definition of the metrics for every system

        test = read_table(args.test)
        classes = sorted(train[args.label].unique().tolist())
        predicted = time.perf_counter()
        record.update(score(FittedPredictor(predictor), test, args.label, classes))
        record["predict_seconds"] = round(time.perf_counter() - predicted, 2)
    Path(args.output).write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({k: v for k, v in record.items() if k != "leaderboard"}, default=str))
    return 0


def _ensemble_weights(predictor, best: str | None) -> dict[str, float] | None:
    """The weighted ensemble's member weights, when the best model is one (AutoGluon has no
    public call for them: a detail for the record, never a reason to fail the run)."""
    if not best or not best.startswith("WeightedEnsemble"):
        return None
    try:
        weights = predictor._trainer.load_model(best)._get_model_weights()
    except Exception:
        return None
    return {name: round(float(weight), 4) for name, weight in weights.items()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ("autogluon.tabular", "lightgbm", "catboost", "xgboost-cpu", "torch", "pandas")
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def predict(args: argparse.Namespace) -> int:
    import pandas as pd
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor.load(args.model_dir, verbosity=0, require_py_version_match=False)
    model = FittedPredictor(predictor)
    X = read_table(args.data)
    X = X.drop(columns=[predictor.label], errors="ignore")
    probabilities = model.predict_proba(X)
    out = pd.DataFrame(probabilities, columns=[f"p{k}" for k in range(probabilities.shape[1])])
    out.insert(0, "prediction", model.predict(X))
    out.to_parquet(args.output, index=False)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fitting = commands.add_parser("fit", help="fit within a time limit (and score --test)")
    fitting.add_argument("--train", required=True, help="parquet or CSV, label included")
    fitting.add_argument("--test", help="parquet or CSV: predicted after the fit and scored")
    fitting.add_argument("--label", required=True)
    fitting.add_argument("--time-limit", type=float, required=True, help="seconds")
    fitting.add_argument("--seed", type=int, default=0)
    fitting.add_argument("--threads", type=int, default=1)
    fitting.add_argument("--model-dir", required=True)
    fitting.add_argument("--output", required=True, help="the result JSON")
    fitting.add_argument("--verbosity", type=int, default=2)
    predicting = commands.add_parser("predict", help="predict with a fitted predictor")
    predicting.add_argument("--model-dir", required=True)
    predicting.add_argument("--data", required=True)
    predicting.add_argument("--output", required=True, help="parquet: prediction, p0..p{k-1}")
    predicting.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for name in THREAD_VARIABLES:  # before numpy and AutoGluon load
        os.environ.setdefault(name, str(args.threads))
    return fit(args) if args.command == "fit" else predict(args)


if __name__ == "__main__":
    sys.exit(main())
