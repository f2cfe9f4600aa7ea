"""``xmlbench bench pipeline``: the whole clustered pipeline, and its --test-docs subset of the test split."""

from __future__ import annotations

import os

import pytest

from xmlbench.benchmarks.pipeline import bench_pipeline, first_test_documents
from xmlbench.errors import UserError


def test_first_test_documents_links_train_and_cuts_test(tiny_dataset, tmp_path):
    out = first_test_documents(tiny_dataset, 7, tmp_path / "subset")
    assert (out / "train_texts.txt").is_symlink()
    assert (out / "train_texts.txt").read_text() == (tiny_dataset / "train_texts.txt").read_text()
    for name in ("test_texts.txt", "test_labels.txt"):
        assert (out / name).read_text().splitlines() == (tiny_dataset / name).read_text().splitlines()[:7]
    with pytest.raises(UserError, match="--test-docs 0: must be at least 1"):
        first_test_documents(tiny_dataset, 0, tmp_path / "none")


def test_pipeline_with_a_test_subset_and_top_k_label_features(tiny_dataset, tmp_path, monkeypatch):
    from xmlbench.models.lightxml import clustering

    asked = []
    real = clustering.label_features
    monkeypatch.setattr(clustering, "label_features", lambda X, Y, top_k=None: asked.append(top_k) or real(X, Y, top_k))
    from xmlbench.runs import runner

    ran, real_run = [], runner.run  # the run's own work raises the load: the row keeps the one before
    monkeypatch.setattr(runner, "run", lambda opts: ran.append(1) or real_run(opts))
    monkeypatch.setattr(os, "getloadavg", lambda: (1.75 if ran else 0.25, 0.0, 0.0))
    report = bench_pipeline(str(tiny_dataset), steps=2, out=str(tmp_path / "run"), label_top_k=16, test_docs=9)
    assert report["test_docs"] == 9 and report["steps"] == 2 and report["label_feature_top_k"] == 16
    assert report["label_embedding_update"] == "dense"  # auto, far below the sparse threshold
    assert report["stages_s"]["predict_test"] > 0 and report["peak_rss_gb"] > 0
    assert asked == [16]  # the clustering used the top-16 features
    assert report["run_dir"].endswith("run")
    assert report["load_avg_1m"] == 0.25


def test_pipeline_run_folders_differ_by_their_options(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import xmlbench.runs.runner as runner

    seen = []
    monkeypatch.setattr(runner, "run", lambda opts: seen.append(opts.out) or (_ for _ in ()).throw(SystemExit))
    for top_k, docs in ((None, None), (8, None), (8, 5)):
        with pytest.raises(SystemExit):
            bench_pipeline(str(tiny_dataset), steps=1, label_top_k=top_k, test_docs=docs)
    assert seen == ["runs/bench/pipeline-tiny", "runs/bench/pipeline-tiny-top8", "runs/bench/pipeline-tiny-top8-test5"]


def test_the_readme_block_is_built_from_the_saved_results(tiny_dataset, tmp_path):
    from xmlbench.benchmarks.pipeline import README_BEGIN, README_END, save_result

    report = bench_pipeline(str(tiny_dataset), steps=1, out=str(tmp_path / "pipeline-tiny-test5"), test_docs=5)
    assert save_result(report, tmp_path / "results").name == "tiny-test5.json"  # saved without --readme too
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{README_BEGIN}\nold\n{README_END}\nafter\n")
    saved = save_result(report, tmp_path / "results", readme)
    assert saved.name == "tiny-test5.json"
    text = readme.read_text()
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    row = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert len(row) == 1 and f"| {report['dataset']['n_train']:,} / 5 |" in row[0]
    assert f"| {report['peak_rss_gb']:.2f} |" in row[0] and "| dense | 1 |" in row[0]
