"""``xmlbench bench NAME``: the benchmarks in ``xmlbench.benchmarks`` (the figures we report)."""

from __future__ import annotations

import json
import math

from xmlbench import benchmarks
from xmlbench.errors import UserError


def add_commands(sub) -> None:
    known = benchmarks.names()  # from file names: building the parser imports no benchmark
    p = sub.add_parser("bench", help=f"benchmarks: {', '.join(known)} (xmlbench list benchmarks)")
    p.add_argument("what", choices=known, metavar="NAME", help=", ".join(known))
    p.add_argument("dataset", nargs="?", default="",
                   help="dataset, for benchmarks that take one (cluster, pipeline, tree-memory: default "
                        "synth-amazon670k)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--steps", type=int, default=20, help="training steps, for benchmarks that train")
    p.add_argument("--label-top-k", type=int, default=None, metavar="K",
                   help="cluster, pipeline: keep each label feature's K largest entries (bounded memory)")
    p.add_argument("--test-docs", type=int, default=None, metavar="N",
                   help="pipeline: predict and evaluate only the first N test documents")
    p.add_argument("--sizes", default="", help="scaling: label counts, e.g. 4k,30k,130k,670k,3m")
    p.add_argument("--components", default="",
                   help="scaling: cluster,metrics,tree-fit,tree-predict,tree-lowmem-fit,tree-lowmem-predict,step,predict,"
                        "step-sparse (default all); "
                        "tree-memory: parallel3,serial3,serial1,serial1-100k,serial1-ct0.1,serial3-ct0.1 (default all)")
    p.add_argument("--timeout", type=float, default=None,
                   help="scaling: seconds per point (default 1800); tree-memory: per run (default 4 h); "
                        "throughput: for the sweep, after which no new row starts (default none)")
    p.add_argument("--from-saved", action="store_true",
                   help="throughput: format (and with --readme, write) the sweep saved under results/throughput/, "
                        "measuring nothing: for a sweep run on a GPU machine and copied here")
    p.add_argument("--readme", action="store_true",
                   help="rewrite the benchmark's README block from its saved results under results/NAME/ (an "
                        "error names the benchmarks that have one; scaling alone: from the CSV, measuring nothing; "
                        "throughput with --from-saved: from its JSON, measuring nothing)")
    p.set_defaults(func=cmd_bench, interrupted="interrupted; a benchmark does not resume: what it saves as it goes "
                                                "(throughput: its rows so far) is kept, and a rerun measures again")


def cmd_bench(args) -> int:
    bench = benchmarks.get(args.what)
    extra = {"sizes": args.sizes, "components": args.components, "timeout_s": args.timeout, "readme": args.readme,
             "from_saved": args.from_saved}
    if args.what == "tree-memory" and args.sizes:
        raise UserError("--sizes is an option of 'bench scaling' only")
    if args.what not in ("scaling", "tree-memory") and (args.sizes or args.components):
        raise UserError("--sizes and --components are options of 'bench scaling' and 'bench tree-memory' only")
    if args.what not in ("scaling", "tree-memory", "throughput") and args.timeout is not None:
        raise UserError("--timeout is an option of 'bench scaling', 'bench tree-memory' and 'bench throughput' only")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise UserError(f"--timeout must be positive (seconds), got {args.timeout:g}")
    if args.from_saved and args.what != "throughput":
        raise UserError("--from-saved is an option of 'bench throughput' only")
    if args.from_saved and (args.timeout is not None or args.steps != 20):
        raise UserError("--from-saved measures nothing, so --timeout and --steps do not apply to it")
    if args.readme and not bench.writes_readme:
        writers = [name for name, other in benchmarks.load_all().items() if other.writes_readme]
        raise UserError(f"--readme: 'bench {args.what}' writes no README block; those that do: {', '.join(writers)}")
    if args.label_top_k is not None:
        if args.what not in ("cluster", "pipeline"):
            raise UserError("--label-top-k is an option of 'bench cluster' and 'bench pipeline' only")
        if args.label_top_k < 1:
            raise UserError(f"--label-top-k {args.label_top_k}: must be at least 1")
        extra["label_top_k"] = args.label_top_k
    if args.test_docs is not None:
        if args.what != "pipeline":
            raise UserError("--test-docs is an option of 'bench pipeline' only")
        if args.test_docs < 1:
            raise UserError(f"--test-docs {args.test_docs}: must be at least 1")
        extra["test_docs"] = args.test_docs
    result = bench.run(benchmarks.BenchOptions(dataset=args.dataset, steps=args.steps, extra=extra))
    print(json.dumps(result, indent=2) if args.json else bench.format(result))
    return 0
