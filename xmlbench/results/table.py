"""Result tables generated from run records, never typed by hand.

``build_table`` puts systems in rows and dataset x metric in columns; a cell is the test mean ± sample
standard deviation (ddof=1) over seeds with n. Single models and ensembles live in separate sections and are
ranked separately. Runs that must not be averaged stay apart: inside one (system, dataset) group, runs on
another version of the data or test set, or whose checkpoint was chosen on the test split, get their own
row with a visible tag and a note under the table. Tagged rows are never ranked.

``ablation_table`` compares arms of an ablation with a base arm: mean ± std and the delta per metric (P@1,
P@3, P@5, PSP@5 by default, so the table fits a page), a paired t-test over seeds (none below 3 paired
seeds or on differences without spread), Holm-Bonferroni-adjusted across the arms per metric and shown as
stars on the delta, and a paired bootstrap CI over test documents from the saved predictions. The
p-values, the CI and the cost columns go to a second, compact table (and to the csv).
``render`` writes a table as markdown, csv or LaTeX.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmlbench.errors import UserError
from xmlbench.results import reference as ref
from xmlbench.results.compare import (
    DEFAULT_METRICS,
    MIN_TTEST_SEEDS,
    N_RESAMPLES,
    ZERO_SPREAD_RTOL,
    DatasetLoader,
    Run,
    TruthLoader,
    bootstrap_delta,
    by_seed,
    holm_adjust,
    load_runs,
    metrics_from_predictions,
    one_test_set,
    paired_ttest,
    parse_metric,
    ttest_text,
    with_test_metrics,
)

SINGLE, ENSEMBLE = "Single models", "Ensembles"
TEST_TAG = "selected on TEST"


# ----------------------------------------------------------------------------------------- the model
@dataclass
class Stat:
    """Values of one metric over seeds."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); nan for fewer than two values."""
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else float("nan")

    def text(self) -> str:
        if self.n == 0:
            return ""
        if self.n == 1:
            return f"{self.mean:.2f} (n=1)"
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"


# Where a column appears. MAIN: the first printed table (md, LaTeX) and the csv; PRINTED: the first printed
# table only (a compact form of csv columns, e.g. a delta with significance stars); DETAIL: a second printed
# table and the csv; CSV: the csv only. Printed tables stay narrow, the csv keeps every number apart.
MAIN, PRINTED, DETAIL, CSV = "main", "print", "detail", "csv"


@dataclass(frozen=True)
class Column:
    name: str  # "P@5"
    group: str = ""  # the dataset, for the main table
    show: str = MAIN

    @property
    def key(self) -> str:
        return f"{self.group} {self.name}".strip()


@dataclass
class Row:
    label: str
    cells: dict[str, str] = field(default_factory=dict)  # column key -> text ("" when empty)
    values: dict[str, Any] = field(default_factory=dict)  # column key -> the number(s) behind the text
    best: set[str] = field(default_factory=set)  # column keys where this row is the best of its section
    kind: str = "ours"  # ours | published | gap
    tags: tuple[str, ...] = ()  # why the row is kept apart ("selected on TEST", "data 1a2b3c4d")
    runs: list[str] = field(default_factory=list)  # the run folders behind the row
    by_dataset: dict[str, list[Run]] = field(default_factory=dict)


@dataclass
class Section:
    title: str
    rows: list[Row]


@dataclass
class Table:
    title: str
    columns: list[Column]
    sections: list[Section]
    notes: list[str]
    row_header: str = "system"
    detail_title: str = "Details"  # heading of the second printed table (DETAIL columns), if any

    def printed_columns(self) -> list[Column]:
        return [c for c in self.columns if c.show in (MAIN, PRINTED)]

    def detail_columns(self) -> list[Column]:
        return [c for c in self.columns if c.show == DETAIL]

    def csv_columns(self) -> list[Column]:
        return [c for c in self.columns if c.show != PRINTED]

    def rows(self) -> list[Row]:
        return [r for s in self.sections for r in s.rows]

    def row(self, label: str) -> Row:
        for r in self.rows():
            if r.label == label:
                return r
        raise KeyError(f"no row {label!r}; rows: {[r.label for r in self.rows()]}")

    def section(self, title: str) -> Section:
        for s in self.sections:
            if s.title == title:
                return s
        raise KeyError(title)


