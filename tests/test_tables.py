"""Result tables, comparisons, plots and the results index, from hand-made run records in tmp folders."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmlbench.data.labels import Truth
from xmlbench.errors import UserError
from xmlbench.io import write_json
from xmlbench.results import reference as ref
from xmlbench.results.compare import bootstrap_mean_ci, compare, doc_scores, hit_matrix, render_comparison
from xmlbench.results.index import write_results_index
from xmlbench.results.table import ENSEMBLE, SINGLE, ablation_table, build_table, render
from xmlbench.runs.record import write_predictions

FP, TFP = "f" * 32, "t" * 32


def numbered(n: int) -> list[str]:
    """Label names of hand-made runs and truths: id i is label "li" on both sides."""
    return [f"l{i}" for i in range(n)]


def named(truth: sp.csr_matrix) -> Truth:
    """Hand-made test labels with the names and dataset fingerprint that ``make_run`` uses."""
    return Truth(truth, numbered(truth.shape[1]), FP)


def make_run(
    root: Path,
    name: str,
    *,
    seed: int = 0,
    model: str = "lightxml",
    encoder: str | None = "bert-base",
    variants: tuple[str, ...] = (),
    dataset: str = "eurlex4k",
    dataset_path: str = "datasets/eurlex4k",
    fp: str = FP,
    tfp: str = TFP,
    split: str = "valid",
    test: dict[str, float] | None = None,
    ids: np.ndarray | None = None,
    members: list[str] | None = None,
    n_parameters: int = 1000,
    fit: float = 10.0,
    n_test: int = 4,
    label_names: list[str] | None = None,
) -> Path:
    """Write a complete run folder (record.json, predictions.npz) the way the runner does."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    record = {
        "status": "complete",
        "command": f"xmlbench train {dataset} --model {model} --seed {seed}",
        "model": model,
        "encoder": encoder,
        "variants": list(variants),
        "preset": "default",
        "seed": seed,
        "config": {},
        "options": {"select_on": "test" if split == "test" else "valid"},
        "dataset": {"name": dataset, "path": dataset_path, "fingerprint": fp, "test_fingerprint": tfp,
                    "n_train": 10, "n_select": 2, "n_test": n_test, "n_labels": 8},
        "selection": {"split": split},
        "metrics": {"test": test or {}},
        "n_parameters": n_parameters,
        "timing_s": {"load": 0.1, "fit": fit},
        "peak_rss_mb": 100.0,
        "code": {"commit": "abcdef1234567890", "dirty": False},
        "run_dir": str(run_dir),
        "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T00:01:00+00:00",
    }
    if members is not None:
        record["ensemble"] = {"members": members}
    if ids is None:
        ids = np.tile(np.arange(10, dtype=np.int32), (n_test, 1))
    names = label_names if label_names is not None else numbered(max(int(ids.max()) + 1, 8))
    write_predictions(run_dir, ids, np.zeros(ids.shape, np.float32), names)
    write_json(run_dir / "record.json", record)
    return run_dir


