"""README blocks of the quick benchmarks (metrics, tokenise, cluster): saved results, the block rebuilt from
them, the markers in the committed README, and ``--readme`` on a benchmark without a block."""

from __future__ import annotations

import json

import pytest

from xmlbench import benchmarks
from xmlbench.benchmarks import readme_markers, readme_text, save_result_and_readme
from xmlbench.errors import UserError
from xmlbench.paths import CHECKOUT_ROOT


def _rows(results):
    return "\n".join(f"| {r['key']} | {r['value']} |" for r in results)


MARKERS = readme_markers("demo")


def _readme(tmp_path, name):
    begin, end = readme_markers(name)
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{begin}\nold\n{end}\nafter\n")
    return readme


def test_the_block_holds_one_row_per_saved_result_and_a_rerun_replaces_its_own(tmp_path):
    readme, folder = _readme(tmp_path, "demo"), tmp_path / "results" / "demo"
    save_result_and_readme({"key": "a", "value": 1}, folder / "a.json", _rows, readme, MARKERS)
    save_result_and_readme({"key": "b", "value": 2}, folder / "b.json", _rows, readme, MARKERS)
    path = save_result_and_readme({"key": "a", "value": 3}, folder / "a.json", _rows, readme, MARKERS)
    assert path == folder / "a.json" and json.loads(path.read_text())["value"] == 3
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert readme_text(readme, *readme_markers("demo")).strip() == "| a | 3 |\n| b | 2 |"


