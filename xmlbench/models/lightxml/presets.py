"""LightXML's named presets: ``default`` (the original hyper-parameters from each dataset's manifest) and
``smoke`` (the same pipeline, small enough for 2 CPU cores); and its protocol bundle ``original``."""

from __future__ import annotations

import dataclasses
from typing import Any

from xmlbench.data.dataset import Dataset
from xmlbench.errors import UserError
from xmlbench.models.lightxml.model import LightXMLConfig


def presets() -> dict[str, Any]:
    return {"default": default_preset, "smoke": smoke_preset}


def protocols() -> dict[str, Any]:
    return {"original": original_protocol}


def original_protocol(ds: Dataset, encoder: str) -> dict[str, Any]:
    """The original's training quirks, each one config key (README: "fair vs original"). Merged above
    any preset, so ``--preset smoke --protocol original`` is the smoke pipeline trained the original's way.
    The run half (seed 6088, test-set selection on flat datasets, 4,000 held out on clustered ones) is in
    ``xmlbench.runs.protocol``."""
    return {
        # "this tricks makes LightXML converge fast": dropout off after a mid-epoch selection
        "eval_mode_after_eval": True,
        "eval_count": "batches",  # `step % eval_step == 0 and step != 0`, step = batch of the epoch
        "swa_count": "batches",  # `step % swa_step == 0`, the same batch counter, from epoch swa_warmup on
        "adam_eps": 1e-6,  # transformers.AdamW's default
        "lowercase": "always",  # `text.lower()` for every encoder, roberta and xlnet included
        "amp": "fp16",  # apex O1: fp16 autocast with a loss scaler (on CUDA; fp32 on a CPU)
        "clusters": "auto",  # its label_group{cluster_seed}.npy when in the dataset folder, else computed
        # the original's heads: one learning rate for everything, no document norm, zero biases
        "head_lr": -1.0,
        "head_norm": "none",
        "bias_init": "zero",
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "label_embedding_update": "dense",  # one AdamW over every label's row
    }


def default_preset(ds: Dataset, encoder: str) -> dict[str, Any]:
    """The original hyper-parameters for (dataset, encoder), from the dataset manifest."""
    encoder = encoder or "bert-base"
    out: dict[str, Any] = {"encoder": encoder}
    table = ds.info.lightxml if ds.info is not None else {}
    if table:
        chosen = table.get(encoder) or table.get("bert-base", {})
        known = {f.name for f in dataclasses.fields(LightXMLConfig)}
        unknown = sorted(set(chosen) - known)
        if unknown:  # a typo in a manifest must not be silently ignored
            raise UserError(f"{ds.info.manifest_path}: [lightxml.*] has unknown LightXML config key "
                            f"{unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        out.update(chosen)
    return out


def smoke_preset(ds: Dataset, encoder: str) -> dict[str, Any]:
    """8-10 minutes on 2 CPU cores: the random tiny encoder, short texts, SWA over the last two epochs.

    Why eight epochs: a randomly initialised encoder's [CLS] carries almost no document information at
    first (its own embedding dominates; measured content share 0.3%), so the model sits at the label
    prior for ~4-5 epochs (~2,000 steps of 32 on synth-eurlex4k) before [CLS] learns to attend to the
    text; after that P@1 climbs quickly. A shorter budget only measures that plateau. SWA starts with
    the seventh epoch (swa_warmup counts from 0) so that plateau weights are not averaged in.

    It keeps the original's heads (one lr, no document norm, zero biases): standardising a random
    encoder's [CLS] per feature amplifies its 0.3% of document content together with noise (on the
    synthetic ``small`` set, flat, 170 steps: test P@1 1.0 with head_norm=batchnorm, 5.7 without).
    """
    return {
        "encoder": encoder or "tiny",
        "max_len": 64,
        "epochs": 8,
        "batch_size": 32,
        "lr": 1e-3,
        "swa_warmup": 6,
        "swa_step": 20,
        "eval_batch_size": 128,
        "dropout": 0.2,
        "hidden": 64,
        "top_b": 8,
        "leaf_size": 32,
        "checkpoint_every": 500,
        "head_lr": -1.0,
        "head_norm": "none",
        "bias_init": "zero",
    }
