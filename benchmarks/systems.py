"""The systems of the quality benchmark (issue #5): one ``fit`` function each, same signature.

``fit(train, label, budget_seconds, threads, workdir, options) -> FitResult`` trains on the
training frame (label column included) within the wall-clock budget and returns a model with
``predict``, ``predict_proba`` (or ``decision_function``) and ``classes_``. The three tuners
search for ``SEARCH_SHARE`` of the budget and then refit their best configuration on every
training row; the untuned baselines just fit once. ``benchmarks/quality.py`` runs each call in
its own process with the thread variables set.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

BENCHMARKS = Path(__file__).resolve().parent
SEARCH_SHARE = 0.85  # of the budget spent searching; the rest is left for the final refit
CV_FOLDS = 5
SEED = 0
# ATM options that the benchmark sets itself and an --atm-option must not override
ATM_FIXED_OPTIONS = {"train_path", "class_column", "test_path"}

HGB = "sklearn.ensemble.HistGradientBoostingClassifier"
RF = "sklearn.ensemble.RandomForestClassifier"
ET = "sklearn.ensemble.ExtraTreesClassifier"
LOGREG = "sklearn.linear_model.LogisticRegression"
KNN = "sklearn.neighbors.KNeighborsClassifier"
SVC = "sklearn.svm.SVC"
# FLAML 2.8's scikit-learn learners (generic_task.py): histgb is flaml.automl.contrib.histgb,
# svc is LinearSVC with probabilities from _predict_proba_lr, kneighbor drops categoricals.
FLAML_SKLEARN = ["histgb", "rf", "extra_tree", "lrl1", "lrl2", "kneighbor", "sgd", "svc"]


@dataclass
class FitResult:
    """A fitted model, how many configurations were tried and which one was chosen."""

    model: Any
    configs_tried: int
    chosen_model: str
    details: dict[str, Any] = field(default_factory=dict)


# -- scores shared with quality.py --------------------------------------------------------------
def class_scores(model: Any, X: pd.DataFrame, classes: list) -> tuple[np.ndarray, bool]:
    """Per-class scores in ``classes`` order and whether they are probabilities."""
    if hasattr(model, "predict_proba"):
        raw, is_proba = np.asarray(model.predict_proba(X), dtype=float), True
    else:
        raw, is_proba = np.asarray(model.decision_function(X), dtype=float), False
        if raw.ndim == 1:
            raw = np.column_stack([-raw, raw])
    order = [list(model.classes_).index(c) for c in classes]
    return raw[:, order], is_proba


def roc_auc(y_true: pd.Series | np.ndarray, scores: np.ndarray, classes: list) -> float:
    """Binary: AUC of the second class in sorted order. Multiclass: one-vs-rest macro AUC.

    Probabilities go through ``roc_auc_score(multi_class="ovr", average="macro")``; decision
    values (which do not sum to one) get the same quantity, the mean of per-class AUCs.
    """
    y_true = np.asarray(y_true)
    if len(classes) == 2:
        return float(roc_auc_score(y_true == classes[1], scores[:, 1]))
    if np.allclose(scores.sum(axis=1), 1.0, atol=1e-6):
        return float(
            roc_auc_score(y_true, scores, multi_class="ovr", average="macro", labels=classes)
        )
    return float(np.mean([roc_auc_score(y_true == c, scores[:, k]) for k, c in enumerate(classes)]))


def score(model: Any, test: pd.DataFrame, label: str, classes: list) -> dict[str, float]:
    """Test ROC AUC (binary: second sorted class; else OvR macro), accuracy, macro-F1, log loss
    (NaN without probabilities): every system is scored by this one function."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    X, y = test.drop(columns=[label]), test[label]
    predictions = model.predict(X)
    scores, is_proba = class_scores(model, X, classes)
    return {
        "auc": roc_auc(y, scores, classes),
        "accuracy": float(accuracy_score(y, predictions)),
        "f1_macro": float(f1_score(y, predictions, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y, scores, labels=classes)) if is_proba else math.nan,
    }


