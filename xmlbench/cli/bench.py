"""``xmlbench bench NAME``: the benchmarks in ``xmlbench.benchmarks`` (the figures we report)."""

from __future__ import annotations

import json

from xmlbench import benchmarks


def add_commands(sub) -> None:
    known = benchmarks.names()  # from file names: building the parser imports no benchmark
    p = sub.add_parser("bench", help=f"benchmarks: {', '.join(known)} (xmlbench list benchmarks)")
    p.add_argument("what", choices=known, metavar="NAME", help=", ".join(known))
    p.add_argument("dataset", nargs="?", default="",
                   help="dataset, for benchmarks that take one (cluster, pipeline: default synth-amazon670k)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--steps", type=int, default=20, help="training steps, for benchmarks that train")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    bench = benchmarks.get(args.what)
    result = bench.run(benchmarks.BenchOptions(dataset=args.dataset, steps=args.steps))
    print(json.dumps(result, indent=2) if args.json else bench.format(result))
    return 0