# ------------------------------------------------------------------------------------- main table
def build_table(
    run_dirs: list[Path],
    metrics: list[str] = DEFAULT_METRICS,
    reference: bool = False,
    dataset_loader: DatasetLoader | None = None,
) -> Table:
    """Systems x (dataset, metric) from finished runs; ``reference`` adds published rows and the gap.

    With ``dataset_loader`` (a dataset path -> the opened Dataset), a metric a record lacks (R@10, Cov@5,
    P@5/head...) is computed from the run's saved predictions; without it such a cell stays empty."""
    runs = load_runs(run_dirs)
    notes = [_legend()]
    if dataset_loader is not None:
        runs = _complete_metrics(runs, metrics, dataset_loader, notes)
    datasets = ordered_datasets({r.dataset for r in runs})
    columns = [Column(m, ds) for ds in datasets for m in metrics]
    rows = _group_rows(runs, notes)
    sections = {SINGLE: [], ENSEMBLE: []}
    for (section, _, _), row in sorted(rows.items()):
        _fill_cells(row, columns)
        sections[section].append(row)
    for rows_ in sections.values():
        _mark_best(rows_, columns)
    if reference:
        _add_published(sections, columns, notes)
    return Table(
        title="Test results: mean ± sample std over seeds (n = seeds)",
        columns=columns,
        sections=[Section(t, rs) for t, rs in sections.items() if rs],
        notes=notes,
    )


def _complete_metrics(
    runs: list[Run], metrics: list[str], loader: DatasetLoader, notes: list[str]
) -> list[Run]:
    """Each run with the requested metrics its record lacks computed from its saved predictions."""
    out, computed = [], set()
    for r in runs:
        missing = [m for m in metrics if r.metric(m) is None]
        if missing:
            values = metrics_from_predictions(r, missing, loader(r.dataset_path))
            computed |= set(values)
            r = with_test_metrics(r, values)
        out.append(r)
    if computed:
        shown = sorted(computed, key=metrics.index)
        notes.append(
            f"{', '.join(shown)}: not in (every) run record, computed from the run's saved "
            "predictions (predictions.npz) against the dataset's test labels (labels matched by name)."
        )
    if any("/" in m for m in metrics):
        notes.append(
            "P@k/head, /torso, /tail (and PSP@k/...): labels split into three terciles by training "
            "frequency holding equal shares of the training label occurrences (most frequent first); "
            "P@k/T = hits on T's labels / (k x test documents), PSP@k/T = T's propensity-weighted hits over "
            "PSP@k's own denominator, so the three terciles add up to P@k and PSP@k."
        )
    return out


def ordered_datasets(names: set[str]) -> list[str]:
    """The five reference datasets in their usual order, then any others alphabetically."""
    known = [d for d in ref.DATASETS if d in names]
    return known + sorted(names - set(known))


def _legend() -> str:
    return (
        "Cells: test-split mean ± sample standard deviation (ddof=1) over seeds; n = number of seeds. "
        "Best of our runs per column is bold ('*' in csv), ranked within its section: single models and "
        "ensembles are never ranked together. Rows with a [tag] are kept apart and not ranked."
    )


RowKey = tuple[str, str, tuple[str, ...]]  # (section, system, tags)