def p(p1: float, p3: float = 70.0, p5: float = 60.0) -> dict[str, float]:
    return {"P@1": p1, "P@3": p3, "P@5": p5, "nDCG@5": p5 + 5, "PSP@5": p5 - 20}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Three seeds of lightxml, one of lightxml +se, an ensemble, and a wiki31k run."""
    for seed, p1 in enumerate([86.0, 86.2, 86.1]):
        make_run(tmp_path, f"base{seed}", seed=seed, test=p(p1, 74.0 + seed, 62.0))
    make_run(tmp_path, "se0", variants=("se", "loss-correction"), test=p(85.0, 76.0, 61.0))
    make_run(tmp_path, "ens", model="lightxml-ensemble", encoder=None, members=["a", "b", "c"],
             test=p(88.0, 77.0, 64.0))
    make_run(tmp_path, "wiki0", dataset="wiki31k", fp="w" * 32, tfp="v" * 32, test=p(87.0))
    return tmp_path


# --------------------------------------------------------------------------------------------- cells
def test_cells_show_mean_sample_std_and_n(runs: Path) -> None:
    t = build_table([runs], metrics=["P@1", "P@3", "P@5"])
    row = t.row("lightxml (bert-base)")
    stat = row.values["eurlex4k P@1"]
    assert stat.n == 3 and stat.mean == pytest.approx(86.1)
    assert stat.std == pytest.approx(0.1)  # sample std (ddof=1): population std would be 0.0816
    assert row.cells["eurlex4k P@1"] == "86.10 ± 0.10 (n=3)"
    assert row.cells["eurlex4k P@3"] == "75.00 ± 1.00 (n=3)"
    assert t.row("lightxml (bert-base) +se+loss-correction").cells["eurlex4k P@1"] == "85.00 (n=1)"
    assert row.cells["wiki31k P@1"] == "87.00 (n=1)"
    assert [c.key for c in t.columns][:4] == ["eurlex4k P@1", "eurlex4k P@3", "eurlex4k P@5", "wiki31k P@1"]


def test_best_marked_per_column_among_single_models(runs: Path) -> None:
    t = build_table([runs], metrics=["P@1", "P@3"])
    base, se = t.row("lightxml (bert-base)"), t.row("lightxml (bert-base) +se+loss-correction")
    assert "eurlex4k P@1" in base.best and "eurlex4k P@1" not in se.best
    assert "eurlex4k P@3" in se.best and "eurlex4k P@3" not in base.best
    assert "wiki31k P@1" not in base.best  # a column with one contender marks nothing
    md = render(t, "md")
    assert "**86.10 ± 0.10 (n=3)**" in md and "**76.00 (n=1)**" in md


def test_ensembles_have_their_own_section_and_ranking(runs: Path) -> None:
    t = build_table([runs], metrics=["P@1"])
    singles = [r.label for r in t.section(SINGLE).rows]
    ensembles = [r.label for r in t.section(ENSEMBLE).rows]
    assert ensembles == ["lightxml-ensemble (3 members)"]
    assert "lightxml-ensemble (3 members)" not in singles
    # The ensemble's 88.00 is higher, yet the single-model best stays marked.
    assert "eurlex4k P@1" in t.row("lightxml (bert-base)").best
    md = render(t, "md")
    assert md.index("**Single models**") < md.index("**Ensembles**")


# ---------------------------------------------------------------------------------------- reference
def test_reference_rows_and_gap(runs: Path) -> None:
    t = build_table([runs], metrics=["P@1", "P@5", "nDCG@5"], reference=True)
    single_labels = [r.label for r in t.section(SINGLE).rows]
    ens_labels = [r.label for r in t.section(ENSEMBLE).rows]
    assert "[published] LightXML single bert (independent rerun)" in single_labels
    assert "[published] Parabel (trees, CPU)" in single_labels
    assert "[published] LightXML (3-model ensemble)" in ens_labels
    assert "[published] XR-Transformer (3-model ensemble)" in ens_labels
    assert t.row("[published] LightXML (3-model ensemble)").cells["eurlex4k P@1"] == "87.63"
    assert t.row("[published] XR-Transformer (3-model ensemble)").cells["eurlex4k P@1"] == "88.41†"
    assert t.row("[published] Parabel (trees, CPU)").cells.get("eurlex4k nDCG@5", "") == ""
    gap = t.row("gap: our best single - [published] LightXML single bert (independent rerun)")
    assert gap.values["eurlex4k P@1"] == pytest.approx(86.1 - 86.16)
    assert gap.cells["eurlex4k P@1"] == "-0.06"
    assert gap.values["wiki31k P@1"] == pytest.approx(87.0 - 87.77)
    assert "eurlex4k nDCG@5" not in gap.values  # nothing published to compare with
    assert not any(r.best for r in t.rows() if r.kind != "ours")  # published rows are never ranked
    assert any("unverified" in n for n in t.notes)
    assert any("Jiang et al." in n for n in t.notes)


def test_reference_data_is_complete() -> None:
    for pub in ref.PUBLISHED:
        assert set(pub.scores) == set(ref.DATASETS), pub.key
        assert all(set(v) == {"P@1", "P@3", "P@5"} for v in pub.scores.values())
        assert pub.source
    assert ref.published("lightxml-ensemble").ensemble
    assert not ref.published(ref.SINGLE_MODEL_REFERENCE).ensemble
    assert ref.published("lightxml-single-bert").value("amazon670k", "P@5") == 38.5
    assert not ref.published("xr-transformer-ensemble").is_verified("wiki31k")
    assert ref.published("xr-transformer-ensemble").is_verified("wiki500k")


# ------------------------------------------------------------------------------------ incompatibility
def test_different_fingerprints_are_split_not_averaged(tmp_path: Path) -> None:
    make_run(tmp_path, "a0", seed=0, test=p(80.0))
    make_run(tmp_path, "a1", seed=1, test=p(81.0))
    make_run(tmp_path, "a2", seed=2, test=p(90.0), fp="g" * 32, tfp="u" * 32)
    make_run(tmp_path, "b0", model="bonsai", encoder=None, test=p(85.0))
    t = build_table([tmp_path], metrics=["P@1"])
    main = t.row("lightxml (bert-base)")
    other = t.row("lightxml (bert-base) [data gggggggg]")
    assert main.values["eurlex4k P@1"].n == 2 and main.values["eurlex4k P@1"].mean == pytest.approx(80.5)
    assert other.values["eurlex4k P@1"].n == 1 and other.values["eurlex4k P@1"].mean == 90.0
    assert not other.best  # the 90.0 on other data is not ranked
    assert "eurlex4k P@1" in t.row("bonsai").best
    conflict = [n for n in t.notes if "not averaged" in n]
    assert len(conflict) == 1 and "gggggggg" in conflict[0] and "ffffffff" in conflict[0]
    assert "[data gggggggg]" in render(t, "md")


def test_only_test_fingerprint_differs(tmp_path: Path) -> None:
    make_run(tmp_path, "a0", seed=0, test=p(80.0))
    make_run(tmp_path, "a1", seed=1, test=p(81.0))
    make_run(tmp_path, "a2", seed=2, test=p(82.0), tfp="s" * 32)
    t = build_table([tmp_path], metrics=["P@1"])
    assert t.row("lightxml (bert-base) [test set ssssssss]").values["eurlex4k P@1"].n == 1


def test_test_set_selection_gets_its_own_row_and_note(tmp_path: Path) -> None:
    make_run(tmp_path, "v0", seed=0, test=p(80.0))
    make_run(tmp_path, "v1", seed=1, test=p(81.0))
    make_run(tmp_path, "t0", seed=0, test=p(95.0), split="test")
    make_run(tmp_path, "o0", model="attentionxml", encoder=None, test=p(79.0))
    t = build_table([tmp_path], metrics=["P@1"])
    fair, peeked = t.row("lightxml (bert-base)"), t.row("lightxml (bert-base) [selected on TEST]")
    assert fair.values["eurlex4k P@1"].mean == pytest.approx(80.5) and fair.values["eurlex4k P@1"].n == 2
    assert peeked.values["eurlex4k P@1"].mean == 95.0
    assert "eurlex4k P@1" in fair.best and not peeked.best
    assert any("selected on test" in n and "not averaged" in n for n in t.notes)
    assert any("chose their checkpoint on the test split" in n for n in t.notes)


def test_duplicate_seed_is_noted(tmp_path: Path) -> None:
    make_run(tmp_path, "a", seed=0, test=p(80.0))
    make_run(tmp_path, "b", seed=0, test=p(81.0))
    t = build_table([tmp_path], metrics=["P@1"])
    assert any("ran more than once" in n for n in t.notes)


def test_no_runs_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no finished runs"):
        build_table([tmp_path])


# ---------------------------------------------------------------------------------------- rendering
def test_csv_and_latex_shapes(runs: Path) -> None:
    t = build_table([runs], metrics=["P@1", "P@5"], reference=True)
    rows = list(csv.reader(io.StringIO(render(t, "csv"))))
    width = 2 + len(t.columns)
    assert all(len(r) == width for r in rows)
    assert rows[0] == ["section", "system", "eurlex4k P@1", "eurlex4k P@5", "wiki31k P@1", "wiki31k P@5"]
    data = [r for r in rows[1:] if r[0] != "note"]
    assert len(data) == len(t.rows())
    base = next(r for r in data if r[1] == "lightxml (bert-base)")
    assert base[2] == "86.10 ± 0.10 (n=3)*"
    assert sum(r[0] == "note" for r in rows) == len(t.notes)

    tex = render(t, "latex")
    assert "\\begin{tabular}{lrrrr}" in tex and "\\end{tabular}" in tex
    body = [ln for ln in tex.splitlines() if ln.endswith("\\\\") and "multicolumn{5}" not in ln]
    assert all(ln.count("&") == len(t.columns) - (ln.count("multicolumn{2}") and 2) for ln in body)
    assert "\\textbf{86.10 $\\pm$ 0.10 (n=3)}" in tex
    assert "\\multicolumn{2}{c}{eurlex4k}" in tex
    assert "88.41$^\\dagger$" in tex and "87.63$^" not in tex  # daggers only on unverified cells
    with pytest.raises(UserError):
        render(t, "html")


# ------------------------------------------------------------------------ per-document scores, compare
def test_doc_scores_follow_the_metric_conventions() -> None:
    truth = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    ids = np.array([[1, 1, 0], [-1, 2, 7], [0, 1, 2]])  # a repeat scores once; -1 and 7 are misses
    assert hit_matrix(ids, truth, 3).tolist() == [[True, False, True], [False, True, False], [False] * 3]
    assert doc_scores(ids, truth, "P@3") == pytest.approx([2 / 3, 1 / 3, 0])
    assert doc_scores(ids, truth, "P@5") == pytest.approx([2 / 5, 1 / 5, 0])  # short rows are misses
    idcg2 = 1 + 1 / np.log2(3)
    assert doc_scores(ids, truth, "nDCG@3") == pytest.approx([(1 + 1 / 2) / idcg2, (1 / np.log2(3)), 0])
    assert doc_scores(ids, truth, "R@3") == pytest.approx([1, 1, 0])


def test_doc_scores_agree_with_evaluate() -> None:
    from xmlbench.metrics import evaluate

    truth, perms = constructed_case(n_docs=300, seed=3)
    ids_a = arm_predictions(perms, 0.5, np.random.default_rng(0))
    ids_a[:, 3] = ids_a[:, 0]  # a repeated id and a missing one, to exercise the conventions
    ids_a[:, 4] = -1
    m = evaluate(ids_a, truth, ks=(1, 3, 5))
    for key in ("P@1", "P@5", "nDCG@5", "R@5"):
        assert 100 * doc_scores(ids_a, truth, key).mean() == pytest.approx(m[key])


def constructed_case(n_docs: int, seed: int, n_labels: int = 40) -> tuple[sp.csr_matrix, np.ndarray]:
    """Truth with 5 labels a document, and each document's labels in random order (true ones first)."""
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(n_labels), (n_docs, 1)), axis=1)
    truth = sp.csr_matrix((np.ones(5 * n_docs, np.float32), np.sort(perms[:, :5], axis=1).ravel(),
                           np.arange(0, 5 * n_docs + 1, 5)), shape=(n_docs, n_labels))
    return truth, perms


