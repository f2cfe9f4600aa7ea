"""Compare two sets of runs of one test set: per metric mean A, mean B, their difference, a paired t-test
over the seeds both sets ran (only from 3 paired seeds on, and never on differences without spread), and
a paired bootstrap over test documents from the saved predictions. ``holm_adjust`` corrects a family of
p-values (the arms of an ablation) for multiple comparisons.

Also home of what tables and plots share: ``Run`` (a finished run folder and its record), the system name a
record stands for, and per-document scores recomputed from ``predictions.npz``. Per-document scores follow
the conventions of :mod:`xmlbench.metrics` (a label repeated in a row scores once; id -1 or out of range is
a miss; P@k divides by k), so their mean equals ``evaluate``'s number. Saved ids are mapped by label name
onto the scored dataset's (:class:`~xmlbench.data.labels.Truth`) first: runs made on copies of the data
with labels in another order score as they should, and a label the dataset lacks is a miss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmlbench.data.labels import Truth
from xmlbench.errors import UserError
from xmlbench.runs.record import find_runs, predictions_onto, read_record

DEFAULT_METRICS = ["P@1", "P@3", "P@5", "nDCG@5", "PSP@5"]
N_RESAMPLES = 1000
TruthLoader = Callable[[str], Truth]  # a dataset path -> its test labels and their names
DatasetLoader = Callable[[str], Any]  # a dataset path -> the opened (fingerprint-checked) Dataset
PS_FAMILIES = ("PSP", "PSnDCG")


# ---------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    """A finished run folder with its record."""

    dir: Path
    record: dict[str, Any]

    @classmethod
    def load(cls, run_dir: Path) -> Run:
        return cls(Path(run_dir), read_record(run_dir))

    @property
    def system(self) -> str:
        return system_name(self.record)

    @property
    def ensemble(self) -> bool:
        return bool(self.record.get("ensemble"))

    @property
    def dataset(self) -> str:
        return str(self._dataset.get("name", "?"))

    @property
    def dataset_path(self) -> str:
        return str(self._dataset.get("path", ""))

    @property
    def fingerprint(self) -> str:
        return str(self._dataset.get("fingerprint", ""))

    @property
    def test_fingerprint(self) -> str:
        return str(self._dataset.get("test_fingerprint", "") or self.fingerprint)

    @property
    def selection(self) -> str:
        return str(self.record.get("selection", {}).get("split", "none"))

    @property
    def seed(self) -> int | None:
        return self.record.get("seed")

    @property
    def hardware(self) -> str:
        """The GPU's name, or 'CPU (N threads)': what a training time in this record was measured on."""
        hw = self.record.get("hardware", {}) or {}
        return str(hw.get("gpu") or f"CPU ({hw.get('torch_threads', '?')} threads)")

    def metric(self, name: str) -> float | None:
        value = self.record.get("metrics", {}).get("test", {}).get(name)
        return None if value is None else float(value)

    @property
    def _dataset(self) -> dict[str, Any]:
        return self.record.get("dataset", {}) or {}


def system_name(record: dict[str, Any]) -> str:
    """``"lightxml (bert-base) +se+loss-correction"``: model, encoder, variants; ensembles say so."""
    name = str(record.get("model", "?"))
    encoder = record.get("encoder")
    if encoder:
        name += f" ({Path(str(encoder)).name})"  # a local folder or hub id reads best by its last part
    mode = (record.get("model_details") or {}).get("mode")
    if mode:
        name += f" [{mode}]"  # flat and clustered LightXML are different systems
    variants = record.get("variants") or []
    if variants:
        name += " +" + "+".join(variants)
    if record.get("protocol", "fair") != "fair":
        name += f" [{record['protocol']} protocol]"  # another recipe: never averaged with fair runs
    if record.get("ensemble"):
        n = len(record["ensemble"].get("members") or [])
        if "ensemble" in name:
            name += f" ({n} members)" if n else ""
        else:
            name += f" ({n}-model ensemble)" if n else " (ensemble)"
    return name


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """Finished runs in ``paths`` (run folders or folders holding them); UserError when there are none."""
    paths = [Path(p) for p in paths]
    dirs = find_runs(paths)
    if not dirs:
        shown = ", ".join(str(p) for p in paths) or "(nothing given)"
        raise UserError(f"no finished runs (folders with a complete record.json) in {shown}")
    return [Run.load(d) for d in dirs]


