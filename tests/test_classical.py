"""The classical references (tfidf-ovr, tree) through the one runner, and the shared TF-IDF featurisation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from xmlbench.data.dataset import open_dataset
from xmlbench.data.features import fit_tfidf, load_tfidf, save_tfidf, transform_tfidf
from xmlbench.errors import UserError
from xmlbench.models import MODELS
from xmlbench.runs.record import read_predictions
from xmlbench.runs.runner import RunOptions, run

needs_omikuji = pytest.mark.skipif(importlib.util.find_spec("omikuji") is None, reason="pip install omikuji")

MODEL_SETTINGS = [
    pytest.param("tfidf-ovr", {}, id="tfidf-ovr"),
    pytest.param("tree", {}, id="tree-parabel", marks=needs_omikuji),
    # small branches so the 60 tiny labels really are split into a tree
    pytest.param("tree", {"mode": "bonsai", "cluster_k": 4, "min_branch_size": 8}, id="tree-bonsai",
                 marks=needs_omikuji),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from xmlbench.data.synth import write_synthetic

    folder = tmp_path_factory.mktemp("tiny") / "tiny"
    write_synthetic("tiny", folder, seed=0, progress=False)
    return folder


@pytest.fixture(scope="module")
def tiny_bow(tiny: Path, tmp_path_factory) -> Path:
    """The tiny dataset as an Extreme Classification Repository bag-of-words dataset."""
    from xmlbench.models.baselines.tree import write_xc_repo_file

    ds = open_dataset(str(tiny))
    state, X_train = fit_tfidf(ds.train, max_features=2_000, min_df=1)
    folder = tmp_path_factory.mktemp("tiny_bow")
    write_xc_repo_file(folder / "train.txt", X_train, ds.train.labels, ds.n_labels)
    write_xc_repo_file(folder / "test.txt", transform_tfidf(state, ds.test), ds.test.labels, ds.n_labels)
    return folder


@pytest.fixture(scope="module")
def floor(tiny: Path, tmp_path_factory) -> float:
    """Test P@1 of label-frequency on the tiny dataset: every model must beat it."""
    out = tmp_path_factory.mktemp("runs") / "label-frequency"
    record = run(RunOptions(dataset=str(tiny), model="label-frequency", out=str(out), progress=False))
    return record["metrics"]["test"]["P@1"]


def _train(dataset: Path, model: str, out: Path, overrides: dict | None = None) -> dict:
    return run(RunOptions(dataset=str(dataset), model=model, out=str(out), progress=False,
                          overrides=dict(overrides or {})))


@pytest.mark.parametrize("model, overrides", MODEL_SETTINGS)
def test_beats_label_frequency_and_reloads(model: str, overrides: dict, tiny: Path, floor: float,
                                           tmp_path: Path) -> None:
    record = _train(tiny, model, tmp_path / "run", overrides)
    assert record["metrics"]["test"]["P@1"] > floor + 10

    ids, scores = read_predictions(tmp_path / "run")
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (100, 100)
    valid = ids >= 0
    assert valid[:, 0].all()
    assert np.all(scores[~valid] == -np.inf)
    assert np.all(np.diff(np.where(valid, scores, -1e30), axis=1)[valid[:, 1:]] <= 0)  # best first
    assert all(len(set(row[row >= 0])) == int((row >= 0).sum()) for row in ids)  # no repeats

    ds = open_dataset(str(tiny))
    loaded = MODELS.get(model).cls.load(tmp_path / "run" / "model", ds)
    ids2, scores2 = loaded.predict(ds.test, 100)
    np.testing.assert_array_equal(ids2, ids)
    # omikuji's reloaded trees sum their scores in a different float order: 1-ulp differences
    np.testing.assert_allclose(scores2, scores, rtol=1e-6, atol=0)


@pytest.mark.parametrize("model", ["tfidf-ovr", pytest.param("tree", marks=needs_omikuji)])
def test_bag_of_words_dataset(model: str, tiny_bow: Path, floor: float, tmp_path: Path) -> None:
    record = _train(tiny_bow, model, tmp_path / "run")
    assert record["dataset"]["n_labels"] == 60
    assert record["metrics"]["test"]["P@1"] > floor + 10


def test_tfidf_ovr_refuses_too_many_labels(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"tfidf-ovr trains one classifier per label; 60 labels exceeds "
                                        r"max_labels=50 \(use --model tree, or --set max_labels=N\)"):
        _train(tiny, "tfidf-ovr", tmp_path / "run", {"max_labels": 50})


def test_tfidf_ovr_logistic_and_pruning(tiny: Path, floor: float, tmp_path: Path) -> None:
    record = _train(tiny, "tfidf-ovr", tmp_path / "run", {"loss": "log", "C": 10.0, "weight_threshold": 0.05})
    assert record["metrics"]["test"]["P@1"] > floor + 10
    assert 0 < record["n_parameters"]


def test_tfidf_state_round_trip(tiny: Path, tmp_path: Path) -> None:
    ds = open_dataset(str(tiny))
    state, X = fit_tfidf(ds.train, max_features=500, ngram_max=2, min_df=2)
    assert X.shape == (len(ds.train), state.n_features) and state.n_features <= 500
    assert X.dtype == np.float32 and X.has_sorted_indices
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(axis=1)).A1, 1.0, rtol=1e-5)
    assert any(" " in term for term in state.vocabulary)  # bigrams kept

    save_tfidf(state, tmp_path / "tfidf")
    assert not list((tmp_path / "tfidf").glob("*.pkl"))
    loaded = load_tfidf(tmp_path / "tfidf")
    assert loaded.vocabulary == state.vocabulary
    np.testing.assert_array_equal(loaded.idf, state.idf)
    again = transform_tfidf(loaded, ds.train)
    assert (again != X).nnz == 0  # transform reproduces the fitted matrix exactly
    assert transform_tfidf(loaded, ds.test).shape == (len(ds.test), state.n_features)


def test_tfidf_weighting_matches_sklearn(tiny: Path) -> None:
    """The shared weighting is scikit-learn's TfidfVectorizer (sublinear tf, smooth idf, L2 rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    ds = open_dataset(str(tiny))
    _, X = fit_tfidf(ds.train, max_features=300, min_df=3)
    reference = TfidfVectorizer(sublinear_tf=True, max_features=300, min_df=3, dtype=np.float32)
    R = reference.fit_transform(list(ds.train.iter_texts()))
    np.testing.assert_allclose(X.toarray(), R.toarray(), atol=1e-6)


