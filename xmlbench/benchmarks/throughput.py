"""``xmlbench bench throughput``: training and inference speed of LightXML on random tokens.

Measures docs/s, peak accelerator memory and model FLOP utilisation (MFU) for an encoder at a sequence
length with a flat (Eurlex-4K-sized) or clustered (Amazon-670K-sized) head, with the same training step,
optimiser and autocast policy as real runs. MFU counts the usual 6 * params * tokens for the transformer's
matrix multiplies plus 12 * layers * T^2 * hidden for attention (forward + backward), and the head's
matrix multiplies; peak is the accelerator's dense bf16 rate (989 TFLOP/s for an H100 SXM; a device not
in :data:`PEAK_BF16_FLOPS` gets no MFU rather than a guessed one).
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmlbench.benchmarks import BENCHMARKS, Benchmark

# Dense bf16 peaks by device name (torch.cuda.get_device_name), the more specific names first: the PCIe and
# NVL boards run at lower clocks than SXM. No V100: it has no bf16 units, so a bf16 MFU there means nothing.
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("H100", 989e12),
                   ("H200", 989e12), ("A100", 312e12))


def peak_bf16_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


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

    eval_batch = batch_size * 4
    status = "ok"
    try:  # an evaluation batch the device cannot hold should not throw away the training figures
        predict_docs_s = time_prediction(net, precision, sync, gen, vocab, eval_batch, max_len, warmup, steps // 2)
    except torch.cuda.OutOfMemoryError:
        predict_docs_s, status = None, f"ok (predict out of memory at batch {eval_batch})"

    flops_per_doc = training_flops_per_doc(enc.model, max_len, net, mode)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = peak_bf16_flops(gpu)
    return {
        "device": gpu,
        "precision": precision.name,
        "encoder": encoder,
        "max_len": max_len,
        "mode": mode,
        # what the network built, not what was asked for
        "label_update": ("sparse" if net.label_embedding.sparse else "dense") if net.clustered else None,
        "n_labels": n_labels,
        "batch_size": batch_size,
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
        "train_docs_per_s": float(f"{train_docs_s:.4g}"),
        "predict_docs_per_s": float(f"{predict_docs_s:.4g}") if predict_docs_s is not None else None,
        "peak_gpu_memory_gib": round(peak_train, 2) if peak_train is not None else None,
        "train_flops_per_doc": flops_per_doc,
        "mfu": float(f"{train_docs_s * flops_per_doc / peak:.4g}") if peak else None,
        "compile": compile,
        "status": status,
    }


def time_prediction(net, precision, sync, gen, vocab: int, batch: int, max_len: int, warmup: int,
                    steps: int) -> float:
    """Docs/s of top-100 prediction (eager, as `predict` runs: the compiled row compiles training only)."""
    net.eval()
    ids = torch.randint(1000, vocab, (batch, max_len), generator=gen).to(next(net.parameters()).device)
    mask = torch.ones_like(ids)
    top = min(100, net.n_labels)  # top-100, as predictions are written (fewer on a small label set)
    elapsed = 0.0
    with torch.no_grad():
        for i in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            with precision.autocast():
                doc, state = net.embed(ids, mask)
                if net.clustered:
                    net.clustered_topk(doc, state, top)
                else:
                    torch.sigmoid(net.flat_logits(doc, state).float()).topk(top, dim=1)
            sync()
            if i >= warmup:
                elapsed += time.perf_counter() - t0
    return steps * batch / elapsed


def training_flops_per_doc(encoder, seq: int, net, mode: str) -> float:
    """Matrix-multiply FLOPs of one training document (forward + backward = 3 x forward)."""
    cfg = encoder.config
    n_embed = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" in n)
    n_pooler = sum(p.numel() for n, p in encoder.named_parameters() if n.startswith("pooler."))
    n_body = sum(p.numel() for p in encoder.parameters()) - n_embed - n_pooler
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    flops = 6 * n_body * seq + 12 * layers * seq * seq * hidden
    # BERT's pooler runs forward on one token; its output feeds no loss, so it has no backward
    flops += 2 * n_pooler
    if mode == "flat":
        flops += 6 * net.classifier.in_features * net.n_labels
    else:
        cands = net.cfg.top_b * net.cluster_labels.shape[1]  # padded slots are computed too
        flops += 6 * net.generator.in_features * net.generator.out_features
        flops += 6 * net.bottleneck.in_features * net.bottleneck.out_features
        flops += 6 * cands * net.bottleneck.out_features
    return float(flops)


@dataclass(frozen=True)
class Case:
    """One row of the sweep: a head, a sequence length and a batch, with the recipe it stands for."""

    max_len: int
    mode: str  # "flat" or "clustered"
    n_labels: int
    batch_size: int
    label_update: str = "dense"
    hidden: int = 400
    top_b: int = 75
    compile: bool = False
    recipe: str = ""  # a dataset whose original recipe this row trains: its epoch is estimated from the row


def recipe_case(dataset: str) -> Case:
    """The original's bert-base recipe on ``dataset`` (its manifest: labels, max_len, batch, h, b)."""
    from xmlbench.data.manifest import DATASETS

    info = DATASETS.get(dataset)
    hp = info.lightxml["bert-base"]
    return Case(max_len=hp["max_len"], mode="clustered", n_labels=int(info.published["n_labels"]),
                batch_size=hp["batch_size"], hidden=hp["hidden"], top_b=hp["top_b"], recipe=dataset)


