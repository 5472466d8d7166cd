"""The search space (method catalogue, hyperpartitions) and the search (selectors, tuners)."""

# Chosen by benchmarks/quality.py (benchmarks/RESULTS.md, "Tuner and selector defaults"): the
# original's uniform selector gives each *hyperpartition* an equal share, so mlp's many
# partitions took most of a datarun; hieralg first picks a method (UCB1), then a partition;
# hiercost does so charging each method the seconds its configurations took (flights at 600 s:
# 0.8072 test AUC against hieralg's 0.7979, four other tables within one seed's noise; "A
# selector charged in seconds").
DEFAULT_SELECTOR = "hiercost"
DEFAULT_TUNER = "uniform"
