"""What a plugin module registers, read from its source without running it: the `@register(...)`
decorator's literal name, label and variants, and the decorated class's constructor (parameter
names and literal defaults). Listing methods, checking a table's rows and hashing a run's config
need only this, so they import no plugin (no torch); a model is built from the imported class
(methods.registry.get_method). A module whose registrations this cannot read for certain (a
non-literal argument or default, an inherited constructor, another decorator, `register` used in
any other way) gets None here and is imported instead, so correctness never rests on this reader:
tests/test_startup.py checks that it agrees with the imported registry on every method."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

BUILD_ARGUMENTS = ("self", "net", "latent_dim", "likelihood", "num_train")  # what the harness passes
REGISTRY_MODULES = ("methods", "methods.registry")  # where a plugin imports `register` from
INTERNALS = ("_REGISTRY", "MethodInfo")  # a module that touches these registers its own way
NETWORKS = ("cnn", "fc")  # the kinds methods.networks builds: what a dataset's `network` may name


class UnknownParameterError(ValueError):
    pass


@dataclass(frozen=True)
class MethodSpec:
    """A registered method as data: enough to list it, check a row and hash a run, not to build it."""

    name: str
    label: str
    variants: tuple[dict[str, Any], ...] = ({},)
    parameters: tuple[str, ...] = ()  # the constructor's settings, in signature order
    defaults: dict[str, Any] = field(default_factory=dict)  # those with a default
    summary: str = ""  # the class's docstring's first paragraph, else its module's
    module: str = ""

    def settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every setting the method takes, with `params` over its signature's defaults: what a
        record stores as the run's parameters, so a changed default changes the config hash.
        A name the constructor does not take raises UnknownParameterError."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise UnknownParameterError(
                f"method {self.name!r} takes no parameter {unknown[0]!r}; its parameters: "
                + (", ".join(self.parameters) or "none"))
        return {**self.defaults, **params}


def summary_of(doc: str | None) -> str:
    """The first paragraph of a (cleaned) docstring, on one line."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def read_plugin_source(source: str, module: str, package: str = "methods") -> list[MethodSpec] | None:
    """The methods the plugin module `module` (its text `source`) registers, or None when reading
    cannot tell for certain (then the caller imports it). `package`: what a relative import in it
    is relative to (its parent package)."""
    try:
        tree = ast.parse(source)
        return _read(tree, module, package)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError, _Unreadable):
        return None


class _Unreadable(Exception):
    """The module registers something in a way only running it can tell."""


def _read(tree: ast.Module, module: str, package: str) -> list[MethodSpec] | None:
    aliases = _register_aliases(tree, package)
    if not aliases:
        return None  # it registers nothing we can see (dynamically, or not at all): import it
    module_doc = ast.get_docstring(tree)
    specs: list[MethodSpec] = []
    decorators = 0
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        calls = [d for d in node.decorator_list if _is_register_call(d, aliases)]
        if not calls:
            continue
        if len(node.decorator_list) != 1 or node.keywords:
            raise _Unreadable  # another decorator or a metaclass may change the class
        decorators += 1
        name, label, variants = _register_arguments(calls[0])
        parameters, defaults = _constructor(node)
        specs.append(MethodSpec(name, label, variants, parameters, defaults,
                                summary_of(ast.get_docstring(node) or module_doc), module))
    # every other mention of `register` (a call, a rebinding, an attribute) or of the registry's
    # internals is beyond this reader
    mentions = 0
    for n in ast.walk(tree):
        word = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else None
        if word in INTERNALS or (isinstance(n, ast.Attribute) and word == "register"):
            return None
        mentions += word in aliases
    names = [s.name for s in specs]
    if not specs or mentions != decorators or len(set(names)) != len(names):
        return None
    return specs


def _register_aliases(tree: ast.Module, package: str) -> set[str]:
    """The names this module binds to methods.registry's `register` (from ... import register [as r])."""
    aliases = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = node.module or ""
        if node.level:
            base = package.split(".")
            if node.level > 1:
                base = base[:-(node.level - 1)]
            source = ".".join(base + ([source] if source else []))
        for alias in node.names:
            if source not in REGISTRY_MODULES:
                continue
            if alias.name == "register":
                aliases.add(alias.asname or alias.name)
            elif alias.name == "*" or alias.name in INTERNALS:
                raise _Unreadable
    return aliases


def _is_register_call(node: ast.expr, aliases: set[str]) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in aliases)


def _register_arguments(call: ast.Call) -> tuple[str, str, tuple[dict, ...]]:
    """register(name, *, label, variants=({},)) with literal arguments."""
    if len(call.args) != 1 or any(k.arg is None for k in call.keywords):
        raise _Unreadable
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    name = ast.literal_eval(call.args[0])
    label = keywords.pop("label", None)
    variants = keywords.pop("variants", ({},))
    if keywords or not isinstance(name, str) or not isinstance(label, str):
        raise _Unreadable
    if not isinstance(variants, list | tuple) or not all(isinstance(v, dict) for v in variants):
        raise _Unreadable
    return name, label, tuple(dict(v) for v in variants)


def _constructor(cls: ast.ClassDef) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The settings (names, literal defaults) of the class's own, undecorated `__init__`."""
    inits = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    rebound = [n for n in cls.body if not isinstance(n, ast.FunctionDef)
               and any(isinstance(t, ast.Name) and t.id in ("__init__", "__signature__")
                       for t in ast.walk(n))]
    others = [n for n in cls.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "__init__"]
    if len(inits) != 1 or rebound or others or inits[0].decorator_list:
        raise _Unreadable  # inherited, rebound or wrapped: only its signature at run time tells
    args = inits[0].args
    positional = args.posonlyargs + args.args
    defaults: dict[str, Any] = {}
    for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults,
                            strict=True):
        defaults[arg.arg] = ast.literal_eval(default)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if default is not None:
            defaults[arg.arg] = ast.literal_eval(default)
    names = tuple(a.arg for a in args.args + args.kwonlyargs if a.arg not in BUILD_ARGUMENTS)
    return names, {n: defaults[n] for n in names if n in defaults}
