"""Modules imported on first use: `torch = lazy_module("torch")` binds the name now and imports
the module when one of its attributes is first read, so that a command that never needs it
(`reproduce.py --help`, a dry run before it needs torch) does not pay for importing it.

A proxy rather than importlib's LazyLoader: LazyLoader puts the module into sys.modules at once,
and libraries that look there (scipy checks for torch arrays) would then import torch themselves."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for the module `name`; reading, setting or deleting an attribute imports it."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def _module(self) -> ModuleType:
        return importlib.import_module(object.__getattribute__(self, "_name"))

    def __getattr__(self, attr: str):
        return getattr(self._module(), attr)

    def __setattr__(self, attr: str, value) -> None:  # monkeypatching reaches the module
        setattr(self._module(), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(self._module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {object.__getattribute__(self, '_name')!r}>"


def lazy_module(name: str) -> LazyModule:
    return LazyModule(name)
