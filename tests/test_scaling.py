"""``xmlbench bench scaling``: its parsing, the fitted slopes, the CSV merge, the README block, one real point.

No timing is asserted: the benchmark reports figures, the tests check that what it writes is right.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xmlbench.benchmarks import scaling, write_readme_block
from xmlbench.errors import UserError


def rows_for(component: str, exponent: float, mem_exponent: float) -> list[dict]:
    return [
        {"component": component, "size": f"s{n}", "n_labels": n, "seconds": 1e-3 * n ** exponent,
         "unit": "s", "peak_rss_gb": 0.5 * n ** mem_exponent, "status": "ok", "load_avg_1m": 1.0}
        for n in (1_000, 10_000, 100_000)
    ]


def test_slopes_recover_the_exponents_and_skip_stopped_points():
    rows = rows_for("cluster", 1.2, 0.5) + rows_for("metrics", 1.0, 0.0)
    rows.append({"component": "metrics", "size": "big", "n_labels": 10**7, "seconds": "", "unit": "",
                 "peak_rss_gb": 13.0, "status": "stopped: over 12 GB", "load_avg_1m": 1.0})
    slopes = scaling.fitted_slopes(rows)
    assert slopes["cluster"]["time"] == pytest.approx(1.2) and slopes["cluster"]["memory"] == pytest.approx(0.5)
    assert slopes["metrics"]["time"] == pytest.approx(1.0) and slopes["metrics"]["memory"] == pytest.approx(0.0)
    assert "step" not in slopes  # no points, no slope


def test_csv_round_trip_and_a_point_measured_again_replaces_its_row(tmp_path):
    path = tmp_path / "scaling.csv"
    old = rows_for("cluster", 1.0, 0.0)
    scaling.write_csv(path, old)
    again = dict(old[1], seconds=99.0, load_avg_1m=3.0)
    merged = scaling.merge_rows(scaling.read_csv(path), [again])
    assert len(merged) == 3
    assert [float(r["seconds"]) for r in merged] == [old[0]["seconds"], 99.0, old[2]["seconds"]]


def test_readme_block_is_replaced_between_the_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{scaling.README_BEGIN}\nold table\n{scaling.README_END}\nafter\n")
    write_readme_block(readme, scaling.markdown_table(rows_for("cluster", 1.0, 0.0), {}), scaling.README_BEGIN,
                       scaling.README_END)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{scaling.README_END}\nafter\n")
    assert "old table" not in text and "| cluster | 10,000 |" in text
    readme.write_text("no markers\n")
    with pytest.raises(UserError, match="no block"):
        write_readme_block(readme, "x", scaling.README_BEGIN, scaling.README_END)


def test_bad_sizes_and_components_are_user_errors():
    assert scaling.parse_sizes("4k, 3M") == ["4k", "3m"]
    assert scaling.parse_components("metrics,tree-predict,predict") == ["metrics", "tree", "step"]
    assert scaling.parse_components("tree-lowmem-predict,tree-fit") == ["tree", "tree-lowmem"]
    for bad in ("", "5k", "4k,huge"):
        with pytest.raises(UserError, match="size"):
            scaling.parse_sizes(bad)
    with pytest.raises(UserError, match="component"):
        scaling.parse_components("cluster,nope")


def test_random_bow_rows_are_normalised_and_hold_their_labels_signatures():
    from xmlbench.benchmarks.metrics import random_truth

    rng = np.random.default_rng(0)
    labels = random_truth(rng, 50, 40, 3.0)
    X = scaling.random_bow(np.random.default_rng(1), labels, vocab=500, doc_nnz=5)
    assert X.shape == (50, 500) and X.dtype == np.float32
    assert np.allclose(np.sqrt(X.multiply(X).sum(axis=1)).A.ravel(), 1.0, atol=1e-5)


@pytest.mark.parametrize("chunk_docs", [7, 1000])
def test_random_bow_built_in_chunks_keeps_every_documents_signature_words(chunk_docs):
    from xmlbench.benchmarks.metrics import random_truth

    labels = random_truth(np.random.default_rng(0), 50, 40, 3.0)
    X = scaling.random_bow(np.random.default_rng(1), labels, vocab=500, doc_nnz=5, chunk_docs=chunk_docs)
    words = np.random.default_rng(1).integers(0, 500, size=(40, 4), dtype=np.int64)  # its first draw
    assert X.shape == (50, 500) and X.dtype == np.float32
    assert np.allclose(np.sqrt(X.multiply(X).sum(axis=1)).A.ravel(), 1.0, atol=1e-5)
    for doc in range(50):
        expected = set(words[labels[doc].indices].ravel())
        assert expected <= set(X[doc].indices), (doc, expected - set(X[doc].indices))


def test_a_stopped_point_says_during_which_phase(monkeypatch):
    err = "noise\nscaling-phase: generate\nscaling-phase: fit\nomikuji: tree 1 of 1\n"
    monkeypatch.setattr(scaling, "run_child", lambda *a, **k: ("stopped: over 20 GB", 20.1, "", err, -9))
    rows = scaling.run_point("tree-lowmem", "4k", timeout_s=60)
    assert [r["status"] for r in rows] == ["stopped: over 20 GB during fit"] * 2
    assert [r["component"] for r in rows] == ["tree-lowmem-fit", "tree-lowmem-predict"]
    assert scaling.last_phase("no marks here") == ""


def test_a_point_records_the_load_before_its_child_ran(monkeypatch):
    # The child's own work raises the load average; the row must carry the neighbours' load.
    ran = []
    monkeypatch.setattr(scaling.os, "getloadavg", lambda: (1.75 if ran else 0.25, 0.0, 0.0))
    monkeypatch.setattr(scaling, "run_child", lambda *a, **k: ran.append(1) or ("stopped", 20.1, "", "", -9))
    rows = scaling.run_point("tree-lowmem", "4k", timeout_s=60)
    assert [r["load_avg_1m"] for r in rows] == [0.25, 0.25]


def test_one_metrics_point_in_process():
    (row,) = scaling.measure("metrics", 2_000)
    assert row["component"] == "metrics" and row["seconds"] > 0 and math.isfinite(row["seconds"])


@pytest.mark.parametrize("job, trees, threshold, names", [
    ("tree", 3, 0.0, ["tree-fit", "tree-predict"]),
    ("tree-lowmem", 1, 0.1, ["tree-lowmem-fit", "tree-lowmem-predict"]),
])
def test_tree_points_fit_the_config_their_rows_name(job, trees, threshold, names, monkeypatch):
    """The low-memory rows must measure `--preset low-memory`'s forest, not the default one under a new name."""
    pytest.importorskip("omikuji")
    import omikuji

    seen = []
    train = omikuji.Model.train_on_data

    def spy(path, hp, n_threads=None):
        seen.append((hp.n_trees, round(hp.centroid_threshold, 6)))
        return train(path, hp, n_threads=n_threads)

    monkeypatch.setattr(omikuji.Model, "train_on_data", spy)
    rows = scaling.measure(job, 300)
    assert seen == [(trees, threshold)]
    assert [r["component"] for r in rows] == names and all(r["seconds"] > 0 for r in rows)


