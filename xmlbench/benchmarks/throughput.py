"""``xmlbench bench throughput``: training and inference speed of LightXML on random tokens.

Measures docs/s, peak accelerator memory and model FLOP utilisation (MFU) for an encoder at a sequence
length with a flat (Eurlex-4K-sized) or clustered (Amazon-670K-sized) head, with the same training step,
optimiser and autocast policy as real runs. MFU counts the usual 6 * params * tokens for the transformer's
matrix multiplies plus 12 * layers * T^2 * hidden for attention (forward + backward), and the head's
matrix multiplies; peak is the accelerator's dense bf16 rate (989 TFLOP/s for an H100 SXM).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from xmlbench.benchmarks import BENCHMARKS, Benchmark

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "V100": 125e12}


def random_clusters(n_labels: int, leaf_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced random leaves with the sizes the real clustering produces (a power of two of them)."""
    from xmlbench.models.lightxml.clustering import clusters_to_arrays

    n_leaves = 1 << int(np.ceil(np.log2(max(n_labels / leaf_size, 1))))
    perm = np.random.default_rng(seed).permutation(n_labels).astype(np.int32)
    return clusters_to_arrays(np.array_split(perm, n_leaves))


def bench_throughput(encoder: str = "bert-base-random", max_len: int = 512, mode: str = "flat",
                     n_labels: int = 3956, batch_size: int = 16, steps: int = 20, warmup: int = 3,
                     amp: str = "auto", hidden: int = 400, top_b: int = 75, compile: bool = False,
                     label_update: str = "dense") -> dict[str, Any]:
    from xmlbench.encoders import load_encoder
    from xmlbench.engine import loop
    from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet, lightxml_param_groups

    cfg = LightXMLConfig(encoder=encoder, max_len=max_len, hidden=hidden, top_b=top_b, amp=amp,
                         label_embedding_update=label_update)
    device = loop.device_for(cfg)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    enc = load_encoder(encoder, seed=0)
    clusters = random_clusters(n_labels, cfg.leaf_size) if mode == "clustered" else None
    net = LightXMLNet(enc.model, enc.hidden_size, enc.cls_position, n_labels, cfg, clusters).to(device)
    optimizer = loop.make_optimizer(lightxml_param_groups(net, cfg), cfg.lr, device)  # as a real run's
    precision = loop.Precision(amp, device)
    gen = torch.Generator().manual_seed(0)
    vocab = enc.model.config.vocab_size

    def make_batch():
        ids = torch.randint(1000, vocab, (batch_size, max_len), generator=gen)
        mask = torch.ones_like(ids)
        pos = torch.randint(0, n_labels, (batch_size, 5), generator=gen)
        return ids.to(device), mask.to(device), pos.to(device)

    step_fn = net
    if compile:
        step_fn = torch.compile(net)
    batches = [make_batch() for _ in range(4)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    net.train()
    t_train = 0.0
    for i in range(warmup + steps):
        ids, mask, pos = batches[i % len(batches)]
        sync()
        t0 = time.perf_counter()
        with precision.autocast():
            loss = step_fn(ids, mask, pos)
        if precision.scaler:
            precision.scaler.scale(loss).backward()
        else:
            loss.backward()
        loop.optimizer_step(net, optimizer, precision)
        sync()
        if i >= warmup:
            t_train += time.perf_counter() - t0
    train_docs_s = steps * batch_size / t_train
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

    net.eval()
    eval_batch = batch_size * 4
    ids = torch.randint(1000, vocab, (eval_batch, max_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    t_pred = 0.0
    with torch.no_grad():
        for i in range(warmup + steps // 2):
            sync()
            t0 = time.perf_counter()
            with precision.autocast():
                doc, state = net.embed(ids, mask)
                if net.clustered:
                    net.clustered_topk(doc, state, 100)
                else:
                    torch.sigmoid(net.flat_logits(doc, state).float()).topk(100, dim=1)
            sync()
            if i >= warmup:
                t_pred += time.perf_counter() - t0
    predict_docs_s = (steps // 2) * eval_batch / t_pred

    flops_per_doc = training_flops_per_doc(enc.model, max_len, net, mode)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in gpu), None)
    return {
        "device": gpu,
        "precision": precision.name,
        "encoder": encoder,
        "max_len": max_len,
        "mode": mode,
        "label_update": label_update if mode == "clustered" else None,
        "n_labels": n_labels,
        "batch_size": batch_size,
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
        "train_docs_per_s": round(train_docs_s, 1),
        "predict_docs_per_s": round(predict_docs_s, 1),
        "peak_gpu_memory_gib": round(peak_train, 2) if peak_train is not None else None,
        "train_tflops_per_doc": round(flops_per_doc / 1e12, 4),
        "mfu": round(train_docs_s * flops_per_doc / peak, 3) if peak else None,
        "compile": compile,
    }


def training_flops_per_doc(encoder, seq: int, net, mode: str) -> float:
    cfg = encoder.config
    n_embed = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" in n)
    n_body = sum(p.numel() for p in encoder.parameters()) - n_embed
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    flops = 6 * n_body * seq + 12 * layers * seq * seq * hidden
    dim = 5 * hidden
    if mode == "flat":
        flops += 6 * dim * net.n_labels
    else:
        k = net.generator.out_features
        cands = net.cfg.top_b * net.cluster_labels.shape[1]
        flops += 6 * dim * k + 6 * dim * net.cfg.hidden + 6 * cands * net.cfg.hidden
    return float(flops)


def sweep(steps: int = 20) -> list[dict[str, Any]]:
    """The figures the issues ask for: bert-base-sized encoder, max_len 512 and 128, both heads."""
    out = []
    for max_len, batch in ((512, 16), (128, 64)):
        out.append(bench_throughput(max_len=max_len, batch_size=batch, mode="flat", n_labels=3956, steps=steps))
        for update in ("dense", "sparse"):
            out.append(bench_throughput(max_len=max_len, batch_size=batch, mode="clustered", n_labels=670091,
                                        steps=steps, label_update=update))
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    keys = ["device", "precision", "max_len", "mode", "label_update", "n_labels", "batch_size", "parameters_m",
            "train_docs_per_s", "predict_docs_per_s", "peak_gpu_memory_gib", "mfu"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


BENCHMARKS.register("throughput", Benchmark(
    "throughput", "LightXML training and prediction docs/s, MFU and peak memory (flat and clustered heads)",
    lambda options: {"rows": sweep(steps=options.steps)}, lambda result: format_rows(result["rows"])))
