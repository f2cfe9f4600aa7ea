"""``xmlbench`` command line (also ``python -m xmlbench``); ``run.sh`` is a thin wrapper around it.

One module per group of commands, each with an ``add_commands(subparsers)``; this file only assembles
them and turns user errors into one line and exit 2 (no traceback). Heavy imports (torch) happen inside
the commands that need them, so ``xmlbench data ...`` stays quick. Library code never imports the CLI.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from xmlbench.errors import UserError
from xmlbench.runtime import match_numba_threads_to_omp


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    match_numba_threads_to_omp()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.command_line = "xmlbench " + " ".join(shlex.quote(a) for a in argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"xmlbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xmlbench: interrupted; finished work is saved (use --resume to continue)", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:
            from xmlbench.engine.distributed import shutdown

            shutdown()


def build_parser() -> argparse.ArgumentParser:
    from xmlbench.cli import bench, data, demo, experiments, listing, results, train

    p = argparse.ArgumentParser(prog="xmlbench", description="Extreme multi-label text classification benchmarks")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for group in (data, train, experiments, results, bench, demo, listing):
        group.add_commands(sub)
    return p


if __name__ == "__main__":
    sys.exit(main())