def one_test_set(runs: list[Run], what: str) -> str:
    """The test fingerprint all ``runs`` share; UserError naming the runs that differ."""
    fps: dict[str, list[Run]] = {}
    for r in runs:
        fps.setdefault(r.test_fingerprint, []).append(r)
    if len(fps) > 1:
        parts = "; ".join(f"{fp[:12]}: {', '.join(str(r.dir) for r in rs)}" for fp, rs in fps.items())
        raise UserError(f"{what}: runs were tested on different test sets (test fingerprints {parts})")
    return next(iter(fps))


# ------------------------------------------------------------------------------- per-document scores
def hit_matrix(ids: np.ndarray, truth: sp.spmatrix, k: int) -> np.ndarray:
    """(n, k) bool: the prediction at rank r of row i is a true label, counting a repeated id once."""
    truth = sp.csr_matrix(truth)
    n, n_labels = truth.shape
    if ids.shape[0] != n:
        raise UserError(f"predictions have {ids.shape[0]} rows but the test labels have {n}")
    top = np.full((n, k), -1, dtype=np.int64)
    width = min(k, ids.shape[1])
    top[:, :width] = ids[:, :width]
    if not truth.has_sorted_indices:
        truth = truth.copy()
        truth.sort_indices()
    # One sorted key per stored label (row * L + label): membership of every prediction is one searchsorted.
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(truth.indptr))
    keys = rows * n_labels + truth.indices.astype(np.int64)
    query = np.arange(n, dtype=np.int64)[:, None] * n_labels + top
    pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    valid = (top >= 0) & (top < n_labels)
    hit = valid & (keys[pos] == query) if len(keys) else np.zeros_like(valid)
    for r in range(1, k):  # a later repeat of an id occupies its rank but scores 0
        hit[:, r] &= ~(top[:, :r] == top[:, r : r + 1]).any(axis=1)
    return hit


def doc_scores(ids: np.ndarray, truth: sp.spmatrix, metric: str) -> np.ndarray:
    """Per-document P@k, nDCG@k or R@k in [0, 1]; their mean is the metric (as a fraction)."""
    family, k = parse_metric(metric)
    truth = sp.csr_matrix(truth)
    hit = hit_matrix(ids, truth, k)
    n_true = np.diff(truth.indptr)
    if family == "P":
        return hit.sum(axis=1) / k
    if family == "R":
        return np.divide(hit.sum(axis=1), n_true, out=np.zeros(len(n_true)), where=n_true > 0)
    if family == "nDCG":
        discount = 1.0 / np.log2(np.arange(k) + 2.0)
        ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_true, k)]
        return np.divide(hit @ discount, ideal, out=np.zeros(len(n_true)), where=ideal > 0)
    raise ValueError(f"no per-document form for {metric}")


def has_doc_scores(metric: str) -> bool:
    """Whether ``doc_scores`` can compute ``metric`` (propensity-scored metrics are ratios of sums)."""
    try:
        return parse_metric(metric)[0] in ("P", "nDCG", "R")
    except ValueError:
        return False


def parse_metric(metric: str) -> tuple[str, int]:
    family, _, k = metric.partition("@")
    if not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric {metric!r} is not NAME@K")
    return family, int(k)


def mean_doc_scores(runs: list[Run], truth: Truth, metric: str) -> np.ndarray:
    """Per-document score averaged over ``runs`` (one value per test document)."""
    total = None
    for r in runs:
        ids, _ = predictions_onto(r.dir, truth)
        s = doc_scores(ids, truth.labels, metric)
        total = s if total is None else total + s
    assert total is not None, "mean_doc_scores needs at least one run"
    return total / len(runs)