def test_a_point_over_its_time_limit_is_recorded_as_stopped():
    rows = scaling.run_point("cluster", "4k", timeout_s=0.5)
    assert [r["component"] for r in rows] == ["cluster"]
    assert rows[0]["status"] == "stopped: over 0.5 s" and rows[0]["seconds"] == ""


@pytest.mark.parametrize("argv, message", [
    (["bench", "scaling", "--sizes", "5k"], "unknown size 5k"),
    (["bench", "scaling", "--components", "nope"], "unknown component nope"),
    (["bench", "scaling", "--timeout", "-1"], "--timeout must be positive"),
    (["bench", "metrics", "--sizes", "4k"], "options of 'bench scaling' and 'bench tree-memory' only"),
])
def test_command_line_errors_are_one_line(argv, message, capsys):
    from xmlbench.cli import main

    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_child_that_writes_more_than_a_pipe_holds_still_finishes():
    """The sweep polls its child without reading: a child writing ~1 MB (omikuji's progress at 4k labels)
    blocked on a full pipe until the timeout, so the tree had no point at any size."""
    import os
    import sys

    from xmlbench.benchmarks.scaling import run_child

    argv = [sys.executable, "-c", "import sys; sys.stderr.write('x' * 1_000_000); print('[]')"]
    status, _, out, err, code = run_child(argv, dict(os.environ), timeout_s=30, max_rss_gb=4)
    assert (status, code, out.strip(), len(err)) == ("ok", 0, "[]", 1_000_000)
