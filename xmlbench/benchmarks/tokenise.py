"""``xmlbench bench tokenise [DATASET]``: the token cache's throughput against a bare call of its tokenizer.

Both sides get the same training texts (read into memory first, so no side pays for the file) and the same
fast tokenizer, in the same process, taking turns (best of ``REPEATS``):

* ``bare``: one batched call per ``BATCH`` texts, ``tokenizer(batch, truncation=True, max_length=T)``,
  the least a cache build must do; its output is thrown away.
* ``cache``: :func:`xmlbench.data.tokcache.build_token_cache` into a fresh temporary folder: the same calls
  plus the word cut and lower-casing of ``prepare_text``, padding into the memory-mapped arrays and the
  folder's bookkeeping.

The ratio cache / bare is the overhead of the cache (issue 17: at most 1.3x).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from xmlbench.benchmarks import BENCHMARKS, Benchmark, BenchOptions, readme_markers, run_with_readme
from xmlbench.errors import UserError

REPEATS = 3
BATCH = 1024  # build_token_cache's default batch
TARGET_RATIO = 1.3
README_BEGIN, README_END = readme_markers("tokenise")


def bench_tokenise(dataset: str = "synth-eurlex4k", encoder: str = "tiny", max_len: int = 512,
                   max_docs: int = 5000) -> dict[str, Any]:
    from xmlbench.data.dataset import open_dataset
    from xmlbench.data.tokcache import build_token_cache
    from xmlbench.encoders.loading import load_tokenizer

    if max_docs < 1:
        raise UserError(f"max_docs must be >= 1, got {max_docs}")
    load_before = os.getloadavg()[0]  # before this bench's own work raises it: the neighbours' load
    tokenizer = load_tokenizer(encoder)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"encoder {encoder!r} has no fast tokenizer; this benchmark compares fast ones")
    ds = open_dataset(dataset, progress=True)
    texts = list(itertools.islice(ds.train.iter_texts(), max_docs))

    def bare() -> None:
        for start in range(0, len(texts), BATCH):
            tokenizer(texts[start:start + BATCH], add_special_tokens=True, truncation=True, max_length=max_len,
                      return_attention_mask=False, return_token_type_ids=False)

    with tempfile.TemporaryDirectory(prefix="xmlbench-tok-") as tmp:
        builds = itertools.count()

        def cache() -> None:  # a new folder each time, so every call builds rather than reuses
            build_token_cache(iter(texts), len(texts), tokenizer, encoder, max_len, f"bench{next(builds)}",
                              Path(tmp) / "tokens", batch_size=BATCH, progress=False)

        best = {"bare": float("inf"), "cache": float("inf")}
        bare()  # warm-up: the tokenizer's first call allocates its caches
        for _ in range(REPEATS):
            for name, fn in (("bare", bare), ("cache", cache)):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return {
        "dataset": ds.name,
        "encoder": encoder,
        "tokenizer_class": type(tokenizer).__name__,
        "max_len": max_len,
        "docs": len(texts),
        "repeats": REPEATS,
        "cpus": os.cpu_count(),
        "load_avg_1m": load_before,
        "bare_s": best["bare"],
        "cache_s": best["cache"],
        "bare_docs_per_s": len(texts) / best["bare"],
        "cache_docs_per_s": len(texts) / best["cache"],
        "ratio": best["cache"] / best["bare"],
    }


def format_bench(r: dict[str, Any]) -> str:
    return "\n".join([
        f"tokenise bench: {r['docs']:,} training texts of {r['dataset']}, {r['encoder']}'s "
        f"{r['tokenizer_class']}, max_len {r['max_len']}, best of {r['repeats']}, "
        f"load average {r['load_avg_1m']:.2f}",
        f"  bare batched tokenizer call : {r['bare_s']:7.2f} s  {r['bare_docs_per_s']:9,.0f} docs/s",
        f"  token cache build           : {r['cache_s']:7.2f} s  {r['cache_docs_per_s']:9,.0f} docs/s",
        f"  ratio cache / bare          : {r['ratio']:7.2f} x  (target <= {TARGET_RATIO})",
    ])


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The README block: one row per dataset, encoder and max_len measured, from the saved results."""
    lines = ["| dataset | tokenizer | max_len | docs | bare call (docs/s) | token cache (docs/s) | ratio | load |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(results, key=lambda r: (r["dataset"], r["encoder"], r["max_len"])):
        lines.append(f"| {r['dataset']} | {r['encoder']} ({r['tokenizer_class']}) | {r['max_len']} | {r['docs']:,} | "
                     f"{r['bare_docs_per_s']:,.0f} | {r['cache_docs_per_s']:,.0f} | {r['ratio']:.2f} | "
                     f"{r['load_avg_1m']:.2f} on {r.get('cpus', '?')} cores |")
    return "\n".join(lines) + f"\n\nTarget: ratio at most {TARGET_RATIO}x."


def _run(options: BenchOptions) -> dict[str, Any]:
    return run_with_readme(options, "tokenise", lambda: bench_tokenise(options.dataset or "synth-eurlex4k"),
                           lambda r: f"{r['dataset']}-{r['encoder']}-{r['max_len']}", markdown_table)


BENCHMARKS.register("tokenise", Benchmark(
    "tokenise", "token cache build against a bare batched call of the same fast tokenizer",
    _run, format_bench, default_dataset="synth-eurlex4k", writes_readme=True))