def _group_rows(runs: list[Run], notes: list[str]) -> dict[RowKey, Row]:
    """Split runs into rows: never average runs on different data, test sets or selection splits."""
    main_version = _main_versions(runs)
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(ENSEMBLE if r.ensemble else SINGLE, r.system, r.dataset)].append(r)
    rows: dict[RowKey, Row] = {}
    off_version: set[tuple[str, str, str, str]] = set()
    conflicts: set[tuple[str, str]] = set()  # (dataset, system) groups already explained by a note
    any_test_selected = False
    for (section, system, dataset), group in sorted(groups.items()):
        parts: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
        for r in group:
            parts[(r.fingerprint, r.test_fingerprint, r.selection)].append(r)
        splits = {split for _, _, split in parts}
        for (fp, tfp, split), part in sorted(parts.items()):
            tags = _tags(fp, tfp, split, main_version[dataset], splits)
            if (fp, tfp) != main_version[dataset]:
                off_version.add((dataset, system, fp, tfp))
            any_test_selected |= split == "test"
            label = system + "".join(f" [{t}]" for t in tags)
            row = rows.setdefault((section, system, tags), Row(label=label, tags=tags))
            row.by_dataset[dataset] = part
            row.runs += [str(r.dir) for r in part]
            _note_duplicate_seeds(part, f"{dataset}, {label}", notes)
        if len(parts) > 1:
            notes.append(_conflict_note(system, dataset, parts))
            conflicts.add((dataset, system))
    for dataset, system, fp, tfp in sorted(off_version):
        if (dataset, system) in conflicts:
            continue
        mfp, mtfp = main_version[dataset]
        notes.append(
            f"{dataset}, {system}: ran on data {fp[:8]} / test set {tfp[:8]}, not the version most runs of "
            f"{dataset} use ({mfp[:8]} / {mtfp[:8]}); shown apart and not ranked."
        )
    if any_test_selected:
        notes.append(
            f"Rows tagged [{TEST_TAG}] chose their checkpoint on the test split (the original LightXML "
            "protocol): their test numbers are optimistic, so they are not ranked against the others."
        )
    return rows