def arm_predictions(perms: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Top-10 whose first 5 slots hold exactly ``share`` of hits, at random places; slots 6-10 miss.

    Its P@5 is exactly 100 * share, so the true P@5 delta between two arms is known by construction."""
    true = rng.permuted(perms[:, :5], axis=1)
    false = rng.permuted(perms[:, 5:], axis=1)
    hits = np.zeros(true.size, bool)
    hits[: round(share * true.size)] = True
    hits = rng.permuted(hits).reshape(true.shape)
    return np.concatenate([np.where(hits, true, false[:, :5]), false[:, 5:10]], axis=1).astype(np.int32)


# Hit shares per seed: the arm gains 10, 10.2 and 10.4 points of P@5 (mean 10.2) over the base.
SHARES = {"base": (0.5, 0.5, 0.5), "se": (0.6, 0.602, 0.604)}
TRUE_DELTA = 10.2


def arm_runs(root: Path, n_seeds: int = 3, n_docs: int = 2000) -> tuple[dict[str, list[Path]], sp.csr_matrix]:
    """Base and arm "se" on one test set with known P@5 (SHARES); record metrics come from the predictions."""
    truth, perms = constructed_case(n_docs, seed=100)
    dirs: dict[str, list[Path]] = {"base": [], "se": []}
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        for arm, shares in SHARES.items():
            ids = arm_predictions(perms, shares[seed], rng)
            test = {k: 100 * doc_scores(ids, truth, k).mean() for k in ("P@1", "P@3", "P@5")}
            dirs[arm].append(make_run(root, f"{arm}{seed}", seed=seed, variants=(arm,), test=test, ids=ids,
                                      n_test=n_docs, n_parameters=2_500_000 if arm == "se" else 2_000_000,
                                      fit=100.0 + seed))
    return dirs, truth


def test_compare_delta_paired_test_and_bootstrap(tmp_path: Path) -> None:
    dirs, truth = arm_runs(tmp_path)
    loads = []

    def loader(path: str) -> Truth:
        loads.append(path)
        return named(truth)

    result = compare(dirs["base"], dirs["se"], loader, metrics=["P@1", "P@5", "PSP@5"])
    row = result["metrics"]["P@5"]
    assert row["n_a"] == row["n_b"] == 3
    assert row["delta"] == pytest.approx(row["mean_b"] - row["mean_a"])
    assert row["paired_t"]["n"] == 3 and row["paired_t"]["p"] is not None and row["paired_t"]["p"] < 0.05
    assert row["delta"] == pytest.approx(TRUE_DELTA)
    lo, hi = row["bootstrap"]["ci95"]
    assert lo < TRUE_DELTA < hi and hi - lo < 3
    assert row["bootstrap"]["delta"] == pytest.approx(row["delta"])  # same runs, same documents
    assert "bootstrap" not in result["metrics"]["PSP@5"]
    assert loads == ["datasets/eurlex4k"]
    text = render_comparison(result)
    assert "P@5" in text and "p=" in text and "[+" in text


def test_compare_refuses_different_test_sets(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", test=p(80.0))
    b = make_run(tmp_path, "b", test=p(81.0), tfp="x" * 32)
    with pytest.raises(UserError, match="different test sets"):
        compare([a], [b], None)


def test_bootstrap_ci_is_seeded_and_covers_the_mean() -> None:
    diff = np.random.default_rng(0).choice([-0.2, 0.0, 0.2, 0.4], size=5000)
    ci1, ci2 = bootstrap_mean_ci(diff, seed=1), bootstrap_mean_ci(diff, seed=1)
    assert ci1 == ci2 and ci1[0] < diff.mean() < ci1[1]
    wide = np.random.default_rng(0).random(5000)  # many distinct values: the index-resampling path
    lo, hi = bootstrap_mean_ci(wide, n_resamples=200)
    assert lo < wide.mean() < hi and hi - lo < 0.05


# ------------------------------------------------------------------------------------------ ablation
def test_ablation_table_delta_ttest_and_bootstrap(tmp_path: Path) -> None:
    dirs, truth = arm_runs(tmp_path)
    t = ablation_table(dirs, base="base", metrics=["P@1", "P@5"], truth_loader=lambda _: named(truth))
    base, se = t.row("base"), t.row("se")
    mean_b, mean_s = base.values["P@5 mean"].mean, se.values["P@5 mean"].mean
    assert se.values["P@5 delta"] == pytest.approx(mean_s - mean_b)
    assert base.cells["P@5 delta"] == "(base)"
    assert se.values["P@5 p"]["n"] == 3 and se.values["P@5 p"]["p_holm"] < 0.01
    assert se.values["P@5 p"]["p_holm"] == se.values["P@5 p"]["p"]  # one arm: Holm changes nothing
    assert se.cells["P@5 Δ"] == f"{mean_s - mean_b:+.2f}**"
    lo, hi = se.values["P@5 delta 95% CI"]["ci95"]
    assert mean_s - mean_b == pytest.approx(TRUE_DELTA)
    assert lo < TRUE_DELTA < hi and hi - lo < 3
    assert se.cells["params"] == "2.5M" and base.cells["params"] == "2.0M"
    assert se.values["fit s"] == pytest.approx(101.0)
    assert "P@5 mean" in se.best
    md = render(t, "md")
    assert "| arm | n | P@1 mean | P@1 Δ | P@5 mean | P@5 Δ |" in md
    assert "| arm | P@1 p | P@5 p | P@5 delta 95% CI | params | fit s |" in md  # the second, compact table
    header = next(csv.reader(io.StringIO(render(t, "csv"))))
    assert "P@5 delta" in header and "P@5 p unadjusted" in header and "P@5 Δ" not in header


def test_ablation_needs_the_base_and_one_test_set(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", test=p(80.0))
    b = make_run(tmp_path, "b", test=p(81.0), tfp="x" * 32)
    with pytest.raises(UserError, match="no base arm"):
        ablation_table({"x": [a]})
    with pytest.raises(UserError, match="different test sets"):
        ablation_table({"base": [a], "x": [b]})


def test_ttest_is_skipped_with_one_matching_seed(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", seed=0, test=p(80.0))
    b = make_run(tmp_path, "b", seed=0, variants=("se",), test=p(81.0))
    t = ablation_table({"base": [a], "se": [b]}, metrics=["P@1"])
    assert t.row("se").values["P@1 p"]["p"] is None
    assert t.row("se").cells["P@1 p"] == "n<3"


def _seeded_arms(root: Path, base: list[float], arms: dict[str, list[float]]) -> dict[str, list[Path]]:
    """Run folders with the given P@1 per seed for the base and each arm (same seeds, same test set)."""
    dirs = {"base": [make_run(root, f"base{s}", seed=s, test=p(v)) for s, v in enumerate(base)]}
    for name, values in arms.items():
        dirs[name] = [make_run(root, f"{name}{s}", seed=s, variants=(name,), test=p(v))
                      for s, v in enumerate(values)]
    return dirs


def test_two_seeds_print_n_lt_3_not_a_p_value(tmp_path: Path) -> None:
    # Deltas 1.48 and 1.48 (equal up to rounding): the old table printed a p of about 1e-16 here.
    dirs = _seeded_arms(tmp_path, [49.9, 50.3], {"lc": [51.38, 51.78], "se": [42.0, 45.0]})
    t = ablation_table(dirs, metrics=["P@1"])
    for arm in ("lc", "se"):
        assert t.row(arm).values["P@1 p"]["p"] is None and t.row(arm).cells["P@1 p"] == "n<3"
    assert t.row("lc").cells["P@1 Δ"] == "+1.48 (n<3)" and t.row("se").cells["P@1 Δ"] == "-6.60 (n<3)"
    md = render(t, "md")
    assert "e-" not in md.split("Notes:")[0]  # no p-value anywhere in the tables
    assert "no arm had a test" in " ".join(t.notes)


def test_identical_deltas_over_three_seeds_are_na(tmp_path: Path) -> None:
    # +1.48 on every seed: the float deltas spread by ~4e-15 and scipy's p is ~1e-30, a meaningless claim.
    dirs = _seeded_arms(tmp_path, [49.9, 50.3, 49.5], {"lc": [51.38, 51.78, 50.98]})
    t = ablation_table(dirs, metrics=["P@1"])
    assert t.row("lc").values["P@1 p"]["p"] is None
    assert t.row("lc").cells["P@1 p"] == "n/a" and t.row("lc").cells["P@1 Δ"] == "+1.48 (n/a)"
    assert any("1e-9 x max(1, |mean difference|)" in n for n in t.notes)


def test_p_values_are_holm_adjusted_across_arms_per_metric(tmp_path: Path) -> None:
    from scipy import stats

    base = [50.0, 51.0, 49.0]
    arms = {"a": [52.0, 53.1, 50.9], "b": [50.5, 51.8, 49.4], "c": [50.1, 50.7, 49.3]}
    t = ablation_table(_seeded_arms(tmp_path, base, arms), metrics=["P@1", "P@3"])
    raw = {n: stats.ttest_rel(v, base).pvalue for n, v in arms.items()}
    # By hand: m = 3 arms; sorted ascending, multiply by 3, 2, 1 and keep the running maximum.
    (n1, p1), (n2, p2), (n3, p3) = sorted(raw.items(), key=lambda kv: kv[1])
    expected = {n1: 3 * p1, n2: max(3 * p1, 2 * p2), n3: max(3 * p1, 2 * p2, p3)}
    for name in arms:
        test = t.row(name).values["P@1 p"]
        assert test["p"] == pytest.approx(raw[name])
        assert test["p_holm"] == pytest.approx(min(1, expected[name]))
    assert raw["a"] < 0.01 and 0.01 < raw["b"] < 0.05 < expected["b"]  # b is significant only unadjusted
    assert t.row("a").cells["P@1 Δ"] == "+2.00**"
    assert t.row("b").cells["P@1 Δ"] == "+0.57"  # no star once corrected for the three arms
    assert t.row("b").cells["P@1 p unadjusted"] == f"{raw['b']:.3f}"
    assert t.row("a").cells["P@3 p"] == "n/a"  # P@3 is 70.0 everywhere: its own family, and no spread
    notes = " ".join(t.notes)
    assert "Holm-Bonferroni-adjusted across the arms with a test (P@1: 3, P@3: 0), per metric" in notes
    assert "* p<0.05, ** p<0.01 after Holm" in notes


def test_ablation_default_columns_fit_a_page(tmp_path: Path) -> None:
    dirs = _seeded_arms(tmp_path, [50.0, 51.0, 49.0], {"se": [52.0, 53.1, 50.9]})
    t = ablation_table(dirs)
    assert [c.key for c in t.printed_columns()] == [
        "n", "P@1 mean", "P@1 Δ", "P@3 mean", "P@3 Δ", "P@5 mean", "P@5 Δ", "PSP@5 mean", "PSP@5 Δ"]
    assert [c.key for c in t.detail_columns()] == [
        "P@1 p", "P@3 p", "P@5 p", "PSP@5 p", "P@5 delta 95% CI", "params", "fit s"]
    md = render(t, "md")
    assert "nDCG@5" not in md
    assert max(len(line.split(" | ")) for line in md.splitlines() if line.startswith("|")) == 10
    assert t.row("se").cells["P@1 mean"] == "52.00 ± 1.10"  # n has its own column
    other = ablation_table(dirs, metrics=["P@1", "nDCG@5"])
    assert [c.key for c in other.printed_columns()] == ["n", "P@1 mean", "P@1 Δ", "nDCG@5 mean", "nDCG@5 Δ"]


def _ablation_sweep(root: Path) -> tuple[dict[str, list[Path]], list, sp.csr_matrix]:
    from xmlbench.experiments.ablate import Arm

    dirs, truth = arm_runs(root / "runs", n_docs=300)
    return dirs, [Arm("base", (), "clustered"), Arm("se", ("se",), "clustered")], truth


def test_write_tables_writes_the_delta_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from xmlbench.experiments.ablate import write_tables

    dirs, arms, truth = _ablation_sweep(tmp_path)
    md = write_tables(tmp_path / "sweep", dirs, arms, "synth", truth_loader=lambda _: named(truth))
    png, pdf = tmp_path / "sweep" / "ablation-deltas.png", tmp_path / "sweep" / "ablation-deltas.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert "](ablation-deltas.png)" in md and md == (tmp_path / "sweep" / "ablation.md").read_text()[:-1]
    assert "| arm | n | P@1 mean | P@1 Δ | P@3 mean |" in md  # the default metrics
    assert "plot: ablation-deltas.png" in (tmp_path / "sweep" / "ablation.csv").read_text()


def test_write_tables_without_matplotlib_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from xmlbench.experiments.ablate import write_tables

    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # what a missing package looks like to an import
    dirs, arms, truth = _ablation_sweep(tmp_path)
    md = write_tables(tmp_path / "sweep", dirs, arms, "synth", metrics=["P@1"],
                      truth_loader=lambda _: named(truth))
    assert not list((tmp_path / "sweep").glob("ablation-deltas*"))
    assert "delta plot ablation-deltas.png skipped: matplotlib is not installed" in md
    assert "P@3" not in md.split("Notes:")[0]


def test_ablate_cli_passes_metrics_to_the_tables(tiny_dataset: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    from xmlbench.cli import main
    from xmlbench.experiments import ablate

    seen = []
    monkeypatch.setattr(ablate, "run_ablation", lambda *a, **k: {})
    monkeypatch.setattr(ablate, "write_tables", lambda *a, metrics=None, **k: seen.append(metrics) or "")
    common = ["ablate", str(tiny_dataset), "--seeds", "1", "--mode", "clustered", "--variants-list", "se",
              "--root", str(tmp_path / "sweep")]
    assert main(common + ["--metrics", "P@1,nDCG@5"]) == 0
    assert main(common) == 0
    assert seen == [["P@1", "nDCG@5"], None]  # None: the table's default columns
    assert main(common + ["--metrics", "P@1,Q@5"]) == 2  # refused before anything trains
    assert "unknown metric 'Q'" in capsys.readouterr().err


def test_ablation_says_when_runs_trained_on_different_hardware(tmp_path: Path) -> None:
    import json

    runs = {}
    for arm, variants in (("base", ()), ("se", ("se",))):
        runs[arm] = []
        for seed, hw in ((0, {"torch_threads": 1}), (1, {"gpu": "NVIDIA H100 80GB HBM3"})):
            run_dir = make_run(tmp_path, f"{arm}{seed}", seed=seed, variants=variants, test=p(80.0 + seed))
            record = json.loads((run_dir / "record.json").read_text())
            record["hardware"] = hw
            (run_dir / "record.json").write_text(json.dumps(record))
            runs[arm].append(run_dir)
    notes = " ".join(ablation_table(runs, metrics=["P@1"], title="T").notes)
    assert "different hardware (seed 0: CPU (1 threads); seed 1: NVIDIA H100 80GB HBM3)" in notes
    same = {arm: dirs[:1] for arm, dirs in runs.items()}
    assert "different hardware" not in " ".join(ablation_table(same, metrics=["P@1"]).notes)


# ----------------------------------------------------------------------------------------- index, CLI
def test_results_index_lists_runs_and_commands(runs: Path, tmp_path: Path) -> None:
    path = write_results_index(tmp_path / "results", [runs])
    text = path.read_text()
    assert path.name == "README.md"
    assert "## eurlex4k" in text and "## wiki31k" in text
    assert "`xmlbench train eurlex4k --model lightxml --seed 2`" in text
    assert "abcdef1234" in text and "86.20" in text
    assert "ensemble of `a`, `b`, `c`" in text


def three_label_dataset(tmp_path: Path):
    """A real 3-label dataset folder (ids x=0 y=1 z=2; train counts 2, 2, 1; test labels {x}, {z, y})."""
    from xmlbench.data.dataset import open_dataset

    data = tmp_path / "tiny"
    data.mkdir()
    (data / "train_texts.txt").write_text("a b\nc d\ne f\n")
    (data / "train_labels.txt").write_text("x y\ny z\nx\n")
    (data / "test_texts.txt").write_text("a\nc\n")
    (data / "test_labels.txt").write_text("x\nz y\n")
    return data, open_dataset(str(data))


def test_cli_table_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from xmlbench.cli.results import add_commands

    data, ds = three_label_dataset(tmp_path)
    tfp = ds.test.texts.digest
    ids = np.array([[0, 1, 2], [2, 1, 0]], np.int32)  # label ids x=0 y=1 z=2
    for seed in range(2):
        make_run(tmp_path / "runs" / "a", f"s{seed}", seed=seed, dataset="tiny", dataset_path=str(data),
                 fp=ds.fingerprint, tfp=tfp, test=p(100.0), ids=ids, n_test=2, label_names=ds.label_names)
        make_run(tmp_path / "runs" / "b", f"s{seed}", seed=seed, dataset="tiny", dataset_path=str(data),
                 fp=ds.fingerprint, tfp=tfp, test=p(50.0), ids=ids[:, ::-1].copy(), n_test=2,
                 variants=("se",), label_names=ds.label_names)
    parser = argparse.ArgumentParser(prog="xmlbench")
    add_commands(parser.add_subparsers())

    args = parser.parse_args(["table", str(tmp_path / "runs"), "--metrics", "P@1,P@3", "--format", "csv"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "lightxml (bert-base) +se" in out and "100.00 ± 0.00 (n=2)*" in out

    args = parser.parse_args(["compare", str(tmp_path / "runs/a"), str(tmp_path / "runs/b"), "--json",
                              "--metrics", "P@1"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["P@1"]["delta"] == -50.0
    # From the predictions (not the records): A's first id is a true label in both rows, B's in neither.
    assert result["metrics"]["P@1"]["bootstrap"]["delta"] == pytest.approx(-100.0)


# ------------------------------------------------------------------------------------------------ plots
def test_plots_write_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from xmlbench.results.plots import (
        decile_contributions,
        plot_ablation_deltas,
        plot_label_deciles,
        plot_training_curves,
    )

    dirs, truth = arm_runs(tmp_path / "runs", n_docs=300)
    label_counts = np.arange(truth.shape[1])[::-1] * 3
    shares = decile_contributions(np.load(dirs["se"][0] / "predictions.npz")["ids"], truth, label_counts)
    assert shares.shape == (10,)
    assert shares.sum() == pytest.approx(100 * doc_scores(np.load(dirs["se"][0] / "predictions.npz")["ids"],
                                                          truth, "P@5").mean())
    for d in dirs["base"] + dirs["se"]:
        lines = [{"step": s, "epoch": s // 10, "loss": 1.0 / (s + 1)} for s in range(0, 50, 5)]
        for s in (10, 20, 30, 40):
            evaluation = {"P@1": 50 + s, "P@5": 30 + s}
            lines.append({"step": s, "epoch": s // 10, "split": "valid", "metrics": evaluation})
        (d / "history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "plots"
    written = [
        plot_label_deciles(dirs, named(truth), label_counts, out / "deciles.png"),
        plot_training_curves(dirs["base"] + dirs["se"], out / "curves.png"),
        plot_ablation_deltas(dirs, out / "ablation.png"),
        plot_ablation_deltas(dirs, out / "ablation-all.png", metrics=["P@1", "P@3", "P@5"]),
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_ablation_deltas(dirs, out / "ablation.pdf").read_bytes()[:5] == b"%PDF-"


# ------------------------------------------------------------- metrics from predictions, json, tidy
def tiny_runs(tmp_path: Path) -> Path:
    """Two systems x two seeds on a real 3-label dataset (ids x=0 y=1 z=2; train counts 2, 2, 1), test
    labels {x}, {z, y}. System a predicts [x, y, z], [z, y, x]; system +se the reverse of each row. The
    records hold only the hand-made P@k of ``p`` (a: P@1 100, +se: P@1 50), never R, Cov or terciles."""

    data, ds = three_label_dataset(tmp_path)
    ids = np.array([[0, 1, 2], [2, 1, 0]], np.int32)
    for seed in range(2):
        for arm, arm_ids, variants, p1 in (("a", ids, (), 100.0), ("b", ids[:, ::-1].copy(), ("se",), 50.0)):
            make_run(tmp_path / "runs" / arm, f"s{seed}", seed=seed, dataset="tiny", dataset_path=str(data),
                     fp=ds.fingerprint, tfp=ds.test.texts.digest, test=p(p1), ids=arm_ids, n_test=2,
                     variants=variants, label_names=ds.label_names)
    return tmp_path / "runs"


def _loader():
    from xmlbench.data.dataset import open_dataset

    return open_dataset


def test_table_computes_metrics_the_records_lack_from_predictions(tmp_path: Path) -> None:
    root = tiny_runs(tmp_path)
    metrics = ["P@1", "R@2", "Cov@1", "Cov@2", "P@1/head", "P@1/torso", "P@1/tail"]
    t = build_table([root], metrics, dataset_loader=_loader())
    a, b = t.row("lightxml (bert-base)"), t.row("lightxml (bert-base) +se")
    mean = {row.label: {m: row.values[f"tiny {m}"].mean for m in metrics} for row in (a, b)}
    # a: P@1 from the record (100); R@2: row 0 finds x (1/1), row 1 finds z, y (2/2) -> 100.
    # Cov@1: x and z of the 3 test labels -> 66.67; Cov@2: + y -> 100. Terciles of x, y, z by train
    # occurrences (5): x starts at 0 -> head, y at 2 (6 // 5 = 1) -> torso, z at 4 (12 // 5 = 2) -> tail;
    # P@1 hits: x (head) in row 0, z (tail) in row 1 -> 50 / 0 / 50.
    assert mean[a.label] == pytest.approx({"P@1": 100.0, "R@2": 100.0, "Cov@1": 200 / 3, "Cov@2": 100.0,
                                           "P@1/head": 50.0, "P@1/torso": 0.0, "P@1/tail": 50.0})
    # +se predicts [z, y, x], [x, y, z]: R@2 row 0 misses x (0), row 1 finds y (1/2) -> 25; Cov@1 nothing;
    # Cov@2 y -> 33.33; no hit at rank 0. P@1 stays the record's 50: a record's number is never replaced.
    assert mean[b.label] == pytest.approx({"P@1": 50.0, "R@2": 25.0, "Cov@1": 0.0, "Cov@2": 100 / 3,
                                           "P@1/head": 0.0, "P@1/torso": 0.0, "P@1/tail": 0.0})
    assert any("computed from the run's saved predictions" in n for n in t.notes)
    assert any("terciles" in n for n in t.notes)
    # without a dataset to score against, a metric the records lack stays empty (as before)
    assert build_table([root], ["R@2"]).row(a.label).cells["tiny R@2"] == ""


def test_table_refuses_k_beyond_the_saved_predictions(tmp_path: Path) -> None:
    root = tiny_runs(tmp_path)
    with pytest.raises(UserError, match=r"R@10: k = 10 is more than the 3 predictions per document saved"):
        build_table([root], ["P@1", "R@10"], dataset_loader=_loader())


def test_json_format_has_numbers_and_notes(tmp_path: Path) -> None:
    root = tiny_runs(tmp_path)
    doc = json.loads(render(build_table([root], ["P@1", "Cov@2"], dataset_loader=_loader()), "json"))
    rows = {r["label"]: r for s in doc["sections"] for r in s["rows"]}
    cell = rows["lightxml (bert-base) +se"]["values"]["tiny Cov@2"]
    assert cell["mean"] == pytest.approx(100 / 3) and cell["n"] == 2 and cell["std"] == 0.0
    assert rows["lightxml (bert-base)"]["values"]["tiny P@1"]["values"] == [100.0, 100.0]
    assert rows["lightxml (bert-base)"]["best"] == ["tiny Cov@2", "tiny P@1"]
    assert [c["key"] for c in doc["columns"]] == ["tiny P@1", "tiny Cov@2"]
    assert any("computed from the run's saved predictions" in n for n in doc["notes"])


def test_json_of_one_seed_has_null_std(runs: Path) -> None:
    doc = json.loads(render(build_table([runs], ["P@1"]), "json"))
    rows = {r["label"]: r for s in doc["sections"] for r in s["rows"]}
    assert rows["lightxml (bert-base) +se+loss-correction"]["values"]["eurlex4k P@1"] == {
        "mean": 85.0, "std": None, "n": 1, "values": [85.0]}


def test_tidy_format_one_line_per_run_and_metric(tmp_path: Path) -> None:
    root = tiny_runs(tmp_path)
    text = render(build_table([root], ["P@1", "Cov@2", "P@1/tail"], dataset_loader=_loader()), "tidy")
    lines = list(csv.DictReader(io.StringIO(text)))
    assert len(lines) == 2 * 2 * 3  # systems x seeds x metrics
    assert list(lines[0]) == ["section", "system", "run_dir", "dataset", "model", "encoder", "variants",
                              "seed", "protocol", "selection", "split", "metric", "k", "labels", "value"]
    by = {(r["variants"], r["seed"], r["metric"], r["k"], r["labels"]): r for r in lines}
    se = by[("se", "1", "Cov", "2", "all")]
    assert float(se["value"]) == pytest.approx(100 / 3)
    assert se["run_dir"].endswith("b/s1") and se["model"] == "lightxml" and se["split"] == "test"
    assert float(by[("", "0", "P", "1", "tail")]["value"]) == 50.0
    assert float(by[("", "0", "P", "1", "all")]["value"]) == 100.0
    # numbers unquoted, parseable as numbers
    assert all(float(r["value"]) >= 0 and int(r["k"]) >= 1 for r in lines)


def test_cli_table_json_tidy_and_by_frequency(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from xmlbench.cli.results import add_commands

    root = tiny_runs(tmp_path)
    parser = argparse.ArgumentParser(prog="xmlbench")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["table", str(root), "--metrics", "P@1,R@3,PSP@3", "--by-frequency",
                              "--format", "json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    keys = [c["metric"] for c in doc["columns"]]
    assert keys == ["P@1", "P@1/head", "P@1/torso", "P@1/tail", "R@3",
                    "PSP@3", "PSP@3/head", "PSP@3/torso", "PSP@3/tail"]
    row = next(r for s in doc["sections"] for r in s["rows"] if r["label"] == "lightxml (bert-base)")
    parts = [row["values"][f"tiny PSP@3/{t}"]["mean"] for t in ("head", "torso", "tail")]
    assert sum(parts) == pytest.approx(row["values"]["tiny PSP@3"]["mean"])
    args = parser.parse_args(["table", str(root), "--metrics", "R@3", "--by-frequency"])
    with pytest.raises(UserError, match="--by-frequency"):
        args.func(args)
    args = parser.parse_args(["table", str(root), "--metrics", "Cov@3", "--format", "tidy"])
    assert args.func(args) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 4


def test_plots_come_as_png_pdf_and_svg_with_seed_error_bars_and_one_loss_axis_per_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paper plots: every PNG has PDF and SVG siblings; the decile bars carry the seeds' spread (none for
    one run); a flat and a clustered run do not share a loss axis."""
    pytest.importorskip("matplotlib")
    from xmlbench.results import plots

    dirs, truth = arm_runs(tmp_path / "runs", n_docs=300)
    label_counts = np.arange(truth.shape[1])[::-1] * 3
    for arm, mode in (("base", "flat"), ("se", "clustered")):
        for d in dirs[arm]:
            rec = json.loads((d / "record.json").read_text())
            rec["model_details"] = {"mode": mode}
            (d / "record.json").write_text(json.dumps(rec))
            scale = 1.0 if mode == "flat" else 100.0
            (d / "history.jsonl").write_text("".join(json.dumps({"step": s, "loss": scale / (s + 1)}) + "\n"
                                                     for s in range(0, 50, 5)))
    png = plots.plot_training_curves(dirs["base"] + dirs["se"], tmp_path / "p" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in png.with_suffix(".svg").read_bytes()[:500]

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figures.append(fig) or Path(out))
    plots.plot_training_curves(dirs["base"] + dirs["se"], tmp_path / "q.png")
    titles = [ax.get_title() for ax in figures[-1].axes]
    assert titles == ["training loss (lightxml clustered)", "training loss (lightxml flat)", "validation P@5"]
    several = {"two seeds": dirs["se"][:2], "one seed": dirs["base"][:1]}
    assert len(several["two seeds"]) == 2
    plots.plot_label_deciles(several, named(truth), label_counts, tmp_path / "d.png")
    bars = figures[-1].axes[0].containers
    with_errors = [c for c in bars if getattr(c, "errorbar", None) is not None]
    assert len(with_errors) == 1 and "n=2" in with_errors[0].get_label()
