"""Method registry: `@register("sa", label="SA", variants=[{"k": 1}, ...])` on an EncoderModel.

Methods outside this package are plugins too: name their modules in $GPVAE_BENCH_PLUGINS
(comma-separated, importable from sys.path/PYTHONPATH). They are imported on the first lookup, in
every process that looks a method up, so Slurm and local job subprocesses (which inherit the
environment) see them as well.

Two views of the same registrations: `get_method` / `registered_methods` import the plugins and
give the classes (to build a model); `method_spec` / `method_specs` give what the harness needs
without a model (name, label, variants, settings and their defaults) read from the plugins' source
(methods.metadata), importing only a module that cannot be read that way. So --list, checking a
table's rows and hashing a run's config import no torch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metadata import BUILD_ARGUMENTS, MethodSpec, read_plugin_source, summary_of
from .metadata import UnknownParameterError as UnknownParameterError  # re-exported (specs)

PLUGINS_ENV = "GPVAE_BENCH_PLUGINS"
_REGISTRY: dict[str, MethodInfo] = {}
_imported_plugins: set[str] = set()
_BROKEN: dict[str, str] = {}  # plugin module -> 'ErrorType: message' of its failed import
_lenient = False  # see lenient_plugins()
# modules of this package that are not plugins
_INFRASTRUCTURE = {"base", "networks", "likelihoods", "metadata", "registry"}
_builtins_imported = False
_READ: dict[str, list[MethodSpec]] = {}  # plugin module -> its methods, read from its source
_builtins_read = False
_env_read: set[str] = set()  # $GPVAE_BENCH_PLUGINS modules read or imported for method_specs


class PluginImportError(ImportError):
    exit_code = 2  # the CLI prints it as one `error:` line

    def __str__(self) -> str:
        return self.args[0]


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
        """Every setting the method takes, with `params` over its signature's defaults (see
        MethodSpec.settings)."""
        return self.spec().settings(params)

    def spec(self) -> MethodSpec:
        """This method as data, from the class's signature (what methods.metadata reads from the
        source without importing it)."""
        import inspect

        signature = inspect.signature(self.cls.__init__)
        names = tuple(n for n, p in signature.parameters.items() if n not in BUILD_ARGUMENTS
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        defaults = {n: signature.parameters[n].default for n in names
                    if signature.parameters[n].default is not inspect.Parameter.empty}
        module = sys.modules.get(self.cls.__module__)
        doc = inspect.cleandoc(self.cls.__doc__) if self.cls.__doc__ else getattr(module, "__doc__", None)
        return MethodSpec(self.name, self.label, self.variants, names, defaults,
                          summary_of(doc), self.cls.__module__)


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
    """{module: 'ErrorType: first line of the message'} of the plugin modules that failed to
    import: those imported so far, and every one `method_specs` could not read without importing
    it (a module read from its source is not run until a model is built, so an error in its body
    shows then, as here)."""
    _read_builtin_plugins()
    _read_env_plugins(strict=False)
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


def _env_plugin_names() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def import_env_plugins(strict: bool = True) -> None:
    """Import the modules named in $GPVAE_BENCH_PLUGINS that are not imported yet. One that fails
    raises PluginImportError (strict: they were asked for by name) or is listed as broken."""
    for module in _env_plugin_names():
        if module not in _imported_plugins:
            _import_env_plugin(module, strict)


def _import_env_plugin(module: str, strict: bool) -> bool:
    _imported_plugins.add(module)  # first: a plugin that looks methods up must not re-import itself
    if import_plugin(module):
        return True
    _imported_plugins.discard(module)
    if strict and not _lenient:
        raise PluginImportError(f"${PLUGINS_ENV}: cannot import plugin module {module!r}: "
                                f"{_BROKEN[module]}")
    return False


# ------------------------------------------------------------------ the registrations as data


def _read_source(module: str, origin: str | None, package: str) -> list[MethodSpec] | None:
    """The methods a plugin module's source file registers, or None (not a .py file, unreadable)."""
    if not origin or not origin.endswith(".py"):
        return None
    try:
        source = Path(origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return read_plugin_source(source, module, package)


def _read_builtin_plugins() -> None:
    """Read every plugin module of this package once, importing those that cannot be read."""
    global _builtins_read
    if _builtins_read:
        return
    _builtins_read = True
    import pkgutil

    package = importlib.import_module(__package__)
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name in _INFRASTRUCTURE or mod.name.startswith("_"):
            continue
        module = f"{__package__}.{mod.name}"
        found = None
        if not mod.ispkg:
            spec = mod.module_finder.find_spec(module, None)
            found = _read_source(module, spec and spec.origin, __package__)
        if found is None:
            import_plugin(module)
        else:
            _READ[module] = found


def _read_env_plugins(strict: bool = True) -> None:
    """Read the $GPVAE_BENCH_PLUGINS modules not read yet, found by importlib.util.find_spec
    (which runs a dotted name's parent packages, never the module); one that cannot be read is
    imported (raising PluginImportError when it fails, as import_env_plugins does)."""
    import importlib.util

    for module in _env_plugin_names():
        if module in _env_read:
            continue
        found = None
        try:
            spec = importlib.util.find_spec(module)
        except Exception:  # noqa: BLE001 - a parent package that fails: importing says why
            spec = None
        if spec is not None and spec.submodule_search_locations is None:
            found = _read_source(module, spec.origin, module.rpartition(".")[0])
        if found is not None:
            _READ[module] = found
        elif module not in _imported_plugins and not _import_env_plugin(module, strict):
            continue  # broken: tried again on the next look-up
        _env_read.add(module)


def _specs() -> dict[str, MethodSpec]:
    specs = {s.name: s for module, found in _READ.items() if module not in _BROKEN for s in found}
    for name, info in _REGISTRY.items():  # registered by imported modules (or by code at run time)
        if name not in specs:
            specs[name] = info.spec()
    return dict(sorted(specs.items()))


def method_specs() -> dict[str, MethodSpec]:
    """Every registered method as data, importing no plugin that can be read from its source
    (what `registered_methods` gives, less the classes)."""
    _read_builtin_plugins()
    _read_env_plugins()
    return _specs()


def method_spec(name: str) -> MethodSpec:
    """One method as data (see `method_specs`); like `get_method`, the plugins named in the
    environment are read only when this package does not have it."""
    _read_builtin_plugins()
    specs = _specs()
    if name not in specs:
        _read_env_plugins()
        specs = _specs()
    try:
        return specs[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: "
                                 + (", ".join(specs) or "none") + broken_note()) from None


def broken_note() -> str:
    """'; plugin modules that failed to import (fix them): m (ErrorType: why)', or ''."""
    _read_builtin_plugins()
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
