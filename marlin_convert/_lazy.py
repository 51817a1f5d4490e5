"""Module attributes imported on first use (PEP 562), so that a package can name what its torch-using
modules export without importing torch itself."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name -> `package.<homes[name]>`'s attribute of that name,
    imported on first use and then kept in the package's namespace (later lookups are plain)."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
