"""Load a user's class from ``path/to/file.py:ClassName`` or ``package.module:ClassName``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from functools import cache
from pathlib import Path

from atm_core.errors import SearchError


def is_custom(spec: str) -> bool:
    return ":" in spec


@cache
def load_class(spec: str, base: type, kind: str) -> type:
    """The class named by ``spec``; it must subclass ``base``. ``kind`` names it in errors."""
    location, _, class_name = spec.rpartition(":")
    if not location or not class_name:
        raise SearchError(f"custom {kind} '{spec}' must look like path/to/file.py:ClassName")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise SearchError(f"custom {kind} file not found: {location}")
        module_name = "atm_custom_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise SearchError(f"custom {kind} file cannot be imported: {location}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise SearchError(f"custom {kind} file {location} fails to import: {exc}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise SearchError(
                f"custom {kind} module '{location}' cannot be imported: {exc}"
            ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise SearchError(f"custom {kind} class '{class_name}' not found in {location}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise SearchError(
            f"custom {kind} '{spec}' must be a subclass of {base.__module__}.{base.__name__}"
        )
    return cls
