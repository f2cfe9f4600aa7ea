"""``xmlbench distill TEACHER_RUN --student MODEL``: knowledge distillation from any finished run (DocBERT,
Adhikari et al. 2019; Tang et al. 2019; DistilBERT's loss, Sanh et al. 2019), through the one runner.

1. The teacher is a finished run folder: any saved model (LightXML, a linear head, tfidf-ovr, a tree), or
   an ensemble run (its members' scores summed per label, as ``xmlbench ensemble`` does). It must have been
   made on the student's dataset (same fingerprint).
2. The transfer set is the student's training split (after the validation carve) plus ``copies`` augmented
   copies of every document (``xmlbench.data.augment``: word masking, n-gram sampling; seeded), written to
   ``OUT/transfer/texts.txt``; each copy keeps its document's labels for the supervised term.
3. The teacher scores the transfer set once; its top-k ids and scores are cached in
   ``OUT/transfer/teacher.npz`` (never inside the teacher's folder), keyed by the teacher's record, the
   transfer texts and k, so a resumed or repeated run reuses them. Only k per document is kept: dense
   label-sized targets do not fit at 670k labels.
4. The student trains on the transfer set with alpha * L_d + beta * L_s (``xmlbench.models.distillation``),
   selects on the usual validation split and is tested once, like any run. Its record holds
   ``distillation``: the teacher (run folder, model, encoder, parameters, test metrics), every setting, the
   transfer set, the cache, and inference docs/s of teacher and student measured here on the validation
   split, one after the other on the same machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import scipy.sparse as sp

from xmlbench.config import Count, NonNegative, Range, Seed, flag_name, to_dict, validate
from xmlbench.data.augment import Augmentation, augmented_texts
from xmlbench.data.dataset import Dataset, Split
from xmlbench.data.readers import scan_lines
from xmlbench.errors import UserError
from xmlbench.io import atomic_path, read_npz
from xmlbench.runs import record as rec

TRANSFER = "transfer"
TEACHER_CACHE = "teacher.npz"


@dataclass(frozen=True)
class DistillOptions:
    """Every distillation setting (``xmlbench distill --help``); checked when built."""

    teacher: str  # a finished run folder
    alpha: Annotated[float, Range(0, 1000)] = 0.5  # weight of the distillation term L_d
    beta: Annotated[float, Range(0, 1000)] = 0.5  # weight of the supervised term L_s
    temperature: Annotated[float, Range(0.01, 1000)] = 2.0
    top_k: Annotated[int, Range(1, 1000)] = 100  # teacher labels kept per transfer document
    form: Literal["auto", "sigmoid", "softmax"] = "auto"  # auto: softmax on single-label data
    copies: NonNegative = 2  # augmented copies per training document
    p_mask: Annotated[float, Range(0, 1)] = 0.1
    p_ngram: Annotated[float, Range(0, 1)] = 0.25
    ngram_min: Count = 1
    ngram_max: Count = 5
    augment_seed: Seed = 0

    def __post_init__(self) -> None:
        validate(self, key=flag_name)
        if self.alpha == 0 and self.beta == 0:
            raise UserError("--alpha and --beta are both 0: the student would learn nothing")
        if self.ngram_min > self.ngram_max:
            raise UserError(f"--ngram-min {self.ngram_min} exceeds --ngram-max {self.ngram_max}")

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.copies, self.p_mask, self.p_ngram, self.ngram_min, self.ngram_max,
                            self.augment_seed)


@dataclass
class Teacher:
    run_dir: Path
    record: dict[str, Any]
    models: list[Any]  # one model, or an ensemble's members
    score_kind: str

    def predict(self, split: Split, k: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids (the student dataset's) and scores; an ensemble's members summed per label (their
        mean when they are probabilities, so the sum stays a probability)."""
        if len(self.models) == 1:
            return self.models[0].predict(split, k, progress)
        n, n_labels = len(split), self.models[0].n_labels
        total = sp.csr_matrix((n, n_labels), dtype=np.float64)
        for model in self.models:
            ids, scores = model.predict(split, k, progress)
            valid = ids >= 0
            rows = np.repeat(np.arange(n), ids.shape[1])[valid.ravel()]
            total = total + sp.csr_matrix((scores[valid].astype(np.float64), (rows, ids[valid])),
                                          shape=(n, n_labels))
        if self.score_kind == "probability":
            total = total / len(self.models)
        dense_k = min(k, n_labels)
        out_ids = np.full((n, k), -1, dtype=np.int32)
        out_scores = np.zeros((n, k), dtype=np.float32)
        total = total.tocsr()
        for i in range(n):
            row = total.getrow(i)
            order = np.lexsort((row.indices, -row.data))[:dense_k]
            out_ids[i, : len(order)] = row.indices[order]
            out_scores[i, : len(order)] = row.data[order]
        return out_ids, out_scores

    def describe(self) -> dict[str, Any]:
        r = self.record
        test = r.get("metrics", {}).get("test", {})
        return {"run_dir": str(self.run_dir), "model": r.get("model"), "encoder": r.get("encoder"),
                "variants": r.get("variants", []), "seed": r.get("seed"),
                "valid_size": r.get("options", {}).get("valid_size"),
                "n_parameters": r.get("n_parameters"), "ensemble": "ensemble" in r,
                "score_kind": self.score_kind,
                "test": {k: test[k] for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5") if k in test}}


def check_teacher_run(path: str) -> tuple[Path, dict[str, Any]]:
    """The teacher's folder and record, checked before any data is read."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise UserError(f"teacher run {run_dir}: no such folder (give a run folder that xmlbench train, "
                        "ensemble or distill finished)")
    if not rec.is_complete(run_dir):
        raise UserError(f"teacher run {run_dir}: not a finished run (no complete {rec.RECORD}); finish it "
                        "first (xmlbench train ... --resume)")
    record = rec.read_record(run_dir)
    members = record.get("ensemble", {}).get("members") if isinstance(record.get("ensemble"), dict) else None
    for folder in [Path(m) for m in members] if members else [run_dir]:
        if not (folder / "model" / "model.json").is_file():
            raise UserError(f"teacher run {folder}: no saved model ({folder / 'model' / 'model.json'}); the "
                            "teacher must score new texts, so its model folder is needed")
    return run_dir, record


def load_teacher(path: str, ds: Dataset) -> Teacher:
    from xmlbench.io import read_json_object
    from xmlbench.models import MODELS

    run_dir, record = check_teacher_run(path)
    made_on = record.get("dataset", {}).get("fingerprint")
    if made_on != ds.fingerprint:
        raise UserError(f"teacher run {run_dir} was made on dataset {record.get('dataset', {}).get('path')} "
                        f"(fingerprint {made_on}), not on {ds.path} ({ds.fingerprint}); distil on the "
                        "teacher's own dataset")
    members = record.get("ensemble", {}).get("members") if isinstance(record.get("ensemble"), dict) else None
    models = []
    for folder in [Path(m) for m in members] if members else [run_dir]:
        meta = read_json_object(folder / "model" / "model.json", required=("model", "config"))
        models.append(MODELS.get(str(meta["model"])).cls.load(folder / "model", ds))
    kinds = {m.score_kind for m in models}
    if len(kinds) != 1:
        raise UserError(f"teacher ensemble {run_dir} mixes probability and margin members; its summed "
                        "scores are neither")
    return Teacher(run_dir, record, models, kinds.pop())


def transfer_split(train: Split, n_labels: int, aug: Augmentation, folder: Path) -> Split:
    """The training split followed by ``aug.copies`` augmented copies of each of its documents (document by
    document), as a text file in ``folder``; copies keep their document's labels."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "texts.txt"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for text in train.iter_texts():
            f.write(" ".join(text.split()) + "\n")  # one line per document, whatever its whitespace
        for text in augmented_texts(train.iter_texts(), aug, doc_ids=train.file_rows):
            f.write(text + "\n")
    rows = np.concatenate([np.arange(len(train)), np.repeat(np.arange(len(train)), aug.copies)])
    labels = train.labels[rows]
    labels.indices = labels.indices.astype(np.int32)
    return Split("train", labels=labels.tocsr(), texts=scan_lines(path))


def teacher_targets(teacher: Teacher, transfer: Split, k: int, folder: Path, progress: bool,
                    log) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The teacher's top-k on the transfer set, from ``folder/teacher.npz`` when its key matches."""
    key = {"teacher": str(teacher.run_dir.resolve()), "teacher_finished": teacher.record.get("finished"),
           "transfer": transfer.texts.digest, "k": k}
    path = folder / TEACHER_CACHE
    if path.is_file():
        try:
            cached = read_npz(path, ("ids", "scores", "key"))
        except UserError:  # a damaged cache is rebuilt, like a damaged token cache
            cached = {"key": None}
        if cached["key"] is not None and str(cached["key"]) == repr(key):
            return cached["ids"], cached["scores"], {"path": str(path), "reused": True, "scoring_s": 0.0}
    log(f"teacher {teacher.run_dir} scores {len(transfer):,} transfer documents (top {k})")
    t0 = time.perf_counter()
    ids, scores = teacher.predict(transfer, k, progress)
    seconds = time.perf_counter() - t0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=ids.astype(np.int32), scores=scores.astype(np.float32), key=np.array(repr(key)))
    return ids, scores, {"path": str(path), "reused": False, "scoring_s": round(seconds, 3)}


def prepare(distill: DistillOptions, ds: Dataset, train: Split, run_dir: Path, progress: bool, log):
    """(transfer split, SoftTargets, facts for the record, the teacher)."""
    from xmlbench.models.distillation import SoftTargets, teacher_logits
    from xmlbench.models.heads import single_label

    teacher = load_teacher(distill.teacher, ds)
    folder = run_dir / TRANSFER
    transfer = transfer_split(train, ds.n_labels, distill.augmentation, folder)
    ids, scores, cache = teacher_targets(teacher, transfer, distill.top_k, folder, progress, log)
    form = distill.form if distill.form != "auto" else ("softmax" if single_label(train.labels) else "sigmoid")
    soft = SoftTargets(ids.astype(np.int64), teacher_logits(scores, ids, teacher.score_kind, form), form,
                       distill.temperature, distill.alpha, distill.beta)
    facts = {"teacher": teacher.describe(), "settings": to_dict(distill), "form": form,
             "transfer": {"n_original": len(train), "n_augmented": len(transfer) - len(train),
                          "n_total": len(transfer), "texts": str(folder / "texts.txt"),
                          "digest": transfer.texts.digest},
             "teacher_cache": cache}
    return transfer, soft, facts, teacher


def inference_speed(teacher: Teacher, student, split: Split, k: int) -> dict[str, Any]:
    """Docs/s of teacher and student predicting ``split`` (the validation split), here, one after the
    other; each first predicts a few documents so tokenizer and caches are warm."""
    import torch

    out: dict[str, Any] = {"split": split.name, "documents": len(split), "threads": torch.get_num_threads()}
    warm = split.subset(np.arange(min(32, len(split))))
    for who, predict in (("teacher", teacher.predict), ("student", student.predict)):
        predict(warm, k, False)
        t0 = time.perf_counter()
        predict(split, k, False)
        out[f"{who}_docs_s"] = round(len(split) / max(time.perf_counter() - t0, 1e-9), 1)
    out["speedup"] = round(out["student_docs_s"] / max(out["teacher_docs_s"], 1e-9), 2)
    return out


def record_key(distill: DistillOptions) -> dict[str, Any]:
    """What makes a distilled run this run, beside the model config (its identity for --resume)."""
    d = to_dict(distill)
    d["teacher"] = str(Path(distill.teacher).resolve())
    return d


__all__ = ["DistillOptions", "Teacher", "check_teacher_run", "inference_speed", "load_teacher", "prepare",
           "record_key", "transfer_split"]
