"""The ModelHub on SQLite, MariaDB and PostgreSQL: schema, registration, queries, models."""

from __future__ import annotations

import json
import math
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text, update

from atm_core import cli
from atm_core.data.dataset import inspect_dataset
from atm_core.dataruns import DatarunRequest, enter_data, validate_options
from atm_core.driver import Driver
from atm_core.errors import ConfigError, IntegrityError, NotFoundError
from atm_core.modelhub import ModelHub
from atm_core.modelhub.claims import Outcome
from atm_core.modelhub.database import (
    SCHEMA_HEAD,
    create_hub_engine,
    current_revision,
    foreign_keys_off,
    head_revision,
    migrate,
)
from atm_core.modelhub.history import hyperpartition_spec
from atm_core.modelhub.models import (
    Base,
    BudgetType,
    ClassifierStatus,
    Datarun,
    DatarunStatus,
    HyperpartitionStatus,
    ScoreTarget,
    utcnow,
)
from atm_core.progress import BudgetProgress, budget_progress
from atm_core.search.catalogue import load_method
from atm_core.search.hyperpartitions import enumerate_hyperpartitions
from tests.conftest import make_settings, run_python

# The fields of "Guide to the ModelHub database" (each table's ``<table>_id`` is its ``id``).
DOCUMENTED_COLUMNS = {
    "datasets": [
        "id", "name", "description", "train_path", "test_path", "class_column",
        "n_examples", "k_classes", "d_features", "majority", "size_kb",
    ],
    "dataruns": [
        "id", "dataset_id", "description", "selector", "k_window", "tuner", "r_minimum",
        "gridding", "priority", "budget_type", "budget", "deadline", "metric", "score_target",
        "start_time", "end_time", "status",
    ],
    "hyperpartitions": [
        "id", "datarun_id", "method", "categoricals", "tunables", "constants", "status",
    ],
    "classifiers": [
        "id", "datarun_id", "hyperpartition_id", "host", "model_location", "metrics_location",
        "cv_judgment_metric", "cv_judgment_metric_stdev", "test_judgment_metric",
        "hyperparameters_values", "start_time", "end_time", "status", "error_message",
        "claim_token", "lease_expires_at", "attempts",
    ],
}  # fmt: skip


def enter(hub: ModelHub, path: str, **options):
    return enter_data(hub, DatarunRequest(path, **options))


def set_datarun(hub: ModelHub, datarun_id: int, **values) -> None:
    with hub.transaction() as session:
        session.execute(update(Datarun).where(Datarun.id == datarun_id).values(**values))


def finish(hub: ModelHub, claim, cv: float, stdev: float, test: float) -> None:
    outcome = Outcome(f"mem://{claim.classifier_id}", "0" * 64, "mem://m", cv, stdev, test)
    assert hub.complete_classifier(claim, outcome)


# -- schema ---------------------------------------------------------------------------------
def test_schema_has_every_documented_field(hub: ModelHub) -> None:
    inspector = inspect(hub.engine)
    for table, documented in DOCUMENTED_COLUMNS.items():
        columns = {column["name"] for column in inspector.get_columns(table)}
        missing = [name for name in documented if name not in columns]
        assert not missing, f"{table} lacks {missing}"


def test_schema_is_built_by_alembic_and_matches_the_models(hub: ModelHub) -> None:
    """The migrations alone create the schema, and it is exactly what the models declare."""
    with hub.engine.connect() as connection:
        assert connection.execute(
            text("SELECT version_num FROM alembic_version")
        ).scalars().all() == [head_revision()]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_a_hub_on_the_newest_schema_opens_without_alembic(tmp_path: Path) -> None:
    """SCHEMA_HEAD names the newest migration; a worker opening an up-to-date hub skips
    importing alembic (10 MB of its memory)."""
    assert head_revision() == SCHEMA_HEAD
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    code = (
        "import sys; from atm_core.modelhub.hub import ModelHub; "
        "from atm_core.settings import Settings; "
        f"ModelHub(settings=Settings(database_url={url!r}, artifact_root={str(tmp_path)!r})); "
        "print('alembic' in sys.modules)"
    )
    first, second = (run_python(code).strip() for _ in range(2))
    assert (first, second) == ("True", "False")


