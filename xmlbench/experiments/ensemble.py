"""Ensembles the way the original combined its members, from finished run folders.

Both original recipes are a sum of member scores: flat datasets sum the sigmoid scores of bert + roberta +
xlnet; clustered datasets sum the top-100 scores of the three clusterings. From saved top-100 predictions
the sum is over the union of each document's member top-100 lists (a label outside a member's top-100
contributes 0 from that member, which is exact for the clustered recipe and a top-100 truncation of the
flat one). The result is written as its own run folder with ``"ensemble": {"members": [...]}``, so tables
rank it apart from single models.

Members of different models (TF-IDF + tree, LightXML + tree) speak different score scales (SVM margins,
probabilities, tree path products), so a raw sum lets one member decide. Their scores are normalised per
member and per document before summing (``scores``): ``minmax`` maps each document's top-k of a member
onto [0, 1] (best 1, k-th 0, all 1 when they tie) and is the default for mixed members; ``rank`` scores
the r-th label (from 0) by 1 - r/k; ``raw`` is the original's plain sum, the default when every member
is the same model. The record lists each member's model and encoder and names the ensemble by them.

Members are summed per label NAME: a member run on a copy of the data whose labels got other ids (train
lines in another order) adds to the same labels. The ensemble's ids are those of the first member's dataset,
followed by the labels only other members know (misses when scored against that dataset).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmlbench.data.labels import Truth, match_labels, remap_ids, union_names
from xmlbench.errors import UserError
from xmlbench.metrics import TOP_K, evaluate
from xmlbench.outputs import Output, writing
from xmlbench.runs import record as rec


def sum_topk(members: list[tuple[np.ndarray, np.ndarray]], n_labels: int, k: int = TOP_K):
    """Sum sparse top-k score lists row by row and keep the k best (ties: smaller label id)."""
    n = members[0][0].shape[0]
    total = sp.csr_matrix((n, n_labels), dtype=np.float64)
    for ids, scores in members:
        valid = ids >= 0
        rows = np.repeat(np.arange(n), ids.shape[1])[valid.ravel()]
        total = total + sp.csr_matrix((scores[valid].astype(np.float64), (rows, ids[valid])), shape=(n, n_labels))
    total = total.tocsr()
    total.sort_indices()
    from xmlbench.metrics.topk import topk_sparse_rows

    return topk_sparse_rows(total.indptr, total.indices, total.data.astype(np.float32), k)


SCORES = ("auto", "raw", "minmax", "rank")


def normalise_rows(ids: np.ndarray, scores: np.ndarray, how: str) -> np.ndarray:
    """A member's (n, k) top-k scores made comparable across members, per document (see the module doc);
    padding (id -1) stays out of the sum."""
    valid = ids >= 0
    if how == "raw":
        return scores
    if how == "rank":
        k = ids.shape[1]
        return np.where(valid, 1.0 - np.arange(k, dtype=np.float32)[None, :] / k, 0.0).astype(np.float32)
    s = np.where(valid, scores, np.nan).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no valid entry: all nan, made 0 below
        lo, hi = np.nanmin(s, axis=1, keepdims=True), np.nanmax(s, axis=1, keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(valid, out, 0.0).astype(np.float32)


def sum_by_label_name(run_dirs: list[Path], truth: Truth,
                      scores: str = "raw") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label names, ids, scores): the members' top-k (normalised by ``scores``) summed per label name, in
    the label space of ``truth``'s names followed by the names only some members have (so ties go to
    ``truth``'s order)."""
    members = []
    for d in run_dirs:
        pred = rec.load_predictions(d)
        member_names = rec.prediction_label_names(d, pred, truth)
        match_labels(member_names, truth.label_names, f"ensemble member {d}", truth.describe())
        members.append((member_names, pred))
    names = union_names([truth.label_names, *(n for n, _ in members)])
    summed = [(remap_ids(p.ids, n, names), normalise_rows(p.ids, p.scores, scores)) for n, p in members]
    ids, scores = sum_topk(summed, len(names))
    return names, ids, scores


