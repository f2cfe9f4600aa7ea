"""``xmlbench.load(RUN)`` and ``xmlbench predict RUN --texts FILE``: a saved run predicts raw texts from its
folder alone, and the answers are the run's own (same top-k label names as its predictions.npz, same P@k
as xmlbench's evaluate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmlbench.cli import main
from xmlbench.data.dataset import Split, open_dataset
from xmlbench.data.labels import label_table, map_ids
from xmlbench.data.readers import TextList
from xmlbench.metrics import evaluate
from xmlbench.runs.record import load_predictions, read_record
from xmlbench.runs.runner import RunOptions, run

K = 5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    smoke = {"max_steps": 3, "max_len": 16, "epochs": 1}
    out = {}
    for model, preset, overrides in (("tfidf-ovr", "default", {}), ("lightxml", "smoke", smoke)):
        out[model] = root / model
        run(RunOptions(dataset=str(tiny_dataset), model=model, preset=preset, overrides=overrides,
                       out=str(out[model]), progress=False))
    return out


def _test_texts(tiny_dataset: Path) -> list[str]:
    return (tiny_dataset / "test_texts.txt").read_text(encoding="utf-8").splitlines()


def _saved_top_names(run_dir: Path, k: int) -> list[list[str]]:
    pred = load_predictions(run_dir)
    return [[str(pred.label_names[j]) for j in row if j >= 0] for row in pred.ids[:, :k]]


# ------------------------------------------------------------------------------------ the Python API
@pytest.mark.parametrize("model", ["tfidf-ovr", "lightxml"])
def test_load_predict_in_a_fresh_process_gives_the_runs_own_top_k(runs, tiny_dataset, model):
    script = (
        "import json, sys\n"
        "import xmlbench\n"
        "cheap = 'torch' not in sys.modules and 'scipy' not in sys.modules\n"
        "m = xmlbench.load(sys.argv[1])\n"
        "texts = open(sys.argv[2], encoding='utf-8').read().splitlines()\n"
        f"print(json.dumps({{'cheap': cheap, 'names': m.label_names, 'pred': m.predict(texts, k={K})}}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", script, str(runs[model]), str(tiny_dataset / "test_texts.txt")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["cheap"], "import xmlbench must not import torch or scipy"
    pred = got["pred"]
    assert len(pred) == len(_test_texts(tiny_dataset))
    assert [[name for name, _ in row] for row in pred] == _saved_top_names(runs[model], K)
    saved = load_predictions(runs[model]).scores[:, :K]
    np.testing.assert_allclose([[s for _, s in row] for row in pred], saved, rtol=1e-5, atol=1e-6)
    assert all(a[1] >= b[1] for row in pred for a, b in zip(row, row[1:]))  # best first


def test_evaluate_a_saved_run_on_another_dataset_by_label_name(runs, tiny_dataset, tiny_shuffled):
    import xmlbench

    m = xmlbench.load(runs["tfidf-ovr"])
    own = read_record(runs["tfidf-ovr"])["metrics"]["test"]
    assert m.evaluate(str(tiny_dataset)) == pytest.approx(own)
    # Same documents, every label under another id: the same numbers, matched by name.
    assert open_dataset(str(tiny_shuffled)).label_names != m.label_names
    assert m.evaluate(str(tiny_shuffled), split="test") == pytest.approx(own)
    assert m.model.label_map is None  # evaluate leaves predict() in the model's own label ids
    assert m.predict(["x"], k=2)[0][0][0] in m.label_names


def test_empty_texts_still_get_a_row(runs):
    import xmlbench

    m = xmlbench.load(runs["tfidf-ovr"])
    pred = m.predict(["", "   ", "!!!"], k=3)
    # An all-zero TF-IDF row is ranked by the biases alone: k labels, the same for every empty text.
    assert [len(row) for row in pred] == [3, 3, 3]
    assert pred[0] == pred[1] == pred[2]
    assert m.predict([], k=3) == []


def test_bad_k_and_a_lone_string_are_refused(runs):
    import xmlbench
    from xmlbench.errors import UserError

    m = xmlbench.load(runs["tfidf-ovr"])
    for k in (0, -1, 2.5, True):
        with pytest.raises(UserError, match="positive whole number"):
            m.predict(["a text"], k=k)
    with pytest.raises(TypeError):
        m.predict("a text")
    with pytest.raises(UserError, match="no saved model"):
        xmlbench.load(runs["tfidf-ovr"] / "nowhere")


def test_a_split_of_texts_in_memory():
    split = Split.of_texts(["a b", "c"], n_labels=4)
    assert len(split) == 2 and split.labels.shape == (2, 4) and split.labels.nnz == 0
    assert list(split.iter_texts()) == ["a b", "c"]
    assert list(split.subset(np.array([1])).iter_texts()) == ["c"]
    # The digest keys neural token caches: other texts, another key, even when the characters are the same.
    assert TextList(["ab"]).digest != TextList(["a", "b"]).digest
    assert TextList(["a", "b"]).digest == TextList(["a", "b"]).digest


# ----------------------------------------------------------------------------------- predict --texts
def _predict_texts(run_dir: Path, texts: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(run_dir), "--texts", str(texts), "--out", str(out), "--no-progress", *extra])


def _p_at_k_from_csr(scores: sp.csr_matrix, names: list[str], truth: sp.csr_matrix, truth_names, k: int):
    """P@k read straight from the CSR (what pyxclib/napkinXC do): rank each row's stored entries."""
    cols = map_ids(np.arange(scores.shape[1]), label_table(names, truth_names))
    hits = []
    ids = np.full((scores.shape[0], k), -1, dtype=np.int32)
    for i in range(scores.shape[0]):
        lo, hi = scores.indptr[i], scores.indptr[i + 1]
        order = np.argsort(-scores.data[lo:hi], kind="stable")[:k]
        ranked = cols[scores.indices[lo:hi][order]]
        ids[i, : len(ranked)] = ranked
        true = set(truth.indices[truth.indptr[i]:truth.indptr[i + 1]].tolist())
        hits.append(sum(int(j in true) for j in ranked) / k)
    return 100 * float(np.mean(hits)), ids


