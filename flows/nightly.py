"""Nightly dataruns: every entry of a plan file becomes a fresh datarun (a subflow run)."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow

from atm_core.dataruns import load_plan
from atm_core.errors import ConfigError
from flows.datarun import datarun

FLOW_PARAMETERS = set(inspect.signature(datarun.fn).parameters)
DEFAULT_PLAN = "flows/nightly.yaml"


@flow(name="atm")
def nightly(plan: str = DEFAULT_PLAN, n_parallel: int = 1) -> list[dict[str, Any]]:
    """Run each datarun listed in ``plan`` (YAML, ``dataruns:`` entries) one after another."""
    requests = load_plan(plan)
    for index, request in enumerate(requests):
        if request.run_per_partition:  # the flow searches one datarun; never drop it silently
            raise ConfigError(
                f"{plan}: dataruns[{index}].run_per_partition is not supported by the flow "
                "(use `atm enter_data --run-per-partition` with `atm worker`)"
            )
    summaries, failures = [], []
    for request in requests:
        options = {k: v for k, v in asdict(request).items() if k in FLOW_PARAMETERS}
        name = Path(request.train_path).stem
        state = datarun.with_options(flow_run_name=f"nightly-{name}")(
            **options,
            n_parallel=n_parallel,
            return_state=True,
        )
        if state.is_completed():
            summaries.append(state.result())
        else:  # one bad entry must not cost the others their night
            failures.append(f"{request.train_path}: {state.message}")
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(requests)} nightly dataruns failed: {failures}"
        )
    return summaries
