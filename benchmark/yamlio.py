"""Strict YAML loading into frozen dataclasses: one clear error line for a bad file."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from .errors import InputError


class ConfigError(InputError, ValueError):
    """A profile, spec or settings file that cannot be used (one line: the file, what, the fix)."""


def read_yaml_mapping(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML file") from None
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} on line "
                          f"{line}): save it as UTF-8") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    return data


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or annotation)


def build_dataclass(cls, data: dict, source: Path | str, **extra):
    """cls(**data) after checking unknown keys, missing keys and value types against cls's fields;
    every problem is reported at once, in one ConfigError line."""
    problems = field_problems(cls, data, exclude=extra)
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
    return cls(**data, **extra)


def field_problems(cls, data: dict, exclude=()) -> list[str]:
    """What is wrong with `data` as cls's fields (less `exclude`): unknown keys (then the valid
    ones), values of the wrong type, missing keys; [] when nothing is."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    hints = typing.get_type_hints(cls)
    problems = []
    unknown = sorted(set(data) - set(fields))
    if unknown:
        problems.append(_keys("unknown", unknown))
    for name, value in data.items():
        if name in fields and not _type_ok(value, hints[name]):
            problems.append(f"key {name!r} must be {_type_name(hints[name])}, got {value!r}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING]
    if missing:
        problems.append(_keys("missing", missing))
    if unknown:
        problems.append(f"valid keys: {', '.join(fields)}")
    return problems


def _keys(what: str, names: list[str]) -> str:
    """"unknown key 'a'" or "unknown keys 'a', 'b'"."""
    return f"{what} key{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"


def _type_name(annotation) -> str:
    """int -> 'int'; int | None -> 'int | None'."""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)