def _xy(train: pd.DataFrame, label: str) -> tuple[pd.DataFrame, pd.Series]:
    return train.drop(columns=[label]), train[label]


def _pipeline(estimator: str, values: dict[str, Any], X: pd.DataFrame, threads: int) -> Any:
    """ATM's own preprocessing (imputation, one-hot, optional scaling) before the estimator.
    An SVC stays uncalibrated: Optuna's trials rank it by its decision function, and a
    calibrated SVC's plain ``fit`` would cross-validate itself (3 more fits per trial)."""
    from atm_core.data.dataset import FeatureSchema
    from atm_core.pipeline import build_pipeline

    return build_pipeline(
        estimator,
        values,
        FeatureSchema.infer(X),
        random_state=SEED,
        n_jobs=threads,
        calibrate=False,
    )


# -- ATM -------------------------------------------------------------------------------------------
def parse_atm_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as DatarunRequest options (YAML scalars; ``methods`` a list)."""
    from atm_core.dataruns import DatarunRequest

    allowed = {f.name for f in fields(DatarunRequest)} - ATM_FIXED_OPTIONS
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed:
            raise ValueError(f"--atm-option {pair!r}: expected KEY=VALUE, KEY in {sorted(allowed)}")
        if key == "methods":
            options[key] = [m.strip() for m in raw.split(",") if m.strip()]
        else:
            options[key] = yaml.safe_load(raw) if raw.strip() else None
    return options


def fit_atm(
    train: pd.DataFrame,
    label: str,
    budget_seconds: float,
    threads: int,
    workdir: Path,
    options: dict[str, Any] | None = None,
) -> FitResult:
    """ATM's default datarun (``methods=None``, roc_auc), ``threads`` worker processes of one
    thread each, a walltime budget of ``budget_seconds`` that covers the whole run: reading
    the data, the search and the final refit on every row, which the datarun does itself
    (option ``final=best``: its best classifier instead of its ensemble)."""
    from atm_core import ATM

    started = time.perf_counter()
    options = dict(options or {})
    path = workdir / "train.parquet"
    train.to_parquet(path, index=False)
    atm = ATM(
        database_url=f"sqlite:///{workdir.resolve()}/atm.db",
        artifact_root=str(workdir.resolve() / "artifacts"),
        threads=1,
    )
    request: dict[str, Any] = {
        "metric": "roc_auc",
        "budget_type": "walltime",
        "budget": budget_seconds / 60,
    }
    request.update(options)
    methods = request.pop("methods", None)
    final = request.pop("final", "ensemble")
    if final not in ("ensemble", "best"):
        raise ValueError(f"ATM option final must be 'ensemble' or 'best', not {final!r}")
    run = atm.run(
        train_path=str(path), class_column=label, methods=methods, workers=threads, **request
    )
    finished = time.perf_counter()
    details = atm_details(atm.hub, run.id)
    best = run.get_best_classifier()  # NotFoundError: no complete classifier, a failed run
    ensemble = atm.hub.get_ensemble(run.id)
    if final == "ensemble" and ensemble is not None:
        model = atm.hub.load_ensemble(run.id)  # members refitted on every row when time allowed
        chosen = "+".join(
            f"{member.method}x{weight}" for member, weight in atm.hub.ensemble_members(ensemble)
        )
    else:
        model = atm.hub.load_model(best.id)
        chosen = best.method or ""
    refitted = [c.id for c in atm.hub.classifiers(run.id) if c.final_model_location]
    details["seconds"] = {"run": round(finished - started, 2)}
    details["refitted"] = refitted
    details["rungs"] = dict(Counter(c.rung for c in atm.hub.classifiers(run.id, status="complete")))
    return FitResult(model, len(atm.hub.classifiers(run.id)), chosen, details)


def atm_details(hub: Any, datarun_id: int) -> dict[str, Any]:
    """What the datarun did, per method: classifiers, outcomes, seconds, best CV score."""
    partitions = {hp.id: hp.method for hp in hub.hyperpartitions(datarun_id)}
    per_method: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"tried": 0, "complete": 0, "errored": 0, "seconds": 0.0, "best_cv": None}
    )
    errors: Counter[str] = Counter()
    first_start = last_end = None
    for c in hub.classifiers(datarun_id):
        row = per_method[partitions[c.hyperpartition_id]]
        row["tried"] += 1
        status = c.status.value
        row[status] = row.get(status, 0) + 1
        if c.start_time and c.end_time:
            row["seconds"] = round(row["seconds"] + (c.end_time - c.start_time).total_seconds(), 2)
            first_start = min(first_start or c.start_time, c.start_time)
            last_end = max(last_end or c.end_time, c.end_time)
        if c.cv_judgment_metric is not None and (
            row["best_cv"] is None or c.cv_judgment_metric > row["best_cv"]
        ):
            row["best_cv"] = round(c.cv_judgment_metric, 5)
        if c.error_message:
            lines = [line for line in c.error_message.strip().splitlines() if line.strip()]
            errors[f"{partitions[c.hyperpartition_id]}: {lines[-1][:160]}"] += 1
    details: dict[str, Any] = {"per_method": dict(per_method), "errors": dict(errors)}
    datarun = hub.get_datarun(datarun_id)
    details["datarun"] = {
        "status": datarun.status.value,
        "selector": datarun.selector,
        "tuner": datarun.tuner,
        "r_minimum": datarun.r_minimum,
        "classifier_window_s": (
            round((last_end - first_start).total_seconds(), 2) if first_start else None
        ),
    }
    ensemble = hub.get_ensemble(datarun_id)
    if ensemble is not None:
        details["ensemble"] = {
            "members": [[i, weight] for i, weight in ensemble.weights.items()],
            "cv": ensemble.cv_judgment_metric,
            "internal_test": ensemble.test_judgment_metric,
        }
    best = hub.best_classifier(datarun_id)
    if best is not None:
        details["best"] = {
            "method": partitions[best.hyperpartition_id],
            "hyperparameters": best.hyperparameters_values,
            "cv": best.cv_judgment_metric,
            "cv_stdev": best.cv_judgment_metric_stdev,
            "internal_test": best.test_judgment_metric,
        }
    return details


# -- FLAML -----------------------------------------------------------------------------------------
def _fit_flaml(
    train: pd.DataFrame,
    label: str,
    budget_seconds: float,
    threads: int,
    workdir: Path,
    estimator_list: list[str] | str,
) -> FitResult:
    from flaml import AutoML

    X, y = _xy(train, label)
    log = workdir / "flaml.log"
    automl = AutoML()
    automl.fit(
        X,
        y,
        task="classification",
        metric="roc_auc" if y.nunique() == 2 else "roc_auc_ovr",
        time_budget=SEARCH_SHARE * budget_seconds,
        estimator_list=estimator_list,
        n_jobs=threads,
        seed=SEED,
        log_file_name=str(log),
        log_type="all",
        verbose=0,
    )
    learners = Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if "learner" in record:
                learners[record["learner"]] += 1
    details = {
        "per_learner_trials": dict(learners),
        "best_config": automl.best_config,
        "best_loss": automl.best_loss,
        "best_config_train_time": automl.best_config_train_time,
    }
    return FitResult(automl, sum(learners.values()), str(automl.best_estimator), details)


def fit_flaml(train, label, budget_seconds, threads, workdir, options=None) -> FitResult:
    """FLAML with its default estimator list (lgbm, xgboost, rf, extra_tree, sgd, lrl1, ...)."""
    return _fit_flaml(train, label, budget_seconds, threads, workdir, "auto")


def fit_flaml_sklearn(train, label, budget_seconds, threads, workdir, options=None) -> FitResult:
    """FLAML restricted to its scikit-learn learners (``FLAML_SKLEARN``)."""
    return _fit_flaml(train, label, budget_seconds, threads, workdir, FLAML_SKLEARN)


# -- Optuna ----------------------------------------------------------------------------------------
def _suggest(trial: Any, method: str) -> tuple[str, dict[str, Any]]:
    """The estimator and values of one trial: the ranges of ATM's method JSON files."""
    s = trial
    if method == "hgb":
        return HGB, {
            "learning_rate": s.suggest_float("hgb.learning_rate", 0.01, 1.0, log=True),
            "max_leaf_nodes": s.suggest_int("hgb.max_leaf_nodes", 4, 256, log=True),
            "min_samples_leaf": s.suggest_int("hgb.min_samples_leaf", 2, 200, log=True),
            "l2_regularization": s.suggest_float("hgb.l2_regularization", 1e-6, 10.0, log=True),
            "max_features": s.suggest_float("hgb.max_features", 0.2, 1.0),
            "class_weight": s.suggest_categorical("hgb.class_weight", [None, "balanced"]),
            "max_iter": 200,
        }
    if method in ("rf", "et"):
        return (RF if method == "rf" else ET), {
            "criterion": s.suggest_categorical(f"{method}.criterion", ["gini", "entropy"]),
            "max_features": s.suggest_float(f"{method}.max_features", 0.1, 1.0),
            "max_depth": s.suggest_int(f"{method}.max_depth", 2, 30),
            "min_samples_split": s.suggest_int(f"{method}.min_samples_split", 2, 20),
            "min_samples_leaf": s.suggest_int(f"{method}.min_samples_leaf", 1, 20),
            "n_estimators": 100,
        }
    if method == "logreg":
        values = {
            "C": s.suggest_float("logreg.C", 1e-4, 1e4, log=True),
            "tol": s.suggest_float("logreg.tol", 1e-6, 1e-2, log=True),
            "solver": s.suggest_categorical("logreg.solver", ["lbfgs", "saga"]),
            "fit_intercept": s.suggest_categorical("logreg.fit_intercept", [True, False]),
            "class_weight": "balanced",
            "max_iter": 1000,
            "_scale": True,
        }
        if values["solver"] == "saga":
            values["l1_ratio"] = s.suggest_float("logreg.l1_ratio", 0.0, 1.0)
        return LOGREG, values
    if method == "knn":
        values = {
            "n_neighbors": s.suggest_int("knn.n_neighbors", 1, 20),
            "weights": s.suggest_categorical("knn.weights", ["uniform", "distance"]),
            "metric": s.suggest_categorical(
                "knn.metric", ["minkowski", "euclidean", "manhattan", "chebyshev"]
            ),
            "_scale": True,
        }
        if values["metric"] == "minkowski":
            values["p"] = s.suggest_int("knn.p", 1, 3)
        return KNN, values
    if method == "svm":
        kernel = s.suggest_categorical("svm.kernel", ["rbf", "poly", "linear", "sigmoid"])
        values = {
            "C": s.suggest_float("svm.C", 1e-3, 1e3, log=True),
            "kernel": kernel,
            "cache_size": 500,
            "class_weight": "balanced",
            "max_iter": 50000,
            "_scale": True,
        }
        if kernel != "linear":
            values["gamma"] = s.suggest_float("svm.gamma", 1e-5, 10.0, log=True)
        if kernel in ("poly", "sigmoid"):
            values["coef0"] = s.suggest_float("svm.coef0", -1.0, 1.0)
        if kernel == "poly":
            values["degree"] = s.suggest_int("svm.degree", 2, 5)
        return SVC, values
    raise ValueError(f"unknown method {method!r}")


