"""Configs as data: frozen, typed dataclasses built strictly from dicts.

Precedence, lowest first: dataclass defaults < preset < config file < ``--set key=value`` on the command
line. Unknown keys and wrongly typed values are user errors that name the key (unlike many research codes,
where a typo silently does nothing).

Bounds and choices are declared beside each field, in its type: ``batch_size: Annotated[int, Range(1)]``
(or an alias such as ``Count``), ``select_metric: Annotated[str, Rule(check)]``, ``amp: Literal[...]``;
a numeric field with no bound says why with ``Unbounded("...")``. ``from_dict`` checks every value it is
given, so a bad value fails when the config is built, before any data is read or any model trained.
Floats must be finite everywhere: nan and inf are never a meaningful setting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

from xmlbench.errors import UserError

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field: ``lo``/``hi`` inclusive unless ``lo_open``/``hi_open``; None = no bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, value: float) -> str | None:
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        return f"must be {self.describe()}" if low or high else None

    def describe(self) -> str:
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        return f"{'<' if self.hi_open else '<='} {hi}"


def _number(x: float | None) -> str:
    return str(x) if isinstance(x, int) or x is None else f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Rule:
    """Any other rule on one field: ``check(value)`` returns None, or what is wrong ("must be ...")."""

    check: Callable[[Any], str | None]

    def problem(self, value: Any) -> str | None:
        return self.check(value)


@dataclasses.dataclass(frozen=True)
class Unbounded:
    """A numeric field that deliberately has no bound; ``why`` says why (the tests demand a bound or this)."""

    why: str

    def problem(self, value: Any) -> str | None:
        return None


# The bounds most fields share, named once.
Count = Annotated[int, Range(1)]  # sizes and periods: at least one
NonNegative = Annotated[int, Range(0)]  # 0 has a documented meaning (no limit, off, at epoch ends only)
Positive = Annotated[float, Range(0, lo_open=True)]  # learning rates, regularisation constants
NonNegativeFloat = Annotated[float, Range(0)]
Dropout = Annotated[float, Range(0, 1, hi_open=True)]  # a drop probability of 1 would zero every input
Seed = Annotated[int, Range(0, 2**63 - 1)]  # numpy's generators refuse negative seeds; torch's are 64-bit


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields take nested dicts."""
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{where or cls.__name__}: a config must be a table of key = value, "
                        f"got {_kind(data)}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(
            f"unknown config key {_key(where, unknown[0])!r}; "
            f"known keys: {', '.join(sorted(names)) or '(none)'}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], _key(where, name))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid config {where or cls.__name__}: {e}") from None


def validate(obj: Any, key: Callable[[str], str] | None = None) -> None:
    """Check an already built dataclass (e.g. one made by its constructor) as ``from_dict`` checks a dict;
    ``key`` turns a field name into the name the user knows (a command-line flag)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        _coerce(getattr(obj, f.name), hints[f.name], key(f.name) if key else f.name)


def flag_name(field_name: str) -> str:
    """``valid_size`` -> ``--valid-size``: how errors name an option that came from the command line."""
    return "--" + field_name.replace("_", "-")


def field_rules(tp: Any) -> list[Any]:
    """The ``Range``/``Rule``/``Unbounded`` declarations in a field's type (inside Optional too)."""
    if typing.get_origin(tp) is Annotated:
        return [m for m in typing.get_args(tp)[1:] if isinstance(m, (Range, Rule, Unbounded))]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [r for a in typing.get_args(tp) for r in field_rules(a)]
    return []


def to_dict(obj: Any) -> Any:
    """Plain JSON-able dict of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "model.hidden=300"]`` -> nested dict. Values are parsed as JSON when they
    parse (numbers, booleans, lists), else kept as strings; types are checked later by ``from_dict``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=3")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise UserError(f"--set {item!r}: empty key part")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file holding a (partial) config dict; every problem is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark from a Windows editor is fine
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); a config file is JSON or TOML") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes one clear line
        raise UserError(f"{path}: cannot parse config ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must hold one object of key: value pairs, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _name(key: str) -> str:
    """How messages name a key: command-line options by their flag, config keys quoted."""
    return f"option {key}" if key.startswith("--") else f"config key {key!r}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *rules = typing.get_args(tp)
        value = _coerce(value, base, key)
        for rule in rules:
            problem = rule.problem(value) if isinstance(rule, (Range, Rule, Unbounded)) else None
            if problem:
                raise UserError(f"{_name(key)} {problem}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{_name(key)} must be a section (a dict), got {value!r}")
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{_name(key)}: bad value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserError(f"{_name(key)} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{_name(key)} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{_name(key)} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{_name(key)} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan compares false with every bound, so it would pass them all
                raise UserError(f"{_name(key)} must be a finite number, got {value!r}")
            return float(value)
        raise UserError(f"{_name(key)} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{_name(key)} must be a string, got {value!r}")
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{_name(key)} must be a section (a dict), got {value!r}")
        return value
    return value


# ------------------------------------------------------------------------------ --print-config skeleton
def field_comments(cls: type) -> dict[str, str]:
    """Each field's description: the comment lines just above its line and the comment at its end, read
    from the source of the class that declares it (a class without source, e.g. one made by
    ``make_dataclass``, contributes its bases' comments only)."""
    import inspect
    import re

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get("__annotations__", {})
        if not own:
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines[1:]:
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("# ").rstrip())
                continue
            m = re.match(r"\s+(\w+)\s*:", line)
            if m and m.group(1) in own:
                tail = line.split("  # ", 1)[1].strip() if "  # " in line else ""
                out[m.group(1)] = " ".join([*above, tail]).strip()
            above = []
    return out


def describe_type(tp: Any) -> str:
    """A field's type and bounds in words: ``int >= 1``, ``one of "a", "b"``, ``float | none``."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        words = [describe_type(base)]
        for m in marks:
            if isinstance(m, Range):
                words.append(m.describe())
            elif isinstance(m, Rule):
                words.append(f"(checked by {m.check.__name__})")
            elif isinstance(m, Unbounded):
                words.append(f"(no bound: {m.why})")
        return " ".join(words)
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join("none" if a is type(None) else describe_type(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {describe_type(args[0]) if args else 'values'}"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def skeleton(cls: type, section: str = "") -> str:
    """Every key of config ``cls`` with its default, type, bounds and description, as a TOML file that
    ``--config`` reads back to exactly the defaults (PECOS's ``--generate-params-skeleton``). A key
    whose default is None (TOML has no null) is written commented out."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_comments(cls)
    head: list[str] = [f"[{section}]"] if section else []
    tail: list[str] = []
    for f in dataclasses.fields(cls):
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(hints[f.name]):
            tail += ["", *(f"# {line}" for line in _wrap(docs.get(f.name, ""))),
                     skeleton(hints[f.name], _key(section, f.name))]
            continue
        head += [f"# {f.name}: {describe_type(hints[f.name])}",
                 *(f"#   {line}" for line in _wrap(docs.get(f.name, "")))]
        head.append(f"# {f.name} =  (none by default)" if default is None
                    else f"{f.name} = {_toml_value(to_dict(default))}")
    return "\n".join(head + tail)


def _wrap(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 100) if text else []


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {v!r}")
