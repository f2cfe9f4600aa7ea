"""``xmlbench`` command line (also ``python -m xmlbench``); ``run.sh`` is a thin wrapper around it.

One module per group of commands, each with an ``add_commands(subparsers)``; this file only assembles
them and turns errors the user can act on into one line: user errors exit 2; what the machine refused
(an ``OSError``: permission denied, a full disk, a file where a folder should be) and running out of
memory exit 1. Every other exception is a bug and keeps its traceback. Heavy imports (torch) happen
inside the commands that need them, so ``xmlbench data ...`` stays quick. Library code never imports the
CLI.
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
    try:  # building the parser reads the dataset manifests: a bad one is a user error too
        parser = build_parser()
    except UserError as e:
        return _error(str(e), 2)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.command_line = "xmlbench " + " ".join(shlex.quote(a) for a in argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        return _error(str(e), 2)
    except OSError as e:
        return _error(os_error_line(e), 1)
    except MemoryError:
        return _error("out of memory; try a smaller batch_size, max_len or dataset", 1)
    except KeyboardInterrupt:
        # a command that cannot resume says what it kept instead (``set_defaults(interrupted=...)``)
        return _error(getattr(args, "interrupted", "interrupted; finished work is saved (use --resume to continue)"),
                      130, prefix="")
    except RuntimeError as e:
        if not _is_out_of_memory(e):
            raise
        return _error(f"out of memory ({str(e).splitlines()[0][:200]}); try a smaller batch_size or "
                      "max_len", 1)
    finally:
        if "torch.distributed" in sys.modules:
            from xmlbench.engine.distributed import shutdown

            shutdown()


def _error(message: str, code: int, prefix: str = "error: ") -> int:
    """One line on stderr, never glued to the end of a progress bar: open bars are closed (on a terminal
    that clears them); in a log file a closed bar still leaves its text without a newline, so the
    message starts on a fresh line there whenever a bar may have been drawn."""
    drawn = _close_progress_bars()
    fresh_line = "\n" if drawn and not sys.stderr.isatty() else ""
    print(f"{fresh_line}xmlbench: {prefix}{message}", file=sys.stderr, flush=True)
    return code


def _close_progress_bars() -> bool:
    """Close every open tqdm bar; returns whether bars may have been drawn in this process."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return False
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error itself
            pass
    sys.stderr.flush()
    return True


def os_error_line(e: OSError) -> str:
    """``[Errno 28] No space left on device: 'runs/x/checkpoint.pt'`` as a sentence naming the path."""
    reason = e.strerror or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    if not paths:
        return f"{reason} ({e})"
    return f"{' -> '.join(paths)}: {reason}"


def _is_out_of_memory(e: RuntimeError) -> bool:
    """torch reports a failed allocation as a RuntimeError (CPU) or torch.OutOfMemoryError (GPU)."""
    text = str(e)
    return (type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in text
            or "out of memory" in text)


def build_parser() -> argparse.ArgumentParser:
    from xmlbench.cli import bench, data, demo, distill, experiments, listing, results, train

    p = argparse.ArgumentParser(prog="xmlbench", description="Extreme multi-label text classification benchmarks")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for group in (data, train, distill, experiments, results, bench, demo, listing):
        group.add_commands(sub)
    return p


if __name__ == "__main__":
    sys.exit(main())
