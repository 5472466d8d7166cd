"""The metrics' names per problem type and the metric a name means for a problem.

Light on purpose (no scikit-learn): ``atm enter_data`` checks the metric with these before it
reads any data; :mod:`atm_core.evaluation` computes them.
"""

from __future__ import annotations

from atm_core.errors import ConfigError

BINARY_METRICS = ("accuracy", "cohen_kappa", "f1", "roc_auc", "ap", "mcc")
MULTICLASS_METRICS = (
    "accuracy",
    "rank_accuracy",
    "cohen_kappa",
    "f1_micro",
    "f1_macro",
    "roc_auc_micro",
    "roc_auc_macro",
)
MULTICLASS_ALIASES = {"f1": "f1_macro", "roc_auc": "roc_auc_macro"}
ALL_METRICS = sorted({*BINARY_METRICS, *MULTICLASS_METRICS, *MULTICLASS_ALIASES})


def resolve_metric(metric: str, k_classes: int) -> str:
    """The metric actually computed for a problem with ``k_classes`` classes."""
    if k_classes <= 2:
        if metric in BINARY_METRICS:
            return metric
        raise ConfigError(
            f"metric '{metric}' is not valid for a binary problem: "
            f"use one of {', '.join(BINARY_METRICS)}"
        )
    metric = MULTICLASS_ALIASES.get(metric, metric)
    if metric in MULTICLASS_METRICS:
        return metric
    allowed = ", ".join([*MULTICLASS_METRICS, *MULTICLASS_ALIASES])
    raise ConfigError(
        f"metric '{metric}' is not valid for a {k_classes}-class problem: use one of {allowed}"
    )
