"""Distillation (``xmlbench distill``), the ``bilstm`` student, transfer-set augmentation and the word-vectors
reader: losses against hand computations, the temperature's effect on the gradient, seeded augmentation,
the student's record, and one clear error per malformed input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xmlbench.data.augment import MASK, Augmentation, augmented_texts
from xmlbench.data.wordvectors import read_word_vectors
from xmlbench.errors import UserError
from xmlbench.models.distillation import (
    sigmoid_distillation,
    softmax_distillation,
    teacher_logits,
)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ------------------------------------------------------------------------------------------ the losses
def test_sigmoid_distillation_matches_a_hand_computation():
    student = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    ids = torch.tensor([[0, 2], [1, -1]])  # the second row lists one label
    z_t = torch.tensor([[2.0, -1.0], [1.0, 0.0]])
    T = 2.0
    pairs = [(1.0, 2.0), (0.5, -1.0), (3.0, 1.0)]  # (z_s, z_t) of the listed labels
    bce = [-(sig(t / T) * math.log(sig(s / T)) + (1 - sig(t / T)) * math.log(1 - sig(s / T))) for s, t in pairs]
    expected = T**2 * sum(bce) / 3
    assert sigmoid_distillation(student, ids, z_t, T).item() == pytest.approx(expected, rel=1e-6)


def test_softmax_distillation_matches_a_hand_computation():
    student = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    ids = torch.tensor([[0, 2], [1, -1]])
    z_t = torch.tensor([[2.0, -1.0], [1.0, 0.0]])
    T = 2.0

    def log_softmax(row):
        m = math.log(sum(math.exp(v / T) for v in row))
        return [v / T - m for v in row]

    lp0, lp1 = log_softmax([1.0, -2.0, 0.5]), log_softmax([0.0, 3.0, -1.0])
    q0 = [math.exp(2.0 / T), math.exp(-1.0 / T)]
    q0 = [v / sum(q0) for v in q0]  # softmax of the teacher's listed logits over T
    row0 = -(q0[0] * lp0[0] + q0[1] * lp0[2])
    row1 = -(1.0 * lp1[1])  # one listed label: q = 1
    expected = T**2 * (row0 + row1) / 2
    assert softmax_distillation(student, ids, z_t, T).item() == pytest.approx(expected, rel=1e-6)


def test_the_temperature_softens_the_gradient_towards_logit_matching():
    z_t = torch.tensor([[3.0, -2.0]])
    ids = torch.tensor([[0, 1]])
    z_s0 = torch.tensor([[0.5, 1.0]])

    def grad(T, loss=sigmoid_distillation):
        z_s = z_s0.clone().requires_grad_(True)
        loss(z_s, ids, z_t, T).backward()
        return z_s.grad

    # T = 1: (sigmoid(z_s) - sigmoid(z_t)) / n
    torch.testing.assert_close(grad(1.0), (torch.sigmoid(z_s0) - torch.sigmoid(z_t)) / 2)
    # any T: (T / n) (sigmoid(z_s/T) - sigmoid(z_t/T)); large T: (z_s - z_t) / (4 n), logit matching
    torch.testing.assert_close(grad(3.0), 3.0 / 2 * (torch.sigmoid(z_s0 / 3) - torch.sigmoid(z_t / 3)))
    torch.testing.assert_close(grad(1000.0), (z_s0 - z_t) / 8, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(grad(1.0), grad(3.0))
    # softmax form: T (p - q) / B with p, q softened by T; at T = 1 it is p - q
    g = grad(1.0, softmax_distillation)
    torch.testing.assert_close(g, torch.softmax(z_s0, 1) - torch.softmax(z_t, 1))


def test_teacher_scores_become_logits_by_their_kind():
    ids = np.array([[0, 1, -1]])
    p = np.array([[0.5, 0.8807971, 0.0]], dtype=np.float32)
    z = teacher_logits(p, ids, "probability", "sigmoid")
    np.testing.assert_allclose(z, [[0.0, 2.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(teacher_logits(p, ids, "probability", "softmax")[0, :2], np.log(p[0, :2]), rtol=1e-6)
    m = np.array([[-0.3, 1.2, 9.0]], dtype=np.float32)
    np.testing.assert_allclose(teacher_logits(m, ids, "margin", "sigmoid"), [[-0.3, 1.2, 0.0]])


# ------------------------------------------------------------------------------------------ augmentation
TEXTS = ["the market fell sharply on monday as oil prices rose", "wheat exports to china grew", "a b c d e f"]


def test_augmentation_is_determined_by_its_seed():
    aug = Augmentation(copies=3, p_mask=0.3, p_ngram=0.5, seed=7)
    first = list(augmented_texts(TEXTS, aug))
    assert len(first) == 9 and first == list(augmented_texts(TEXTS, aug))
    assert first != list(augmented_texts(TEXTS, Augmentation(copies=3, p_mask=0.3, p_ngram=0.5, seed=8)))
    # a document's copies depend on its id, not on which other documents are augmented with it
    alone = list(augmented_texts(TEXTS[1:2], aug, doc_ids=[1]))
    assert alone == first[3:6]
    twins = list(augmented_texts([TEXTS[0], TEXTS[0]], aug))  # each document draws its own masks and cuts
    assert twins[:3] != twins[3:]
    assert any(MASK in t for t in first) and any(len(t.split()) < len(TEXTS[i // 3].split())
                                                 for i, t in enumerate(first))
    # nothing switched on: copies are the documents
    assert list(augmented_texts(TEXTS, Augmentation(copies=1, p_mask=0, p_ngram=0))) == TEXTS


# ------------------------------------------------------------------------------------------ word vectors
def test_word_vectors_reader_reads_glove_and_word2vec_and_names_a_malformed_line(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("market 0.1 0.2 0.3\nfell -1 0 1 \nmarket 9 9 9\noil 1e-3 2 3\n", encoding="utf-8")
    words, vectors = read_word_vectors(glove)
    assert words == ["market", "fell", "oil"]  # a repeated word keeps its first vector
    np.testing.assert_allclose(vectors[0], [0.1, 0.2, 0.3])
    words, vectors = read_word_vectors(glove, wanted={"oil"})
    assert words == ["oil"] and vectors.shape == (1, 3)
    w2v = tmp_path / "w2v.txt"
    w2v.write_text("2 2\nmarket 1 2\nfell 3 4\n", encoding="utf-8")
    assert read_word_vectors(w2v)[0] == ["market", "fell"]

    bad = tmp_path / "bad.txt"
    bad.write_text("market 0.1 0.2 0.3\nfell 0.1 0.2\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.txt:2: expected 3 numbers after the word, found 2"):
        read_word_vectors(bad)
    bad.write_text("market 0.1 0.2 0.3\nfell 0.1 zero 0.3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.txt:2: 'zero' is not a number"):
        read_word_vectors(bad)
    with pytest.raises(UserError, match="no such file"):
        read_word_vectors(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------ end to end
STUDENT = {"max_len": 16, "epochs": 1, "max_steps": 4, "batch_size": 16, "checkpoint_every": 0, "hidden": 8}


@pytest.fixture(scope="module")
def tfidf_teacher(tiny_dataset, tmp_path_factory) -> Path:
    from xmlbench.runs.runner import RunOptions, run

    out = tmp_path_factory.mktemp("teacher") / "tfidf"
    run(RunOptions(dataset=str(tiny_dataset), model="tfidf-ovr", out=str(out), progress=False))
    return out


def _distill(teacher, tiny_dataset, out, **settings):
    from xmlbench.runs.distill import DistillOptions
    from xmlbench.runs.runner import RunOptions, run

    opts = RunOptions(dataset=str(tiny_dataset), model="bilstm", preset="smoke", out=str(out), progress=False,
                      overrides=dict(STUDENT), resume=settings.pop("resume", False))
    return run(opts, DistillOptions(teacher=str(teacher), copies=1, top_k=10, **settings))


def test_a_distilled_student_records_its_teacher_and_round_trips(tfidf_teacher, tiny_dataset, tmp_path):
    from xmlbench.runs.predict import load_run_model
    from xmlbench.runs.record import read_predictions, read_record

    out = tmp_path / "student"
    record = _distill(tfidf_teacher, tiny_dataset, out, temperature=3.0, alpha=0.7, beta=0.3)
    d = read_record(out)["distillation"]
    teacher = json.loads((tfidf_teacher / "record.json").read_text())
    assert d["teacher"]["run_dir"] == str(tfidf_teacher) and d["teacher"]["model"] == "tfidf-ovr"
    assert d["teacher"]["test"]["P@1"] == teacher["metrics"]["test"]["P@1"]
    assert d["teacher"]["score_kind"] == "margin" and d["form"] == "sigmoid"
    assert (d["settings"]["temperature"], d["settings"]["alpha"], d["settings"]["beta"]) == (3.0, 0.7, 0.3)
    assert d["transfer"]["n_total"] == 2 * d["transfer"]["n_original"] == record["dataset"]["n_transfer"]
    assert d["teacher_cache"]["reused"] is False and d["inference"]["student_docs_s"] > 0
    cache = np.load(out / "transfer" / "teacher.npz")
    assert cache["ids"].shape == (d["transfer"]["n_total"], 10)  # sparse: top-k per document only
    # reloaded from the folder alone, the student predicts its saved predictions
    saved_ids, saved_scores = read_predictions(out)
    model, ds = load_run_model(out)
    ids, scores = model.predict(ds.test, saved_ids.shape[1])
    np.testing.assert_array_equal(ids, saved_ids)
    np.testing.assert_allclose(scores, saved_scores, rtol=1e-5, atol=1e-6)
    # --resume of the same distillation skips it; other settings in the same folder are refused
    assert _distill(tfidf_teacher, tiny_dataset, out, temperature=3.0, alpha=0.7, beta=0.3,
                    resume=True)["finished"] == record["finished"]
    with pytest.raises(UserError, match="temperature"):
        _distill(tfidf_teacher, tiny_dataset, out, temperature=1.0, alpha=0.7, beta=0.3, resume=True)


def test_the_teacher_cache_is_reused_and_the_loss_reaches_training(tfidf_teacher, tiny_dataset, tmp_path):
    """Same transfer set and k: the teacher is not asked again (another k: it is). alpha changes the
    training: the soft targets reach the loss."""
    from xmlbench.data.augment import Augmentation
    from xmlbench.data.dataset import open_dataset
    from xmlbench.runs import distill as kd

    ds = open_dataset(str(tiny_dataset))
    teacher = kd.load_teacher(str(tfidf_teacher), ds)
    transfer = kd.transfer_split(ds.train, ds.n_labels, Augmentation(copies=1), tmp_path / "t")
    ids, scores, first = kd.teacher_targets(teacher, transfer, 5, tmp_path / "t", False, print)
    again = kd.teacher_targets(teacher, transfer, 5, tmp_path / "t", False, print)
    assert first["reused"] is False and again[2]["reused"] is True
    np.testing.assert_array_equal(again[0], ids)
    assert kd.teacher_targets(teacher, transfer, 7, tmp_path / "t", False, print)[2]["reused"] is False

    _distill(tfidf_teacher, tiny_dataset, tmp_path / "a", alpha=1.0, beta=0.0)
    _distill(tfidf_teacher, tiny_dataset, tmp_path / "b", alpha=0.0, beta=1.0)
    la = [json.loads(x).get("loss") for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    lb = [json.loads(x).get("loss") for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert la[0] != lb[0]


def test_bilstm_reads_word_vectors_through_its_tokenizer(tiny_dataset, tmp_path):
    """Real words get real ids (not [UNK]) and their rows start at the file's vectors."""
    from xmlbench.encoders import load_tokenizer
    from xmlbench.runs.predict import load_run_model
    from xmlbench.runs.runner import RunOptions, run

    tok = load_tokenizer("tiny")
    words = ["the", "market", "oil"]
    ids = [tok.convert_tokens_to_ids(w) for w in words]
    assert tok.unk_token_id not in ids
    vectors = tmp_path / "vec.txt"
    vectors.write_text("".join(f"{w} {i + 1}.0 {i + 2}.0 {i + 3}.0 {i + 4}.0\n" for i, w in enumerate(words)),
                       encoding="utf-8")
    out = tmp_path / "run"
    over = {**STUDENT, "embeddings": "vectors", "vectors_file": str(vectors), "vocab": "tokenizer", "lr": 0.0}
    record = run(RunOptions(dataset=str(tiny_dataset), model="bilstm", preset="smoke", out=str(out),
                            progress=False, overrides=over))
    assert record["model_details"]["width"] == 4 and record["model_details"]["vectors_coverage"] > 0
    model, _ = load_run_model(out)
    table = model.net.encoder.embedding.weight
    rows = model.net.encoder.token_map[torch.tensor(ids)]
    torch.testing.assert_close(table[rows[1]], torch.tensor([2.0, 3.0, 4.0, 5.0]))  # lr 0: as read


