"""Typed configuration: dataclasses filled from YAML presets and ``key=value`` overrides.

A preset may name ``base: other.yaml`` (relative to itself) to overlay a smaller file
on a larger one, which is how the paper's ablations are expressed. Unknown keys are
errors that name the key and the valid choices, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from signgen.errors import InputError

T = TypeVar("T")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``). A config has no use for them, and
    an alias of its own anchor (``a: &x [*x]``) makes a document that contains itself, on
    which every later walk recurses forever; a chain of aliases (the "billion laughs")
    makes one that is exponentially large once walked."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a signgen config", mark
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML (safe types, no aliases); InputError naming ``where``."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as exc:
        raise InputError(f"{where} is not valid YAML: {exc}".splitlines()[0]) from None
    except RecursionError:
        raise InputError(f"{where} is nested too deeply to be a config") from None


def load_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML preset, resolving ``base:`` chains (the child wins, recursively)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"config {path} is not UTF-8 text (byte {exc.start})") from None
    data = parse_yaml(text, f"config {path}") or {}
    if not isinstance(data, dict):
        raise InputError(f"config {path} must be a mapping at top level")
    base = data.pop("base", None)
    if base is None or base == "":
        return data
    if not isinstance(base, str):
        raise InputError(f"config {path}: base must be a file name, got {base!r:.60}")
    chain = (*_chain, path.resolve())
    parent = path.parent / base
    if parent.resolve() in chain:
        raise InputError(f"config {path}: base {base!r} makes a cycle of base: files")
    return deep_merge(load_yaml(parent, chain), data)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (value parsed as YAML: numbers, lists, bools)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.load(raw, Loader=_ConfigLoader)
        except (yaml.YAMLError, RecursionError):
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclasses recurse; unknown keys fail."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields), key=str)  # YAML keys may be numbers
    if unknown:
        prefix = f"{where}." if where else ""
        raise InputError(
            f"unknown config key {prefix}{unknown[0]!r}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"config {where or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise InputError(f"config {where} must be a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config {where} must be a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise InputError(f"config {where} must be {tp.__name__}, got {value!r}")
    return value