def test_a_readme_without_the_markers_is_refused_before_anything_is_saved(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(UserError, match="has no block between"):
        save_result_and_readme({"key": "a", "value": 1}, tmp_path / "results" / "a.json", _rows, readme, MARKERS)
    assert not (tmp_path / "results").exists() and readme.read_text() == "no markers here\n"


def test_the_committed_readme_has_a_block_for_every_benchmark_that_writes_one():
    import sys

    writers = {name: bench for name, bench in benchmarks.load_all().items() if bench.writes_readme}
    assert {"metrics", "tokenise", "cluster", "pipeline", "scaling", "throughput", "tree-memory"} <= set(writers)
    for bench in writers.values():
        module = sys.modules[bench.run.__module__]
        readme_text(CHECKOUT_ROOT / "README.md", module.README_BEGIN, module.README_END)  # raises without them


def test_readme_on_a_benchmark_without_a_block_is_one_line_naming_those_with_one(capsys):
    from xmlbench.cli import main

    assert main(["bench", "learning", "--readme"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'bench learning' writes no README block" in err and "metrics" in err and "tokenise" in err


METRICS_REPORT = {
    "n": 153_025, "n_labels": 670_091, "k": 10, "nnz": 822_826, "threads": 2, "cpus": 2, "repeats": 15,
    "load_avg_1m": 0.25, "evaluate_warm_s": 0.0105, "yardstick_p5_warm_s": 0.00825, "ratio": 0.0105 / 0.00825,
    "evaluate_warm_cpu_s": 0.0185, "yardstick_p5_warm_cpu_s": 0.0150, "cpu_ratio": 0.0185 / 0.0150,
    "P@5": 12.5, "yardstick_P@5": 12.5,
    "fresh_process": {"total_s": 0.58, "cpu_s": 0.72, "process_s": 1.06, "compiled": False},
    "fresh_process_cold_cache": {"total_s": 9.5, "cpu_s": 9.4, "process_s": 10.1, "compiled": True},
}


def test_the_metrics_row_carries_the_measured_figures():
    from xmlbench.benchmarks.metrics import markdown_table

    row = markdown_table([METRICS_REPORT]).splitlines()[2]
    assert row == "| 670,091 | 153,025 | 2 | 10.50 | 8.25 | 1.27 | 1.23 | 0.58 | 9.50 | 0.25 on 2 cores |"


def test_the_metrics_bench_warns_when_other_processes_load_the_cores():
    from xmlbench.benchmarks.metrics import format_bench

    assert "note: load average" not in format_bench(METRICS_REPORT)
    loaded = format_bench({**METRICS_REPORT, "load_avg_1m": 1.6})
    assert "note: load average 1.60 on 2 cores" in loaded.splitlines()[-1]


def test_the_tokenise_row_carries_the_measured_figures():
    from xmlbench.benchmarks.tokenise import markdown_table

    report = {"dataset": "synth-eurlex4k", "encoder": "tiny", "tokenizer_class": "BertTokenizerFast",
              "max_len": 512, "docs": 5000, "bare_docs_per_s": 4000.0, "cache_docs_per_s": 3500.0,
              "ratio": 4000 / 3500, "load_avg_1m": 0.5, "cpus": 2}
    row = markdown_table([report]).splitlines()[2]
    assert row == "| synth-eurlex4k | tiny (BertTokenizerFast) | 512 | 5,000 | 4,000 | 3,500 | 1.14 | 0.50 on 2 cores |"


@pytest.mark.parametrize("pecos, cell", [
    (None, "not installed"),
    ({"error": "AttributeError: no sputils"}, "failed"),
    ({"seconds": 62.5, "rss_increase_mb": 1, "n_leaves": 8192, "leaf_min": 81, "leaf_max": 82}, "62.5 (0.43x)"),
])
def test_the_cluster_row_says_what_became_of_pecos(pecos, cell):
    from xmlbench.benchmarks.cluster import markdown_table

    report = {"dataset": "synth-amazon670k", "n_labels": 670_091, "vocab": 200_000, "nnz": 64_000_000,
              "label_feature_top_k": None, "tfidf_seconds": 40.0, "label_feature_seconds": 12.0, "seconds": 27.0,
              "rss_increase_mb": 900.0, "n_leaves": 8192, "leaf_min": 81, "leaf_max": 82, "pecos": pecos,
              "ratio_vs_pecos": 27.0 / 62.5, "peak_rss_mb": 4096.0, "load_avg_1m": 0.1, "cpus": 2, "threads": 2}
    row = markdown_table([report]).splitlines()[2]
    assert row.startswith("| synth-amazon670k | 670,091 | 200,000 | 64,000,000 | all | 40.0 | 12.0 | 27.0 | 900 |")
    assert f"| {cell} | 4.00 |" in row


def test_the_tokenise_bench_saves_its_result_and_writes_its_block(tiny_dataset, tmp_path, monkeypatch):
    """The whole ``--readme`` path on a real (small) run: the row is the run's own figures."""
    from xmlbench import paths
    from xmlbench.benchmarks import tokenise

    readme = _readme(tmp_path, "tokenise")
    monkeypatch.setattr(paths, "CHECKOUT_ROOT", tmp_path)
    real = tokenise.bench_tokenise
    monkeypatch.setattr(tokenise, "bench_tokenise", lambda dataset: real(dataset, max_len=32, max_docs=50))
    result = tokenise._run(benchmarks.BenchOptions(dataset=str(tiny_dataset), extra={"readme": True}))
    saved = tmp_path / "results" / "tokenise" / f"{result['dataset']}-tiny-32.json"
    assert result["saved"] == str(saved) and json.loads(saved.read_text())["ratio"] == result["ratio"]
    block = readme_text(readme, *readme_markers("tokenise"))
    assert f"| {result['cache_docs_per_s']:,.0f} | {result['ratio']:.2f} |" in block


def test_the_cluster_bench_keys_its_result_by_dataset_and_top_k(tiny_dataset, tmp_path, monkeypatch):
    from xmlbench import paths
    from xmlbench.benchmarks import cluster

    readme = _readme(tmp_path, "cluster")
    monkeypatch.setattr(paths, "CHECKOUT_ROOT", tmp_path)
    result = cluster._run(benchmarks.BenchOptions(dataset=str(tiny_dataset), extra={"readme": True, "label_top_k": 8}))
    saved = tmp_path / "results" / "cluster" / f"{tiny_dataset.name}-top8.json"
    assert result["saved"] == str(saved) and json.loads(saved.read_text())["label_feature_top_k"] == 8
    row = [line for line in readme_text(readme, *readme_markers("cluster")).splitlines()
           if line.startswith(f"| {tiny_dataset.name} |")]
    assert len(row) == 1 and f"| {result['n_labels']:,} |" in row[0] and "| 8 |" in row[0]


def test_markers_are_checked_before_the_measurement(tmp_path, monkeypatch):
    from xmlbench import paths
    from xmlbench.benchmarks import run_with_readme

    (tmp_path / "README.md").write_text("no markers\n")
    monkeypatch.setattr(paths, "CHECKOUT_ROOT", tmp_path)
    measured = []
    with pytest.raises(UserError, match="has no block between"):
        run_with_readme(benchmarks.BenchOptions(extra={"readme": True}), "demo",
                        lambda: measured.append(1) or {"key": "a", "value": 1}, lambda r: r["key"], _rows)
    assert measured == [] and not (tmp_path / "results").exists()
    (tmp_path / "README.md").unlink()
    with pytest.raises(UserError, match="--readme: no .*README.md"):
        run_with_readme(benchmarks.BenchOptions(extra={"readme": True}), "demo", lambda: {}, str, _rows)


def test_a_saved_result_the_table_cannot_show_is_named_and_nothing_is_written(tmp_path):
    readme, folder = _readme(tmp_path, "demo"), tmp_path / "results" / "demo"
    folder.mkdir(parents=True)
    (folder / "old.json").write_text('{"key": "old"}\n')  # an older result without the "value" column
    before = readme.read_text()
    with pytest.raises(UserError, match=r"old\.json: cannot be shown in the README block .*'value'"):
        save_result_and_readme({"key": "a", "value": 1}, folder / "a.json", _rows, readme, MARKERS)
    assert not (folder / "a.json").exists() and readme.read_text() == before


@pytest.mark.parametrize("name", ["metrics", "tokenise", "cluster", "pipeline"])
def test_the_committed_block_is_the_table_of_the_committed_results(name):
    """A block edited by hand, or a result file changed without rewriting the block, fails here."""
    import importlib

    from xmlbench.io import read_json

    module = importlib.import_module(f"xmlbench.benchmarks.{name}")
    saved = [read_json(p) for p in sorted((CHECKOUT_ROOT / "results" / name).glob("*.json"))]
    assert saved, f"results/{name}/ holds no result"
    block = readme_text(CHECKOUT_ROOT / "README.md", module.README_BEGIN, module.README_END)
    assert block.strip() == module.markdown_table(saved).strip()


def test_the_load_is_read_before_the_bench_works(tiny_dataset, monkeypatch):
    """The bench's own work raises the load average; the row must carry the neighbours' load."""
    import os

    from xmlbench.benchmarks import tokenise

    readings = iter([0.25] + [1.75] * 100)
    monkeypatch.setattr(os, "getloadavg", lambda: (next(readings), 0.0, 0.0))
    result = tokenise.bench_tokenise(str(tiny_dataset), max_len=16, max_docs=10)
    assert result["load_avg_1m"] == 0.25


def test_metrics_refuses_a_dataset():
    from xmlbench.benchmarks import metrics

    with pytest.raises(UserError, match="bench metrics takes no dataset"):
        metrics._run(benchmarks.BenchOptions(dataset="eurlex4k"))


def test_a_write_cut_short_before_the_rename_leaves_the_old_readme_whole(tmp_path, monkeypatch):
    # The block goes to a temporary file renamed over the README: stop it at the rename (a kill there)
    # and the README is the old one, with no temporary file left beside it.
    readme = _readme(tmp_path, "demo")
    before = readme.read_text()

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        benchmarks.write_readme_block(readme, "| new |", *MARKERS)
    assert readme.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
