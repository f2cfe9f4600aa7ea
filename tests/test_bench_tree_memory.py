"""``xmlbench bench tree-memory``: one tree run per config in its own process, rows read from the records."""

from __future__ import annotations

import csv
import json

import pytest

from xmlbench.benchmarks.tree_memory import GRID, bench_tree_memory, markdown_table, parse_configs
from xmlbench.errors import UserError


def test_each_config_is_its_own_run_and_a_finished_one_is_read_back(tiny_dataset, tmp_path):
    result = bench_tree_memory(str(tiny_dataset), ["serial1", "parallel3"], 600, None, tmp_path / "results",
                               tmp_path / "runs")
    rows = {r["config"]: r for r in result["rows"]}
    assert list(rows) == ["parallel3", "serial1"]  # the grid's order
    for name, row in rows.items():
        record = json.loads((tmp_path / "runs" / "tree-memory-tiny" / name / "record.json").read_text())
        assert record["config"]["n_trees"] == (1 if name == "serial1" else 3)
        assert record["config"]["trees_in_parallel"] is (name == "parallel3")
        assert row["P@1"] == round(record["metrics"]["test"]["P@1"], 2)
        assert row["peak_rss_gb"] == round(record["peak_rss_mb"] / 1024, 2) > 0
    with open(result["csv"], newline="") as f:
        assert [r["config"] for r in csv.DictReader(f)] == ["parallel3", "serial1"]
    # measured again: the finished runs are read, not trained (the record file is not rewritten)
    stamp = (tmp_path / "runs" / "tree-memory-tiny" / "serial1" / "record.json").stat().st_mtime_ns
    again = bench_tree_memory(str(tiny_dataset), ["serial1"], 600, None, tmp_path / "results", tmp_path / "runs")
    assert (tmp_path / "runs" / "tree-memory-tiny" / "serial1" / "record.json").stat().st_mtime_ns == stamp
    assert [r["config"] for r in again["rows"]] == ["parallel3", "serial1"]
    assert "| serial1 | 1 tree |" in markdown_table(again["rows"], "tiny")


def test_unknown_config_names_the_known_ones():
    assert parse_configs("") == list(GRID)
    with pytest.raises(UserError, match="unknown tree-memory config serial9; configs: parallel3, serial3"):
        parse_configs("serial1,serial9")


def test_the_readme_block_has_one_table_per_dataset_measured(tiny_dataset, tmp_path):
    import shutil

    from xmlbench.benchmarks.tree_memory import README_BEGIN, README_END

    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{README_BEGIN}\nold\n{README_END}\nafter\n")
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    bench_tree_memory(str(tiny_dataset), ["serial1"], 600, readme, tmp_path / "results", tmp_path / "runs")
    bench_tree_memory(str(other), ["serial1"], 600, readme, tmp_path / "results", tmp_path / "runs")
    text = readme.read_text()
    assert "Tree baseline on other (" in text and "Tree baseline on tiny (" in text and "old" not in text
    assert text.startswith("before\n") and text.endswith("after\n")
