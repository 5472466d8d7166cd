"""The Python API: ``ModelHub(url).load_model(id)`` and the ``ATM(...).run(...)`` facade."""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import atm_core
from atm_core import ATM, DatarunResult, ModelHub
from atm_core.errors import ATMError, DataError, NotFoundError
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus, utcnow


@pytest.fixture
def string_labels(pollution_path: str, tmp_path: Path) -> Path:
    """Pollution with the labels spelled "high"/"low" instead of 1/0."""
    frame = pd.read_csv(pollution_path)
    frame["class"] = frame["class"].map({0: "low", 1: "high"})
    path = tmp_path / "pollution_words.csv"
    frame.to_csv(path, index=False)
    return path


def make_atm(tmp_path: Path, **settings) -> ATM:
    return ATM(
        f"sqlite:///{tmp_path / 'atm.db'}",
        str(tmp_path / "artifacts"),
        lease_seconds=30,
        poll_seconds=0.2,
        **settings,
    )


def test_top_level_names() -> None:
    assert atm_core.ATM is ATM and atm_core.ModelHub is ModelHub
    assert atm_core.load_settings().database_url
    with pytest.raises(AttributeError):
        atm_core.no_such_name  # noqa: B018


def test_run_returns_a_datarun_result(tmp_path: Path, pollution_path: str) -> None:
    atm = make_atm(tmp_path)
    result = atm.run(train_path=pollution_path, methods=["dt", "gnb"], budget=3)
    assert isinstance(result, DatarunResult)
    assert result.datarun.status == DatarunStatus.COMPLETE

    text = result.describe()
    assert f"Datarun {result.id} on dataset pollution_1" in text
    assert "status: complete" in text
    assert "classifiers: 3" in text

    scores = result.get_scores()
    assert len(scores) == 3
    assert scores["judgment_metric"].is_monotonic_decreasing
    best = result.get_best_classifier()
    assert best.id == scores.loc[0, "classifier_id"]
    assert best.status == ClassifierStatus.COMPLETE
    assert f"best: classifier {best.id}" in text


def test_export_best_classifier(tmp_path: Path, pollution_path: str) -> None:
    atm = make_atm(tmp_path)
    result = atm.run(train_path=pollution_path, methods=["dt"], budget=2)
    target = result.export_best_classifier(tmp_path / "export" / "best.pkl")
    assert target == tmp_path / "export" / "best.pkl"
    features = pd.read_csv(pollution_path).drop(columns=["class"])
    exported = pickle.loads(target.read_bytes())
    expected = atm.load_model(result.get_best_classifier().id).predict(features)
    assert list(exported.predict(features)) == list(expected)
    assert list(result.load_best_model().predict(features)) == list(expected)
    with pytest.raises(ATMError, match="exists"):
        result.export_best_classifier(target)
    assert result.export_best_classifier(target, force=True) == target


def test_load_model_keeps_string_labels(tmp_path: Path, string_labels: Path) -> None:
    """predict, predict_proba and classes_ speak the dataset's own labels."""
    atm = make_atm(tmp_path)
    result = atm.run(train_path=str(string_labels), methods=["logreg"], budget=2)
    hub = ModelHub(f"sqlite:///{tmp_path / 'atm.db'}", artifact_root=str(tmp_path / "artifacts"))
    try:
        model = hub.load_model(result.get_best_classifier().id)
        frame = pd.read_csv(string_labels)
        features = frame.drop(columns=["class"])
        assert list(model.classes_) == ["high", "low"]
        predictions = model.predict(features)
        assert len(predictions) == 60
        assert set(predictions) <= {"high", "low"}
        probabilities = model.predict_proba(features)
        assert probabilities.shape == (60, 2)
        assert np.allclose(probabilities.sum(axis=1), 1.0)
        best_column = np.asarray(model.classes_)[probabilities.argmax(axis=1)]
        assert list(best_column) == list(predictions)
        assert (predictions == frame["class"]).mean() > 0.6
    finally:
        hub.close()