def test_tfidf_state_on_bag_of_words(tiny_bow: Path, tmp_path: Path) -> None:
    ds = open_dataset(str(tiny_bow))
    state, X = fit_tfidf(ds.train)
    assert state.kind == "bow" and X.shape == ds.train.features.shape
    save_tfidf(state, tmp_path / "tfidf")
    assert (transform_tfidf(load_tfidf(tmp_path / "tfidf"), ds.train) != X).nnz == 0


def test_tree_options_reach_omikuji() -> None:
    pytest.importorskip("omikuji")
    from xmlbench.models.baselines.tree import TreeConfig, hyper_params

    hp = hyper_params(TreeConfig(n_trees=2, trees_in_parallel=True, centroid_threshold=0.1, min_branch_size=50))
    assert (hp.n_trees, hp.train_trees_1_by_1, hp.min_branch_size) == (2, False, 50)
    assert hp.centroid_threshold == pytest.approx(0.1)
    assert hyper_params(TreeConfig()).centroid_threshold == 0.0  # Parabel's default: every centroid entry kept


@needs_omikuji
def test_tree_low_memory_preset_is_the_measured_config(tiny: Path) -> None:
    from xmlbench.benchmarks.tree_memory import GRID
    from xmlbench.runs.runner import resolved_config

    config = resolved_config(RunOptions(dataset=str(tiny), model="tree", preset="low-memory"))["model_config"]
    assert (config["n_trees"], config["centroid_threshold"]) == (1, 0.1)
    assert {k: config[k] for k in GRID["serial1-ct0.1"][1]} == GRID["serial1-ct0.1"][1]  # the README's row
    default = resolved_config(RunOptions(dataset=str(tiny), model="tree"))["model_config"]
    assert (default["n_trees"], default["centroid_threshold"]) == (3, 0.0)


@needs_omikuji
def test_a_many_label_multi_tree_fit_names_the_low_memory_preset(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    from xmlbench.models.baselines import tree

    monkeypatch.setattr(tree, "MANY_LABELS", 1)
    run(RunOptions(dataset=str(tiny), model="tree", out=str(tmp_path / "many"), progress=False))
    assert "--preset low-memory peaked at 5.8 GB" in (tmp_path / "many" / "train.log").read_text()
    run(RunOptions(dataset=str(tiny), model="tree", preset="low-memory", out=str(tmp_path / "one"), progress=False))
    assert "--preset low-memory" not in (tmp_path / "one" / "train.log").read_text()