def _main_versions(runs: list[Run]) -> dict[str, tuple[str, str]]:
    """Per dataset, the (fingerprint, test fingerprint) most runs used: the version rows are ranked on."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        counts[r.dataset][(r.fingerprint, r.test_fingerprint)] += 1
    # Most runs first; ties broken by the fingerprint itself so the choice does not depend on file order.
    return {ds: min(c, key=lambda v: (-c[v], v)) for ds, c in counts.items()}


def _tags(fp: str, tfp: str, split: str, main: tuple[str, str], splits: set[str]) -> tuple[str, ...]:
    tags = []
    if fp != main[0]:
        tags.append(f"data {fp[:8]}")
    elif tfp != main[1]:
        tags.append(f"test set {tfp[:8]}")
    if split == "test":
        tags.append(TEST_TAG)
    elif split == "none" and len(splits) > 1:
        tags.append("no selection split")
    return tuple(tags)


def _conflict_note(system: str, dataset: str, parts: dict[tuple[str, str, str], list[Run]]) -> str:
    described = "; ".join(
        f"data {fp[:8]} / test set {tfp[:8]} / selected on {split}: seeds {_seed_list(rs)}"
        for (fp, tfp, split), rs in sorted(parts.items())
    )
    return f"{dataset}, {system}: runs differ in data version or selection split ({described}); not averaged."


def _note_duplicate_seeds(runs: list[Run], where: str, notes: list[str]) -> None:
    repeated = sorted((s for s, c in Counter(r.seed for r in runs).items() if c > 1), key=str)
    if repeated:
        notes.append(
            f"{where}: seed {', '.join(map(str, repeated))} ran more than once; each run counts in n "
            f"({', '.join(str(r.dir) for r in runs if r.seed in repeated)})."
        )


def _seed_list(runs: list[Run]) -> str:
    return ",".join(str(s) for s in sorted((r.seed for r in runs), key=str))


def _fill_cells(row: Row, columns: list[Column]) -> None:
    for col in columns:
        part = row.by_dataset.get(col.group, [])
        stat = Stat([v for v in (r.metric(col.name) for r in part) if v is not None])
        row.values[col.key] = stat
        row.cells[col.key] = stat.text()


def _rankable(row: Row, col: Column) -> bool:
    stat = row.values.get(col.key)
    return row.kind == "ours" and not row.tags and isinstance(stat, Stat) and stat.n > 0


def _mark_best(rows: list[Row], columns: list[Column]) -> None:
    """Bold the best mean (at the printed precision, ties all marked) when at least two rows compete."""
    for col in columns:
        cands = [r for r in rows if _rankable(r, col)]
        if len(cands) < 2:
            continue
        best = max(round(r.values[col.key].mean, 2) for r in cands)
        for r in cands:
            if round(r.values[col.key].mean, 2) == best:
                r.best.add(col.key)


def best_mean(rows: list[Row], col: Column) -> float | None:
    """The best rankable mean of ``col`` among ``rows``."""
    means = [r.values[col.key].mean for r in rows if _rankable(r, col)]
    return max(means) if means else None


def _add_published(sections: dict[str, list[Row]], columns: list[Column], notes: list[str]) -> None:
    """Published rows in the section that matches them, and the gap row for single models."""
    used, any_unverified = [], False
    for p in ref.PUBLISHED:
        row = Row(label=f"[published] {p.label}", kind="published")
        for col in columns:
            v = p.value(col.group, col.name)
            if v is None:
                continue
            row.values[col.key] = v
            row.cells[col.key] = f"{v:.2f}" + ("" if p.is_verified(col.group) else "†")
            any_unverified |= not p.is_verified(col.group)
        if row.cells:
            sections[ENSEMBLE if p.ensemble else SINGLE].append(row)
            used.append(p)
    if not used:
        return
    notes.append("[published] rows are numbers from the literature, not runs of this code; sources follow.")
    notes += [f"[published] {p.label}: {p.source}" + (f" ({p.note})." if p.note else ".") for p in used]
    if any_unverified:
        notes.append("† unverified: not re-checked against the paper's table; a lead, not a target.")
    _add_gap(sections[SINGLE], columns, notes)


def _add_gap(rows: list[Row], columns: list[Column], notes: list[str]) -> None:
    pub = ref.published(ref.SINGLE_MODEL_REFERENCE)
    gap = Row(label=f"gap: our best single - [published] {pub.label}", kind="gap")
    ours = [r for r in rows if r.kind == "ours"]
    for col in columns:
        best, published = best_mean(ours, col), pub.value(col.group, col.name)
        if best is None or published is None:
            continue
        gap.values[col.key] = best - published
        gap.cells[col.key] = f"{best - published:+.2f}"
    if gap.cells:
        rows.append(gap)
        notes.append(
            f"gap = the best mean among our ranked single-model rows minus [published] {pub.label} "
            "(a single model); positive means ours is higher."
        )


# ----------------------------------------------------------------------------------- ablation table
ABLATION_METRICS = ["P@1", "P@3", "P@5", "PSP@5"]  # the default columns: what fits a page
STARS = ((0.01, "**"), (0.05, "*"))  # on the Holm-adjusted p, strictest first


def ablation_table(
    run_dirs_by_arm: dict[str, list[Path]],
    base: str = "base",
    title: str = "",
    metrics: list[str] = ABLATION_METRICS,
    truth_loader: TruthLoader | None = None,
    ci_metric: str = "P@5",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Table:
    """One row per arm: n, mean ± std and delta to ``base`` per metric, starred where the paired t-test over
    seeds, Holm-adjusted across arms, is significant; in the details the p-values, a paired bootstrap 95% CI
    over test documents of the ``ci_metric`` delta, parameter count and mean fit time."""
    arms = {name: load_runs(dirs) for name, dirs in run_dirs_by_arm.items()}
    if base not in arms:
        raise UserError(f"ablation table: no base arm {base!r} among arms {', '.join(arms)}")
    all_runs = [r for rs in arms.values() for r in rs]
    one_test_set(all_runs, "ablation table")
    columns = [Column("n")]
    for m in metrics:
        columns += [Column("mean", m), Column("Δ", m, PRINTED), Column("delta", m, CSV)]
    columns += [Column("p", m, DETAIL) for m in metrics] + [Column("p unadjusted", m, CSV) for m in metrics]
    columns += [Column(f"{ci_metric} delta 95% CI", show=DETAIL), Column("params", show=DETAIL),
                Column("fit s", show=DETAIL)]
    truth = truth_loader(arms[base][0].dataset_path) if truth_loader is not None else None
    rows = [
        _ablation_row(name, rs, arms[base], name == base, metrics, truth, ci_metric, n_resamples, seed)
        for name, rs in arms.items()
    ]
    family = {m: _holm_column(rows, m) for m in metrics}
    _mark_best(rows, [c for c in columns if c.name == "mean"])
    return Table(
        title=title or f"Ablation on {all_runs[0].dataset} (test split; Δ = arm - {base})",
        columns=columns,
        sections=[Section("", rows)],
        notes=_ablation_notes(arms, base, family, ci_metric, truth is not None, n_resamples, seed),
        row_header="arm",
        detail_title="p-values, bootstrap CI and cost",
    )


def _ablation_row(
    name: str,
    runs: list[Run],
    base_runs: list[Run],
    is_base: bool,
    metrics: list[str],
    truth: Any,
    ci_metric: str,
    n_resamples: int,
    seed: int,
) -> Row:
    row = Row(label=name, runs=[str(r.dir) for r in runs])
    _set(row, "n", len(runs), str(len(runs)))
    for m in metrics:
        stat = Stat([v for v in (r.metric(m) for r in runs) if v is not None])
        base_stat = Stat([v for v in (r.metric(m) for r in base_runs) if v is not None])
        _set(row, f"{m} mean", stat, _mean_text(stat, len(runs)))
        if is_base:
            _set(row, f"{m} delta", 0.0, "(base)")
            _set(row, f"{m} Δ", 0.0, "(base)")
            continue
        delta = stat.mean - base_stat.mean if stat.n and base_stat.n else None
        _set(row, f"{m} delta", delta, "" if delta is None else f"{delta:+.2f}")
        if delta is not None:  # a metric the records lack has no test, not "n<3"
            test = paired_ttest(by_seed(base_runs, m), by_seed(runs, m))
            _set(row, f"{m} p unadjusted", test, ttest_text(test))
    if truth is not None and not is_base:
        boot = bootstrap_delta(base_runs, runs, truth, ci_metric, n_resamples, seed)
        lo, hi = boot["ci95"]
        _set(row, f"{ci_metric} delta 95% CI", boot, f"[{lo:+.2f}, {hi:+.2f}]")
    params = [r.record.get("n_parameters") for r in runs if r.record.get("n_parameters") is not None]
    if params:
        _set(row, "params", int(np.mean(params)), human_count(np.mean(params)))
    fits = [r.record.get("timing_s", {}).get("fit") for r in runs]
    fits = [f for f in fits if f is not None]
    if fits:
        _set(row, "fit s", float(np.mean(fits)), f"{np.mean(fits):,.0f}")
    return row


def _mean_text(stat: Stat, n_runs: int) -> str:
    """"mean ± std", n in its own column; "(n=k)" only when some runs lack the metric."""
    if stat.n == 0:
        return ""
    text = f"{stat.mean:.2f}" + (f" ± {stat.std:.2f}" if stat.n >= 2 else "")
    return text + (f" (n={stat.n})" if stat.n != n_runs else "")


def _holm_column(rows: list[Row], metric: str) -> int | None:
    """Holm-adjust ``metric``'s p-values across the arms; fill its p and Δ cells. Returns the family size
    (the arms with a p-value), None when no arm has the metric."""
    arms = [r for r in rows if f"{metric} p unadjusted" in r.values]
    if not arms:
        return None
    adjusted = holm_adjust([r.values[f"{metric} p unadjusted"]["p"] for r in arms])
    for row, p_holm in zip(arms, adjusted):
        test = {**row.values[f"{metric} p unadjusted"], "p_holm": p_holm}
        _set(row, f"{metric} p", test, ttest_text({**test, "p": p_holm}))
        delta = row.values[f"{metric} delta"]
        if delta is None:
            continue
        mark = next((star for alpha, star in STARS if p_holm is not None and p_holm < alpha), "")
        why = "" if p_holm is not None else f" ({ttest_text(test)})"  # "+1.48 (n<3)": no test, no stars
        _set(row, f"{metric} Δ", delta, f"{delta:+.2f}{mark}{why}")
    return sum(p is not None for p in adjusted)


def _set(row: Row, key: str, value: Any, text: str) -> None:
    row.values[key] = value
    row.cells[key] = text


def _ablation_notes(
    arms: dict[str, list[Run]],
    base: str,
    family: dict[str, int | None],
    ci_metric: str,
    have_truth: bool,
    n_resamples: int,
    seed: int,
) -> list[str]:
    rtol = f"{ZERO_SPREAD_RTOL:.0e}".replace("e-0", "e-")  # 1e-9, not 1e-09
    notes = [
        "n: runs (seeds) of the arm; mean: test mean ± sample std (ddof=1) over them; Δ: arm mean - base "
        "mean, in points. Marks on Δ: * p<0.05, ** p<0.01 after Holm; no mark: not significant.",
        _p_note(family),
        f"n<{MIN_TTEST_SEEDS}: fewer than {MIN_TTEST_SEEDS} seeds ran in both the arm and the base, so no "
        "t-test (one degree of freedom says next to nothing); n/a: the per-seed differences have no spread "
        f"(sample std <= {rtol} x max(1, |mean difference|)), where a t-test would report a "
        "meaninglessly tiny p.",
    ]
    if have_truth:
        notes.append(
            f"{ci_metric} delta 95% CI: paired bootstrap over test documents ({n_resamples} resamples, "
            f"seed {seed}) of the per-document {ci_metric} difference, each side averaged over its seeds "
            "(only the seeds both ran, when any match); from the saved top-100 predictions. It measures how "
            "much the test documents alone move the delta, not seed-to-seed variation, and is not adjusted "
            "for multiple comparisons."
        )
    else:
        notes.append("no test labels given: no bootstrap CI.")
    notes.append("params: trainable parameters; fit s: mean training time (timing_s.fit) in seconds.")
    machines = sorted({r.hardware for runs in arms.values() for r in runs})
    if len(machines) > 1:
        by_seed = sorted({(r.seed, r.hardware) for runs in arms.values() for r in runs},
                         key=lambda sh: (-1 if sh[0] is None else sh[0], sh[1]))
        notes.append("runs trained on different hardware (" + "; ".join(f"seed {s}: {h}" for s, h in by_seed)
                     + "): fit s mixes them; deltas and p-values stay paired within a seed only if each seed "
                     "ran on one machine.")
    notes += diagnostics_notes(arms)
    for name, runs in arms.items():
        if any(r.selection == "test" for r in runs):
            notes.append(f"arm {name}: has runs whose checkpoint was chosen on the TEST split.")
        _note_duplicate_seeds(runs, f"arm {name}", notes)
    return notes


def diagnostics_notes(arms: dict[str, list[Run]]) -> list[str]:
    """One note per arm whose records carry ``variant_diagnostics``: what each variant did, each number the
    mean over the arm's seeds; a per-layer list is shown as its range over layers ("min..max")."""
    notes = []
    for name, runs in arms.items():
        found = [r.record.get("variant_diagnostics") or {} for r in runs]
        variants = list(dict.fromkeys(v for d in found for v in d))  # in the order the runs list them
        parts = []
        for variant in variants:
            per_seed = [d[variant] for d in found if variant in d]
            keys = list(dict.fromkeys(k for d in per_seed for k in d))
            shown = [_diagnostic_text(k, [d[k] for d in per_seed if k in d]) for k in keys]
            parts.append(f"{variant}: " + (", ".join(shown) if shown else "nothing to report"))
        if parts:
            seeds = len([d for d in found if d])
            notes.append(f"arm {name}, what the variants did (validation documents, selected checkpoint, "
                         f"mean over {seeds} seed{'s' if seeds != 1 else ''}): " + "; ".join(parts) + ".")
    return notes


