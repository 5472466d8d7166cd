"""Errors a user can cause. The CLI and the flow print them in one line, without a traceback."""


class ATMError(Exception):
    """Base class of every error caused by user input or configuration."""


class ConfigError(ATMError):
    """Invalid settings, datarun options or command-line flags."""


class DataError(ATMError):
    """A data file that cannot be used: missing, empty, unparseable, bad label column..."""


class MethodError(ATMError):
    """An unknown method or an invalid method JSON file."""


class SearchError(ATMError):
    """An unknown or unloadable selector or tuner."""


class NotFoundError(ATMError):
    """A dataset, datarun or classifier id that the ModelHub does not hold."""


class IntegrityError(ATMError):
    """A stored artifact whose content does not match what the ModelHub recorded."""
