"""Reload a finished run's model from its folder alone and predict a dataset."""

from __future__ import annotations

from pathlib import Path

from xmlbench.data.dataset import open_dataset
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
    ds = open_dataset(name)
    model = entry.cls.load(run_dir / "model", ds)
    return model, ds


def predict_run(run_dir: Path, dataset_name: str | None, split: str, out: str | None, progress: bool) -> dict:
    target = Output("predictions", ident=f"{run_dir.resolve()} on {dataset_name or 'its dataset'}, {split}")
    if out:  # refuse a foreign --out before the work, not after it
        claim_folder(Path(out), target, force=False)
    model, ds = load_run_model(run_dir, dataset_name)
    part = ds.test if split == "test" else ds.train
    ids, scores = model.predict(part, TOP_K, progress=progress)
    if out:
        with writing(Path(out), target):
            rec.write_predictions(Path(out), ids, scores)
    return evaluate(ids, part.labels, inv_propensity=ds.inv_propensity())