def _diagnostic_text(key: str, values: list[Any]) -> str:
    """``key value``: a share as a percentage, a list as its range, a count without decimals."""
    label = key.replace("_", " ")
    if values and all(isinstance(v, list) for v in values):
        mean = np.mean(np.array([v for v in values if len(v) == len(values[0])], dtype=float), axis=0)
        return f"{label} per layer {_number(key, mean.min())}..{_number(key, mean.max())}"
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return f"{label} {_number(key, float(np.mean(numbers)))}" if numbers else label


def _number(key: str, x: float) -> str:
    if key.endswith("share"):
        return f"{100 * x:.0f}%"
    if float(x).is_integer():
        return f"{int(x)}"
    return f"{x:.3g}"


def _p_note(family: dict[str, int | None]) -> str:
    """What p is, with the size of each metric's Holm family (the arms that had a test)."""
    family = {m: n for m, n in family.items() if n is not None}
    sizes = set(family.values())
    if sizes <= {0}:
        return ("p: two-sided paired t-test over seeds (scipy ttest_rel), Holm-Bonferroni-adjusted across "
                "the arms, per metric; here no arm had a test, so no p-values and no marks.")
    if len(sizes) == 1:
        (n,) = sizes
        across = f"across the {n} arm{'s' if n != 1 else ''} with a test"
    else:
        across = "across the arms with a test (" + ", ".join(f"{m}: {n}" for m, n in family.items()) + ")"
    return (f"p: two-sided paired t-test over the seeds both the arm and the base ran (scipy ttest_rel), "
            f"Holm-Bonferroni-adjusted {across}, per metric; the csv also has the unadjusted p.")