def sweep_cases() -> list[Case]:
    """The figures issue 17 asks for: flat (Eurlex-4K's 3,956 labels) and clustered (Amazon-670K's
    670,091) heads at max_len 512 and 128, the two big datasets' original recipes, a larger batch that fills
    more of the device, the sparse label update, and a compiled row of each head. In that order: device
    time is scarce, and a sweep cut short by its budget (or a kill) keeps the rows that matter most."""
    flat, big = 3_956, 670_091
    return [
        Case(512, "flat", flat, 16), Case(512, "clustered", big, 16),
        Case(128, "flat", flat, 64), Case(128, "clustered", big, 64),
        recipe_case("amazon670k"), recipe_case("wiki500k"),
        Case(512, "flat", flat, 64), Case(512, "clustered", big, 64),
        Case(512, "clustered", big, 64, label_update="sparse"),
        Case(128, "flat", flat, 256), Case(128, "clustered", big, 256),
        # last: compiling takes the longest, and whether compile helps the clustered head is not yet measured
        Case(512, "flat", flat, 64, compile=True), Case(512, "clustered", big, 64, compile=True),
    ]


def run_case(case: Case, steps: int, encoder: str = "bert-base-random", amp: str = "auto") -> dict[str, Any]:
    """One row; a case the device has no memory for, or that fails (say, torch.compile on a new device), is
    recorded as such and the sweep goes on: GPU time is scarce, and one bad row should not cost the rest."""
    base = {**asdict(case), "status": "ok"}
    try:
        row = bench_throughput(encoder=encoder, max_len=case.max_len, mode=case.mode, n_labels=case.n_labels,
                               batch_size=case.batch_size, steps=steps, amp=amp, hidden=case.hidden,
                               top_b=case.top_b, compile=case.compile, label_update=case.label_update)
    except torch.cuda.OutOfMemoryError:
        row = {"status": "out of memory"}
    except Exception as exc:  # noqa: BLE001 - reported in the row's status, with its type and message
        row = {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"}
    finally:
        # the next row's peak memory must not hold this one's network: compiled graphs keep references
        if case.compile:
            torch._dynamo.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {**base, **row}


# LightXML's training cost as REFERENCE.md section 5 records it: "reported on 8 x V100", without saying
# whether for one model or the three-clustering ensemble, or wall-clock or device hours
ORIGINAL_TRAIN_HOURS = {"amazon670k": 159.0, "wiki500k": 271.0}
CLUSTERINGS = 3  # the original's ensemble on the clustered sets: three clusterings, one bert-base each
# ELMO's peak GPU memory on Amazon-670K (BF16, BERT-base) as issue 17 quotes it; its batch and max_len are
# not recorded here, so it is shown beside ours, not compared
ELMO_PEAK_GIB = 5.68


def epoch_estimate(row: dict[str, Any]) -> dict[str, Any]:
    """Hours for one epoch of the row's recipe dataset at the row's training rate, and for the whole recipe
    (its epochs, the +5 included, times three clusterings), on the one device the row was measured on.

    An upper bound on step time: the row runs every document at full max_len, where real batches are cut
    to their longest document; the evaluations every 3,000 steps are not counted."""
    from xmlbench.data.manifest import DATASETS
    from xmlbench.runs.protocol import ORIGINAL_HOLD_OUT

    info = DATASETS.get(row["recipe"])
    # the original trains on what its held-out validation documents leave
    n_train = int(info.published["n_train"]) - ORIGINAL_HOLD_OUT
    epochs = int(info.lightxml["bert-base"]["epochs"])
    epoch_h = n_train / row["train_docs_per_s"] / 3600
    return {"dataset": row["recipe"], "n_train": n_train, "epochs": epochs, "epoch_hours": epoch_h,
            "recipe_hours": epoch_h * epochs * CLUSTERINGS, "original_hours": ORIGINAL_TRAIN_HOURS[row["recipe"]]}


def clustered_overhead(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (max_len, batch) measured with both heads (dense update, not compiled): how much longer a
    clustered step takes than a flat one."""
    def key(r):
        return r["max_len"], r["batch_size"]

    ok = [r for r in rows if r["status"].startswith("ok") and not r["compile"] and not r["recipe"]]
    flat = {key(r): r for r in ok if r["mode"] == "flat"}
    out = []
    for r in ok:
        if r["mode"] == "clustered" and r["label_update"] == "dense" and key(r) in flat:
            out.append({"max_len": r["max_len"], "batch_size": r["batch_size"],
                        "overhead": flat[key(r)]["train_docs_per_s"] / r["train_docs_per_s"] - 1})
    return out


NOT_RUN = "not run: the sweep's time budget was spent"


def sweep(steps: int = 20, cases: list[Case] | None = None, encoder: str = "bert-base-random",
          amp: str = "auto", save: Path | None = None, budget_s: float | None = None) -> dict[str, Any]:
    """Every case in turn. With ``save``, the result so far is written there after each row (a killed
    sweep keeps its finished rows); a case not started within ``budget_s`` seconds is recorded as not run
    (a row already running is not stopped)."""
    from xmlbench.io import write_json

    cases = cases if cases is not None else sweep_cases()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    result = summarise(rows, steps, encoder, len(cases))
    for case in cases:
        if budget_s is not None and time.monotonic() - started >= budget_s:
            rows.append({**asdict(case), "status": NOT_RUN})
        else:
            print(f"throughput: {case}", file=sys.stderr, flush=True)
            rows.append(run_case(case, steps, encoder, amp))
        result = summarise(rows, steps, encoder, len(cases))
        if save is not None:
            write_json(save, result)
    return result


def summarise(rows: list[dict[str, Any]], steps: int, encoder: str, n_cases: int) -> dict[str, Any]:
    ok = [r for r in rows if r["status"].startswith("ok")]
    return {"device": ok[0]["device"] if ok else "", "encoder": encoder, "steps": steps, "rows": list(rows),
            "complete": len(rows) == n_cases, "cases": n_cases,
            "estimates": [epoch_estimate(r) for r in ok if r["recipe"]], "overheads": clustered_overhead(rows)}


def _fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def format_rows(result: dict[str, Any]) -> str:
    lines = ["| max_len | head | labels | batch | label update | compiled step | train docs/s | MFU | "
             "predict docs/s | train peak memory (GiB) | status |",
             "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        head = f"{r['mode']}" + (f" ({r['recipe']} recipe: h {r['hidden']}, b {r['top_b']})" if r["recipe"] else "")
        lines.append(f"| {r['max_len']} | {head} | {r['n_labels']:,} | {r['batch_size']} | "
                     f"{r['label_update'] if r['mode'] == 'clustered' else '-'} | {'yes' if r['compile'] else 'no'} | "
                     f"{_fmt(r.get('train_docs_per_s'))} | {_fmt(r.get('mfu'), '.1%')} | "
                     f"{_fmt(r.get('predict_docs_per_s'))} | {_fmt(r.get('peak_gpu_memory_gib'), '.1f')} | "
                     f"{r['status']} |")
    ok = [r for r in result["rows"] if r["status"].startswith("ok")]
    if ok:
        lines += ["", f"Device: {result['device']}, {ok[0]['precision']}, encoder {result['encoder']}, "
                      f"{result['steps']} timed steps; MFU counts the encoder's and head's matrix multiplies "
                      "against the device's dense bf16 peak."]
    for o in result["overheads"]:
        lines.append(f"- clustered head over flat at max_len {o['max_len']}, batch {o['batch_size']}: "
                     f"{o['overhead']:+.0%} time per step")
    for e in result["estimates"]:
        row = next(r for r in ok if r["recipe"] == e["dataset"])
        lines.append(f"- {e['dataset']}: one epoch ({e['n_train']:,} documents) {e['epoch_hours']:.1f} h; the "
                     f"recipe ({e['epochs']} epochs x {CLUSTERINGS} clusterings) {e['recipe_hours']:.0f} h on this "
                     f"one device (LightXML's training is reported as ~{e['original_hours']:.0f} h on 8 V100s, "
                     f"not saying for how many models); train peak memory "
                     f"{_fmt(row.get('peak_gpu_memory_gib'), '.2f')} GiB"
                     + (f" (ELMO reports {ELMO_PEAK_GIB} GiB, BF16, BERT-base; its batch is not recorded here)"
                        if e["dataset"] == "amazon670k" else ""))
    if result["estimates"]:
        lines.append("- The estimates run every document at full max_len (real batches are cut to their longest "
                     "document) and leave out the evaluations: upper bounds on training time at this rate.")
    if not result.get("complete", True):
        lines.append(f"- The sweep was stopped after {len(result['rows'])} of its {result.get('cases', '?')} "
                     "cases: the rest have no row.")
    return "\n".join(lines)


README_BEGIN = "<!-- throughput:begin (written by: xmlbench bench throughput --readme) -->"
README_END = "<!-- throughput:end -->"


# Under the checkout: a finished sweep, and the rows so far of one under way (or killed). A new sweep writes
# only the second until it ends, so the finished one it replaces survives a kill.
RESULTS = Path("results") / "throughput" / "throughput.json"
PARTIAL = RESULTS.with_name("throughput-partial.json")


def _run(options) -> dict[str, Any]:
    from xmlbench.benchmarks import readme_text, write_readme_block
    from xmlbench.errors import UserError
    from xmlbench.io import write_json
    from xmlbench.paths import CHECKOUT_ROOT

    if options.dataset:
        raise UserError("bench throughput takes no dataset (it trains on random tokens)")
    path, partial = CHECKOUT_ROOT / RESULTS, CHECKOUT_ROOT / PARTIAL
    readme = CHECKOUT_ROOT / "README.md" if options.extra.get("readme") else None
    if readme is not None:
        readme_text(readme, README_BEGIN, README_END)  # its markers are there, before the run rather than after
    if options.extra.get("from_saved"):
        # the one written (or copied here) last: a sweep killed after a finished one leaves both
        saved = [p for p in (path, partial) if p.is_file()]
        result = saved_result(max(saved, key=lambda p: p.stat().st_mtime) if saved else path)
    else:
        if not torch.cuda.is_available():
            raise UserError("bench throughput measures a GPU (MFU against its bf16 peak) and none is visible; on "
                            "a CPU, `xmlbench bench scaling --components step` times a training step")
        path.parent.mkdir(parents=True, exist_ok=True)
        result = sweep(steps=options.steps, save=partial, budget_s=options.extra.get("timeout_s"))
        write_json(path, result)
        partial.unlink(missing_ok=True)  # a sweep of no cases wrote none
    if readme is not None:
        write_readme_block(readme, format_rows(result), README_BEGIN, README_END)
    return result


def saved_result(path: Path) -> dict[str, Any]:
    """A sweep's saved result (run here or on a GPU machine and copied here) that its table can show."""
    from xmlbench.benchmarks import renderable
    from xmlbench.errors import UserError

    if not path.is_file():
        raise UserError(f"--from-saved: no {path}; run `xmlbench bench throughput` on a GPU first, or copy "
                        f"the {path.name} such a run wrote to that path")
    return renderable(path, lambda results: format_rows(results[0]))  # one sweep, one table


BENCHMARKS.register("throughput", Benchmark(
    "throughput", "LightXML training and prediction docs/s, MFU and peak memory (flat and clustered heads)",
    _run, format_rows, writes_readme=True))
