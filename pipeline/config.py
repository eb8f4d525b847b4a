"""Typed, validated configuration.

params.yaml is the single source of truth. It is parsed once, where it enters (a stage
script or the CLI), into frozen dataclasses. Each package owns the dataclass of its
section; this module owns only the generic validation machinery and imports nothing of
the project. :class:`pipeline.params.Params` and :func:`pipeline.params.load_params`
sit on top of every section.

Validation is strict: an unknown key, a value of the wrong type, a choice outside a
``Literal`` or a number outside the range declared with :func:`param` raises
:class:`ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter is unknown, missing, of the wrong type or out of range."""


def param(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    pattern: str | None = None,
    allowed: str = "",
    help: str = "",
) -> Any:
    """A dataclass field with an allowed range (numbers) or a pattern (strings, matched
    whole, ``allowed`` describing it in errors), and a help text.

    Mutable defaults (lists, dicts) are not allowed; use tuples.
    """
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "pattern": pattern, "allowed": allowed}
    metadata["help"] = help
    return dataclasses.field(default=default, metadata=metadata)


#: The one rule for every stage's ``device`` parameter.
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
DEVICE_ALLOWED = "auto, cpu, cuda, cuda:N"


def device_param(help: str = "auto (a GPU when present), cpu, cuda, cuda:N") -> Any:
    """A ``device`` field: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return param("auto", pattern=DEVICE_PATTERN, allowed=DEVICE_ALLOWED, help=help)


def _describe_range(meta: Mapping[str, Any]) -> str:
    parts = []
    for key, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]}")
    return " and ".join(parts)


def _check_range(value: float, meta: Mapping[str, Any], key: str) -> None:
    ok = True
    if meta.get("gt") is not None and not value > meta["gt"]:
        ok = False
    if meta.get("ge") is not None and not value >= meta["ge"]:
        ok = False
    if meta.get("lt") is not None and not value < meta["lt"]:
        ok = False
    if meta.get("le") is not None and not value <= meta["le"]:
        ok = False
    if not ok:
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: {_describe_range(meta)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not a valid choice; allowed: {', '.join(map(str, allowed))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, meta)
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: {value!r} matches no allowed type")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: {value!r} is not a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]", meta) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: {value!r} must have exactly {len(args)} items")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{key}[{i}]", meta) for i, (a, v) in pairs)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a boolean; allowed: true, false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} is not an integer")
        _check_range(value, meta, key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: {value!r} is not a number")
        _check_range(float(value), meta, key)
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: {value!r} is not a non-empty string")
        if meta.get("pattern") is not None and not re.fullmatch(meta["pattern"], value):
            allowed = meta.get("allowed") or f"a string matching {meta['pattern']}"
            raise ConfigError(f"{key}: {value!r} is not valid; allowed: {allowed}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: {value!r} is not a path")
        return Path(value)
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} for {key}")  # programming error


def build(cls: type[T], data: Any, where: str = "") -> T:
    """Validate ``data`` (a mapping from YAML) into the frozen dataclass ``cls``.

    ``where`` is the dotted prefix used in error messages (``"train"``).
    """
    label = where or "params"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            prefix = f"{label}." if where else ""
            raise ConfigError(f"{prefix}{key}: unknown key; allowed: {allowed}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing required key")
            continue
        kwargs[name] = _coerce(hints[name], data[name], key, f.metadata)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-serialisable form of a config dataclass (paths as strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