def human_count(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


# ---------------------------------------------------------------------------------------- rendering
def render(table: Table, fmt: str = "md") -> str:
    """The table as ``md`` (GitHub markdown), ``csv`` or ``latex`` (booktabs), notes included; ``json`` (one
    document: every row's numbers as numbers, and the notes) or ``tidy`` (a long csv, one line per run x
    metric, numbers as numbers, for pandas / R; no notes: use json for those)."""
    renderers = {"md": _render_md, "csv": _render_csv, "latex": _render_latex, "json": _render_json,
                 "tidy": _render_tidy}
    if fmt not in renderers:
        raise UserError(f"unknown table format {fmt!r}; choose one of {', '.join(renderers)}")
    return renderers[fmt](table)


def _render_md(t: Table) -> str:
    out = [f"### {t.title}", ""] + _md_tables(t, t.printed_columns())
    if t.detail_columns():
        out += [f"{t.detail_title}:", ""] + _md_tables(t, t.detail_columns())
    if t.notes:
        out += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(t.notes, 1)] + [""]
    return "\n".join(out)


def _md_tables(t: Table, columns: list[Column]) -> list[str]:
    """One markdown table per section over ``columns``."""
    out = []
    header = [t.row_header] + [c.key for c in columns]
    for sec in t.sections:
        if sec.title:
            out += [f"**{sec.title}**", ""]
        out += [_md_line(header), _md_line([":--"] + ["--:"] * len(columns))]
        for row in sec.rows:
            out.append(_md_line([row.label] + [_md_cell(row, c) for c in columns]))
        out.append("")
    return out


