"""Method registry: `@register("sa", label="SA", variants=[{"k": 1}, ...])` on an EncoderModel.

Methods outside this package are plugins too: name their modules in $GPVAE_BENCH_PLUGINS
(comma-separated, importable from sys.path/PYTHONPATH). They are imported on the first lookup, in
every process that looks a method up, so Slurm and local job subprocesses (which inherit the
environment) see them as well.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

PLUGINS_ENV = "GPVAE_BENCH_PLUGINS"
_REGISTRY: dict[str, MethodInfo] = {}
_imported_plugins: set[str] = set()
_BROKEN: dict[str, str] = {}  # plugin module -> 'ErrorType: message' of its failed import
_lenient = False  # see lenient_plugins()
BUILD_ARGUMENTS = ("self", "net", "latent_dim", "likelihood", "num_train")  # what the harness passes
_INFRASTRUCTURE = {"base", "networks", "likelihoods", "registry"}  # modules of this package, not plugins
_builtins_imported = False


class PluginImportError(ImportError):
    exit_code = 2  # the CLI prints it as one `error:` line

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


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def import_plugin(module: str) -> bool:
    """Import a plugin module; if that fails, remember it as broken (see `broken_plugins`) rather
    than raise, so that one bad plugin file does not take the other methods down with it."""
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any error in a plugin's module body
        _BROKEN[module] = _first_line(err)
        return False
    _BROKEN.pop(module, None)
    return True


def import_builtin_plugins() -> None:
    """Import every plugin module of this package, once (each registers its methods): on the first
    lookup, not when the package is imported, so that what only needs names imports no torch."""
    global _builtins_imported
    if _builtins_imported:
        return
    _builtins_imported = True  # first: a plugin that looks methods up must not re-import them
    import pkgutil

    package = importlib.import_module(__package__)
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in _INFRASTRUCTURE and not mod.name.startswith("_"):
            import_plugin(f"{__package__}.{mod.name}")


def broken_plugins() -> dict[str, str]:
    """{module: 'ErrorType: first line of the message'} of the plugin modules that failed to import."""
    import_builtin_plugins()
    import_env_plugins(strict=False)
    return dict(sorted(_BROKEN.items()))


@contextlib.contextmanager
def lenient_plugins():
    """Within this, a $GPVAE_BENCH_PLUGINS module that fails to import is listed as broken
    (`broken_plugins`) instead of raising, wherever methods are looked up (what --list wants)."""
    global _lenient
    before, _lenient = _lenient, True
    try:
        yield
    finally:
        _lenient = before


def import_env_plugins(strict: bool = True) -> None:
    """Import the modules named in $GPVAE_BENCH_PLUGINS that are not imported yet. One that fails
    raises PluginImportError (strict: they were asked for by name) or is listed as broken."""
    for module in os.environ.get(PLUGINS_ENV, "").split(","):
        module = module.strip()
        if not module or module in _imported_plugins:
            continue
        _imported_plugins.add(module)  # first: a plugin that looks methods up must not re-import itself
        if not import_plugin(module):
            _imported_plugins.discard(module)
            if strict and not _lenient:
                raise PluginImportError(f"${PLUGINS_ENV}: cannot import plugin module {module!r}: "
                                        f"{_BROKEN[module]}")


def broken_note() -> str:
    """'; plugin modules that failed to import (fix them): m (ErrorType: why)', or ''."""
    import_builtin_plugins()
    if not _BROKEN:
        return ""
    return "; plugin modules that failed to import (fix them): " + "; ".join(
        f"{module} ({error})" for module, error in sorted(_BROKEN.items()))


def get_method(name: str) -> MethodInfo:
    import_builtin_plugins()
    if name not in _REGISTRY:  # plugins named in the environment may register it
        import_env_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {known}"
                                 + broken_note()) from None


def registered_methods() -> dict[str, MethodInfo]:
    import_builtin_plugins()
    import_env_plugins()
    return dict(sorted(_REGISTRY.items()))
