"""The search space (method catalogue, hyperpartitions) and the search (selectors, tuners)."""

# Chosen by benchmarks/quality.py (benchmarks/RESULTS.md, "Tuner and selector defaults"): the
# original's uniform selector gives each *hyperpartition* an equal share, so mlp's many
# partitions took most of a datarun; hieralg first picks a method (UCB1), then a partition.
DEFAULT_SELECTOR = "hieralg"
DEFAULT_TUNER = "uniform"