def test_distill_user_errors_are_one_line(tiny_dataset, tfidf_teacher, tmp_path):
    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "xmlbench", *args], capture_output=True, text=True,
                              timeout=600)
        return done.returncode, done.stderr.strip().splitlines()

    rc, err = cli("distill", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"))
    assert rc == 2 and len(err) == 1 and "teacher run" in err[0] and "no such folder" in err[0]
    (tmp_path / "half").mkdir()
    rc, err = cli("distill", str(tmp_path / "half"), "--out", str(tmp_path / "s"))
    assert rc == 2 and "not a finished run" in err[-1]
    rc, err = cli("distill", str(tfidf_teacher), "--student", "tfidf-ovr", "--out", str(tmp_path / "s"))
    assert rc == 2 and "cannot be a distillation student" in err[-1]
    rc, err = cli("distill", str(tfidf_teacher), "--ngram-min", "6", "--out", str(tmp_path / "s"))
    assert rc == 2 and "--ngram-min 6 exceeds --ngram-max 5" in err[-1]
    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2\nmarket 1\n", encoding="utf-8")
    rc, err = cli("train", str(tiny_dataset), "--model", "bilstm", "--preset", "smoke", "--out",
                  str(tmp_path / "v"), "--set", "embeddings=vectors", "--set", f"vectors_file={bad}",
                  "--no-progress")
    assert rc == 2 and err[-1].endswith(f"{bad}:2: expected 2 numbers after the word, found 1; each line is "
                                        "'word v1 ... vd' (GloVe), optionally after a 'count dim' header "
                                        "(word2vec text)")


def test_distillation_table_names_the_control_row_apart():
    """Two students of one teacher differ only by their loss weights; alpha 0 (no teacher signal) is the
    control, and the table must not print it as if it were distilled."""
    from xmlbench.results.distillation import _loss_label

    assert _loss_label({"alpha": 0.0, "beta": 1.0, "temperature": 1.0}).startswith("(control: alpha 0")
    assert _loss_label({"alpha": 0.5, "beta": 0.5, "temperature": 2.0}) == "(alpha 0.5, beta 0.5, T 2)"
