"""``xmlbench bench ...``: benchmarks whose figures we report (speed and memory targets live here, not in
timed tests)."""

from __future__ import annotations

import json
from typing import Any

from xmlbench.errors import UserError


def run(what: str, dataset: str, steps: int = 20) -> dict[str, Any]:
    if what == "metrics":
        from xmlbench.metrics.bench import bench_metrics

        return bench_metrics()
    if what == "cluster":
        from xmlbench.models.bench_cluster import bench_cluster_dataset

        return bench_cluster_dataset(dataset)
    if what == "pipeline":
        from xmlbench.training.pipeline_bench import bench_pipeline

        return bench_pipeline(dataset, steps=steps)
    if what == "throughput":
        from xmlbench.training.throughput import sweep

        return {"rows": sweep(steps=steps)}
    raise UserError(f"unknown benchmark {what!r}; known: metrics, cluster, pipeline, throughput")


def format_result(what: str, result: dict[str, Any]) -> str:
    if what == "metrics":
        from xmlbench.metrics.bench import format_bench

        return format_bench(result)
    if what == "cluster":
        from xmlbench.models.bench_cluster import format_bench

        return format_bench(result)
    if what == "throughput":
        from xmlbench.training.throughput import format_rows

        return format_rows(result["rows"])
    return json.dumps(result, indent=2)
