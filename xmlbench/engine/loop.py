"""The training loop shared by every neural model (LightXML, its variants, the neural baselines).

Reads top to bottom: restore or start; for each epoch, for each batch, ``train_step``; every
``eval_every`` steps (and at each epoch end) ``evaluate`` on the selection split and keep the best
weights; checkpoint at step boundaries so a killed run resumes exactly where it was.

Three switches reproduce the original's loop where it differs (``--protocol original`` sets them):
``swa_count``/``eval_count`` "batches" count SWA folds and mid-epoch selections by the batch's index in
the epoch instead of by optimiser steps, and ``eval_mode_after_eval`` leaves dropout off after a mid-epoch
selection until the epoch ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xmlbench.engine import checkpoint as ckpt
from xmlbench.engine import distributed as dist
from xmlbench.engine.batches import Batch, chunk, epoch_order
from xmlbench.engine.optim import make_optimizer
from xmlbench.engine.swa import SWA
from xmlbench.errors import UserError

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
HISTORY = "history.jsonl"
# steps whose losses come back from the device in one copy (History.write_loss): one wait per 32 steps
LOSS_SYNC_EVERY = 32


@dataclass
class TrainState:
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # current epoch
    batch: int = 0  # next batch within the epoch
    best_score: float = -1.0
    best_step: int = -1
    best_epoch: int = -1
    done: bool = False
    dropout_off: bool = False  # eval_mode_after_eval: a mid-epoch selection switched dropout off this epoch
    train_seconds: float = 0.0  # wall time spent training up to the last checkpoint, over every resume
    history_bytes: int = -1  # length of history.jsonl at this checkpoint (-1: unknown, older checkpoints)


@dataclass
class Trainable:
    """What the loop needs from a model, nothing more."""

    net: nn.Module
    loss: Callable[[nn.Module, Batch], torch.Tensor]  # training loss of a batch (net in train mode)
    evaluate: Callable[[], dict[str, float]]  # metrics on the selection split (net in eval mode)
    param_groups: Callable[[nn.Module], list[dict[str, Any]]]
    n_train: int  # training documents
    batches_for: Callable[[list[np.ndarray], bool], Any]  # (row chunks, pin memory) -> iterable of Batch
    extra_state: Callable[[], dict[str, Any]] = dict  # extra entries for checkpoints (the resolved config)


@dataclass(frozen=True)
class Session:
    """Where and how this training session runs."""

    run_dir: Path  # resumable checkpoint, best weights and history go here
    seed: int  # the epoch order is a function of (seed, epoch)
    resume: bool = False
    log: Callable[[str], None] = print
    progress: bool = True
    report: Callable[[dict[str, Any]], None] = lambda event: None  # --report-to trackers (engine.reporters)
    flush_reports: Callable[[], None] = lambda: None  # with every checkpoint


def device_for(cfg) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    return dist.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


class Precision:
    """Autocast policy: bf16 on GPUs that have it, else fp16 with a gradient scaler; fp32 on CPU."""

    def __init__(self, amp: str, device: torch.device) -> None:
        on_gpu = device.type == "cuda"
        if amp == "auto":
            # bf16 only where the device has bf16 units: torch also says yes to a V100 (the original's GPU),
            # which it emulates at a fraction of fp16's rate
            native_bf16 = on_gpu and torch.cuda.is_bf16_supported(including_emulation=False)
            amp = ("bf16" if native_bf16 else "fp16") if on_gpu else "off"
        if amp == "fp16" and not on_gpu:
            amp = "off"  # fp16 means a gradient scaler, which is CUDA's (as the original's apex O1 was)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
        self.device_type = device.type
        self.name = amp
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and on_gpu else None

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def train(model: Trainable, cfg, session: Session) -> dict[str, Any]:
    """Train ``model.net`` in place and leave the selected weights in it; returns selection facts and
    the final optimiser state (``optimizer_state``)."""
    run_dir, seed, log = session.run_dir, session.seed, session.log
    device = device_for(cfg)
    if device.type == "cuda" and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net = model.net.to(device)
    groups = model.param_groups(net)
    check_sparse_fits(groups, cfg)
    optimizer = make_optimizer(groups, cfg.lr, device, cfg.adam_eps)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total_steps = planned_steps(model.n_train, cfg)
    trained = dist.wrap(net, device)  # DistributedDataParallel under torchrun, else the net itself
    if cfg.compile:
        trained = torch.compile(trained)
    precision = Precision(cfg.amp, device)
    swa = SWA()
    state = TrainState()
    if session.resume and (run_dir / CHECKPOINT).is_file():
        state = _restore(run_dir / CHECKPOINT, net, optimizer, swa, precision)
        log(f"resumed at epoch {state.epoch}, batch {state.batch}, step {state.step}")
    else:
        state.history_bytes = 0  # a fresh start: no earlier history belongs to this run

    # A resumed run reports its whole training time: the earlier sessions up to their last checkpoint
    # (a killed session's time after it is dropped; that work is redone here) plus this one.
    clock = _TrainClock(state.train_seconds)
    history = History(run_dir / HISTORY, state.history_bytes, state.step, session)
    stop = state.done
    bar = _bar(planned_batches(model.n_train, cfg), _batches_done(model.n_train, cfg, state),
               session.progress and dist.is_main())  # one bar for the whole run: its ETA is the run's
    while not stop and state.epoch < cfg.epochs:
        if state.epoch >= cfg.swa_warmup >= 0 and not swa.active:
            swa.fold(net)  # LightXML starts the average from the weights at the start of swa_warmup
        chunks = epoch_batches(model.n_train, seed, state.epoch, cfg.batch_size)
        batches_per_epoch = len(chunks)
        data = model.batches_for(chunks[state.batch :], device.type == "cuda")
        _train_mode(net, state)
        for batch in data:
            index = state.batch  # this batch's place in the epoch, from 0 (the original counts by it)
            loss = train_step(trained, model.loss, batch.to(device, non_blocking=True), precision, cfg.accumulate)
            state.batch += 1
            bar.update(1)
            stepped = not (state.batch % cfg.accumulate and state.batch != batches_per_epoch)
            if stepped:  # else still accumulating gradients
                set_lr(optimizer, base_lrs, lr_factor(state.step, cfg.warmup_steps, total_steps, cfg.lr_schedule))
                optimizer_step(net, optimizer, precision)
                state.step += 1
                if cfg.swa_count == "steps" and swa.active and state.step % cfg.swa_step == 0:
                    swa.fold(net)
                last = history.write_loss(state.step, state.epoch, loss)
                if last is not None:  # the losses just came back from the device
                    docs_s = (bar.format_dict["rate"] or 0) * cfg.batch_size  # global batch
                    bar.set_postfix(epoch=f"{state.epoch + 1}/{cfg.epochs}", loss=f"{last:.4f}",
                                    docs_s=f"{docs_s:.0f}")
            if _selection_due(cfg, state, index, stepped):
                _select(model, net, swa, state, run_dir, cfg, history, log)
                state.dropout_off = cfg.eval_mode_after_eval
                _train_mode(net, state)
            # The original folds after the batch's optimiser step and evaluation, whether or not it stepped.
            if cfg.swa_count == "batches" and swa.active and index % cfg.swa_step == 0:
                swa.fold(net)
            if not stepped:
                continue
            stop = bool(cfg.max_steps) and state.step >= cfg.max_steps
            if stop or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
                state.train_seconds, state.history_bytes = clock.total(), history.flushed_size()
                _checkpoint(run_dir, net, optimizer, swa, precision, state, model)
            if stop:
                break
        if not stop:
            state.epoch, state.batch, state.dropout_off = state.epoch + 1, 0, False
        _select(model, net, swa, state, run_dir, cfg, history, log)
        state.done = stop or state.epoch >= cfg.epochs
        state.train_seconds, state.history_bytes = clock.total(), history.flushed_size()
        _checkpoint(run_dir, net, optimizer, swa, precision, state, model)
    bar.close()
    history.close()
    return {**_finish(model, net, swa, state, run_dir), "optimizer_state": optimizer.state_dict()}


class History:
    """history.jsonl, one JSON event per line, each also handed to ``report`` (the ``--report-to`` trackers).

    Opened cut back to what the file held at the checkpoint we start from: the lines a killed session wrote
    after that checkpoint are written again by this one, so every step appears exactly once (and a fresh
    start drops a previous run's lines); the trackers hear ``{"start_step": ...}`` so they can do the same.
    Only rank 0 writes it, and only rank 0 reports."""

    def __init__(self, path: Path, keep_bytes: int, start_step: int, session: Session) -> None:
        self.main = dist.is_main()
        self.session = session
        self.pending: list[tuple[int, int, torch.Tensor]] = []
        if not self.main:
            self.file = open(os.devnull, "w")
            return
        if keep_bytes >= 0 and path.exists() and path.stat().st_size > keep_bytes:
            os.truncate(path, keep_bytes)
        self.file = open(path, "a", encoding="utf-8")
        session.report({"start_step": start_step})

    def write(self, event: dict[str, Any]) -> None:
        self._write_losses()  # the steps before this event come before it
        self._write(event)

    def _write(self, event: dict[str, Any]) -> None:
        self.file.write(json.dumps(event) + "\n")
        if self.main:
            self.session.report(event)

    def write_loss(self, step: int, epoch: int, loss: torch.Tensor) -> float | None:
        """Queue a step's loss (a device tensor); every ``LOSS_SYNC_EVERY`` steps, and before any other
        event or a flush, the queued losses come to the host in one copy and are written. Reading each
        step's loss at once would make the host wait for the device every step. Returns the last loss
        when it wrote, else None."""
        self.pending.append((step, epoch, loss))
        return self._write_losses() if len(self.pending) >= LOSS_SYNC_EVERY else None

    def _write_losses(self) -> float | None:
        if not self.pending:
            return None
        values = torch.stack([loss.float() for _, _, loss in self.pending]).tolist()
        for (step, epoch, _), value in zip(self.pending, values):
            self._write({"step": step, "epoch": epoch, "loss": value})
        self.pending = []
        return values[-1]

    def flushed_size(self) -> int:
        """Flushed to disk, the trackers too (called at every checkpoint and selection)."""
        self._write_losses()
        self.file.flush()
        if self.main:
            self.session.flush_reports()
        return os.fstat(self.file.fileno()).st_size

    def close(self) -> None:
        self._write_losses()
        self.file.close()


class _TrainClock:
    """Training wall time carried over from earlier sessions plus this session's."""

    def __init__(self, carried: float) -> None:
        self.carried = carried
        self.started = time.perf_counter()

    def total(self) -> float:
        return self.carried + time.perf_counter() - self.started


def planned_steps(n_train: int, cfg) -> int:
    """Optimiser steps of the whole run (the end of a linear decay)."""
    batches = -(-n_train // cfg.batch_size)
    steps = cfg.epochs * -(-batches // cfg.accumulate)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def planned_batches(n_train: int, cfg) -> int:
    """Batches of the whole run (the progress bar's total): every epoch's, or up to ``max_steps`` (an epoch
    ends with a short step when its batches are not a multiple of ``accumulate``)."""
    per_epoch = -(-n_train // cfg.batch_size)
    total = cfg.epochs * per_epoch
    if not cfg.max_steps:
        return total
    steps_per_epoch = -(-per_epoch // cfg.accumulate)
    full_epochs, left = divmod(cfg.max_steps, steps_per_epoch)
    return min(total, full_epochs * per_epoch + min(left * cfg.accumulate, per_epoch))


def _batches_done(n_train: int, cfg, state: TrainState) -> int:
    return state.epoch * -(-n_train // cfg.batch_size) + state.batch


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of every group's learning rate for optimiser step ``step`` (0-based): linear warm-up
    over ``warmup`` steps, then constant or linear decay to 0 at ``total``. A pure function of the step,
    so a resumed run follows the same schedule."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "linear" and total > warmup:
        return max(0.0, (total - step) / (total - warmup))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


def check_sparse_fits(groups: list[dict], cfg) -> None:
    """Parameters with sparse gradients (a sparsely updated label embedding) under what cannot take them:
    inductor has no sparse embedding, and NCCL no all-reduce of sparse tensors (gloo has one)."""
    if not any(g.get("sparse") for g in groups):
        return
    if cfg.compile:
        raise UserError("config key 'compile' is true, but torch.compile cannot compile a sparse embedding "
                        "(label_embedding_update is sparse here): set compile=false or "
                        "label_embedding_update=dense")
    if dist.backend() == "nccl":
        raise UserError("label_embedding_update is sparse here, but NCCL cannot all-reduce sparse gradients: "
                        "set label_embedding_update=dense for multi-GPU runs")


def _selection_due(cfg, state: TrainState, index: int, stepped: bool) -> bool:
    """A mid-epoch selection after this batch? ``eval_count`` "steps": every ``eval_every`` optimiser
    steps of the run; "batches": the original's ``step % eval_step == 0 and step != 0`` with ``step`` the
    batch's index in the epoch (from 0), so the first one comes ``eval_every`` batches into every epoch."""
    if not cfg.eval_every:
        return False
    if cfg.eval_count == "batches":
        return index > 0 and index % cfg.eval_every == 0
    return stepped and state.step % cfg.eval_every == 0


DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _train_mode(net: nn.Module, state: TrainState) -> None:
    """Train mode, or, after a mid-epoch selection under ``eval_mode_after_eval``, train mode without dropout.

    The original calls ``eval()`` and leaves it so; in its nets eval mode changes dropout and nothing
    else. Here only dropout goes: every dropout module, and every module owning one (Hugging Face
    attention reads its own ``training`` flag to drop attention probabilities), so that variants whose
    training behaviour depends on ``training`` (random negatives) keep it."""
    net.train()
    if not state.dropout_off:
        return
    for module in net.modules():
        if isinstance(module, DROPOUTS) or any(isinstance(c, DROPOUTS) for c in module.children()):
            module.training = False  # this module only, not its children (eval() would recurse)


def epoch_batches(n_train: int, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    """Global batches of ``batch_size`` rows in the epoch's order; under torchrun each rank keeps its share
    of every one (a last batch too small to give every rank a row is dropped)."""
    chunks = chunk(epoch_order(n_train, seed, epoch), batch_size)
    if dist.world_size() > 1:
        chunks = [dist.shard_of_batch(c) for c in chunks if len(c) >= dist.world_size()]
    return chunks


def train_step(net: nn.Module, loss_fn, batch: Batch, precision: Precision, accumulate: int) -> torch.Tensor:
    """Forward and backward of one batch; its loss stays on the device (``History.write_loss``)."""
    with precision.autocast():
        loss = loss_fn(net, batch) / accumulate
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
    else:
        loss.backward()
    return loss.detach() * accumulate


def optimizer_step(net: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    if precision.scaler is not None:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _select(model: Trainable, net, swa: SWA, state: TrainState, run_dir: Path, cfg, history, log) -> None:
    """Evaluate on the selection split with the averaged weights; keep them if they are the best so far."""
    net.eval()
    with swa.swapped_in(net):
        metrics = model.evaluate()
        if not metrics:
            return
        score = metrics[cfg.select_metric]
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_step, state.best_epoch = score, state.step, state.epoch
            if dist.is_main():
                ckpt.save(run_dir / BEST, {"net": net.state_dict()})
    history.write({"step": state.step, "epoch": state.epoch, "split": "select", "metrics": metrics})
    history.flushed_size()
    shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k in ("P@1", "P@3", "P@5"))
    if dist.is_main():
        log(f"step {state.step} epoch {state.epoch}: {shown}{'  (best)' if improved else ''}")


def _finish(model: Trainable, net, swa: SWA, state: TrainState, run_dir: Path) -> dict[str, Any]:
    """Leave the selected weights in the net: the best evaluated ones, else the (averaged) final ones."""
    dist.barrier()  # rank 0 has written the best weights
    if (run_dir / BEST).is_file() and state.best_step >= 0:
        best = ckpt.require(ckpt.load(run_dir / BEST), ("net",), run_dir / BEST)
        ckpt.load_into(net, best["net"], run_dir / BEST)
    elif swa.active:
        with torch.no_grad():
            params = dict(net.named_parameters())
            for n, m in swa.mean.items():
                params[n].copy_(m.to(params[n].dtype))
    net.eval()
    return {"best_step": state.best_step, "best_epoch": state.best_epoch, "best_score": state.best_score,
            "steps": state.step, "swa_models": swa.n_models, "train_seconds": state.train_seconds}


def _checkpoint(run_dir: Path, net, optimizer, swa: SWA, precision: Precision, state: TrainState,
                model: Trainable) -> None:
    rngs = dist.gather_objects(ckpt.rng_state())  # every rank's RNG, so each resumes its own stream
    if not dist.is_main():
        return
    ckpt.save(run_dir / CHECKPOINT, {
        "net": net.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "swa_state": swa.state_dict(),
        "scaler": precision.scaler.state_dict() if precision.scaler else {},
        "train_state": asdict(state),
        "rng": rngs[0],
        "rng_per_rank": rngs,
        **model.extra_state(),
    })


RESUME_KEYS = ("net", "optimizer_state_dict", "swa_state", "train_state", "rng")


def _restore(path: Path, net, optimizer, swa: SWA, precision: Precision) -> TrainState:
    saved = ckpt.require(ckpt.load(path), RESUME_KEYS, path)
    ckpt.load_into(net, saved["net"], path)
    try:
        optimizer.load_state_dict(saved["optimizer_state_dict"])
        swa.load_state_dict(saved["swa_state"])
        state = TrainState(**saved["train_state"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: its optimiser or training state does not fit this run ({e})") from None
    if precision.scaler and saved.get("scaler"):
        precision.scaler.load_state_dict(saved["scaler"])
    per_rank = saved.get("rng_per_rank") or [saved["rng"]]
    if len(per_rank) != dist.world_size():
        raise UserError(f"{path} was written by {len(per_rank)} process(es); resume with the same number")
    ckpt.set_rng_state(per_rank[dist.rank()])
    return state


def _bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", disable=not enabled, unit="batch", leave=False)


def make_param_groups(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups as in LightXML: weight decay except on biases and LayerNorm weights."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")
    decay = [p for n, p in named if p.requires_grad and not any(nd in n for nd in no_decay)]
    rest = [p for n, p in named if p.requires_grad and any(nd in n for nd in no_decay)]
    return [g for g in ({"params": decay, "weight_decay": weight_decay, "lr": lr},
                        {"params": rest, "weight_decay": 0.0, "lr": lr}) if g["params"]]

