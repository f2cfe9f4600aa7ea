"""Dataset layer: readers, quirks, bad input (one clear line, non-zero exit), label space, splits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import write_text_dataset
from xmlbench.data.dataset import carve_validation, dataset_stats, open_dataset
from xmlbench.errors import UserError

TRAIN = [("the cat sat", "a b"), ("dogs bark loud", "b"), ("cats and dogs", "a c"), ("birds sing", "d")]
TEST = [("a cat", "a"), ("a fish", "e b")]  # 'e' only in test


def test_label_space_and_test_only_labels(tmp_path):
    ds = open_dataset(str(write_text_dataset(tmp_path / "d", TRAIN, TEST)))
    assert ds.label_names == ["a", "b", "c", "d", "e"]  # train order of first appearance, then test-only
    assert ds.train.labels.indices.dtype == np.int32
    assert ds.train.labels.toarray().tolist() == [[1, 1, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 1, 0, 0],
                                                  [0, 0, 0, 1, 0]]
    assert ds.test.labels.toarray().tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1]]
    stats = dataset_stats(ds)
    assert stats["n_labels_test_only"] == 1
    assert stats["n_train"] == 4 and stats["n_test"] == 2 and stats["n_labels"] == 5
    assert stats["avg_labels_per_doc"] == pytest.approx(6 / 4)
    assert stats["avg_docs_per_label"] == pytest.approx(6 / 4)  # 6 occurrences over 4 train labels
    assert list(ds.train.iter_texts()) == [t for t, _ in TRAIN]
    assert ds.train.texts[2] == "cats and dogs"


def test_quirks_crlf_repeats_trailing_blanks(tmp_path):
    d = tmp_path / "q"
    d.mkdir()
    (d / "train_texts.txt").write_bytes(b"one doc\r\ntwo doc  \r\n\n\n")
    (d / "train_labels.txt").write_bytes(b"x x y \r\ny\r\n\n")
    (d / "test_texts.txt").write_bytes(b"three")  # no final newline
    (d / "test_labels.txt").write_bytes(b"x")
    ds = open_dataset(str(d))
    assert ds.train.labels.toarray().tolist() == [[1, 1], [0, 1]]  # repeated label counted once
    assert list(ds.train.iter_texts()) == ["one doc", "two doc  "]
    assert list(ds.test.iter_texts()) == ["three"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "train_labels.txt").unlink(), "train_labels.txt: file not found"),
        (lambda d: (d / "train_labels.txt").write_text("a\nb\na\n"), "texts and labels must be line-aligned"),
        (lambda d: (d / "train_labels.txt").write_text("a\n\nb\nc\n"), "train_labels.txt:2: document has no labels"),
        (lambda d: (d / "test_texts.txt").write_bytes(b"ok\n\xff\xfe bad\n"), "test_texts.txt:2: invalid UTF-8"),
        (lambda d: (d / "test_labels.txt").write_bytes(b"a\n\xc3(\n"), "test_labels.txt:2: invalid UTF-8"),
    ],
)
def test_bad_text_input_names_file_and_line(tmp_path, setup, message):
    d = write_text_dataset(tmp_path / "bad", TRAIN, TEST)
    setup(d)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        open_dataset(str(d))


def _bow(d, header="3 4 2", lines=("0 0:1 2:0.5", "1 1:1", "0,1 3:2")):
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (d / f"{split}.txt").write_text(header + "\n" + "\n".join(lines) + "\n")
    return d


def test_bag_of_words_reader(tmp_path):
    ds = open_dataset(str(_bow(tmp_path / "bow")))
    assert ds.format == "bow"
    assert ds.train.features.shape == (3, 4)
    assert ds.train.features[0, 2] == pytest.approx(0.5)
    assert ds.train.labels.toarray().tolist() == [[1, 0], [0, 1], [1, 1]]


@pytest.mark.parametrize(
    "header, lines, message",
    [
        ("3 4", ("0 0:1",), "train.txt:1: malformed header"),
        ("3 4 2", ("0 0:1", "1 9:1", "0 1:1"), "train.txt:3: feature '9:1' out of range"),
        ("3 4 2", ("0 0:1", "x 1:1", "0 1:1"), "train.txt:3: malformed labels"),
        ("3 4 2", ("0 0:1", "1 1:1"), "header says 3 points but the file has 2 lines"),
    ],
)
def test_bad_bag_of_words(tmp_path, header, lines, message):
    with pytest.raises(UserError, match=message):
        open_dataset(str(_bow(tmp_path / "b", header, lines)))


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UserError, match="known: .*eurlex4k.*amazon670k"):
        open_dataset("no-such-dataset")


def test_registered_but_absent_dataset_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("XMLBENCH_DATASETS", str(tmp_path))
    with pytest.raises(UserError, match="xmlbench data download eurlex4k"):
        open_dataset("eurlex4k")


def test_alias_amazon13k():
    from xmlbench.data.manifest import DATASETS

    assert DATASETS.get("amazon13k").name == "amazoncat13k"
    assert DATASETS.get("amazon670k").published["n_labels"] == 670091


def test_validation_carve_is_seeded_and_disjoint(tiny_dataset):
    ds = open_dataset(str(tiny_dataset))
    tr1, va1 = carve_validation(ds.train, 0.2, seed=3)
    tr2, va2 = carve_validation(ds.train, 0.2, seed=3)
    _, va3 = carve_validation(ds.train, 0.2, seed=4)
    assert np.array_equal(va1.rows, va2.rows) and not np.array_equal(va1.rows, va3.rows)
    assert len(va1) == round(0.2 * len(ds.train)) and len(tr1) + len(va1) == len(ds.train)
    assert not set(tr1.rows) & set(va1.rows)
    assert list(va1.iter_texts())[0] == ds.train.texts[int(va1.rows[0])]
    assert (va1.labels != ds.train.labels[va1.rows]).nnz == 0


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    d = write_text_dataset(tmp_path / "cli", TRAIN, TEST)
    (d / "train_labels.txt").write_text("a\n")
    proc = subprocess.run([sys.executable, "-m", "xmlbench", "data", "check", str(d)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "line-aligned" in proc.stderr


def test_cli_check_json_keys(tmp_path):
    import json

    d = write_text_dataset(tmp_path / "j", TRAIN, TEST)
    proc = subprocess.run([sys.executable, "-m", "xmlbench", "data", "check", str(d), "--json"],
                          capture_output=True, text=True, check=True)
    stats = json.loads(proc.stdout)
    for key in ("n_train", "n_test", "n_labels", "n_labels_test_only", "avg_labels_per_doc", "avg_docs_per_label"):
        assert key in stats
    assert stats["n_labels_test_only"] == 1


def test_download_offline_gives_one_line(tmp_path, monkeypatch):
    import urllib.request

    from xmlbench.data import download as dl

    monkeypatch.setenv("XMLBENCH_DATASETS", str(tmp_path))

    def refuse(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    with pytest.raises(UserError, match="download https://drive.google.com/.* by hand.*put train_texts.txt"):
        dl.download("eurlex4k")


@pytest.mark.parametrize("line, message", [
    ("mdoe = \"flat\"", "unknown config key 'mdoe'"),
    ("mode = \"flatt\"", "'mode' must be one of"),
    ("propensity = { A = 0.55, b = 1.5 }", "unknown config key 'propensity.b'"),
    ("aliases = \"x\"\n[published]\nn_trian = 3", "unknown config key 'published.n_trian'"),
])
def test_dataset_manifests_are_parsed_strictly(tmp_path, line, message):
    from xmlbench.data.manifest import _load_manifest

    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n{line}\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        _load_manifest(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_every_shipped_manifest_parses():
    from xmlbench.data.manifest import DATASETS, _load_manifest

    for _, info in DATASETS.items():
        assert _load_manifest(__import__("pathlib").Path(info.manifest_path)) == info
