"""``xmlbench table`` and ``xmlbench compare``: tables, comparisons and plots from run folders.

RUNS are run folders or folders holding them. The test labels come from the dataset each record names
(opened once per path); a dataset whose fingerprint no longer matches the runs' is refused, because the
saved predictions would be scored against other labels. Saved ids are matched to the dataset's by label
name, so runs made on copies of the data with labels in another order compare as they should.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from xmlbench.data.labels import Truth
from xmlbench.errors import UserError
from xmlbench.io import write_text
from xmlbench.results.compare import DEFAULT_METRICS, Run


def add_commands(subparsers) -> None:
    """Add ``table`` and ``compare`` to the ``xmlbench`` sub-command parsers."""
    t = subparsers.add_parser("table", help="result table (md, csv, LaTeX) from run folders")
    t.add_argument("runs", nargs="+", metavar="RUNS", help="run folders or folders that hold them")
    t.add_argument("--format", choices=["md", "csv", "latex", "json", "tidy"], default="md",
                   help="json: one document, numbers as numbers, with the notes; tidy: a long csv, one line "
                   "per run x metric")
    t.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help="e.g. P@1,P@3,P@5,nDCG@5,PSP@5,R@10,Cov@5; a metric a record lacks is computed from "
                   "the saved predictions (k up to their width)")
    t.add_argument("--by-frequency", action="store_true",
                   help="add head/torso/tail columns (training-frequency terciles) for each P@k and PSP@k")
    t.add_argument("--reference", action="store_true", help="add published rows and the gap to them")
    t.add_argument("--out", help="write the table to this file (default: print it)")
    t.add_argument("--plots", metavar="DIR", help="also write plots, PNG with PDF and SVG beside (label deciles "
                   "with seed error bars, training curves with one loss axis per loss kind)")
    t.add_argument("--index", metavar="DIR", help="also write DIR/README.md: every run and its command")
    t.add_argument("--force", action="store_true",
                   help="replace --out, DIR/README.md or the plots even if xmlbench did not write them")
    t.set_defaults(func=cmd_table)

    d = subparsers.add_parser("distill-table", help="distillation table (teacher, student, P@k, parameters, "
                                                    "docs/s, retention) from distilled run folders")
    d.add_argument("runs", nargs="+", metavar="RUNS", help="student run folders or folders that hold them")
    d.add_argument("--out", metavar="DIR", help="write DIR/distillation.md and DIR/distillation.csv")
    d.add_argument("--force", action="store_true", help="replace them even if xmlbench did not write them")
    d.set_defaults(func=cmd_distill_table)

    c = subparsers.add_parser("compare", help="compare two sets of runs: deltas, paired t-test, bootstrap CI")
    c.add_argument("runs_a", metavar="RUNS_A", help="run folder or folder of runs (A)")
    c.add_argument("runs_b", metavar="RUNS_B", help="run folder or folder of runs (B)")
    c.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.set_defaults(func=cmd_compare)


def cmd_distill_table(args) -> int:
    from xmlbench.outputs import claim_file
    from xmlbench.results import distillation as kd

    if args.out:
        for name in ("distillation.md", "distillation.csv"):
            claim_file(Path(args.out) / name, "distillation table", force=args.force)
    records = kd.distilled_runs([Path(p) for p in args.runs])
    table = kd.rows(records)
    datasets = sorted({r["dataset"]["name"] for r in records})
    text = kd.markdown(table, ", ".join(datasets))
    if args.out:
        write_text(Path(args.out) / "distillation.md", text)
        write_text(Path(args.out) / "distillation.csv", kd.csv(table))
        print(f"wrote {args.out}/distillation.md and .csv ({len(records)} students)", file=sys.stderr)
    print(text)
    return 0


def metric_keys(text: str) -> list[str]:
    """``"P@1,nDCG@5"`` -> ``["P@1", "nDCG@5"]``, checked against the metric registry."""
    from xmlbench.metrics import metric_key, parse_metric_names

    return [metric_key(name, k) for name, k in parse_metric_names(text)]


def by_frequency_keys(metrics: list[str]) -> list[str]:
    """Each P@k and PSP@k followed by its head, torso and tail parts (``"P@5/head"``...)."""
    from xmlbench.metrics import TERCILES

    if not any(m.partition("@")[0] in ("P", "PSP") for m in metrics):
        raise UserError(f"--by-frequency splits P@k and PSP@k by label frequency; --metrics has neither "
                        f"({', '.join(metrics)})")
    out = []
    for m in metrics:
        out.append(m)
        if m.partition("@")[0] in ("P", "PSP"):
            out += [f"{m}/{t}" for t in TERCILES]
    return out


class DatasetCache:
    """Datasets opened by the path a record names, once each; checked against the runs' fingerprint."""

    def __init__(self, runs: list[Run]) -> None:
        self._expected = {r.dataset_path: r.fingerprint for r in runs}
        # opened as the runs opened it: documents without labels dropped or kept (their --unlabelled)
        self._unlabelled = {r.dataset_path: (r.record["dataset"].get("unlabelled") or {}).get("policy", "error")
                            for r in runs}
        self._opened: dict[str, object] = {}

    def dataset(self, path: str):
        if path not in self._opened:
            from xmlbench.data.dataset import open_dataset

            ds = open_dataset(path, unlabelled=self._unlabelled.get(path, "error"))
            expected = self._expected.get(path)
            if expected and ds.fingerprint != expected:
                raise UserError(
                    f"{path}: the dataset's fingerprint is {ds.fingerprint} but the runs were made on "
                    f"{expected}; the data changed since, so the saved predictions cannot be scored"
                )
            self._opened[path] = ds
        return self._opened[path]

    def test_labels(self, path: str) -> Truth:
        return Truth.test_of(self.dataset(path))

    def label_counts(self, path: str) -> np.ndarray:
        return self.dataset(path).label_counts()


