"""Bring your data: svmlight/libsvm, PECOS .npz and JSON Lines folders written by scikit-learn, scipy and
json load, a model trains on them and matches the native format; malformed files are one line naming file
and line; documents without labels are an error, dropped or kept (``--unlabelled``), counted in the record;
records name a folder by its absolute path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmlbench.cli import main
from xmlbench.data.dataset import open_dataset
from xmlbench.data.features import fit_tfidf, transform_tfidf
from xmlbench.errors import UserError
from xmlbench.runs.record import read_record
from xmlbench.runs.runner import RunOptions, run


@pytest.fixture(scope="module")
def native(tiny_dataset):
    ds = open_dataset(str(tiny_dataset))
    state, Xtr = fit_tfidf(ds.train, max_features=2_000, min_df=1)
    return ds, Xtr, transform_tfidf(state, ds.test)


def _svmlight(folder: Path, native, zero_based=True) -> Path:
    from sklearn.datasets import dump_svmlight_file

    ds, Xtr, Xte = native
    folder.mkdir(parents=True, exist_ok=True)
    dump_svmlight_file(Xtr, ds.train.labels, str(folder / "train.svm"), multilabel=True, zero_based=zero_based)
    dump_svmlight_file(Xte, ds.test.labels, str(folder / "test.svm"), multilabel=True, zero_based=zero_based)
    return folder


def _pecos(folder: Path, native, texts: bool = False) -> Path:
    ds, Xtr, Xte = native
    folder.mkdir(parents=True, exist_ok=True)
    for tag, X, split in (("trn", Xtr, ds.train), ("tst", Xte, ds.test)):
        sp.save_npz(folder / f"X.{tag}.npz", X)
        sp.save_npz(folder / f"Y.{tag}.npz", split.labels)
        if texts:
            (folder / f"X.{tag}.txt").write_text("".join(t + "\n" for t in split.iter_texts()), encoding="utf-8")
    return folder


def _jsonl(folder: Path, native) -> Path:
    ds = native[0]
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        s = getattr(ds, split)
        rows = [json.dumps({"text": t, "labels": [ds.label_names[j] for j in row.indices]})
                for t, row in zip(s.iter_texts(), s.labels)]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _label_sets(ds, split):
    s = getattr(ds, split)
    return [sorted(ds.label_names[j] for j in row.indices) for row in s.labels]


@pytest.mark.parametrize("zero_based", [True, False], ids=["0-based", "1-based"])
def test_svmlight_written_by_scikit_learn_loads_as_written(tmp_path, native, zero_based):
    ds, Xtr, _ = native
    got = open_dataset(str(_svmlight(tmp_path / "svm", native, zero_based)))
    assert got.format == "svmlight" and not got.has_texts
    # labels are named by their number: the native dataset's label ids
    assert [sorted(int(n) for n in r) for r in _label_sets(got, "train")] == \
        [sorted(row.indices.tolist()) for row in ds.train.labels]
    width = got.train.features.shape[1]
    np.testing.assert_allclose(got.train.features.toarray(), Xtr.toarray()[:, Xtr.shape[1] - width:], rtol=1e-6)


def test_pecos_npz_and_jsonl_load_as_written(tmp_path, native):
    ds, Xtr, _ = native
    pecos = open_dataset(str(_pecos(tmp_path / "pecos", native)))
    assert pecos.format == "pecos" and pecos.n_labels == ds.n_labels and not pecos.has_texts
    np.testing.assert_allclose(pecos.train.features.toarray(), Xtr.toarray())
    assert (pecos.test.labels != ds.test.labels).nnz == 0
    with_texts = open_dataset(str(_pecos(tmp_path / "pecos-texts", native, texts=True)))
    assert list(with_texts.test.iter_texts()) == list(ds.test.iter_texts())
    lines = open_dataset(str(_jsonl(tmp_path / "jsonl", native)))
    assert lines.format == "jsonl" and lines.label_names == ds.label_names
    assert list(lines.train.iter_texts()) == list(ds.train.iter_texts()) and lines.train.texts[3] == ds.train.texts[3]
    assert _label_sets(lines, "test") == _label_sets(ds, "test")


@pytest.mark.parametrize("fmt", ["svmlight", "pecos", "jsonl"])
def test_a_model_trains_on_each_format(tmp_path, native, fmt, tiny_dataset):
    folder = {"svmlight": _svmlight, "pecos": _pecos, "jsonl": _jsonl}[fmt](tmp_path / fmt, native)
    record = run(RunOptions(dataset=str(folder), model="tfidf-ovr", out=str(tmp_path / "run"), progress=False))
    assert record["dataset"]["format"] == fmt
    assert record["metrics"]["test"]["P@1"] > 50  # label-frequency scores about 10 on tiny
    assert record["dataset"]["path"] == str(folder.resolve())


def _set_up(tmp_path, name, content):
    d = tmp_path / "bad"
    d.mkdir()
    good = {"svm": "0,1 0:1 3:0.5\n2 1:1\n", "jsonl": '{"text": "a b", "labels": ["x"]}\n'}
    ext = name.rpartition(".")[2]
    for split in ("train", "test"):
        (d / f"{split}.{ext}").write_text(good[ext], encoding="utf-8")
    (d / name).write_bytes(content)
    return d


@pytest.mark.parametrize("name, content, message", [
    ("train.svm", b"0,1 0:1\n1 3:1 1:2\n", r"train.svm:2: feature indices must be increasing"),
    ("train.svm", b"0 0:1\n\n# a comment\n1 x:1\n", r"train.svm:4: malformed feature 'x:1'"),
    ("train.svm", b"0 0:1\n1,a 2:1\n", r"train.svm:2: malformed labels '1,a'"),
    ("train.svm", b"0 0:1\n1 1:1 junk\n", r"train.svm:2: malformed feature 'junk'"),
    ("test.svm", b"0 0:1\n1 1:nan\n", r"test.svm:2: a feature value is not a finite number"),
    ("test.svm", b"0 0:1\n 1:1\n", r"test.svm:2: document has no labels.*--unlabelled drop"),
    ("train.jsonl", b'{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": [\n', r"train.jsonl:2: not valid JSON"),
    ("train.jsonl", b'{"text": "a", "labels": ["x"]}\n{"txt": "b", "labels": ["x"]}\n', r'train.jsonl:2: expected an object with a string "text"'),
    ("train.jsonl", b'{"text": "a", "labels": "x"}\n', r'train.jsonl:1: "labels" must be a list'),
    ("train.jsonl", b'{"text": "a", "labels": ["x y"]}\n', r"train.jsonl:1: label 'x y' must be a non-empty string without whitespace"),
    ("train.jsonl", b'{"text": "a", "labels": ["x"]}\n\n{"text": "b", "labels": ["x"]}\n', r"train.jsonl:2: blank line"),
    ("test.jsonl", b'{"text": "a", "labels": []}\n', r"test.jsonl:1: document has no labels"),
    ("test.jsonl", b'{"text": "\xff", "labels": ["x"]}\n', r"test.jsonl:1: invalid UTF-8"),
])
def test_malformed_svmlight_and_jsonl_name_the_file_and_line(tmp_path, name, content, message):
    with pytest.raises(UserError, match=message):
        open_dataset(str(_set_up(tmp_path, name, content)))


def test_malformed_pecos_names_the_file(tmp_path, native):
    d = _pecos(tmp_path / "p", native)
    (d / "Y.tst.npz").write_bytes(b"not an npz")
    with pytest.raises(UserError, match=r"Y.tst.npz: not a sparse matrix written by scipy.sparse.save_npz"):
        open_dataset(str(d))
    _, Xtr, Xte = native
    sp.save_npz(d / "Y.tst.npz", sp.csr_matrix(np.ones((3, 60), np.float32)))
    with pytest.raises(UserError, match=r"Y.tst.npz: 3 rows but X.tst.npz has 100"):
        open_dataset(str(d))
    Y = native[0].test.labels.tolil()
    Y[5, :] = 0
    sp.save_npz(d / "Y.tst.npz", Y.tocsr())
    with pytest.raises(UserError, match=r"Y.tst.npz: row 5 \(0-based\): document has no labels"):
        open_dataset(str(d))
    sp.save_npz(d / "Y.tst.npz", native[0].test.labels)
    sp.save_npz(d / "X.tst.npz", Xte[:, :10])
    with pytest.raises(UserError, match=r"X.tst.npz: 10 feature columns but X.trn.npz has"):
        open_dataset(str(d))
    sp.save_npz(d / "X.tst.npz", Xte)
    (d / "X.trn.txt").write_text("only one line\n")
    with pytest.raises(UserError, match=r"X.trn.txt: 1 lines but X.trn.npz has 300 rows"):
        open_dataset(str(d))


def test_two_formats_in_one_folder_is_one_clear_line(tmp_path, native, tiny_dataset, capsys):
    d = _jsonl(tmp_path / "both", native)
    for f in tiny_dataset.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    assert main(["data", "check", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the files of 2 dataset formats" in err[0] and "train.jsonl" in err[0] \
        and "train_texts.txt" in err[0]


def test_a_headerless_svmlight_file_named_train_txt_points_to_train_svm(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    for split in ("train", "test"):
        (d / f"{split}.txt").write_text("0,1 0:1 3:0.5\n")
    with pytest.raises(UserError, match=r"train.txt:1: malformed header .* goes in train.svm and test.svm"):
        open_dataset(str(d))


def _with_unlabelled(tmp_path, tiny_dataset) -> Path:
    """The tiny dataset with the labels of train lines 3 and 7 and test line 2 blanked."""
    d = tmp_path / "unlabelled"
    d.mkdir()
    for f in tiny_dataset.iterdir():
        if f.suffix == ".txt":
            (d / f.name).write_bytes(f.read_bytes())
    for name, blank in (("train_labels.txt", (2, 6)), ("test_labels.txt", (1,))):
        lines = (d / name).read_text().splitlines()
        for i in blank:
            lines[i] = ""
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def test_unlabelled_documents_error_drop_or_keep_and_are_counted(tmp_path, tiny_dataset, capsys):
    d = _with_unlabelled(tmp_path, tiny_dataset)
    train = ["train", str(d), "--model", "label-frequency", "--no-progress"]
    assert main([*train, "--out", str(tmp_path / "e")]) == 2
    assert "train_labels.txt:3: document has no labels" in capsys.readouterr().err
    records = {}
    for policy in ("drop", "keep"):
        assert main([*train, "--out", str(tmp_path / policy), "--unlabelled", policy]) == 0
        records[policy] = read_record(tmp_path / policy)
        assert records[policy]["dataset"]["unlabelled"] == {"policy": policy, "train": 2, "test": 1}
        assert records[policy]["options"]["unlabelled"] == policy
    assert records["drop"]["dataset"]["n_test"] == 99 and records["keep"]["dataset"]["n_test"] == 100
    assert records["drop"]["dataset"]["n_train"] + records["drop"]["dataset"]["n_select"] == 298
    assert records["keep"]["dataset"]["n_train"] + records["keep"]["dataset"]["n_select"] == 300
    # a kept document without labels is a miss: P@1 over 100 documents, one of which can never be right
    p_drop, p_keep = records["drop"]["metrics"]["test"]["P@1"], records["keep"]["metrics"]["test"]["P@1"]
    assert p_keep < p_drop or p_drop == 0
    # predict and table reopen the data as the run did (no error about the unlabelled lines)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "drop"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["P@1"] == pytest.approx(p_drop)
    assert main(["table", str(tmp_path / "drop"), "--metrics", "P@1,R@10"]) == 0


def test_a_record_names_a_folder_absolute_and_a_preset_by_name(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("XMLBENCH_DATASETS", str(tmp_path / "generated"))  # where the preset is generated
    monkeypatch.chdir(tiny_dataset.parent)
    record = run(RunOptions(dataset=tiny_dataset.name, model="label-frequency", out=str(tmp_path / "r"),
                            progress=False))
    # "tiny" in this folder would be the folder: but a preset's name wins, and stays a name
    assert record["dataset"]["path"] == "tiny" and Path(record["dataset"]["folder"]).is_absolute()
    (tmp_path / "copy").mkdir()
    for f in tiny_dataset.iterdir():
        (tmp_path / "copy" / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(tmp_path)
    record = run(RunOptions(dataset="copy", model="label-frequency", out="r2", progress=False))
    assert record["dataset"]["path"] == str(tmp_path / "copy")
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["dataset"]["path"] == str(tmp_path / "copy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative "copy" means nothing here: the record still finds it
    assert main(["table", str(tmp_path / "r2"), "--metrics", "P@1,R@10"]) == 0
    assert not (elsewhere / "copy").exists() and os.listdir(elsewhere) == []


def test_ablation_tables_open_the_test_labels_as_the_runs_did(tmp_path, tiny_dataset, monkeypatch):
    """An ablation of data with unlabelled test documents, run with --unlabelled drop, scores its saved
    predictions against the same (dropped) rows: the table's label loader follows the runs' policy."""
    import json

    from xmlbench.errors import UserError
    from xmlbench.experiments.ablate import _test_labels_loader, _unlabelled_policies

    d = _with_unlabelled(tmp_path, tiny_dataset)
    run = tmp_path / "sweep" / "base" / "seed0"
    run.mkdir(parents=True)
    n_test = len((d / "test_labels.txt").read_text().splitlines())
    (run / "record.json").write_text(json.dumps({
        "status": "complete", "model": "label-frequency", "config": {}, "metrics": {}, "selection": {},
        "dataset": {"name": "unlabelled", "path": str(d), "fingerprint": "-", "test_fingerprint": "-",
                    "unlabelled": {"policy": "drop"}}}))
    policies = _unlabelled_policies({"base": [run]})
    assert policies == {str(d): "drop"}
    assert _test_labels_loader(policies)(str(d)).labels.shape[0] == n_test - 1
    with pytest.raises(UserError, match="no labels"):  # what the loader did before: the default policy
        _test_labels_loader()(str(d))

    from xmlbench.experiments import ablate

    asked = []  # write_tables builds its loader from the runs' records
    monkeypatch.setattr(ablate, "_test_labels_loader", lambda policies=None: asked.append(policies) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        ablate.write_tables(tmp_path / "sweep", {"base": [run]}, [ablate.Arm("base", (), "flat")], "x")
    assert asked == [{str(d): "drop"}]
