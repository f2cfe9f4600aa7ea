"""Plots from run records: P@k by label-frequency decile, training curves, ablation deltas (PNG, Agg; PDF on request).

matplotlib is optional (``pip install matplotlib``) and imported only when a plot is drawn. Figures are
built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, so no GUI backend or pyplot
global state is involved.

Label-frequency deciles: labels sorted by training frequency (most frequent first) are cut into ten groups
of equal numbers of labels; decile 1 is the head, decile 10 the tail. A decile's bar is its contribution to
P@k: the correct top-k predictions whose label lies in that decile, divided by (test documents x k), in
percent. The ten bars of a system sum to its P@k, so the plot shows where a model's precision comes from.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmlbench.data.labels import Truth
from xmlbench.errors import UserError
from xmlbench.results.compare import Run, TruthLoader, by_seed, hit_matrix, load_runs
from xmlbench.runs.record import predictions_onto

HISTORY = "history.jsonl"


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plots need matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


VECTOR_FORMATS = ("pdf", "svg")  # beside every PNG: a paper wants vector figures, a README wants the PNG


def _save(fig: Any, out: Path) -> Path:
    """Save as the suffix says (.pdf, .svg or .png; PNG for anything else); a PNG also gets its PDF and SVG
    siblings (same name, same figure), so every plot exists in a form a paper can use."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lower().lstrip(".")
    if fmt in VECTOR_FORMATS:
        fig.savefig(out, format=fmt)
        return out
    fig.savefig(out, dpi=150, format="png")
    for vector in VECTOR_FORMATS:
        fig.savefig(out.with_suffix("." + vector), format=vector)
    return out


# ------------------------------------------------------------------------------ label-frequency deciles
def decile_contributions(
    ids: np.ndarray, truth: sp.spmatrix, label_counts: np.ndarray, k: int = 5, n_bins: int = 10
) -> np.ndarray:
    """Contribution of each label-frequency decile (head first) to P@k, in percent; sums to P@k."""
    truth = sp.csr_matrix(truth)
    n, n_labels = truth.shape
    if len(label_counts) != n_labels:
        raise UserError(f"label_counts has {len(label_counts)} labels but the test labels have {n_labels}")
    order = np.argsort(-np.asarray(label_counts), kind="stable")  # most frequent first, ties by label id
    bin_of = np.empty(n_labels, dtype=np.int64)
    bin_of[order] = np.arange(n_labels) * n_bins // max(n_labels, 1)
    width = min(k, ids.shape[1])
    correct = np.asarray(ids[:, :width])[hit_matrix(ids, truth, k)[:, :width]]
    counts = np.bincount(bin_of[correct], minlength=n_bins)
    return 100.0 * counts / max(n * k, 1)


