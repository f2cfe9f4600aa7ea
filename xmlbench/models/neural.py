"""Shared machinery of the neural models: encoder + head, token caches, the training loop, top-k
prediction in batches, and the exported model folder.

A model folder holds ``model.safetensors`` (the net's weights, and the label hierarchy's tensors, e.g.
LightXML's clusters, under ``hierarchy.``), ``model.json`` (the model's config, the encoder's architecture,
the hierarchy's plain values) and ``label_names.txt``: no optimiser state, no pickle. The optimiser, SWA
and RNG state needed to continue training live in the run folder's ``checkpoint.pt`` (the loop's), which
the runner deletes once the run has finished unless ``--keep-state``. Folders written before the export
(``model/checkpoint.pt`` in the seed's schema: config, hierarchy, encoder_state_dict,
classifier_state_dict, optimizer_state_dict) still load, and ``--init-from`` and ``init`` files keep that
schema."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import nn

from xmlbench.config import (
    Count,
    Dropout,
    NonNegative,
    NonNegativeFloat,
    Positive,
    Range,
    Rule,
    from_dict,
    to_dict,
)
from xmlbench.data.dataset import Dataset, Split
from xmlbench.data.labels import in_label_space
from xmlbench.engine import checkpoint as ckpt
from xmlbench.engine import distributed as dist
from xmlbench.engine import loop
from xmlbench.engine.batches import Batch, chunk, loader
from xmlbench.errors import UserError
from xmlbench.io import write_json
from xmlbench.models.base import FitContext, Model
from xmlbench.paths import cache_dir

MODEL_FILE = "checkpoint.pt"  # a model folder of the seed's schema, from before the safetensors export
WEIGHTS_FILE = "model.safetensors"
LOWERCASE = {"auto": None, "always": True, "never": False}  # config lowercase -> build_token_cache's
MODEL_KEYS = ("config", "hierarchy", "encoder_state_dict", "classifier_state_dict")  # the seed's schema


def selectable_metric(name: str) -> str | None:
    """The loop selects on metrics it computes itself: no propensities, k in KS (checked at config time,
    not after the first epoch)."""
    from xmlbench.metrics import KS, METRICS

    allowed = [f"{n}@{k}" for n, spec in METRICS.items() if not spec.needs_propensity for k in KS]
    if name in allowed:
        return None
    return f"must be one of the metrics the loop evaluates ({', '.join(allowed)})"


DEVICE_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_name(name: str) -> str | None:
    """Syntax only; whether the device exists is checked when the model is built (``check_device``)."""
    return None if DEVICE_NAME.match(name) else "must be auto, cpu, cuda, cuda:N or mps"


# Sizes with an upper bound: beyond these a value is a typo, and would allocate without limit first.
Width = Annotated[int, Range(1, 65_536)]
Workers = Annotated[int, Range(0, 256)]  # each worker is a process


@dataclass(frozen=True)
class NeuralConfig:
    """Training options shared by all neural models (LightXML's recipe by default). Every bound is in the
    field's type (``xmlbench.config``); ``max_len`` is also checked against the encoder once it is loaded."""

    encoder: str = "bert-base"  # a registered name, a folder or a hub id: checked when loaded
    max_len: Annotated[int, Range(2)] = 512  # room for [CLS] and [SEP]; at most the encoder's positions
    epochs: Count = 25
    batch_size: Count = 16
    accumulate: Count = 1
    lr: NonNegativeFloat = 1e-4  # 0 freezes the weights (the ablation test uses it to see initial weights)
    weight_decay: NonNegativeFloat = 0.01
    warmup_steps: NonNegative = 0  # optimiser steps of linear learning-rate warm-up (0 = none, the original)
    lr_schedule: Literal["constant", "linear"] = "constant"  # after warm-up: constant, or linear decay to 0
    swa_warmup: Annotated[int, Range(-1)] = 10  # epoch from which SWA folds weights in; -1 turns SWA off
    swa_step: Count = 200  # optimiser steps (or batches, see swa_count) between folds
    # "steps": fold every swa_step optimiser steps, counted over the whole run; "batches": the original's
    # count, every swa_step batches of the epoch counted from 0 (with accumulate=2 that is twice as often)
    swa_count: Literal["steps", "batches"] = "steps"
    eval_every: NonNegative = 0  # optimiser steps (or batches, see eval_count) between selections; 0: epoch ends
    # "batches": the original's count, after batch eval_every, 2*eval_every, ... of each epoch (from 0)
    eval_count: Literal["steps", "batches"] = "steps"
    # The original's trick: after a mid-epoch selection, dropout stays off until the epoch ends
    eval_mode_after_eval: bool = False
    adam_eps: Positive = 1e-8  # AdamW's epsilon; the original's transformers.AdamW defaults to 1e-6
    eval_batch_size: Count = 64
    max_steps: NonNegative = 0  # stop after this many optimiser steps (0 = no limit); smoke runs, benchmarks
    checkpoint_every: NonNegative = 200  # optimiser steps between resumable checkpoints (0: epoch ends only)
    select_metric: Annotated[str, Rule(selectable_metric)] = "P@5"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    tf32: bool = True
    device: Annotated[str, Rule(device_name)] = "auto"
    num_workers: Workers = 0  # data-loader workers (useful on a GPU)
    compile: bool = False  # torch.compile the training step (on an H100: 448 -> 593 docs/s, bert-base, 512)
    dropout: Dropout = 0.5
    # dropout inside the encoder; negative keeps the encoder's own
    encoder_dropout: Annotated[float, Range(-1, 1, hi_open=True)] = -1.0
    # Lower-case texts before tokenising: "auto" only for tokenizers that lower-case themselves (uncased
    # vocabularies); "always" as the original does for every encoder, roberta and xlnet included
    lowercase: Literal["auto", "always", "never"] = "auto"


def check_device(name: str) -> None:
    """The configured device must exist here (found now, not when the first batch moves to it)."""
    if name in ("auto", "cpu"):
        return
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = f"only {count} CUDA device(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA device"
            raise UserError(f"config key 'device' is {name!r} but this machine has {have}")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise UserError("config key 'device' is 'mps' but MPS is not available on this machine")


def net_state(saved: dict[str, Any]) -> dict[str, Any]:
    """The net's full state dict from a checkpoint's encoder and classifier parts (the seed's schema)."""
    return {**{f"encoder.{k}": v for k, v in saved["encoder_state_dict"].items()},
            **saved["classifier_state_dict"]}


class NeuralModel(Model):
    """Subclasses build ``self.net`` (an ``nn.Module`` with ``.encoder`` and ``.head``) and implement
    ``loss(net, batch)`` and ``topk(net, input_ids, attention_mask, k)``."""

    def __init__(self, config: Any, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        from xmlbench.encoders import load_encoder

        if not dataset.has_texts:
            raise UserError(f"{self.name} needs texts; {dataset.name} is a bag-of-words dataset")
        check_device(config.device)
        self.dataset = dataset
        self.encoder = load_encoder(config.encoder, seed=torch.initial_seed() % 2**31)
        self.check_encoder_fits()
        if config.encoder_dropout >= 0:
            for module in self.encoder.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = config.encoder_dropout
        self.check_memory(dataset)
        self.net = self.build_net(dataset)
        self._caches: dict[str, Any] = {}

    def check_encoder_fits(self) -> None:
        """Config values that depend on the encoder, checked once it is loaded and before any training:
        a longer input than its position embeddings would fail inside the first batch."""
        limit = self.encoder.max_tokens
        if limit is not None and self.config.max_len > limit:
            raise UserError(f"config key 'max_len' is {self.config.max_len} but encoder "
                            f"{self.encoder.name!r} reads at most {limit} tokens")

    def check_memory(self, dataset: Dataset) -> None:
        """Refuse a model too large for this machine before allocating it (hidden=65536 on 670k labels
        would be 175 GB, found by the OOM killer): the net is first built on the meta device, which counts
        its parameters without allocating them. Training holds each parameter about five times (weights,
        gradients, two AdamW moments, the SWA mean), four bytes each."""
        from xmlbench.runtime import available_memory_bytes, human_bytes

        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the RNG stream stays untouched
            probe = self.build_net(dataset)
        new = sum(p.numel() for p in probe.parameters() if p.is_meta)
        total = sum(p.numel() for p in probe.parameters())
        need, have = 4 * (new + 4 * total), available_memory_bytes()
        if need > have:
            raise UserError(f"{self.name} would have {total:,} parameters, about {human_bytes(need)} to "
                            f"train; this machine has {human_bytes(have)} available (lower hidden, or use a "
                            "smaller encoder)")

    # -- to implement -------------------------------------------------------------------------------
    def build_net(self, dataset: Dataset) -> nn.Module:
        raise NotImplementedError

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def topk(self, net: nn.Module, input_ids, attention_mask, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, ids) of the k best labels per row, best first."""
        raise NotImplementedError

    # Distillation students have a full label head: ``logits`` (B, L) and the supervised loss on them.
    distillable = False

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def supervised_loss(self, logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def student_loss(self, soft):
        """The training loss of a distillation student: alpha * L_d + beta * L_s (models/distillation.py)."""
        from xmlbench.models.distillation import combined_loss

        def loss(net: nn.Module, batch: Batch) -> torch.Tensor:
            logits = self.logits(net, batch)  # (B, L)
            return combined_loss(logits, self.supervised_loss(logits, batch.positives), batch.soft_ids,
                                 batch.soft_logits, soft)

        return loss

    def hierarchy(self) -> dict[str, Any]:
        """Label structure saved with the model (label vocabulary, clusters)."""
        return {"label_names": list(self.label_names)}

    def load_hierarchy(self, hierarchy: dict[str, Any], path: Path) -> None:
        """Restore the label structure saved with the model; a mismatch names ``path``."""
        names = hierarchy.get("label_names") if isinstance(hierarchy, dict) else None
        if names is not None and len(names) != self.n_labels:
            raise UserError(f"{path}: the model was trained on {len(names)} labels but this dataset has "
                            f"{self.n_labels}")

    def prepare(self, ctx: FitContext) -> None:
        """Work before training that needs the training split (e.g. label clustering)."""

    # -- shared ---------------------------------------------------------------------------------------
    def param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        """LightXML: one learning rate everywhere; subclasses may split encoder and classifier."""
        return loop.make_param_groups(list(net.named_parameters()), self.config.lr, self.config.weight_decay)

    def tokens(self, split: Split, progress: bool = False):
        """The token cache of the file behind ``split`` (built once, memory-mapped afterwards)."""
        from xmlbench.data.tokcache import build_token_cache

        texts = split.texts
        key = texts.digest
        if key not in self._caches:
            self._caches[key] = build_token_cache(
                texts.iter_lines(), len(texts), self.encoder.tokenizer, self.encoder.spec.source
                if not self.encoder.spec.is_random else self.encoder.name, self.config.max_len, key,
                cache_dir() / "tokens", progress=progress, lowercase=LOWERCASE[self.config.lowercase],
            )
        return self._caches[key]

    def fit(self, ctx: FitContext) -> dict[str, Any]:
        stage_s: dict[str, float] = {}
        with dist.main_first():  # under torchrun, rank 0 fills the caches the other ranks then read
            t0 = time.perf_counter()
            self.prepare(ctx)
            stage_s["prepare"] = time.perf_counter() - t0  # e.g. label clustering
            t0 = time.perf_counter()
            train_tokens = self.tokens(ctx.train, ctx.progress)
            select_tokens = self.tokens(ctx.select, ctx.progress) if ctx.select is not None else None
            stage_s["tokenise"] = time.perf_counter() - t0
        if ctx.init_from is not None:
            self._load_weights_from(ctx.init_from)

        soft = ctx.soft_targets
        if soft is not None and not self.distillable:
            raise UserError(f"model {self.name!r} cannot be a distillation student (it has no full label "
                            "head); students: bilstm, sigmoid-linear, softmax-linear")

        def batches_for(chunks, pin):
            return loader(train_tokens, ctx.train.file_rows, ctx.train.labels, chunks,
                          self.config.num_workers, pin, None if soft is None else (soft.ids, soft.logits))

        def evaluate() -> dict[str, float]:
            if ctx.select is None:
                return {}
            from xmlbench.metrics import KS
            from xmlbench.metrics import evaluate as metrics

            ids, _ = self._predict_tokens(select_tokens, ctx.select.file_rows, max(KS), progress=False)
            return metrics(ids, ctx.select.labels, ks=KS)

        trainable = loop.Trainable(net=self.net, loss=self.loss if soft is None else self.student_loss(soft),
                                   evaluate=evaluate,
                                   param_groups=self.param_groups, n_train=len(ctx.train),
                                   batches_for=batches_for,
                                   extra_state=lambda: {"config": json.dumps(self._config_dict())})
        session = loop.Session(run_dir=ctx.run_dir, seed=ctx.seed, resume=ctx.resume, log=ctx.log,
                               progress=ctx.progress, report=ctx.report, flush_reports=ctx.flush_reports)
        t0 = time.perf_counter()
        selection = loop.train(trainable, self.config, session)
        selection.pop("optimizer_state")  # not exported: the run folder's checkpoint.pt holds it (--keep-state)
        # Over every session of a resumed run (the loop's clock), not just this process.
        this_session = time.perf_counter() - t0
        stage_s["train"] = selection.pop("train_seconds", None) or this_session
        return {**selection, "stage_s": {k: round(v, 3) for k, v in stage_s.items()},
                "earlier_sessions_s": max(0.0, stage_s["train"] - this_session)}

    def predict_own(self, split: Split, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        with dist.main_first():
            tokens = self.tokens(split, progress)
        return self._predict_tokens(tokens, split.file_rows, k, progress)

    def _predict_tokens(self, tokens, file_rows: np.ndarray, k: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for the given rows; under torchrun each rank predicts a block and all gather the result."""
        ids, scores = self._predict_block(tokens, dist.shard_of_rows(file_rows), k, progress and dist.is_main())
        return dist.gather_rows(ids, scores)

    @torch.no_grad()
    def _predict_block(self, tokens, file_rows: np.ndarray, k: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        from tqdm import tqdm

        net = self.net
        device = next(net.parameters()).device
        was_training = net.training
        net.eval()
        precision = loop.Precision(self.config.amp, device)
        ids_out = np.full((len(file_rows), k), -1, dtype=np.int32)
        scores_out = np.zeros((len(file_rows), k), dtype=np.float32)
        start = 0
        for rows in tqdm(chunk(file_rows, self.config.eval_batch_size), disable=not progress, desc="predict",
                         unit="batch", leave=False):
            input_ids, mask = tokens.batch(rows, trim=True)
            with precision.autocast():
                scores, ids = self.topk(net, input_ids.to(device), mask.to(device), k)
            width = ids.shape[1]
            ids_out[start : start + len(rows), :width] = ids.cpu().numpy()
            scores_out[start : start + len(rows), :width] = scores.float().cpu().numpy()
            start += len(rows)
        net.train(was_training)
        return ids_out, scores_out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def _config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dicts(self) -> tuple[dict, dict]:
        full = self.net.state_dict()
        encoder = {k[len("encoder."):]: v for k, v in full.items() if k.startswith("encoder.")}
        classifier = {k: v for k, v in full.items() if not k.startswith("encoder.")}
        return encoder, classifier

    def checkpoint(self, optimizer_state: dict | None = None) -> dict[str, Any]:
        encoder, classifier = self.state_dicts()
        # Exactly the seed's checkpoint schema; the encoder's architecture rides along inside "config".
        config = {"model": self.name, **self._config_dict(),
                  "encoder_config": self.encoder.model.config.to_dict()}
        return {
            "config": json.dumps(config),
            "hierarchy": self.hierarchy(),
            "encoder_state_dict": encoder,
            "classifier_state_dict": classifier,
            "optimizer_state_dict": optimizer_state or {},
        }

    def save_initial(self, path: Path) -> None:
        """Untrained weights in the checkpoint schema, for ``--init-from``."""
        ckpt.save(path, self.checkpoint())

    def save(self, folder: Path) -> None:
        """The export: weights in safetensors, config and hierarchy in JSON, label names one a line."""
        from xmlbench.models.base import save_label_names

        folder.mkdir(parents=True, exist_ok=True)
        hierarchy = dict(self.hierarchy())
        names = hierarchy.pop("label_names", list(self.label_names))
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        plain = {}
        for key, value in hierarchy.items():
            if isinstance(value, torch.Tensor):
                tensors[f"hierarchy.{key}"] = value
            else:
                plain[key] = value
        ckpt.save_tensors(folder / WEIGHTS_FILE, tensors)
        save_label_names(folder, names)
        write_json(folder / "model.json", {"model": self.name, "config": to_dict(self.config),
                                           "weights": WEIGHTS_FILE, "hierarchy": plain,
                                           "encoder_config": self.encoder.model.config.to_dict()})

    @classmethod
    def restore(cls, folder: Path, dataset: Dataset) -> NeuralModel:
        if not (folder / WEIGHTS_FILE).is_file() and (folder / MODEL_FILE).is_file():
            return cls.from_checkpoint(folder / MODEL_FILE, dataset)  # saved before the export
        from xmlbench.models.base import read_model_meta, saved_label_space

        meta, config = read_model_meta(folder, cls.name, cls.config_cls())
        path = folder / WEIGHTS_FILE
        tensors = ckpt.load_tensors(path)
        own, assumed = saved_label_space(folder, dataset)
        model = cls(config, own)
        model.label_names_assumed = assumed
        plain = meta.get("hierarchy") if isinstance(meta.get("hierarchy"), dict) else {}
        hierarchy = {**plain, "label_names": list(own.label_names),
                     **{k[len("hierarchy."):]: v for k, v in tensors.items() if k.startswith("hierarchy.")}}
        model.load_hierarchy(hierarchy, path)
        net = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
        if not net:
            raise UserError(f"{path}: holds no net weights (no 'net.' tensors); not an xmlbench model file")
        ckpt.load_into(model.net, net, path)
        model.net.eval()
        return model

    @classmethod
    def from_checkpoint(cls, path: Path, dataset: Dataset) -> NeuralModel:
        """Rebuild the model from the checkpoint alone (plus the dataset it predicts), in the label space
        saved in its hierarchy (``load`` then maps predictions onto ``dataset``'s ids)."""
        saved = ckpt.require(ckpt.load(path), MODEL_KEYS, path)
        try:
            config_dict = json.loads(saved["config"])
        except (TypeError, ValueError):
            raise UserError(f"{path}: damaged checkpoint (its config entry is not JSON)") from None
        saved_model = config_dict.get("model", cls.name) if isinstance(config_dict, dict) else "?"
        if saved_model != cls.name:
            raise UserError(f"{path}: holds a {saved_model} model, not {cls.name}")
        config_dict.pop("model", None)
        config_dict.pop("encoder_config", None)
        try:
            config = from_dict(cls.config_cls(), config_dict)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        names = saved["hierarchy"].get("label_names")
        own = dataset if names is None else in_label_space(dataset, names)
        model = cls(config, own)
        model.label_names_assumed = names is None
        model.load_hierarchy(saved["hierarchy"], path)
        ckpt.load_into(model.net, net_state(saved), path)
        model.net.eval()
        return model

    @classmethod
    def config_cls(cls) -> type:
        raise NotImplementedError

    def _fitting_head_weights(self, weights: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """Drop head tensors whose shape this model does not have: a variant that changes the document
        width (scalar-mix: H instead of 5H) shares the ablation's initial encoder but not its head shapes,
        so its heads keep their own seeded initialisation. A mismatched encoder tensor stays an error."""
        own = self.net.state_dict()
        wrong = [k for k, v in weights.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
        if any(k.startswith("encoder.") for k in wrong):
            raise UserError(f"--init-from {run_dir}: its encoder weights do not fit this model "
                            f"({[k for k in wrong if k.startswith('encoder.')][:3]} ...)")
        return {k: v for k, v in weights.items() if k not in wrong}

    def _load_weights_from(self, run_dir: Path) -> None:
        """--init-from: identical initial weights across arms (same encoder and head shapes)."""
        folder = Path(run_dir) / "model"
        if Path(run_dir).is_dir() and (folder / WEIGHTS_FILE).is_file():
            tensors = ckpt.load_tensors(folder / WEIGHTS_FILE)
            weights, path = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}, folder
        else:
            path = folder / MODEL_FILE if Path(run_dir).is_dir() else Path(run_dir)
            if not path.is_file():
                raise UserError(f"--init-from {run_dir}: no {WEIGHTS_FILE} or {MODEL_FILE} (or initial-weights "
                                "file) found")
            weights = net_state(ckpt.require(ckpt.load(path), ("encoder_state_dict", "classifier_state_dict"),
                                             path))
        weights = self._fitting_head_weights(weights, run_dir)
        _, unexpected = ckpt.load_into(self.net, weights, path, strict=False)
        if unexpected:
            raise UserError(f"--init-from {run_dir}: weights do not fit this model ({unexpected[:3]} ...)")
