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


class HubUnavailable(ATMError):
    """The ModelHub's database cannot be reached or refuses the login. ``transient``: it may
    answer later (a server down or restarting), as opposed to a wrong password or name."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class DataUnavailable(ATMError):
    """A registered dataset that this process cannot read (a path only another machine has,
    a file changed since it was entered): the datarun is left for a worker that can."""


def mask_secrets(text: str) -> str:
    """``scheme://user:***@host``: passwords in URLs replaced, wherever they appear in text."""
    import re

    return re.sub(r"(\b[\w+.-]+://[^\s:/@]*:)[^\s@/]+@", r"\1***@", text)
