"""Method registry: `@register("sa", label="SA", variants=[{"k": 1}, ...])` on an EncoderModel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_REGISTRY: dict[str, MethodInfo] = {}


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


def get_method(name: str) -> MethodInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {known}") from None


def registered_methods() -> dict[str, MethodInfo]:
    return dict(sorted(_REGISTRY.items()))
