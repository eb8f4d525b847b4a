"""``key.path=value`` overrides of params.yaml as ``dvc exp run -S`` reads them.

One parser for the tools that reason about ``-S`` values (:mod:`tools.rerun_plan`,
:mod:`experiments.regimes`, :mod:`experiments.results`). Values are YAML, read as DVC
reads them: YAML 1.2, where ``1e-5`` is a number. PyYAML's ``safe_load`` follows YAML 1.1,
which needs a dot and a signed exponent (``1.0e-05``) and reads ``1e-5`` as a string, so
``-S train.lr=1e-5`` would look like a change from ``lr: 1.0e-05`` that DVC does not see.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml


def parse_value(text: str) -> Any:
    """A ``-S`` value as DVC reads it (YAML 1.2: ``1e-5`` is a number, not a string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def split(item: str) -> tuple[list[str], Any]:
    """``"a.b=v"`` -> (["a", "b"], parsed v); SystemExit naming the item without ``=``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SystemExit(f"-S {item!r}: expected key=value (e.g. train.lr=1e-5)")
    return key.strip().split("."), parse_value(raw)


def apply(data: dict[str, Any], overrides: list[str] | tuple[str, ...], *,
          strict: bool = True) -> dict[str, Any]:  # fmt: skip
    """A copy of params.yaml's dict ``data`` with each ``key.path=value`` set.

    ``strict``: a key or section that ``data`` lacks is refused (SystemExit naming it), as
    DVC refuses ``-S`` of a key not in params.yaml; otherwise it is created (hand-made
    regime rows, whose keys :func:`pipeline.config.build` checks later)."""
    out = copy.deepcopy(data)
    for item in overrides:
        parts, value = split(item)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                if strict:
                    raise SystemExit(f"-S {item!r}: {part!r} is not a section of params.yaml")
                node[part] = {}
            node = node[part]
        if strict and parts[-1] not in node:
            raise SystemExit(f"-S {item!r}: {'.'.join(parts)!r} is not a key of params.yaml")
        node[parts[-1]] = value
    return out


def lookup(data: Any, key: str) -> Any:
    """``data[k1][k2]...`` for the dotted ``key``; None when any level is missing."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def holds(params: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether ``params`` hold every ``key=value`` of ``overrides`` (values as DVC reads
    them, numbers compared as numbers)."""
    for item in overrides:
        parts, value = split(item)
        if lookup(params, ".".join(parts)) != value:
            return False
    return True