def _md_cell(row: Row, col: Column) -> str:
    text = row.cells.get(col.key, "")
    if not text:
        return "–"
    return f"**{text}**" if col.key in row.best else text


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _render_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = t.csv_columns()
    w.writerow(["section", t.row_header] + [c.key for c in columns])
    for sec in t.sections:
        for row in sec.rows:
            cells = [row.cells.get(c.key, "") + ("*" if c.key in row.best else "") for c in columns]
            w.writerow([sec.title, row.label] + cells)
    for n in t.notes:  # same width as the data rows, so the file stays rectangular
        w.writerow(["note", n] + [""] * len(columns))
    return buf.getvalue()


def _render_json(t: Table) -> str:
    import json

    doc = {
        "title": t.title,
        "row_header": t.row_header,
        "columns": [{"key": c.key, "metric": c.name, "dataset": c.group, "show": c.show} for c in t.columns],
        "sections": [{"title": sec.title, "rows": [_json_row(row, t.columns) for row in sec.rows]}
                     for sec in t.sections],
        "notes": t.notes,
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _json_row(row: Row, columns: list[Column]) -> dict[str, Any]:
    values = {c.key: _jsonable(row.values[c.key]) for c in columns if c.key in row.values}
    return {"label": row.label, "kind": row.kind, "tags": list(row.tags), "runs": row.runs,
            "values": values, "best": sorted(row.best)}


def _jsonable(v: Any) -> Any:
    """Numbers as numbers (NaN, e.g. the std of one seed, as null); a Stat as mean, std, n and its values."""
    if isinstance(v, Stat):
        return {"mean": _jsonable(v.mean) if v.n else None, "std": _jsonable(v.std), "n": v.n,
                "values": [_jsonable(x) for x in v.values]}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


TIDY_COLUMNS = ["section", "system", "run_dir", "dataset", "model", "encoder", "variants", "seed",
                "protocol", "selection", "split", "metric", "k", "labels", "value"]


def _render_tidy(t: Table) -> str:
    """One line per (run, metric) of every row built from runs (published and gap rows have none)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TIDY_COLUMNS)
    for sec in t.sections:
        for row in sec.rows:
            for col in t.columns:
                for run in row.by_dataset.get(col.group, []):
                    value = run.metric(col.name)
                    if value is not None:
                        w.writerow([sec.title, row.label] + _tidy_cells(run, col.name) + [value])
    return buf.getvalue()


def _tidy_cells(run: Run, metric: str) -> list[Any]:
    base, _, labels = metric.partition("/")
    family, k = parse_metric(base)
    rec = run.record
    return [str(run.dir), run.dataset, rec.get("model", ""), rec.get("encoder") or "",
            "+".join(rec.get("variants") or []), "" if run.seed is None else run.seed,
            rec.get("protocol", "fair"), run.selection, "test", family, k, labels or "all"]


def _render_latex(t: Table) -> str:
    out = ["% generated by xmlbench from run records; needs \\usepackage{booktabs}"]
    out += _latex_tabular(t, t.printed_columns())
    if t.detail_columns():
        out += ["", "\\smallskip", f"\\textit{{{latex_escape(t.detail_title)}}}\\par", "\\smallskip"]
        out += _latex_tabular(t, t.detail_columns())
    if t.notes:
        out += ["", "\\smallskip", "{\\footnotesize"]
        out += [f"{i}. {latex_escape(n)}\\par" for i, n in enumerate(t.notes, 1)]
        out.append("}")
    return "\n".join(out) + "\n"


def _latex_tabular(t: Table, columns: list[Column]) -> list[str]:
    n_cols = 1 + len(columns)
    out = ["\\begin{tabular}{l" + "r" * len(columns) + "}", "\\toprule"]
    groups = _column_groups(columns)
    if any(g for g, _ in groups):  # a first header line with each dataset spanning its metrics
        spans, rules, start = [""], [], 2
        for g, span in groups:
            if g:
                spans.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(g)}}}")
                rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
            else:
                spans += [""] * span
            start += span
        out += [" & ".join(spans) + " \\\\", " ".join(rules)]
    out.append(" & ".join([latex_escape(t.row_header)] + [latex_escape(c.name) for c in columns]) + " \\\\")
    for sec in t.sections:
        out.append("\\midrule")
        if sec.title:
            out.append(f"\\multicolumn{{{n_cols}}}{{l}}{{\\textit{{{latex_escape(sec.title)}}}}} \\\\")
        for row in sec.rows:
            cells = [_latex_cell(row, c) for c in columns]
            out.append(" & ".join([latex_escape(row.label)] + cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return out


def _column_groups(columns: list[Column]) -> list[tuple[str, int]]:
    """Runs of adjacent columns with the same group, as (group, span)."""
    groups: list[tuple[str, int]] = []
    for c in columns:
        if groups and groups[-1][0] == c.group:
            groups[-1] = (c.group, groups[-1][1] + 1)
        else:
            groups.append((c.group, 1))
    return groups


def _latex_cell(row: Row, col: Column) -> str:
    text = row.cells.get(col.key, "")
    if not text:
        return "--"
    text = latex_escape(text)
    return f"\\textbf{{{text}}}" if col.key in row.best else text


_LATEX_SPECIAL = {
    "\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
    "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
    "±": "$\\pm$", "†": "$^\\dagger$", "–": "--", "Δ": "$\\Delta$", "<": "$<$", ">": "$>$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
