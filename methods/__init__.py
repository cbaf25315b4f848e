"""Encoder plugins. Every module in this package is imported, so a new method is one new file
that decorates its EncoderModel subclass with `@register(...)`. A module that fails to import is
kept out (`registry.broken_plugins()` says why): --list shows it as broken, and a run whose rows
need it fails with that one line, while the other methods work."""

import pkgutil

from .base import EncoderModel, diagonal_gaussian, sample_with_log_prob
from .networks import NetConfig
from .registry import broken_plugins, get_method, import_plugin, register, registered_methods

_INFRASTRUCTURE = {"base", "networks", "likelihoods", "registry"}

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INFRASTRUCTURE and not _mod.name.startswith("_"):
        import_plugin(f"{__name__}.{_mod.name}")

__all__ = [
    "EncoderModel",
    "NetConfig",
    "broken_plugins",
    "diagonal_gaussian",
    "get_method",
    "register",
    "registered_methods",
    "sample_with_log_prob",
]