HGB_DEFAULT_TRIAL = {
    "method": "hgb",
    "hgb.learning_rate": 0.1,
    "hgb.max_leaf_nodes": 31,
    "hgb.min_samples_leaf": 20,
    "hgb.l2_regularization": 1e-6,
    "hgb.max_features": 1.0,
    "hgb.class_weight": None,
}


def cv_auc(make: Callable[[], Any], X: pd.DataFrame, y: pd.Series, classes: list) -> float:
    """Mean ROC AUC over stratified ``CV_FOLDS``-fold cross-validation."""
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=SEED)
    scores = []
    for fit_idx, valid_idx in folds.split(X, y):
        model = make().fit(X.iloc[fit_idx], y.iloc[fit_idx])
        valid_scores, _ = class_scores(model, X.iloc[valid_idx], classes)
        scores.append(roc_auc(y.iloc[valid_idx], valid_scores, classes))
    return float(np.mean(scores))


def fit_optuna(train, label, budget_seconds, threads, workdir, options=None) -> FitResult:
    """Optuna TPE over ATM's spaces of hgb, rf, et, logreg, knn (and svm on small data).

    Objective: 5-fold stratified CV ROC AUC, each trial in a forked child killed at the search
    deadline (``atm_core.isolation.run_isolated``), so a long trial cannot overrun the budget.
    The first trial is HistGradientBoosting's default; the best is refitted on all rows.
    """
    import optuna

    from atm_core.dataruns import SMALL_DATA_ROWS
    from atm_core.isolation import ChildFailed, TimeLimitExceeded, run_isolated

    started = time.monotonic()
    deadline = started + SEARCH_SHARE * budget_seconds
    X, y = _xy(train, label)
    classes = sorted(y.unique().tolist())
    methods = ["hgb", "rf", "et", "logreg", "knn"]
    if len(X) <= SMALL_DATA_ROWS:
        methods.append("svm")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
    study.enqueue_trial(HGB_DEFAULT_TRIAL)
    failures: Counter[str] = Counter()

    def objective(trial: Any) -> float:
        method = trial.suggest_categorical("method", methods)
        estimator, values = _suggest(trial, method)
        trial.set_user_attr("estimator", estimator)
        trial.set_user_attr("values", values)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            study.stop()
            raise optuna.TrialPruned("budget spent")
        try:
            return run_isolated(
                lambda: cv_auc(lambda: _pipeline(estimator, values, X, threads), X, y, classes),
                remaining,
            )
        except TimeLimitExceeded:
            study.stop()
            raise optuna.TrialPruned("stopped at the search deadline") from None
        except ChildFailed as exc:
            failures[f"{method}: {str(exc).strip().splitlines()[-1][:160]}"] += 1
            raise

    study.optimize(
        objective, timeout=max(deadline - time.monotonic(), 0.1), n_jobs=1, catch=(ChildFailed,)
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError("no Optuna trial completed within the budget")
    best = study.best_trial
    searched = time.monotonic()
    model = _pipeline(best.user_attrs["estimator"], best.user_attrs["values"], X, threads).fit(X, y)
    states = Counter(t.state.name.lower() for t in study.trials)
    per_method = Counter(t.params.get("method") for t in complete)
    details = {
        "trial_states": dict(states),
        "complete_per_method": dict(per_method),
        "failures": dict(failures),
        "best_cv_auc": best.value,
        "best_values": best.user_attrs["values"],
        "seconds": {
            "search": round(searched - started, 2),
            "refit": round(time.monotonic() - searched, 2),
        },
    }
    return FitResult(model, len(study.trials), best.params["method"], details)


# -- AutoGluon (its own virtualenv) ---------------------------------------------------------------
AUTOGLUON_RUNNER = BENCHMARKS / "peers" / "autogluon_runner.py"


def autogluon_python() -> Path:
    """The interpreter of AutoGluon's virtualenv (``ATM_BENCH_AUTOGLUON_PYTHON`` overrides)."""
    default = BENCHMARKS / ".venv-autogluon" / "bin" / "python"
    return Path(os.environ.get("ATM_BENCH_AUTOGLUON_PYTHON", default))


def autogluon_version() -> str:
    """autogluon.tabular's version in its virtualenv, or why there is none."""
    python = autogluon_python()
    if not python.exists():
        return "not installed"
    code = "from importlib.metadata import version; print(version('autogluon.tabular'))"
    found = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or "not importable"


class PeerModel:
    """A model fitted by a peer in another interpreter: ``predict`` and ``predict_proba`` run
    its runner's ``predict`` command on the rows (one call answers both for the same frame)."""

    def __init__(self, python: Path, runner: Path, model_dir: Path, classes: list, workdir: Path):
        self.python, self.runner, self.model_dir, self.workdir = python, runner, model_dir, workdir
        self.classes_ = np.asarray(classes)
        self._last: tuple[int, pd.DataFrame] | None = None

    def _predicted(self, X: pd.DataFrame) -> pd.DataFrame:
        if self._last is not None and self._last[0] == id(X):
            return self._last[1]
        rows, out = self.workdir / "predict-rows.parquet", self.workdir / "predictions.parquet"
        X.to_parquet(rows, index=False)
        command = [str(self.python), str(self.runner), "predict", "--model-dir"]
        command += [str(self.model_dir), "--data", str(rows), "--output", str(out)]
        subprocess.run(command, check=True)
        predicted = pd.read_parquet(out)
        rows.unlink()
        self._last = (id(X), predicted)
        return predicted

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._predicted(X)["prediction"].to_numpy()

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        predicted = self._predicted(X)
        return predicted[[f"p{k}" for k in range(len(self.classes_))]].to_numpy(dtype=float)


def fit_autogluon(train, label, budget_seconds, threads, workdir, options=None) -> FitResult:
    """``TabularPredictor(label, eval_metric=roc_auc | roc_auc_ovr_macro).fit(train,
    time_limit=budget, num_cpus=threads)``, the default preset, in AutoGluon's own virtualenv
    (``benchmarks/peers/setup_autogluon.sh``) through ``peers/autogluon_runner.py``. The whole
    budget is its time limit: AutoGluon keeps its fit, ensemble included, within it and does
    not refit afterwards (medium_quality). The seed moves its holdout split."""
    python = autogluon_python()
    if not python.exists():
        raise RuntimeError(
            f"no AutoGluon interpreter at {python}: run bash benchmarks/peers/setup_autogluon.sh"
        )
    path, result = workdir / "train.parquet", workdir / "autogluon.json"
    model_dir = workdir / "artifacts" / "autogluon"  # deleted with ATM's model files
    train.to_parquet(path, index=False)
    command = [str(python), str(AUTOGLUON_RUNNER), "fit", "--train", str(path), "--label", label]
    command += ["--time-limit", str(budget_seconds), "--seed", str(SEED)]
    command += ["--threads", str(threads), "--model-dir", str(model_dir), "--output", str(result)]
    subprocess.run(command, check=True)
    record = json.loads(result.read_text())
    details = {
        key: record[key]
        for key in ("fit_seconds", "process_seconds", "ensemble_weights", "leaderboard", "versions")
    }
    model = PeerModel(python, AUTOGLUON_RUNNER, model_dir, record["classes"], workdir)
    return FitResult(model, record["models_trained"], str(record["model_best"]), details)


# -- untuned baselines -----------------------------------------------------------------------------
def fit_hgb(train, label, budget_seconds, threads, workdir, options=None) -> FitResult:
    """HistGradientBoostingClassifier with scikit-learn's defaults, ATM's preprocessing."""
    X, y = _xy(train, label)
    return FitResult(_pipeline(HGB, {}, X, threads).fit(X, y), 1, "hgb (defaults)")


def fit_rf(train, label, budget_seconds, threads, workdir, options=None) -> FitResult:
    """RandomForestClassifier with scikit-learn's defaults (n_jobs=threads), ATM's preprocessing."""
    X, y = _xy(train, label)
    return FitResult(_pipeline(RF, {}, X, threads).fit(X, y), 1, "rf (defaults)")


SYSTEMS: dict[str, Callable[..., FitResult]] = {
    "atm": fit_atm,
    "flaml": fit_flaml,
    "flaml_sklearn": fit_flaml_sklearn,
    "optuna": fit_optuna,
    "autogluon": fit_autogluon,
    "hgb": fit_hgb,
    "rf": fit_rf,
}
