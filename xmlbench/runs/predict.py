"""Reload a finished run's model from its folder alone and predict a dataset.

The dataset may be another one than the run's (``--dataset``): the model's labels are matched to its
labels by name, so the same data with its labels in another order scores the same. A label of the model's
that the dataset lacks is a wrong prediction wherever the model ranks it (a miss, the P@k denominator stays
k); a dataset sharing no label name with the model is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xmlbench.errors import UserError
from xmlbench.io import read_json_object
from xmlbench.metrics import TOP_K, evaluate
from xmlbench.models import MODELS
from xmlbench.outputs import Output, claim_folder, writing
from xmlbench.runs import record as rec


def load_run_model(run_dir: Path, dataset_name: str | None = None):
    meta_path = run_dir / "model" / "model.json"
    if not meta_path.is_file():
        raise UserError(f"{run_dir}: no saved model (expected {meta_path})")
    meta = read_json_object(meta_path, required=("model", "config"))
    record = read_json_object(run_dir / rec.RECORD) if (run_dir / rec.RECORD).is_file() else {}
    dataset = record.get("dataset") if isinstance(record.get("dataset"), dict) else {}
    name = dataset_name or dataset.get("path") or dataset.get("name")
    if not name:
        raise UserError(f"{run_dir}: no record names the dataset; pass --dataset")
    entry = MODELS.get(str(meta["model"]))
    ds = rec.recorded_dataset(record, name)  # with the run's --unlabelled policy
    model = entry.cls.load(run_dir / "model", ds)
    made_on = record.get("dataset", {}).get("fingerprint")
    if model.label_names_assumed and made_on != ds.fingerprint:
        raise UserError(
            f"{run_dir / 'model'} was saved without its label names and {ds.name} is not the data it was "
            f"trained on (dataset fingerprint {ds.fingerprint}, not {made_on}): its label ids cannot be matched"
        )
    return model, ds


def predict_run(run_dir: Path, dataset_name: str | None, split: str, out: str | None, progress: bool) -> dict:
    target = Output("predictions", ident=f"{run_dir.resolve()} on {dataset_name or 'its dataset'}, {split}")
    if out:  # refuse a foreign --out before the work, not after it
        claim_folder(Path(out), target, force=False)
    model, ds = load_run_model(run_dir, dataset_name)
    return score_split(model, ds, split, out, progress, target)


def score_split(model, ds, split: str, out: str | None, progress: bool, target: Output | None = None) -> dict:
    """Metrics of ``model`` (already mapped onto ``ds``'s label ids) on ``ds``'s train or test split."""
    if model.unmatched_labels:
        print(f"note: {model.unmatched_labels} of the model's {model.n_labels} labels are not labels of "
              f"{ds.name}; predicting one counts as a miss", file=sys.stderr)
    part = ds.test if split == "test" else ds.train
    ids, scores = model.predict(part, TOP_K, progress=progress)
    if out:
        target = target or Output("predictions", ident=f"{ds.path} {split}")
        with writing(Path(out), target):
            rec.write_predictions(Path(out), ids, scores, ds.label_names)
    return evaluate(ids, part.labels, inv_propensity=ds.inv_propensity(), coverage=True)  # as the record
