"""The search space (method catalogue, hyperpartitions) and the search (selectors, tuners)."""
