"""``atm run`` and ``atm demo``: the datarun flow from the command line, no server needed.

Registered into ``atm`` through the ``atm.cli`` entry point group (see pyproject.toml), so
``atm_core`` never imports Prefect. Without ``PREFECT_API_URL`` Prefect runs embedded (an
ephemeral server in this process); its home stays inside the working folder (``.prefect``).
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from atm_core.cli import DEMO_DATA_DIR, DEMO_DATASETS, open_hub
from atm_core.options import DatarunRequest, add_datarun_flags, from_arguments
from atm_core.settings import Settings


def prepare_environment(settings: Settings, verbose: bool) -> None:
    """The settings as ``ATM_*`` variables (the flow reads its settings there, so that no URL
    or password becomes a flow-run parameter), and Prefect's defaults for the embedded mode;
    explicit ``PREFECT_*`` variables always win."""
    for name, value in settings.to_dict().items():
        os.environ[f"ATM_{name.upper()}"] = str(value)
    os.environ.pop("ATM_CONFIG", None)  # every setting is in the environment now
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
        # Prefect gives its embedded server 20 s; a busy 2-core machine can need more.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def run_flow(
    request: DatarunRequest,
    settings: Settings,
    console: Console,
    *,
    datarun_id: int | None = None,
    n_parallel: int = 1,
    task_runner: str | None = None,
    dask_address: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Validate, then run the ``atm`` flow in-process with a progress bar; print the result."""
    from atm_core.console import DatarunWatcher, leaderboard_table
    from atm_core.modelhub.models import utcnow
    from atm_core.results import ensemble_members_text

    started_at = utcnow().isoformat()  # a walltime budget covers the whole run from here
    if datarun_id is None:
        from atm_core.dataruns import check_request

        check_request(request)  # bad input fails here, before Prefect starts
    prepare_environment(settings, verbose)
    from flows.datarun import datarun
    from flows.runners import make_task_runner

    flow = datarun
    if task_runner or dask_address:
        flow = datarun.with_options(task_runner=make_task_runner(task_runner, dask_address))
    run_key = f"atm-run:{uuid.uuid4()}"
    parameters = {
        name: value
        for name, value in vars(request).items()
        if name != "run_per_partition"  # refused by cmd_run
    }
    hub = open_hub(settings)
    if datarun_id is not None:
        hub.get_datarun(datarun_id)  # an unknown datarun fails here, before Prefect starts
    console.print("Starting the atm flow (Prefect embedded mode)...", highlight=False)
    with DatarunWatcher(hub, run_key if datarun_id is None else None, console, datarun_id):
        state = flow(
            **parameters,
            datarun_id=datarun_id,
            n_parallel=n_parallel,
            run_key=run_key,
            started_at=started_at,
            return_state=True,
        )
    summary = state.result()  # a user's error in the flow raises it here (exit 2)
    datarun_row = hub.get_datarun(summary["datarun_id"])
    rows = hub.leaderboard_rows(datarun_row.id, limit=10)
    console.print(leaderboard_table(rows, datarun_row, console.width))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["classifiers"].items()))
    console.print(
        f"Datarun {datarun_row.id}: {datarun_row.status.value} ({counts})", highlight=False
    )
    if summary["best_classifier_id"] is not None:
        console.print(
            f"Best: classifier {summary['best_classifier_id']} ({summary['best_method']}), "
            f"model at {summary['model_location']}",
            highlight=False,
        )
    if summary["ensemble"]:
        console.print(
            f"Ensemble: {ensemble_members_text(summary['ensemble'])}; "
            f"{datarun_row.metric} cv {summary['ensemble_cv']:.3f}, "
            f"test {summary['ensemble_test']:.3f}",
            highlight=False,
        )
    return summary


def cmd_run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from atm_core.errors import ConfigError

    if not args.train_path and args.datarun_id is None:
        raise ConfigError("give --train-path (a new datarun) or --datarun-id (an existing one)")
    if args.run_per_partition:  # the flow searches one datarun: refuse rather than ignore it
        raise ConfigError(
            "atm run does not support --run-per-partition; "
            "use `atm enter_data --run-per-partition` and `atm worker`"
        )
    run_flow(
        from_arguments(args),
        settings,
        console,
        datarun_id=args.datarun_id,
        n_parallel=args.n_parallel,
        task_runner=args.task_runner,
        dask_address=args.dask_address,
        verbose=args.verbose,
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """A bundled dataset through the flow: pollution (logreg, dt, knn; 100) or iris (all; 60)."""
    from atm_core.search.catalogue import builtin_methods

    train_path = str(DEMO_DATA_DIR / DEMO_DATASETS[args.dataset])
    if args.dataset == "iris":
        request = DatarunRequest(train_path, methods=list(builtin_methods()), budget=60)
    else:
        request = DatarunRequest(train_path, methods=["logreg", "dt", "knn"], budget=100)
    summary = run_flow(request, settings, console, n_parallel=args.n_parallel, verbose=args.verbose)
    hub = open_hub(settings)
    errored = [
        hp for hp in hub.hyperpartitions(summary["datarun_id"]) if hp.status.value == "errored"
    ]
    console.print(f"Hyperpartitions errored: {len(errored)}", highlight=False)
    if summary["best_classifier_id"] is not None:
        console.print(
            "Predict with it: atm predict --classifier-id "
            f"{summary['best_classifier_id']} {train_path}",
            highlight=False,
        )
    if summary["ensemble"]:
        console.print(
            f"Or with the ensemble: atm predict --ensemble {summary['datarun_id']} {train_path}",
            highlight=False,
        )
    return 0


def add_flow_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("flow")
    group.add_argument("--n-parallel", type=int, default=1, help="classifier tasks in flight")
    group.add_argument("--verbose", action="store_true", help="show Prefect's run logs")


def register(commands: Any, command: Any) -> None:
    """Add ``run`` and ``demo`` to the ``atm`` command line."""
    from flows.runners import RUNNERS

    run = command("run", cmd_run, "run a datarun as the Prefect flow `atm` (no server needed)")
    add_datarun_flags(run)
    add_flow_flags(run)
    run.add_argument("--datarun-id", type=int, help="work on an existing datarun instead")
    run.add_argument("--task-runner", choices=RUNNERS, help="threads (default) or dask")
    run.add_argument("--dask-address", help="scheduler of an existing Dask cluster")

    demo = command("demo", cmd_demo, "run the flow on a bundled dataset and show the leaderboard")
    demo.add_argument("--dataset", choices=sorted(DEMO_DATASETS), default="pollution")
    add_flow_flags(demo)