def test_a_shared_hub_behind_the_schema_waits_for_atm_db_upgrade(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An existing MySQL/PostgreSQL hub on an older revision is refused (its other workers may
    run an older ATM) until `atm db upgrade`; an embedded SQLite file upgrades itself."""
    engine = create_hub_engine(database_url)
    with engine.connect() as connection, foreign_keys_off(connection), connection.begin():
        migrate(connection, "0005")
    engine.dispose()
    settings = make_settings(database_url, tmp_path)
    if database_url.startswith("sqlite"):
        ModelHub(settings=settings).close()
    else:
        with pytest.raises(ConfigError, match=r"revision 0005, this ATM needs .*atm db upgrade"):
            ModelHub(settings=settings)
        assert cli.main(["db", "upgrade", "--database-url", database_url]) == 0
        out = capsys.readouterr().out
        assert f"schema upgraded from revision 0005 to {SCHEMA_HEAD}" in out
        assert "atm_test:atm_test@" not in out  # the password is masked
    hub = ModelHub(settings=settings)
    try:
        with hub.engine.connect() as connection:
            assert current_revision(connection) == SCHEMA_HEAD
    finally:
        hub.close()
    assert cli.main(["db", "upgrade", "--database-url", database_url]) == 0
    assert f"schema already at revision {SCHEMA_HEAD}" in capsys.readouterr().out


def test_reopening_a_hub_keeps_one_schema_revision(hub: ModelHub) -> None:
    again = ModelHub(settings=hub.settings)
    try:
        with again.engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert len(versions) == 1
    finally:
        again.close()


def test_concurrent_first_opens_migrate_once(database_url: str, tmp_path: Path) -> None:
    """Workers starting together on an empty database must not trip over the migration."""
    errors: list[BaseException] = []

    def open_hub() -> None:
        try:
            ModelHub(settings=make_settings(database_url, tmp_path)).close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_hub) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    hub = ModelHub(settings=make_settings(database_url, tmp_path))
    try:
        with hub.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        hub.close()


def test_workers_opening_new_sqlite_files_together_never_see_locks(tmp_path: Path) -> None:
    """Switching a new file to WAL raced and failed with "database is locked" (rarely: rounds)."""
    for round_ in range(20):
        url = f"sqlite:///{tmp_path / f'round-{round_}.db'}"
        errors: list[BaseException] = []

        def open_hub(url: str = url, errors: list = errors) -> None:
            try:
                ModelHub(settings=make_settings(url, tmp_path)).close()
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_hub) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"round {round_}"


def test_newer_unknown_schema_is_refused(sqlite_hub: ModelHub) -> None:
    """A ModelHub written by a newer ATM must not be "upgraded" by an older one."""
    with sqlite_hub.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(ConfigError, match="newer"):
        ModelHub(settings=sqlite_hub.settings)


# -- datasets -------------------------------------------------------------------------------
def test_dataset_metadata(hub: ModelHub, pollution_path: str) -> None:
    dataset = hub.get_dataset(enter(hub, pollution_path, methods=["gnb"]).dataset_id)
    frame = pd.read_csv(pollution_path)
    assert dataset.name == "pollution_1"
    assert dataset.train_path == pollution_path
    assert dataset.test_path is None
    assert dataset.class_column == "class"
    assert dataset.n_examples == 60
    assert dataset.k_classes == 2
    assert dataset.d_features == 15  # the unnamed index column is not a feature
    assert dataset.majority == pytest.approx(frame["class"].value_counts().max() / len(frame))
    assert dataset.size_kb == math.ceil(Path(pollution_path).stat().st_size / 1024)
    assert sorted(dataset.class_labels) == sorted(frame["class"].unique().tolist())


def test_dataset_with_test_file_counts_both(hub: ModelHub, iris_path: str, tmp_path: Path) -> None:
    frame = pd.read_csv(iris_path).sample(frac=1.0, random_state=0)
    frame.iloc[:100].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[100:].to_csv(tmp_path / "test.csv", index=False)
    entered = enter(
        hub, str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"), methods=["gnb"]
    )
    dataset = hub.get_dataset(entered.dataset_id)
    assert dataset.test_path == str(tmp_path / "test.csv")
    assert (dataset.n_examples, dataset.k_classes, dataset.d_features) == (150, 3, 4)
    assert dataset.class_labels == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]


def test_register_dataset_is_idempotent_on_content(
    hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    """The same bytes are one dataset, wherever they live; changed bytes are a new one."""
    first = enter(hub, pollution_path, methods=["gnb"])
    second = enter(hub, pollution_path, methods=["gnb"])
    copy = tmp_path / "copy.csv"
    shutil.copy(pollution_path, copy)
    third = enter(hub, str(copy), methods=["gnb"])
    assert first.dataset_id == second.dataset_id == third.dataset_id
    assert hub.register_dataset(first.info).id == first.dataset_id
    assert len(hub.datasets()) == 1
    assert len(hub.dataruns()) == 3

    changed = tmp_path / "changed.csv"
    changed.write_text(
        Path(pollution_path).read_text() + Path(pollution_path).read_text().splitlines()[1] + "\n"
    )
    fourth = enter(hub, str(changed), methods=["gnb"])
    assert fourth.dataset_id != first.dataset_id
    assert len(hub.datasets()) == 2


def test_concurrent_registrations_of_the_same_data_give_one_dataset(
    hub: ModelHub, pollution_path: str, tmp_path: Path
) -> None:
    """Flow runs ingesting the same file at once: one row (duplicates appeared on MySQL/PG)."""
    info = inspect_dataset(pollution_path)[0]
    hubs = [ModelHub(settings=hub.settings) for _ in range(4)]
    barrier = threading.Barrier(len(hubs))
    ids: list[int] = []
    errors: list[BaseException] = []

    def register(mine: ModelHub) -> None:
        try:
            barrier.wait()
            ids.append(mine.register_dataset(info).id)
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(mine,)) for mine in hubs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for mine in hubs:
        mine.close()
    assert errors == []
    assert len(set(ids)) == 1 and len(ids) == 4
    assert [d.id for d in hub.datasets()] == ids[:1]


def test_upgrade_merges_duplicate_datasets(database_url: str, tmp_path: Path) -> None:
    """A ModelHub at revision 0001 may hold duplicates; 0002 merges them into the oldest."""
    engine = create_hub_engine(database_url)
    with engine.connect() as connection, foreign_keys_off(connection), connection.begin():
        migrate(connection, "0001")
    dataset = {
        "name": "d", "train_path": "t.csv", "class_column": "class", "n_examples": 4,
        "k_classes": 2, "d_features": 1, "majority": 0.5, "size_kb": 1, "content_hash": "h" * 64,
        "feature_schema": {"numeric": ["a"], "categorical": []}, "class_labels": [0, 1],
        "created_at": datetime(2026, 1, 1),
    }  # fmt: skip
    datarun = {
        "selector": "uniform", "k_window": 3, "tuner": "uniform", "r_minimum": 2,
        "gridding": 0, "priority": 1, "budget_type": "classifier", "budget": 1,
        "metric": "f1", "score_target": "cv", "seed": 0, "test_size": 0.3,
        "status": "pending", "created_at": datetime(2026, 1, 1),
    }  # fmt: skip

    def at_0001(name: str, values: dict):
        """Insert only the columns revision 0001 had (today's models have more)."""
        columns = [sa.column(key, Base.metadata.tables[name].c[key].type) for key in values]
        return sa.table(name, *columns).insert().values(**values)

    with engine.begin() as connection:
        for dataset_id in (1, 2):
            connection.execute(at_0001("datasets", {"id": dataset_id, **dataset}))
        connection.execute(at_0001("dataruns", {"id": 1, "dataset_id": 2, **datarun}))
    engine.dispose()

    assert cli.main(["db", "upgrade", "--database-url", database_url]) == 0
    hub = ModelHub(settings=make_settings(database_url, tmp_path))
    try:
        assert [d.id for d in hub.datasets()] == [1]
        assert hub.get_datarun(1).dataset_id == 1
        unique = [
            index["unique"]
            for index in inspect(hub.engine).get_indexes("datasets")
            if index["column_names"] == ["content_hash"]
        ]
        assert unique == [True] or unique == [1]
    finally:
        hub.close()


# -- dataruns and hyperpartitions -----------------------------------------------------------
def test_datarun_stores_every_option(hub: ModelHub, pollution_path: str) -> None:
    deadline = datetime.now(UTC) + timedelta(days=2)
    entered = enter(
        hub,
        pollution_path,
        methods=["dt"],
        selector="ucb1",
        k_window=5,
        tuner="gp",
        r_minimum=3,
        gridding=4,
        priority=7,
        budget_type="walltime",
        budget=9,
        deadline=deadline,
        metric="roc_auc",
        score_target="mu_sigma",
        description="all options",
    )
    datarun = hub.get_datarun(entered.dataruns[0].id)
    assert (datarun.selector, datarun.k_window, datarun.tuner) == ("ucb1", 5, "gp")
    assert (datarun.r_minimum, datarun.gridding, datarun.priority) == (3, 4, 7)
    assert (datarun.budget_type, datarun.budget) == (BudgetType.WALLTIME, 9)
    assert abs(datarun.deadline - deadline.replace(tzinfo=None)) < timedelta(seconds=1)
    assert (datarun.metric, datarun.score_target) == ("roc_auc", ScoreTarget.MU_SIGMA)
    assert datarun.description == "all options"
    assert datarun.status == DatarunStatus.PENDING
    assert datarun.start_time is None and datarun.end_time is None


def test_datarun_enumerates_hyperpartitions_as_json(hub: ModelHub, pollution_path: str) -> None:
    """Every hyperpartition of the methods is stored, and reads back as the same spec."""
    methods = ["dt", "gnb", "knn"]
    entered = enter(hub, pollution_path, methods=methods)
    expected = [spec for m in methods for spec in enumerate_hyperpartitions(load_method(m))]
    rows = hub.hyperpartitions(entered.dataruns[0].id)
    assert len(rows) == len(expected)
    assert entered.partitions_per_method == {
        m: len(enumerate_hyperpartitions(load_method(m))) for m in methods
    }
    assert [hyperpartition_spec(row) for row in rows] == expected
    assert all(row.status == HyperpartitionStatus.INCOMPLETE for row in rows)
    gnb = [row for row in rows if row.method == "gnb"]
    assert len(gnb) == 1 and gnb[0].tunables == []


def test_specs_and_values_are_stored_as_json_text(hub: ModelHub, pollution_path: str) -> None:
    """Never pickles: the raw column content is JSON a human (or another tool) can read."""
    entered = enter(hub, pollution_path, methods=["dt"], budget=1)
    Driver(hub).run()
    with hub.engine.connect() as connection:
        raw = connection.execute(
            text("SELECT categoricals, tunables, constants FROM hyperpartitions")
        ).first()
        values = connection.execute(text("SELECT hyperparameters_values FROM classifiers")).scalar()
    for column in (*raw, values):
        assert not isinstance(column, bytes | memoryview)
        decoded = json.loads(column) if isinstance(column, str) else column
        assert isinstance(decoded, list | dict)
    decoded_values = json.loads(values) if isinstance(values, str) else values
    assert set(decoded_values) >= {"criterion", "max_depth"}
    assert hub.classifiers(entered.dataruns[0].id)[0].hyperparameters_values == decoded_values


def test_create_dataruns_refuses_an_empty_group_and_writes_nothing(
    hub: ModelHub, pollution_path: str
) -> None:
    entered = enter(hub, pollution_path, methods=["gnb"])
    specs = enumerate_hyperpartitions(load_method("gnb"))
    with pytest.raises(ValueError, match="at least one hyperpartition"):
        options = validate_options(DatarunRequest(pollution_path, budget=3))[0]
        hub.create_dataruns(entered.info, options, [specs, []])
    assert len(hub.dataruns()) == 1


def test_run_per_partition_creates_one_datarun_per_partition(
    hub: ModelHub, pollution_path: str
) -> None:
    entered = enter(hub, pollution_path, methods=["dt", "gnb"], run_per_partition=True)
    assert len(entered.dataruns) == 3
    assert {d.dataset_id for d in entered.dataruns} == {entered.dataset_id}
    for datarun in entered.dataruns:
        assert len(hub.hyperpartitions(datarun.id)) == 1


def test_dataruns_by_priority(hub: ModelHub, pollution_path: str) -> None:
    """Highest priority first, the oldest first among equals, finished runs left out."""
    low = enter(hub, pollution_path, methods=["gnb"], priority=1).dataruns[0].id
    high_a = enter(hub, pollution_path, methods=["gnb"], priority=5).dataruns[0].id
    high_b = enter(hub, pollution_path, methods=["gnb"], priority=5).dataruns[0].id
    done = enter(hub, pollution_path, methods=["gnb"], priority=9).dataruns[0].id
    set_datarun(hub, done, status=DatarunStatus.COMPLETE)
    assert [d.id for d in hub.dataruns_by_priority()] == [high_a, high_b, low]
    assert [d.id for d in hub.dataruns_by_priority([low, high_b, done])] == [high_b, low]


def test_unknown_ids_raise_not_found(hub: ModelHub) -> None:
    getters = (hub.get_dataset, hub.get_datarun, hub.get_classifier, hub.load_model, hub.progress)
    for getter in getters:
        with pytest.raises(NotFoundError, match="12345"):
            getter(12345)


# -- results --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("score_target", "order"),
    [("cv", [1, 2, 0]), ("test", [0, 2, 1]), ("mu_sigma", [2, 0, 1])],
)
def test_leaderboard_and_best_classifier_follow_the_score_target(
    hub: ModelHub, pollution_path: str, score_target: str, order: list[int]
) -> None:
    """Ranking in Python (leaderboard) and in SQL (best_classifier) agree for every target."""
    datarun_id = (
        enter(hub, pollution_path, methods=["dt"], budget=10, score_target=score_target)
        .dataruns[0]
        .id
    )
    partition = hub.hyperpartitions(datarun_id)[0]
    claims = [hub.reserve(datarun_id, partition.id, {"max_depth": d}) for d in range(2, 6)]
    #        cv,   stdev, test  -> mu_sigma = cv - 2 stdev
    finish(hub, claims[0], 0.70, 0.10, 0.90)  # 0.50
    finish(hub, claims[1], 0.80, 0.20, 0.60)  # 0.40
    finish(hub, claims[2], 0.75, 0.01, 0.70)  # 0.73
    assert hub.fail_classifier(claims[3], "Traceback: boom")

    board = hub.leaderboard(datarun_id)
    expected_ids = [claims[i].classifier_id for i in order]
    assert board["classifier_id"].tolist() == expected_ids
    assert board["rank"].tolist() == [1, 2, 3]
    assert board["judgment_metric"].is_monotonic_decreasing
    assert set(board["method"]) == {"dt"}
    assert hub.best_classifier(datarun_id).id == expected_ids[0]
    assert hub.leaderboard(datarun_id, limit=2)["classifier_id"].tolist() == expected_ids[:2]
    progress = hub.progress(datarun_id)  # what a progress bar shows, in one read
    assert (progress.datarun.id, progress.best.id) == (datarun_id, expected_ids[0])
    assert progress.classifiers == 4  # the errored one spent budget too
    assert budget_progress(progress) == BudgetProgress(4, 10, "classifiers")


def test_leaderboard_ties_break_on_the_older_classifier(hub: ModelHub, pollution_path: str) -> None:
    datarun_id = enter(hub, pollution_path, methods=["dt"], budget=5).dataruns[0].id
    partition = hub.hyperpartitions(datarun_id)[0]
    first = hub.reserve(datarun_id, partition.id, {"max_depth": 3})
    second = hub.reserve(datarun_id, partition.id, {"max_depth": 4})
    finish(hub, second, 0.8, 0.1, 0.8)
    finish(hub, first, 0.8, 0.1, 0.8)
    assert hub.best_classifier(datarun_id).id == first.classifier_id
    assert hub.leaderboard(datarun_id)["classifier_id"].tolist() == [
        first.classifier_id,
        second.classifier_id,
    ]


def test_empty_leaderboard_and_no_best(hub: ModelHub, pollution_path: str) -> None:
    datarun_id = enter(hub, pollution_path, methods=["gnb"]).dataruns[0].id
    assert hub.leaderboard(datarun_id).empty
    assert "judgment_metric" in hub.leaderboard(datarun_id).columns
    assert hub.best_classifier(datarun_id) is None
    assert (hub.progress(datarun_id).best, hub.progress(datarun_id).classifiers) == (None, 0)


def test_walltime_progress_counts_minutes_since_the_start(
    hub: ModelHub, pollution_path: str
) -> None:
    datarun_id = enter(hub, pollution_path, methods=["gnb"]).dataruns[0].id
    started = utcnow() - timedelta(minutes=3)
    set_datarun(hub, datarun_id, budget_type=BudgetType.WALLTIME, budget=10, start_time=started)
    spent = budget_progress(hub.progress(datarun_id))
    assert spent.unit == "minutes" and spent.total == 10
    assert 3 <= spent.done < 3.5 and 30 <= spent.percent < 35


def test_load_model_predicts_and_refuses_tampering(hub: ModelHub, pollution_path: str) -> None:
    """The stored model predicts; a changed file is refused (sha256), a missing one not found."""
    datarun_id = enter(hub, pollution_path, methods=["dt"], budget=2).dataruns[0].id
    Driver(hub).run()
    best = hub.best_classifier(datarun_id)
    frame = pd.read_csv(pollution_path)
    model = hub.load_model(best.id)
    predictions = model.predict(frame.drop(columns=["class"]))
    assert len(predictions) == 60 and set(predictions) <= {0, 1}
    metrics = hub.load_metrics(best.id)
    assert (metrics["split"] == "cv").sum() == 5 and (metrics["split"] == "test").sum() == 1

    for location, final in ((Path(best.final_model_location), True),
                            (Path(best.model_location), False)):  # fmt: skip
        assert location.is_absolute() and location.is_file()
        location.write_bytes(location.read_bytes() + b"tampered")
        with pytest.raises(IntegrityError, match="sha256"):
            hub.load_model(best.id, final=final)
        location.unlink()
        with pytest.raises(NotFoundError, match="not found"):
            hub.load_model(best.id, final=final)


def test_load_model_of_unfinished_classifier_is_refused(hub: ModelHub, pollution_path: str) -> None:
    datarun_id = enter(hub, pollution_path, methods=["dt"], budget=3).dataruns[0].id
    partition = hub.hyperpartitions(datarun_id)[0]
    running = hub.reserve(datarun_id, partition.id, {"max_depth": 2})
    errored = hub.reserve(datarun_id, partition.id, {"max_depth": 3})
    hub.fail_classifier(errored, "boom")
    assert hub.get_classifier(running.classifier_id).status == ClassifierStatus.RUNNING
    with pytest.raises(NotFoundError, match="running"):
        hub.load_model(running.classifier_id)
    with pytest.raises(NotFoundError, match="errored"):
        hub.load_model(errored.classifier_id)
