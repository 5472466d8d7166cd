"""The ``atm`` command line: enter_data, worker, status, leaderboard, predict, ...

Errors a user can cause print one line and exit with code 2 (no traceback). Subcommands that
need Prefect (``atm run``) are contributed by the ``flows`` package through the ``atm.cli``
entry point group, so this module never imports Prefect.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from atm_core.errors import ATMError, mask_secrets
from atm_core.options import add_datarun_flags, from_arguments
from atm_core.settings import Settings, load_settings

EXIT_USAGE = 2
DEMO_DATASETS = {"pollution": "pollution_1.csv", "iris": "iris.csv"}
DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"

Handler = Callable[[argparse.Namespace, Settings, Console], int | None]


class Parser(argparse.ArgumentParser):
    """argparse, whose error messages (which quote what was typed) never show a password."""

    def error(self, message: str) -> NoReturn:
        super().error(mask_secrets(message))


SETTINGS_FLAGS = ("--config", "--database-url", "--artifact-root")


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Where ATM keeps things; accepted before or after the command (``atm --database-url URL
    status`` and ``atm status --database-url URL``)."""
    group = parser.add_argument_group("where ATM keeps things (default: ATM_* variables)")
    group.add_argument(
        "--config", default=argparse.SUPPRESS, help="YAML settings file (or ATM_CONFIG)"
    )
    group.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="ModelHub URL (ATM_DATABASE_URL, default sqlite:///atm.db)",
    )
    group.add_argument(
        "--artifact-root",
        default=argparse.SUPPRESS,
        help="models and metrics root (ATM_ARTIFACT_ROOT, default ./artifacts)",
    )


def open_hub(settings: Settings):
    from atm_core.modelhub import ModelHub

    return ModelHub(settings=settings)


