"""Encoder plugins. Every module in this package is imported, so a new method is one new file
that decorates its EncoderModel subclass with `@register(...)`."""

import importlib
import pkgutil

from .base import EncoderModel, diagonal_gaussian, sample_with_log_prob
from .networks import NetConfig
from .registry import get_method, register, registered_methods

_INFRASTRUCTURE = {"base", "networks", "likelihoods", "registry"}

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INFRASTRUCTURE and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "EncoderModel",
    "NetConfig",
    "diagonal_gaussian",
    "get_method",
    "register",
    "registered_methods",
    "sample_with_log_prob",
]