def test_predict_texts_csr_gives_the_same_p_at_k_as_evaluate(runs, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "pred"
    assert _predict_texts(runs["tfidf-ovr"], tiny_dataset / "test_texts.txt", out, "--top-k", str(K)) == 0
    scores = sp.load_npz(out / "scores.npz")
    names = (out / "label_names.txt").read_text(encoding="utf-8").splitlines()
    ds = open_dataset(str(tiny_dataset))
    assert scores.format == "csr" and scores.shape == (len(ds.test), len(names)) and scores.has_sorted_indices
    assert np.all(np.diff(scores.indptr) == K)
    p_k, ids = _p_at_k_from_csr(scores, names, ds.test.labels, ds.label_names, K)
    via_xmlbench = evaluate(ids, ds.test.labels)
    record = read_record(runs["tfidf-ovr"])["metrics"]["test"]
    assert p_k == pytest.approx(via_xmlbench[f"P@{K}"]) == pytest.approx(record[f"P@{K}"])
    assert via_xmlbench["P@1"] == pytest.approx(record["P@1"])  # the ranking inside a row survives too
    # The jsonl says the same, one line per text.
    rows = [json.loads(line)["labels"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [[n for n, _ in row] for row in rows] == _saved_top_names(runs["tfidf-ovr"], K)


def test_predict_texts_tsv_and_blank_lines(runs, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("a document about things\n\n   \nlast one without newline", encoding="utf-8")
    out = tmp_path / "tsv"
    assert _predict_texts(runs["tfidf-ovr"], texts, out, "--format", "tsv", "--top-k", "2") == 0
    lines = (out / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4  # every line a text, blank ones included
    assert all(len(line.split("\t")) == 4 for line in lines)  # label, score, label, score
    assert sp.load_npz(out / "scores.npz").shape[0] == 4
    assert not (out / "predictions.jsonl").exists()


def _one_line_error(capsys, code: int) -> str:
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_bad_inputs_give_one_line_and_exit_2(runs, tmp_path, capsys):
    run_dir = runs["tfidf-ovr"]
    good = tmp_path / "good.txt"
    good.write_text("some text\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nnot \xff utf-8\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "scores.npz").write_bytes(b"mine")
    cases = [
        ((tmp_path / "missing.txt", tmp_path / "o1"), "file not found"),
        ((bad, tmp_path / "o2"), "bad.txt:2: invalid UTF-8"),
        ((good, tmp_path / "o3", "--top-k", "0"), "positive whole number"),
        ((good, taken), "already holds scores.npz"),
        ((good, run_dir), "inside the run folder"),
        ((good, run_dir / "sub"), "inside the run folder"),
    ]
    for args, message in cases:
        assert message in _one_line_error(capsys, _predict_texts(run_dir, *args))
    assert (taken / "scores.npz").read_bytes() == b"mine"
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))
    err = _one_line_error(capsys, main(["predict", str(run_dir), "--texts", str(good), "--no-progress"]))
    assert "needs --out" in err
