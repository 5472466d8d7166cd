"""The ModelHub: every dataset, datarun, hyperpartition and classifier, in one database."""

from atm_core.modelhub.hub import ModelHub

__all__ = ["ModelHub"]
