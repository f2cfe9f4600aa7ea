"""Synthetic XMC datasets: format, determinism, realism, and that the task is learnable but not trivial."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from xmlbench.data.synth import PRESETS, SynthSpec, _build_world, _seed_sequence, write_synthetic
from xmlbench.errors import UserError
from xmlbench.outputs import MARKER

FILES = ("train_texts.txt", "train_labels.txt", "test_texts.txt", "test_labels.txt")
WORDS_LINE = re.compile(r"[a-z]+( [a-z]+)*")
LABELS_LINE = re.compile(r"l\d{6,}( l\d{6,})*")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    write_synthetic("tiny", out, seed=0, progress=False)
    return out


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    return raw.decode("ascii").split("\n")[:-1]


def read_split(folder: Path, split: str) -> tuple[list[str], list[list[str]]]:
    texts = read_lines(folder / f"{split}_texts.txt")
    labels = [line.split(" ") for line in read_lines(folder / f"{split}_labels.txt")]
    return texts, labels


def precision_at_1(scores: np.ndarray, truth: list[set[int]]) -> float:
    """Percentage of documents whose top-scored label is one of theirs."""
    top = scores.argmax(axis=1)
    return 100.0 * float(np.mean([int(t) in labels for t, labels in zip(top, truth)]))


def test_presets_have_the_real_datasets_counts():
    expected = {
        "synth-eurlex4k": (15_449, 3_865, 3_956, 5.30),
        "synth-amazon670k": (490_449, 153_025, 670_091, 5.45),
        "synth-wiki500k": (1_779_881, 769_421, 501_070, 4.75),
        "synth-amazon3m": (1_717_899, 742_507, 2_812_281, 36.04),
    }
    for name, counts in expected.items():
        spec = PRESETS.get(name)
        assert (spec.n_train, spec.n_test, spec.n_labels, spec.labels_per_doc) == counts
    assert PRESETS.get("synth-eurlex4k").docs_per_label == pytest.approx(20.7, abs=0.1)
    assert PRESETS.get("synth-amazon670k").docs_per_label == pytest.approx(3.99, abs=0.01)
    assert {"tiny", "small"} <= set(PRESETS.names())


def test_unknown_preset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="tiny"):
        write_synthetic("no-such-preset", tmp_path, progress=False)


def test_spec_rejects_impossible_counts():
    spec = PRESETS.get("tiny")
    with pytest.raises(ValueError):
        dataclasses.replace(spec, labels_per_doc=0.5)
    with pytest.raises(ValueError):
        dataclasses.replace(spec, n_train=10, labels_per_doc=1.0)  # 10 occurrences cannot show 60 labels


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny, tmp_path):
    write_synthetic("tiny", tmp_path / "again", seed=0, progress=False)
    write_synthetic("tiny", tmp_path / "other", seed=1, progress=False)
    for name in (*FILES, "synth.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tiny / name).read_bytes(), name
    for name in FILES:
        assert (tmp_path / "other" / name).read_bytes() != (tiny / name).read_bytes(), name


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_counts_format_and_alignment(preset, tmp_path):
    out = tmp_path
    counts = write_synthetic(preset, out, seed=0, progress=False)
    spec = PRESETS.get(preset)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["preset"] == preset and meta["seed"] == 0 and meta["spec"] == dataclasses.asdict(spec)
    assert counts == meta["counts"]
    assert (counts["n_train"], counts["n_test"], counts["n_labels"]) == (
        spec.n_train,
        spec.n_test,
        spec.n_labels,
    )
    # no temp files left; the marker says xmlbench wrote the folder
    assert sorted(p.name for p in out.iterdir()) == sorted((*FILES, "synth.json", MARKER))

    seen: set[str] = set()
    for split, n_docs in (("train", spec.n_train), ("test", spec.n_test)):
        texts, labels = read_split(out, split)
        assert len(texts) == len(labels) == n_docs == counts[split]["docs"]
        assert all(WORDS_LINE.fullmatch(t) for t in texts)
        assert all(LABELS_LINE.fullmatch(" ".join(ls)) for ls in labels)
        assert all(len(set(ls)) == len(ls) >= 1 for ls in labels)  # every doc labelled, no repeats
        lengths = np.array([t.count(" ") + 1 for t in texts])
        assert spec.doc_len_min <= lengths.min() and lengths.max() <= spec.doc_len_max
        assert lengths.mean() == pytest.approx(counts[split]["words_mean"], abs=0.01)
        assert lengths.std() > 0  # varied lengths
        occurrences = sum(map(len, labels))
        assert occurrences == counts[split]["label_occurrences"]
        assert occurrences / n_docs == pytest.approx(spec.labels_per_doc, rel=0.02)
        seen |= {label for ls in labels for label in ls}
        if split == "train":
            assert len(seen) == spec.n_labels  # every label is seen in training (no test-only here)
    assert len(seen) == spec.n_labels


def test_label_frequencies_have_a_head_and_a_long_tail(tiny, tmp_path):
    write_synthetic("small", tmp_path, seed=0, progress=False)
    _, labels = read_split(tmp_path, "train")
    freq = np.sort(np.unique([x for ls in labels for x in ls], return_counts=True)[1])[::-1]
    assert freq[0] > 5 * np.median(freq)  # a few very frequent labels ...
    assert np.mean(freq < freq.mean()) > 0.6  # ... and most labels below the mean


def test_labels_of_a_document_mostly_share_one_or_two_topics(tmp_path):
    write_synthetic("small", tmp_path, seed=0, progress=False)
    spec = PRESETS.get("small")
    world_rng = np.random.default_rng(_seed_sequence("small", 0).spawn(3)[0])
    label_topic = _build_world(spec, world_rng).label_topic  # the hidden topics, rebuilt from the seed
    _, labels = read_split(tmp_path, "train")
    shares = []
    for names in labels:
        per_topic = np.sort(np.bincount(label_topic[[int(n[1:]) for n in names]]))
        shares.append(per_topic[-2:].sum() / len(names))
    assert np.mean(shares) > 0.85
    assert np.mean(np.array(shares) == 1.0) < 0.999  # but not always: some cross-topic labels


def test_words_are_pronounceable_pseudo_words(tiny):
    texts, _ = read_split(tiny, "train")
    vocab = {w for t in texts for w in t.split(" ")}
    assert len(vocab) > 300
    assert all(2 <= len(w) <= 20 and re.search(r"[aeiou]", w) for w in vocab)


def test_tfidf_beats_label_frequency_by_far_but_is_not_perfect(tiny):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    train_texts, train_labels = read_split(tiny, "train")
    test_texts, test_labels = read_split(tiny, "test")
    binarizer = MultiLabelBinarizer()
    y = binarizer.fit_transform(train_labels)
    index = {name: i for i, name in enumerate(binarizer.classes_)}
    truth = [{index[x] for x in ls if x in index} for ls in test_labels]

    frequency = np.tile(y.sum(axis=0).astype(float), (len(test_texts), 1))
    baseline = precision_at_1(frequency, truth)

    vectorizer = TfidfVectorizer(sublinear_tf=True)
    model = OneVsRestClassifier(LogisticRegression(solver="liblinear", C=10.0))
    model.fit(vectorizer.fit_transform(train_texts), y)
    learned = precision_at_1(model.decision_function(vectorizer.transform(test_texts)), truth)

    assert learned > 2 * baseline and learned > baseline + 30, (learned, baseline)
    assert learned < 99, learned  # noise keeps it from being perfectly separable


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS.get("tiny").n_train = 1  # type: ignore[misc]
    assert isinstance(PRESETS.get("tiny"), SynthSpec)