def plot_label_deciles(
    runs_by_system: dict[str, list[Path]],
    truth: Truth,
    label_counts: np.ndarray,
    out: Path,
    k: int = 5,
    title: str = "",
) -> Path:
    """Grouped bars: each system's contribution to P@k per label-frequency decile (averaged over seeds)."""
    fig, (ax,) = _figure(9, 4.5)
    n_sys = max(len(runs_by_system), 1)
    width = 0.8 / n_sys
    x = np.arange(10)
    for i, (system, dirs) in enumerate(runs_by_system.items()):
        parts = [decile_contributions(predictions_onto(d, truth)[0], truth.labels, label_counts, k)
                 for d in dirs]
        mean = np.mean(parts, axis=0)
        # seeds as error bars: sample std per decile over the system's runs (none for a single run)
        err = np.std(parts, axis=0, ddof=1) if len(parts) > 1 else None
        ax.bar(x + (i - (n_sys - 1) / 2) * width, mean, width, yerr=err, capsize=2,
               label=f"{system} (P@{k} {mean.sum():.2f}, n={len(parts)})")
    ax.set_xticks(x, [str(d + 1) for d in x])
    ax.set_xlabel("label-frequency decile (1 = most frequent labels in train, 10 = rarest)")
    ax.set_ylabel(f"contribution to P@{k} (%)")
    ax.set_title(
        (title + "\n" if title else "")
        + f"Contribution to P@{k} of each decile of labels by training frequency "
        f"(a system's bars sum to its P@{k}; error bars: std over n seeds)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


# -------------------------------------------------------------------------------------- training curves
def read_history(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(loss points, evaluation points) from ``history.jsonl``; empty when the run has none."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return [], []
    losses, evals = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            point = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{line_no}: not a JSON object") from None
        if "loss" in point:
            losses.append(point)
        if "metrics" in point:
            evals.append(point)
    return losses, evals


def plot_training_curves(run_dirs: list[Path], out: Path, metric: str = "P@5", title: str = "") -> Path:
    """Training loss and validation ``metric`` against step, one line per run. Losses of different kinds
    get their own axes: a clustered LightXML loss (generator + discriminator BCE) and a flat one are on
    different scales, and one axis would flatten the smaller."""
    histories = {Path(d): read_history(d) for d in run_dirs}
    histories = {d: h for d, h in histories.items() if h[0] or h[1]}
    if not histories:
        raise UserError(f"no {HISTORY} in {', '.join(str(d) for d in run_dirs)}: nothing to plot")
    runs = {d: Run.load(d) for d in histories}
    kinds = sorted({loss_kind(r) for d, r in runs.items() if histories[d][0]})
    fig, axes = _figure(5.5 * (len(kinds) + 1), 4.2, ncols=len(kinds) + 1)
    ax_loss = dict(zip(kinds, axes))
    ax_eval = axes[-1]
    for d, (losses, evals) in histories.items():
        label = _run_label(runs[d])
        if losses:
            ax_loss[loss_kind(runs[d])].plot([p["step"] for p in losses], [p["loss"] for p in losses], lw=1,
                                             label=label)
        pts = [p for p in evals if metric in p.get("metrics", {})]
        if pts:
            ax_eval.plot([p["step"] for p in pts], [p["metrics"][metric] for p in pts], marker="o", ms=3,
                         label=label)
    for kind, ax in ax_loss.items():
        ax.set(xlabel="step", ylabel="training loss", title=f"training loss ({kind})")
    ax_eval.set(xlabel="step", ylabel=f"{metric} (%)", title=f"validation {metric}")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def loss_kind(run: Run) -> str:
    """What a run's training loss measures: LightXML's mode (flat or clustered), else its model."""
    mode = (run.record.get("model_details") or {}).get("mode")
    model = str(run.record.get("model", "?"))
    return f"{model} {mode}" if mode else model


def _run_label(run: Run) -> str:
    return f"{run.system} seed {run.seed}"


# -------------------------------------------------------------------------------------- ablation deltas
def ablation_deltas(
    run_dirs_by_arm: dict[str, list[Path]], base: str = "base", metric: str = "P@5"
) -> dict[str, dict[str, Any]]:
    """Per arm: the per-seed differences arm - base (seeds both ran), their mean and sample std (nan below
    two paired seeds: no spread is known, which a zero error bar would misstate as certainty)."""
    arms = {name: load_runs(dirs) for name, dirs in run_dirs_by_arm.items()}
    if base not in arms:
        raise UserError(f"ablation plot: no base arm {base!r} among arms {', '.join(arms)}")
    base_vals = by_seed(arms[base], metric)
    out = {}
    for name, runs in arms.items():
        if name == base:
            continue
        vals = by_seed(runs, metric)
        diffs = [vals[s] - base_vals[s] for s in vals if s in base_vals]
        out[name] = {
            "diffs": diffs,
            "mean": float(np.mean(diffs)) if diffs else float("nan"),
            "std": float(np.std(diffs, ddof=1)) if len(diffs) >= 2 else float("nan"),
        }
    return out


def plot_ablation_deltas(
    run_dirs_by_arm: dict[str, list[Path]],
    out: Path,
    base: str = "base",
    metrics: str | list[str] = "P@5",
    title: str = "",
) -> Path:
    """Bars of each arm's mean delta to ``base`` over paired seeds, one bar per metric, error bars ± sample
    std over seeds (none below two paired seeds). Written as ``_save`` says: a PNG with its PDF and SVG,
    or only the vector format ``out`` names."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    per_metric = {m: ablation_deltas(run_dirs_by_arm, base, m) for m in metrics}
    names = list(per_metric[metrics[0]])
    fig, (ax,) = _figure(max(5.0, (0.6 + 0.25 * len(metrics)) * len(names) + 2), 4)
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    for i, m in enumerate(metrics):
        means = np.array([per_metric[m][n]["mean"] for n in names])
        stds = np.array([per_metric[m][n]["std"] for n in names])
        # One metric: colour says the sign; several: colour says the metric, with a legend.
        color = ["tab:green" if v >= 0 else "tab:red" for v in means] if len(metrics) == 1 else None
        pos = x + (i - (len(metrics) - 1) / 2) * width
        ax.bar(pos, np.nan_to_num(means), width * 0.9, color=color, label=m)
        known = np.isfinite(stds) & np.isfinite(means)  # no error bar at all where no spread is known
        ax.errorbar(pos[known], means[known], yerr=stds[known], fmt="none", ecolor="black", capsize=3)
    n_paired = [len(per_metric[metrics[0]][n]["diffs"]) for n in names]
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.set_xticks(x, [f"{n}\n(n={k})" for n, k in zip(names, n_paired)], fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"{metrics[0] if len(metrics) == 1 else 'metric'} delta vs {base} (points)")
    which = metrics[0] if len(metrics) == 1 else ", ".join(metrics)
    ax.set_title((title + "\n" if title else "") + f"Ablation: test {which} of each arm minus {base}\n"
                 "mean ± sample std over n paired seeds (none below 2)", fontsize=10)
    if len(metrics) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


# --------------------------------------------------------------------------------- all plots for runs
def write_plots(
    run_dirs: list[Path],
    out_dir: Path,
    truth_loader: TruthLoader,
    label_counts_loader: Callable[[str], np.ndarray],
    k: int = 5,
) -> list[Path]:
    """Per dataset: the label-decile plot over every system and training curves of runs with a history."""
    runs = load_runs(run_dirs)
    by_dataset: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_dataset[r.dataset].append(r)
    written = []
    for dataset, drs in sorted(by_dataset.items()):
        # One plot per test set: decile shares of different test sets are not comparable.
        counts = Counter(r.test_fingerprint for r in drs)
        main_fp = min(counts, key=lambda fp: (-counts[fp], fp))
        drs = [r for r in drs if r.test_fingerprint == main_fp]
        systems: dict[str, list[Path]] = defaultdict(list)
        for r in drs:
            tag = " [selected on TEST]" if r.selection == "test" else ""
            systems[r.system + tag].append(r.dir)
        path = drs[0].dataset_path
        written.append(plot_label_deciles(dict(sorted(systems.items())), truth_loader(path),
                                          label_counts_loader(path), out_dir / f"deciles_{dataset}.png", k,
                                          title=dataset))
        with_history = [r.dir for r in drs if (r.dir / HISTORY).is_file()]
        if with_history:
            written.append(plot_training_curves(with_history, out_dir / f"curves_{dataset}.png",
                                                f"P@{k}", title=dataset))
    return written