def with_test_metrics(run: Run, values: dict[str, float]) -> Run:
    """``run`` whose record also holds ``values`` among its test metrics (the record on disk is untouched)."""
    metrics = dict(run.record.get("metrics") or {})
    metrics["test"] = {**(metrics.get("test") or {}), **values}
    return Run(run.dir, {**run.record, "metrics": metrics})


def metrics_from_predictions(run: Run, metrics: list[str], dataset: Any) -> dict[str, float]:
    """``metrics`` (keys such as ``"R@10"``, ``"Cov@5"``, ``"P@5/head"``) of ``run``, recomputed from its
    saved predictions against ``dataset``'s test labels, ids mapped by label name (``predictions_onto``).

    Uses ``evaluate`` and ``by_frequency_tercile`` themselves, so a recomputed number equals the one the
    runner would have recorded. UserError when a k exceeds the number of predictions saved per document:
    beyond it the saved file cannot tell a miss from a label that was never written."""
    from xmlbench.metrics import by_frequency_tercile, evaluate

    truth = Truth.test_of(dataset)
    ids, _ = predictions_onto(run.dir, truth)
    width = ids.shape[1]
    parsed = {m: (*parse_metric(m.partition("/")[0]), m.partition("/")[2]) for m in metrics}
    for m, (_, k, _) in parsed.items():
        if k > width:
            raise UserError(
                f"{m}: k = {k} is more than the {width} predictions per document saved in "
                f"{run.dir / 'predictions.npz'}; metrics from saved predictions need k <= {width}"
            )
    ks = sorted({k for _, k, _ in parsed.values()})
    needs_ps = any(f in PS_FAMILIES for f, _, _ in parsed.values())
    inv_p = dataset.inv_propensity() if needs_ps else None
    values = evaluate(ids, truth.labels, ks, inv_p, coverage=any(f == "Cov" for f, _, _ in parsed.values()))
    if any(part for _, _, part in parsed.values()):
        values.update(by_frequency_tercile(ids, truth.labels, dataset.label_counts(), ks, inv_p))
    return {m: values[m] for m in metrics if m in values}


