"""Encoder plugins. Every module in this package is imported on the first lookup of a method's
class (`get_method`, `registered_methods`: registry.import_builtin_plugins), so a new method is one
new file that decorates its EncoderModel subclass with `@register(...)`, and importing this package
(or its registry) costs no torch import until a model is built: what needs only a method's name,
label, variants and settings (`method_spec`, `method_specs`) reads the modules' source
(methods.metadata). A module that fails to import is kept out (`registry.broken_plugins()` says
why): --list shows it as broken, and a run whose rows need it fails with that one line, while the
other methods work."""

import importlib

from .registry import (
    broken_plugins,
    get_method,
    import_plugin,
    method_spec,
    method_specs,
    register,
    registered_methods,
)

_LAZY = {"EncoderModel": "base", "diagonal_gaussian": "base", "sample_with_log_prob": "base",
         "NetConfig": "networks"}


def __getattr__(name: str):
    """The torch-backed names (EncoderModel, NetConfig, ...) are imported when first used."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EncoderModel",
    "NetConfig",
    "broken_plugins",
    "diagonal_gaussian",
    "get_method",
    "import_plugin",
    "method_spec",
    "method_specs",
    "register",
    "registered_methods",
    "sample_with_log_prob",
]