def ensemble_runs(run_dirs: list[Path], out: Path, command: str = "", scores: str = "auto") -> dict:
    if scores not in SCORES:
        raise UserError(f"--scores must be one of {', '.join(SCORES)}, not {scores!r}")
    if len(run_dirs) < 2:
        raise UserError("an ensemble needs at least two finished runs")
    for d in run_dirs:
        if not rec.is_complete(d):
            raise UserError(f"{d}: not a finished run (no {rec.RECORD}); an ensemble combines finished runs")
        if Path(out).resolve() == Path(d).resolve():
            raise UserError(f"--out {out} is one of the members; the ensemble needs its own folder")
    target = Output("ensemble", ident=" + ".join(str(Path(d).resolve()) for d in run_dirs))
    with writing(out, target, command=command):
        return _ensemble_into(run_dirs, out, command, scores)


def member_name(record: dict) -> str:
    """``tfidf-ovr``, ``lightxml(bert-base)``: what a member is, for an ensemble's name."""
    encoder = record.get("encoder")
    return f"{record['model']}({Path(str(encoder)).name})" if encoder else str(record["model"])


def _ensemble_into(run_dirs: list[Path], out: Path, command: str, scores: str = "auto") -> dict:
    records = [rec.read_record(d) for d in run_dirs]
    models = sorted({r["model"] for r in records})
    mixed = len(models) > 1
    if scores == "auto":
        scores = "minmax" if mixed else "raw"
    tests = {r["dataset"]["test_fingerprint"] for r in records}
    if len(tests) != 1:
        raise UserError("ensemble members were evaluated on different test files (test fingerprints differ)")
    ds = rec.recorded_dataset(records[0])
    names, ids, summed = sum_by_label_name(run_dirs, Truth.test_of(ds), scores)
    on_ds = remap_ids(ids, names, ds.label_names)  # labels the dataset lacks: -1, misses
    metrics = evaluate(on_ds, ds.test.labels, inv_propensity=ds.inv_propensity(), coverage=True)  # as a run
    rec.write_predictions(out, ids, summed, names)
    first = records[0]
    selections = sorted({r["selection"]["split"] for r in records})
    protocols = sorted({r.get("protocol", "fair") for r in records})
    record = {
        "status": "complete",
        "command": command,
        # a mixed ensemble is named by its members, not by the first one
        "model": "+".join(dict.fromkeys(member_name(r) for r in records)) if mixed else first["model"],
        "encoder": None if mixed else "+".join(str(r.get("encoder")) for r in records),
        "variants": [] if mixed else first.get("variants", []),
        "preset": first.get("preset"),
        "seed": first.get("seed"),
        "protocol": protocols[0] if len(protocols) == 1 else "mixed",
        "config": {"members": [r["config"] for r in records]},
        "ensemble": {"members": [str(d) for d in run_dirs],
                     "member_models": [{"model": r["model"], "encoder": r.get("encoder"),
                                        "variants": r.get("variants", [])} for r in records],
                     "scores": scores,
                     "recipe": "sum of member top-100 scores" + ("" if scores == "raw" else
                                                                  f", each {scores}-normalised per document")},
        "dataset": first["dataset"],
        "selection": {"split": selections[0] if len(selections) == 1 else "mixed"},
        "metrics": {"test": metrics},
        "n_parameters": sum(r.get("n_parameters", 0) for r in records),
        "model_details": {} if mixed else first.get("model_details", {}),
        "timing_s": {"fit": sum(r["timing_s"].get("fit", 0) for r in records)},
        "peak_rss_mb": max(r.get("peak_rss_mb", 0) for r in records),
        "code": rec.code_version(),
        "packages": rec.package_versions(),
        "hardware": rec.hardware(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(out),
    }
    rec.write_record(out, record)
    return record


def member_overrides(dataset_mode: str) -> list[tuple[str, dict]]:
    """The original's members: three encoders on flat datasets, three clusterings on clustered ones."""
    if dataset_mode == "clustered":
        return [(f"cluster{s}", {"cluster_seed": s, "encoder": "bert-base"}) for s in range(3)]
    return [(enc, {"encoder": enc}) for enc in ("bert-base", "roberta", "xlnet")]
