"""Method registry: `@register("sa", label="SA", variants=[{"k": 1}, ...])` on an EncoderModel.

Methods outside this package are plugins too: name their modules in $GPVAE_BENCH_PLUGINS
(comma-separated, importable from sys.path/PYTHONPATH). They are imported on the first lookup, in
every process that looks a method up, so Slurm and local job subprocesses (which inherit the
environment) see them as well.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

PLUGINS_ENV = "GPVAE_BENCH_PLUGINS"
_REGISTRY: dict[str, MethodInfo] = {}
_imported_plugins: set[str] = set()
BUILD_ARGUMENTS = ("self", "net", "latent_dim", "likelihood", "num_train")  # what the harness passes


class PluginImportError(ImportError):
    def __str__(self) -> str:
        return self.args[0]


class UnknownParameterError(ValueError):
    pass


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type
    label: str
    variants: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({},))

    def build(self, params: dict[str, Any], **kwargs):
        return self.cls(**kwargs, **params)

    def settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every setting the method takes, with `params` over its signature's defaults: what a
        record stores as the run's parameters, so a changed default changes the config hash.
        A name the constructor does not take raises UnknownParameterError."""
        signature = inspect.signature(self.cls.__init__)
        names = [n for n, p in signature.parameters.items()
                 if n not in BUILD_ARGUMENTS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise UnknownParameterError(
                f"method {self.name!r} takes no parameter {unknown[0]!r}; its parameters: "
                + (", ".join(names) or "none"))
        defaults = {n: signature.parameters[n].default for n in names
                    if signature.parameters[n].default is not inspect.Parameter.empty}
        return {**defaults, **params}


def variant_name(params: dict[str, Any]) -> str:
    """{'k': 4} -> 'k4'; {} -> 'default'. Used in record paths."""
    if not params:
        return "default"
    return "-".join(f"{k}{v}" for k, v in sorted(params.items()))


def display_name(label: str, params: dict[str, Any]) -> str:
    """('SA', {'k': 4}) -> 'SA(4)', as the paper's tables print it."""
    if not params:
        return label
    return f"{label}({','.join(str(v) for _, v in sorted(params.items()))})"


def register(name: str, *, label: str, variants=({},)):
    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = MethodInfo(name, cls, label, tuple(dict(v) for v in variants))
        return cls

    return deco


def import_env_plugins() -> None:
    """Import the modules named in $GPVAE_BENCH_PLUGINS that are not imported yet."""
    for module in os.environ.get(PLUGINS_ENV, "").split(","):
        module = module.strip()
        if not module or module in _imported_plugins:
            continue
        _imported_plugins.add(module)  # first: a plugin that looks methods up must not re-import itself
        try:
            importlib.import_module(module)
        except Exception as err:
            _imported_plugins.discard(module)
            raise PluginImportError(f"${PLUGINS_ENV}: cannot import plugin module {module!r}: "
                                    f"{type(err).__name__}: {err}") from err


def get_method(name: str) -> MethodInfo:
    import_env_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {known}") from None


def registered_methods() -> dict[str, MethodInfo]:
    import_env_plugins()
    return dict(sorted(_REGISTRY.items()))