def cmd_table(args) -> int:
    from xmlbench.results.compare import load_runs
    from xmlbench.results.table import build_table, render

    metrics = metric_keys(args.metrics)
    claim_table_outputs(args)  # before the work: a refusal should not come after minutes of plotting
    if args.by_frequency:
        metrics = by_frequency_keys(metrics)
    runs = load_runs([Path(p) for p in args.runs])
    dirs = [r.dir for r in runs]
    cache = DatasetCache(runs)
    text = render(build_table(dirs, metrics, reference=args.reference, dataset_loader=cache.dataset),
                  args.format)
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out} ({len(runs)} runs)", file=sys.stderr)
    else:
        print(text, end="")
    if args.index:
        from xmlbench.results.index import write_results_index

        print(f"wrote {write_results_index(Path(args.index), dirs)}", file=sys.stderr)
    if args.plots:
        from xmlbench.results.plots import write_plots

        for path in write_plots(dirs, Path(args.plots), cache.test_labels, cache.label_counts):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def claim_table_outputs(args) -> None:
    from xmlbench.outputs import Output, claim_file, claim_folder

    if args.out:
        claim_file(Path(args.out), "table", force=args.force)
    if args.index:
        claim_file(Path(args.index) / "README.md", "run index", force=args.force)
    if args.plots:
        claim_folder(Path(args.plots), Output("plots", adopt=_only_png), force=args.force)


def _only_png(folder: Path) -> bool:
    """A plots folder an older xmlbench wrote: nothing but PNG files."""
    return all(p.suffix == ".png" for p in folder.iterdir() if not p.name.startswith("."))


def comparison(a: list[Path], b: list[Path], metrics: list[str]) -> dict:
    """``compare`` of run sets A and B, scored against the test labels their records name."""
    from xmlbench.results.compare import compare, load_runs

    cache = DatasetCache(load_runs(a) + load_runs(b))
    return compare(a, b, cache.test_labels, metrics)


def cmd_compare(args) -> int:
    from xmlbench.results.compare import render_comparison

    result = comparison([Path(args.runs_a)], [Path(args.runs_b)], metric_keys(args.metrics))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_comparison(result), end="")
    return 0