def test_load_model_on_iris(tmp_path: Path, iris_path: str) -> None:
    atm = make_atm(tmp_path)
    result = atm.run(train_path=iris_path, methods=["gnb"], metric="f1")
    assert result.datarun.metric == "f1_macro"
    model = ModelHub(f"sqlite:///{tmp_path / 'atm.db'}").load_model(result.get_best_classifier().id)
    frame = pd.read_csv(iris_path)
    assert list(model.classes_) == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]
    assert (model.predict(frame.drop(columns=["class"])) == frame["class"]).mean() > 0.9


def test_models_load_from_another_working_directory(
    tmp_path: Path, pollution_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default relative ./artifacts, the ModelHub must record where models really are."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.delenv("ATM_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("ATM_CONFIG", raising=False)
    monkeypatch.chdir(first)
    url = f"sqlite:///{tmp_path / 'atm.db'}"
    result = ATM(url).run(train_path=pollution_path, methods=["gnb"])
    classifier_id = result.get_best_classifier().id
    monkeypatch.chdir(second)
    model = ModelHub(url).load_model(classifier_id)
    assert len(model.predict(pd.read_csv(pollution_path))) == 60
    assert (first / "artifacts").is_dir() and not (second / "artifacts").exists()


def test_enter_data_then_work(tmp_path: Path, pollution_path: str) -> None:
    """The two halves of run(): `atm enter_data` and `atm worker` as Python calls."""
    atm = make_atm(tmp_path)
    [waiting] = atm.enter_data(pollution_path, methods=["dt"], budget=2, priority=2)
    [other] = atm.enter_data(pollution_path, methods=["gnb"])
    assert waiting.datarun.status == DatarunStatus.PENDING
    with pytest.raises(NotFoundError, match="no complete classifier"):
        waiting.get_best_classifier()
    assert waiting.get_scores().empty
    atm.work([waiting.id])
    assert waiting.datarun.status == DatarunStatus.COMPLETE
    assert other.datarun.status == DatarunStatus.PENDING
    assert repr(waiting) == f"<DatarunResult {waiting.id} (complete)>"


def test_run_per_partition_through_the_facade(tmp_path: Path, pollution_path: str) -> None:
    results = make_atm(tmp_path).enter_data(pollution_path, methods=["dt"], run_per_partition=True)
    assert len(results) == 2
    assert len({r.id for r in results}) == 2


def test_bad_input_raises_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("a,b,class\n1,2,x\n3,4,x\n")
    atm = make_atm(tmp_path)
    with pytest.raises(DataError, match="single class"):
        atm.run(train_path=str(tmp_path / "one.csv"))
    assert atm.hub.datasets() == [] and atm.hub.dataruns() == []
    assert not (tmp_path / "artifacts").exists()


def test_atm_reads_a_config_file(
    tmp_path: Path, pollution_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ATM_DATABASE_URL", "ATM_ARTIFACT_ROOT", "ATM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "atm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'from_yaml.db'}",
                "artifact_root": str(tmp_path / "yaml_artifacts"),
                "poll_seconds": 0.2,
            }
        )
    )
    result = ATM(config_file=str(config)).run(train_path=pollution_path, methods=["gnb"])
    assert (tmp_path / "from_yaml.db").is_file()
    assert result.get_best_classifier().model_location.startswith(str(tmp_path / "yaml_artifacts"))


def test_a_walltime_budget_runs_from_the_call_and_takes_fractions_of_a_minute(
    tmp_path: Path, pollution_path: str
) -> None:
    """ATM.run's walltime clock starts when it is called (reading the data is part of it), not
    at the first classifier; a budget of 0.15 minutes is 9 s."""
    atm = ATM(f"sqlite:///{tmp_path / 'atm.db'}", artifact_root=str(tmp_path / "artifacts"))
    called = utcnow()
    run = atm.run(pollution_path, methods=["dt"], budget_type="walltime", budget=0.15)
    datarun = run.datarun
    first = min(c.start_time for c in atm.hub.classifiers(run.id))
    assert called <= datarun.start_time < first
    assert datarun.budget == 0.15 and datarun.status.value == "complete"
    assert all(c.start_time < datarun.start_time + timedelta(seconds=9)
               for c in atm.hub.classifiers(run.id))  # fmt: skip