def open_hub_patiently(settings: Settings, console: Console):
    """The ModelHub, waiting (as for an outage mid-run) while its server does not answer: a
    worker started before its database comes back. A wrong password or database name is
    reported at once."""
    from atm_core.errors import HubUnavailable

    started, delay = time.monotonic(), 1.0
    while True:
        try:
            return open_hub(settings)
        except HubUnavailable as exc:
            waited = time.monotonic() - started
            if not exc.transient or waited + delay > settings.outage_patience_seconds:
                raise
            console.print(
                f"Waiting for the ModelHub ({exc}); retrying in {delay:.0f}s",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


# -- commands ---------------------------------------------------------------------------------
def cmd_enter_data(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.console import ReadingProgress
    from atm_core.data.loading import reporting_reads
    from atm_core.dataruns import enter_data

    if not args.train_path:
        raise ATMError("--train-path is required (a CSV or parquet file with a label column)")
    hub = open_hub(settings)
    # a large file's reading shows a progress bar, on stderr
    with ReadingProgress(Console(stderr=True)) as progress, reporting_reads(progress):
        entered = enter_data(hub, from_arguments(args))
    print_entered(entered, console)
    return 0


def print_entered(entered, console: Console) -> None:
    for method, count in entered.partitions_per_method.items():
        console.print(f"method {method} has {count} hyperpartitions", highlight=False)
    first = entered.dataruns[0]
    ids = ", ".join(str(d.id) for d in entered.dataruns)
    mapped = (
        f", from '{entered.requested_metric}'" if entered.requested_metric != entered.metric else ""
    )
    summary = [
        "Data entry complete. Summary:",
        f"    Dataset ID: {entered.dataset_id}",
        f"    Training data: {entered.info.train_path}",
        f"    Test data: {entered.info.test_path}",
        f"    Datarun ID{'s' if len(entered.dataruns) > 1 else ''}: {ids}",
        f"    Hyperpartition selection strategy: {first.selector}",
        f"    Parameter tuning strategy: {first.tuner}",
        f"    Budget: {first.budget:g} ({first.budget_type.value})",
        f"    Metric: {entered.metric} ({first.score_target.value}{mapped})",
    ]
    console.print("\n".join(summary), highlight=False, soft_wrap=True)


def cmd_worker(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.console import ConsoleReporter
    from atm_core.driver import Driver

    hub = open_hub_patiently(settings, console)
    driver = None
    try:
        with ConsoleReporter(hub, console, verbose=not args.quiet) as reporter:
            driver = Driver(
                hub, datarun_ids=args.dataruns, total_time=args.total_time, reporter=reporter
            )
            driver.run()
    finally:
        if args.stats and driver is not None:
            write_stats(driver.results, args.stats)
    return 0


def write_stats(results: list, path: str) -> None:
    """One JSON line per classifier this worker trained: status and seconds per phase."""
    import json

    with open(path, "a") as handle:
        for result in results:
            record = {
                "classifier_id": result.classifier_id,
                "datarun_id": result.datarun_id,
                "method": result.method,
                "status": result.status,
                "timings": result.timings,
                "bookkeeping_seconds": result.bookkeeping_seconds,
            }
            handle.write(json.dumps(record) + "\n")


def cmd_status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.console import status_table

    console.print(status_table(open_hub(settings)))
    return 0


def cmd_leaderboard(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.console import ensemble_table, leaderboard_table

    hub = open_hub(settings)
    datarun = hub.get_datarun(args.datarun_id)
    if args.output:
        write_csv(hub.leaderboard_rows(datarun.id), args.output)
        console.print(f"leaderboard written to {args.output}")
    rows = hub.leaderboard_rows(datarun.id, limit=args.limit)
    console.print(leaderboard_table(rows, datarun, console.width))
    lost = hub.lost_classifiers(datarun.id)
    if lost:
        console.print(
            f"Files lost (atm verify), left out: {', '.join(f'#{c.id}' for c in lost)}",
            highlight=False,
        )
    if hub.get_ensemble(datarun.id) is not None:
        console.print(ensemble_table(hub, datarun))
    return 0


def write_csv(rows: list[dict], path: str) -> None:
    """Leaderboard rows as CSV (hyperparameters as JSON), without loading pandas."""
    import csv
    import json

    from atm_core.modelhub.reads import LEADERBOARD_COLUMNS

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LEADERBOARD_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {**row, "hyperparameters": json.dumps(row["hyperparameters"], sort_keys=True)}
            )


def cmd_predict(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.data.loading import read_table
    from atm_core.prediction import load_predictor

    hub = open_hub(settings)
    predictor = load_predictor(hub, args.classifier_id, args.ensemble, final=not args.search_time)
    prediction = predictor.predict(read_table(args.file).frame, args.file)
    for note in prediction.notes:
        print(f"atm predict: warning: {args.file}: {note}", file=sys.stderr)
    labels = prediction.labels
    if args.output:
        import pandas as pd

        pd.DataFrame({"prediction": labels}).to_csv(args.output, index=False)
        console.print(f"{len(labels)} predictions written to {args.output}")
    else:
        sys.stdout.write("".join(f"{label}\n" for label in labels))
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.api import export_ensemble, export_model

    hub = open_hub(settings)
    final = not args.search_time
    if args.ensemble is not None:
        path = export_ensemble(
            hub, args.ensemble, args.path, force=args.force, refit=args.refit, final=final
        )
        console.print(f"the ensemble of datarun {args.ensemble} exported to {path}")
        return 0
    path = export_model(
        hub, args.classifier_id, args.path, force=args.force, refit=args.refit, final=final
    )
    console.print(f"classifier {args.classifier_id} exported to {path}")
    return 0


def cmd_ensemble(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.console import ensemble_table
    from atm_core.modelhub.models import DatarunStatus
    from atm_core.results import build_ensemble

    hub = open_hub(settings)
    datarun = hub.get_datarun(args.datarun_id)
    if datarun.status != DatarunStatus.COMPLETE:
        raise ATMError(
            f"datarun {datarun.id} is {datarun.status.value}: its ensemble is chosen once it "
            "completes"
        )
    if build_ensemble(hub, datarun.id) is None:
        raise ATMError(f"datarun {datarun.id} has no complete classifier with predictions")
    console.print(ensemble_table(hub, datarun))
    return 0


def cmd_methods(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from rich.table import Table

    from atm_core.search.catalogue import builtin_methods, load_method
    from atm_core.search.hyperpartitions import enumerate_hyperpartitions

    table = Table(title="Built-in methods")
    for column in ("code", "class", "hyperpartitions"):
        table.add_column(column)
    for name in builtin_methods():
        method = load_method(name)
        table.add_row(name, method.estimator_class, str(len(enumerate_hyperpartitions(method))))
    console.print(table)
    return 0


def cmd_test_method(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from rich.table import Table

    from atm_core.method_check import check_method

    dataset = args.dataset or str(DEMO_DATA_DIR / DEMO_DATASETS["pollution"])
    with console.status(f"fitting every hyperpartition of {args.method} on {dataset}..."):
        checks = check_method(args.method, dataset, args.class_column, args.metric)
    table = Table(title=f"{args.method}: every hyperpartition fitted once on {Path(dataset).name}")
    for column in ("hyperpartition", "result", args.metric, "seconds"):
        table.add_column(column, justify="left" if column != "seconds" else "right")
    for check in checks:
        table.add_row(
            check.label,
            "OK" if check.ok else f"[red]{check.error_line}[/red]",
            "-" if check.score is None else f"{check.score:.3f}",
            f"{check.seconds:.2f}",
        )
    console.print(table)
    failed = sum(not check.ok for check in checks)
    console.print(
        f"{len(checks) - failed} of {len(checks)} hyperpartitions fitted"
        + (f"; {failed} failed" if failed else ""),
        highlight=False,
    )
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.verification import verify

    hub = open_hub(settings)
    with console.status("reading every complete classifier's files..."):
        report = verify(hub, [args.datarun_id] if args.datarun_id is not None else None)
    for classifier_id, problem in sorted(report.lost.items()):
        console.print(f"classifier {classifier_id}: {problem}", highlight=False, soft_wrap=True)
    for datarun_id in report.ensembles_chosen_again:
        console.print(f"datarun {datarun_id}: its ensemble was chosen again without them")
    console.print(
        f"{report.checked} classifiers checked, {len(report.lost)} with files lost",
        highlight=False,
    )
    return 1 if report.lost else 0


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.modelhub.database import SCHEMA_HEAD, create_hub_engine, upgrade_schema

    engine = create_hub_engine(settings.database_url)
    try:
        before = upgrade_schema(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if before == SCHEMA_HEAD:
        console.print(
            f"{where}: schema already at revision {SCHEMA_HEAD}", highlight=False, soft_wrap=True
        )
    else:
        console.print(
            f"{where}: schema upgraded from revision {before or '(empty)'} to {SCHEMA_HEAD}",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def add_model_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--search-time",
        action="store_true",
        help="use the model fitted during the search (whose test score is recorded) instead "
        "of its refit on every labelled row",
    )
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--classifier-id", type=int, help="one classifier's model")
    choice.add_argument(
        "--ensemble", type=int, metavar="DATARUN_ID", help="the ensemble of a complete datarun"
    )


# -- parser -----------------------------------------------------------------------------------
def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """Every ``atm`` command; ``plugins=False`` leaves out those that packages register in the
    ``atm.cli`` entry point group (``run``, ``dashboard``...): finding them costs ~70 ms."""
    parser = Parser(
        prog="atm",
        description="Auto Tune Models: search scikit-learn classifiers and their hyperparameters.",
    )
    add_settings_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        add_settings_flags(sub)
        sub.set_defaults(handler=handler)
        return sub

    enter = command("enter_data", cmd_enter_data, "register a dataset and create a datarun")
    add_datarun_flags(enter)

    worker = command("worker", cmd_worker, "train classifiers until the dataruns are done")
    worker.add_argument("--dataruns", nargs="+", type=int, help="only work on these datarun ids")
    worker.add_argument("--total-time", type=float, help="stop this worker after N minutes")
    worker.add_argument("--quiet", action="store_true", help="only show the progress bar")
    worker.add_argument("--stats", help="append per-classifier timings (JSON lines) to this file")

    command("status", cmd_status, "show every datarun and its progress")

    board = command("leaderboard", cmd_leaderboard, "rank the classifiers of a datarun")
    board.add_argument("datarun_id", type=int)
    board.add_argument("--limit", type=int, default=10)
    board.add_argument("--output", help="also write the whole leaderboard as CSV")

    predict = command("predict", cmd_predict, "predict with a stored classifier or ensemble")
    add_model_choice(predict)
    predict.add_argument("file", help="CSV or parquet with the feature columns")
    predict.add_argument("--output", help="write predictions to this CSV instead of stdout")

    export = command("export", cmd_export, "write a classifier or ensemble to a pickle file")
    add_model_choice(export)
    export.add_argument("path")
    export.add_argument("--force", action="store_true", help="overwrite an existing file")
    export.add_argument(
        "--refit",
        action="store_true",
        help="fit the configuration on every labelled row first (the model to deploy)",
    )

    ensemble = command(
        "ensemble", cmd_ensemble, "show a complete datarun's ensemble (choosing it if missing)"
    )
    ensemble.add_argument("datarun_id", type=int)

    command("methods", cmd_methods, "list the built-in methods")

    verify = command(
        "verify",
        cmd_verify,
        "check complete classifiers' stored files against their hashes; flag lost ones",
    )
    verify.add_argument("datarun_id", type=int, nargs="?", help="only this datarun")

    test_method = command(
        "test-method",
        cmd_test_method,
        "fit every hyperpartition of a method once on a small dataset and report each",
    )
    test_method.add_argument("method", help="a method code (logreg) or a method JSON file")
    test_method.add_argument("--dataset", help="CSV or parquet (default: the bundled pollution)")
    test_method.add_argument("--class-column", default="class", help="label column")
    test_method.add_argument("--metric", default="f1", help="metric to report (default: f1)")

    database = commands.add_parser(
        "db", help="the ModelHub's schema", description="the ModelHub's schema"
    )
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser(
        "upgrade",
        help="upgrade the ModelHub's schema to this ATM's (stop its workers first)",
        description="upgrade the ModelHub's schema to this ATM's (stop its workers first)",
    )
    add_settings_flags(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)

    parser.builtin_commands = frozenset(commands.choices)
    if plugins:
        from importlib.metadata import entry_points

        for plugin in entry_points(group="atm.cli"):
            plugin.load()(commands, command)
    return parser


def command_word(argv: Sequence[str]) -> str | None:
    """The command a command line names (None: none, as in ``atm --help``)."""
    words = iter(argv)
    for word in words:
        if word in SETTINGS_FLAGS:
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word
    return None


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser ``argv`` needs: plugins are looked for only when its command is not one of
    this module's (``atm --help`` lists them all)."""
    parser = build_parser(plugins=False)
    if command_word(argv) in parser.builtin_commands:  # type: ignore[attr-defined]
        return parser
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    console = Console()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = parser_for(argv)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            getattr(args, "config", None),
            database_url=getattr(args, "database_url", None),
            artifact_root=getattr(args, "artifact_root", None),
        )
        return args.handler(args, settings, console) or 0
    except ATMError as exc:
        return refuse(args.command, str(exc))
    except Exception as exc:
        from atm_core.modelhub.hub import DATABASE_ERRORS

        if not isinstance(exc, DATABASE_ERRORS):
            raise
        from atm_core.modelhub.database import connection_error, create_hub_engine

        return refuse(
            args.command, str(connection_error(create_hub_engine(settings.database_url), exc))
        )
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted; running work was released for the next worker")
        return 130


def refuse(command: str, message: str) -> int:
    """One line on stderr, whatever the terminal width (Rich would wrap at 80 columns), with
    any password masked; the usage exit code."""
    text = mask_secrets(" ".join(line.strip() for line in message.splitlines() if line.strip()))
    Console(stderr=True).print(
        f"atm {command}: error: {text}", highlight=False, markup=False, soft_wrap=True
    )
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
