"""The benchmark registry: every name usable as ``xmlbench bench NAME``.

Speed and memory targets live in benchmarks whose figures we report, never in timed tests. A benchmark is
one module in this package that registers itself::

    BENCHMARKS.register("name", Benchmark("name", "one line for --help", run, format))

``run(options)`` returns a JSON-able dict; ``format(result)`` renders it for a person (``--json`` prints
the dict instead). The registered name is the module's name (``_`` read as ``-``): the command line lists
benchmarks from the file names and imports only the one it runs, since some import torch. Adding one
edits nothing else.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmlbench.errors import UserError
from xmlbench.registry import Registry


@dataclass(frozen=True)
class BenchOptions:
    """What the command line passes to every benchmark; each uses the fields it needs."""

    dataset: str = ""  # empty: the benchmark's own default
    steps: int = 20  # training steps, for benchmarks that train
    extra: dict[str, Any] = field(default_factory=dict)


def as_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    run: Callable[[BenchOptions], dict[str, Any]]
    format: Callable[[dict[str, Any]], str] = as_json
    default_dataset: str = ""  # shown in --help; empty when the benchmark takes no dataset
    writes_readme: bool = False  # takes --readme: rewrites its own block of the README


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def names() -> list[str]:
    """Every benchmark's name, from the module names alone (nothing imported)."""
    return sorted(info.name.replace("_", "-") for info in pkgutil.iter_modules(__path__))


def get(name: str) -> Benchmark:
    """Import the module of benchmark ``name`` and return what it registered (unknown name: UserError)."""
    if name not in names():
        raise UserError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(names())}")
    importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    if name not in BENCHMARKS:
        raise ValueError(f"module xmlbench.benchmarks.{name.replace('-', '_')} registers no benchmark {name!r}")
    return BENCHMARKS.get(name)


def load_all() -> Registry[Benchmark]:
    """Import every benchmark module, so each registers itself (for listings with descriptions)."""
    for name in names():
        get(name)
    return BENCHMARKS


# README blocks: the benchmarks with ``writes_readme`` rewrite a marked block of the README with their
# machine-written table; the markers are each benchmark's own.


def readme_text(readme: Path, begin_marker: str, end_marker: str) -> str:
    """What the README's block holds now (UserError if the README or its markers are missing)."""
    if not readme.is_file():
        raise UserError(f"--readme: no {readme}; it rewrites the README of a checkout (git clone, then "
                        "./run.sh xmlbench bench ... --readme)")
    content = readme.read_text(encoding="utf-8")
    begin, end = content.find(begin_marker), content.find(end_marker)
    if begin < 0 or end < begin:
        raise UserError(f"{readme} has no block between {begin_marker!r} and {end_marker!r}")
    return content[begin + len(begin_marker):end]


def write_readme_block(readme: Path, text: str, begin_marker: str, end_marker: str) -> None:
    """Replace what lies between the README's markers (UserError if they are missing).

    Written to a temporary file and renamed over the README, so a kill mid-write leaves the old one whole.
    """
    from xmlbench.io import write_text

    content = readme.read_text(encoding="utf-8")
    begin, end = content.find(begin_marker), content.find(end_marker)
    if begin < 0 or end < begin:
        raise UserError(f"{readme} has no block between {begin_marker!r} and {end_marker!r}")
    new = content[:begin + len(begin_marker)] + "\n" + text.rstrip() + "\n" + content[end:]
    write_text(readme, new)


def readme_markers(name: str) -> tuple[str, str]:
    """The begin and end markers of benchmark ``name``'s README block."""
    return f"<!-- {name}:begin (written by: xmlbench bench {name} --readme) -->", f"<!-- {name}:end -->"


def save_result_and_readme(result: dict[str, Any], path: Path, table: Callable[[list[dict[str, Any]]], str],
                           readme: Path, markers: tuple[str, str]) -> Path:
    """Save ``result`` as ``path`` (a JSON file), then rebuild the README's block between ``markers`` from
    every result saved in that folder: a block holds one row per configuration measured, each as it was
    last measured, and is never typed. The markers are checked first: a README without them costs no file."""
    from xmlbench.io import write_json

    readme_text(readme, *markers)
    files = sorted({*path.parent.glob("*.json"), path})  # in file order, whichever was measured last
    block = table([result if p == path else renderable(p, table) for p in files])  # before writing anything
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    write_readme_block(readme, block, *markers)
    return path


def renderable(path: Path, table: Callable[[list[dict[str, Any]]], str]) -> dict[str, Any]:
    """A saved result that its table can show (UserError naming the file otherwise, e.g. one saved by an
    older version without a column the table now has, or a damaged one with a figure of the wrong type)."""
    from xmlbench.io import read_json_object

    result = read_json_object(path)
    try:
        table([result])
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as error:
        raise UserError(f"{path}: cannot be shown in the README block ({type(error).__name__}: {error}); "
                        "measure it again or delete it") from None
    return result


def run_with_readme(options: BenchOptions, name: str, measure: Callable[[], dict[str, Any]],
                    key: Callable[[dict[str, Any]], str], table: Callable[[list[dict[str, Any]]], str]) -> dict:
    """``measure()``; with ``--readme``, its result saved as ``results/NAME/KEY.json`` and benchmark
    ``name``'s README block rebuilt from that folder. The markers are checked before measuring, so a
    README without them fails in a second rather than after the run."""
    from xmlbench.paths import CHECKOUT_ROOT

    markers = readme_markers(name)
    readme = CHECKOUT_ROOT / "README.md" if options.extra.get("readme") else None
    if readme is not None:
        readme_text(readme, *markers)
    result = measure()
    if readme is not None:
        path = CHECKOUT_ROOT / "results" / name / f"{key(result)}.json"
        result["saved"] = str(save_result_and_readme(result, path, table, readme, markers))
    return result
