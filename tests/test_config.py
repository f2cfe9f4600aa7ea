"""Configs: strict keys and types, overrides, precedence."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from xmlbench.config import from_dict, merge, parse_overrides, to_dict
from xmlbench.errors import UserError


@dataclass(frozen=True)
class Inner:
    weight: float = 1.0


@dataclass(frozen=True)
class Outer:
    epochs: int = 3
    name: str = "x"
    flag: bool = False
    items: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)


def test_round_trip_and_nested():
    cfg = from_dict(Outer, {"epochs": 5, "inner": {"weight": 2}, "items": ["a", "b"]})
    assert cfg == Outer(epochs=5, items=("a", "b"), inner=Inner(2.0))
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epoch": 5}, "unknown config key 'epoch'"),
        ({"inner": {"wieght": 1}}, "unknown config key 'inner.wieght'"),
        ({"epochs": "five"}, "'epochs' must be an integer"),
        ({"epochs": 2.5}, "'epochs' must be an integer"),
        ({"flag": "yes"}, "'flag' must be true or false"),
        ({"inner": 3}, "'inner' must be a section"),
    ],
)
def test_strict_errors_name_the_key(data, message):
    with pytest.raises(UserError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_and_precedence():
    over = parse_overrides(["epochs=7", "inner.weight=0.5", "name=abc", "items=a,b"])
    assert over == {"epochs": 7, "inner": {"weight": 0.5}, "name": "abc", "items": "a,b"}
    preset = {"epochs": 2, "inner": {"weight": 9.0}}
    cfg = from_dict(Outer, merge(preset, over))
    assert cfg.epochs == 7 and cfg.inner.weight == 0.5 and cfg.items == ("a", "b")
    with pytest.raises(UserError, match="expected key=value"):
        parse_overrides(["epochs"])