# -------------------------------------------------------------------------------------------- tests
def bootstrap_mean_ci(
    diff: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of the mean of ``diff`` under resampling its entries (documents) with replacement."""
    n = len(diff)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values, counts = np.unique(diff, return_counts=True)
    if len(values) <= 4096:
        # Per-document differences take few distinct values (multiples of 1/k): drawing how often each value
        # is resampled is the same bootstrap as drawing documents, without n x resamples indices.
        draws = rng.multinomial(n, counts / n, size=n_resamples)
        means = draws @ values / n
    else:
        means = np.array([diff[rng.integers(0, n, n)].mean() for _ in range(n_resamples)])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


MIN_TTEST_SEEDS = 3  # two paired seeds leave one degree of freedom: a p-value from them claims too much
# Paired differences count as having no spread when their sample std is <= ZERO_SPREAD_RTOL * max(1, |mean|).
# Seeds whose deltas agree up to float rounding (std ~1e-14 on metrics in percent) would otherwise give a
# huge t and a p such as 1e-16, which the data cannot support. The bound grows with |mean| because rounding
# error grows with the numbers; the floor of 1 (one point: metrics are in percent) keeps it above 0 for
# deltas near 0.
ZERO_SPREAD_RTOL = 1e-9


def paired_ttest(a_by_seed: dict[Any, float], b_by_seed: dict[Any, float]) -> dict[str, Any]:
    """Two-sided paired t-test of b - a over the seeds both have.

    ``p`` is None with ``reason`` "n<3" below ``MIN_TTEST_SEEDS`` matching seeds, or "no variance" when
    the differences have (near-)zero spread (see ``ZERO_SPREAD_RTOL``); ``reason`` is None otherwise."""
    from scipy import stats

    seeds = sorted(set(a_by_seed) & set(b_by_seed), key=str)
    out: dict[str, Any] = {"seeds": seeds, "n": len(seeds), "t": None, "p": None, "reason": None}
    if len(seeds) < MIN_TTEST_SEEDS:
        out["reason"] = f"n<{MIN_TTEST_SEEDS}"
        return out
    a = np.array([a_by_seed[s] for s in seeds], dtype=np.float64)
    b = np.array([b_by_seed[s] for s in seeds], dtype=np.float64)
    diff = b - a
    if not np.isfinite(diff).all() or diff.std(ddof=1) <= ZERO_SPREAD_RTOL * max(1.0, abs(diff.mean())):
        out["reason"] = "no variance"
        return out
    with warnings.catch_warnings():  # scipy's precision warning would only repeat what "reason" says
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(b, a)
    out["t"], out["p"] = _finite(res.statistic), _finite(res.pvalue)
    if out["p"] is None:
        out["reason"] = "no variance"
    return out


def ttest_text(test: dict[str, Any]) -> str:
    """A paired t-test's p as printed: the p-value, "n<3" (too few paired seeds) or "n/a" (no spread)."""
    if test.get("p") is not None:
        return p_value_text(test["p"])
    return "n/a" if test.get("reason") in (None, "no variance") else str(test["reason"])


def holm_adjust(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the order given; None entries (no test) stay None
    and are not counted in the family size m.

    Sorted ascending, the i-th (1-based) adjusted p is max over j <= i of min(1, (m - j + 1) * p_(j)):
    rejecting where it is below alpha controls the family-wise error rate at alpha."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))  # monotone: never below a smaller p's value
        out[i] = running
    return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def by_seed(runs: list[Run], metric: str) -> dict[Any, float]:
    """Test ``metric`` per seed (the first run of a seed wins; duplicates are reported by the callers)."""
    out: dict[Any, float] = {}
    for r in runs:
        v = r.metric(metric)
        if v is not None and r.seed not in out:
            out[r.seed] = v
    return out


def paired_runs(runs_a: list[Run], runs_b: list[Run]) -> tuple[list[Run], list[Run]]:
    """The runs of the seeds both sides ran, when any match; otherwise every run of each side."""
    common = {r.seed for r in runs_a} & {r.seed for r in runs_b}
    if not common:
        return runs_a, runs_b
    return [r for r in runs_a if r.seed in common], [r for r in runs_b if r.seed in common]


def bootstrap_delta(
    runs_a: list[Run],
    runs_b: list[Run],
    truth: Truth,
    metric: str,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap over test documents of mean(B) - mean(A), in percent, from saved predictions."""
    pa, pb = paired_runs(runs_a, runs_b)
    diff = mean_doc_scores(pb, truth, metric) - mean_doc_scores(pa, truth, metric)
    lo, hi = bootstrap_mean_ci(diff, n_resamples, seed)
    return {
        "delta": 100 * float(diff.mean()),
        "ci95": [100 * lo, 100 * hi],
        "n_docs": len(diff),
        "resamples": n_resamples,
        "seed": seed,
        "runs_a": len(pa),
        "runs_b": len(pb),
    }


# ------------------------------------------------------------------------------------------ compare
def compare(
    runs_a: Iterable[Path],
    runs_b: Iterable[Path],
    truth_loader: TruthLoader | None,
    metrics: list[str] = DEFAULT_METRICS,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare run set A with run set B on the same test set (UserError when the test sets differ)."""
    a, b = load_runs(runs_a), load_runs(runs_b)
    fp = one_test_set(a + b, "compare")
    result: dict[str, Any] = {
        "dataset": a[0].dataset,
        "test_fingerprint": fp,
        "n_test": a[0].record.get("dataset", {}).get("n_test"),
        "a": _side(a),
        "b": _side(b),
        "metrics": {},
        "notes": _side_notes(a, "A") + _side_notes(b, "B"),
    }
    truth = truth_loader(a[0].dataset_path) if truth_loader is not None else None
    for m in metrics:
        row = _metric_means(a, b, m)
        row["paired_t"] = paired_ttest(by_seed(a, m), by_seed(b, m))
        if truth is not None and has_doc_scores(m):
            row["bootstrap"] = bootstrap_delta(a, b, truth, m, n_resamples, seed)
        result["metrics"][m] = row
    if truth is None:
        result["notes"].append("no test labels given: no bootstrap over documents")
    skipped = [m for m in metrics if not has_doc_scores(m)]
    if truth is not None and skipped:
        result["notes"].append(f"no per-document bootstrap for {', '.join(skipped)} (a ratio of sums)")
    return result


def _side(runs: list[Run]) -> dict[str, Any]:
    return {
        "systems": sorted({r.system for r in runs}),
        "seeds": sorted({r.seed for r in runs}, key=str),
        "selection": sorted({r.selection for r in runs}),
        "runs": [str(r.dir) for r in runs],
    }


def _side_notes(runs: list[Run], side: str) -> list[str]:
    notes = []
    if len({r.system for r in runs}) > 1:
        notes.append(f"{side} mixes systems: {', '.join(sorted({r.system for r in runs}))}")
    if any(r.selection == "test" for r in runs):
        notes.append(f"{side} has runs whose checkpoint was chosen on the TEST split")
    seeds = [r.seed for r in runs]
    if len(seeds) != len(set(seeds)):
        notes.append(f"{side} has several runs with the same seed; the paired t-test uses the first of each")
    return notes


def _metric_means(a: list[Run], b: list[Run], metric: str) -> dict[str, Any]:
    va = [v for v in (r.metric(metric) for r in a) if v is not None]
    vb = [v for v in (r.metric(metric) for r in b) if v is not None]
    mean_a = float(np.mean(va)) if va else None
    mean_b = float(np.mean(vb)) if vb else None
    delta = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    return {"mean_a": mean_a, "mean_b": mean_b, "delta": delta, "n_a": len(va), "n_b": len(vb)}


def render_comparison(result: dict[str, Any]) -> str:
    """Plain-text report of :func:`compare`'s result."""
    a, b = result["a"], result["b"]
    lines = [
        f"A: {', '.join(a['systems'])}  seeds {_seeds(a['seeds'])}  ({len(a['runs'])} runs)",
        f"B: {', '.join(b['systems'])}  seeds {_seeds(b['seeds'])}  ({len(b['runs'])} runs)",
        f"dataset {result['dataset']} (test fingerprint {result['test_fingerprint'][:12]}, "
        f"{result['n_test']} documents)",
        "",
        f"{'metric':<8} {'mean A':>8} {'mean B':>8} {'B - A':>7}  {'paired t-test (seeds)':<26} "
        "bootstrap 95% CI of B - A (documents)",
    ]
    for m, row in result["metrics"].items():
        t = row["paired_t"]
        if t["p"] is not None:
            ttext = f"t={t['t']:+.2f} p={p_value_text(t['p'])} (n={t['n']})"
        elif t["reason"] == "no variance":
            ttext = f"n/a (no variance, n={t['n']})"
        else:
            ttext = f"{t['reason']} ({t['n']} matching seeds)"
        boot = row.get("bootstrap")
        btext = f"[{boot['ci95'][0]:+.2f}, {boot['ci95'][1]:+.2f}]" if boot else "-"
        lines.append(
            f"{m:<8} {_num(row['mean_a']):>8} {_num(row['mean_b']):>8} {_num(row['delta'], '+'):>7}  "
            f"{ttext:<26} {btext}"
        )
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def p_value_text(p: float) -> str:
    """Three decimals, or two significant digits below 0.001 (so a tiny p never prints as 0.000)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _num(x: float | None, sign: str = "") -> str:
    return "-" if x is None else f"{x:{sign}.2f}"


def _seeds(seeds: list[Any]) -> str:
    return ",".join(str(s) for s in seeds)
