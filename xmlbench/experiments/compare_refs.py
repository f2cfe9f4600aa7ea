"""``xmlbench compare-refs REF_A REF_B DATASET``: the same training on two git revisions, then the
``compare`` table (deltas, paired t-test over seeds, bootstrap CI over documents).

Each ref runs from its own git worktree (``runs/compare-refs/worktrees/<commit>``, reused while it stays at
that commit), so a record's ``code.commit`` is the ref's commit, never the calling checkout's. Both sides get
the same train options (built by the caller's ``argv_for``: library code does not build command lines) and
seeds 0..N-1. Like ``ablate``, it is idempotent: finished runs are skipped, interrupted ones resume, and a
side folder remembers its commit so a moved branch never mixes with the runs of its old commit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from xmlbench.config import to_dict
from xmlbench.errors import UserError
from xmlbench.io import read_json, write_json
from xmlbench.paths import datasets_dir
from xmlbench.runs import record as rec
from xmlbench.runs.runner import RunOptions

SHORT = 12  # commit prefix in folder names: fixed, so a growing repository never renames a sweep's folder
MARKER = "ref.json"  # in each side's folder: the ref and the commit its runs were made with


@dataclass(frozen=True)
class Side:
    """One of the two revisions: the ref as written, its commit, its worktree and its runs' folder."""

    ref: str
    commit: str
    worktree: Path
    folder: Path

    @property
    def short(self) -> str:
        return self.commit[:SHORT]

    def run_dir(self, seed: int) -> Path:
        return self.folder / f"seed{seed}"


# ---------------------------------------------------------------------------------------------- git
def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        raise UserError("git not found on PATH: compare-refs checks out revisions with git")
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=300)


def repository_root(cwd: Path) -> Path:
    """The top folder of the git checkout ``cwd`` is in; refs are resolved in that repository."""
    out = git(cwd, "rev-parse", "--show-toplevel")
    if out.returncode != 0:
        raise UserError(f"{cwd} is not inside a git checkout: compare-refs compares revisions of the "
                        "repository it runs in")
    return Path(out.stdout.strip()).resolve()


def resolve_commit(repo: Path, ref: str) -> str:
    # A leading '-' would be read as an option by git, so it cannot name a ref here.
    out = None if ref.startswith("-") else git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if out is None or out.returncode != 0:
        raise UserError(f"unknown git ref {ref!r}: not a branch, tag or commit of {repo}")
    return out.stdout.strip()


def changed_files(repo: Path) -> list[str]:
    """Tracked files with uncommitted changes (untracked files are not part of any commit either way)."""
    out = git(repo, "status", "--porcelain", "--untracked-files=no")
    if out.returncode != 0:
        raise UserError(f"git status failed in {repo}: {out.stderr.strip()}")
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def ensure_worktree(repo: Path, commit: str, folder: Path) -> Path:
    """A detached worktree of ``commit`` at ``folder``: reused when it is one at that commit, unchanged."""
    if folder.exists():
        _check_worktree(folder, commit)
        return folder
    git(repo, "worktree", "prune")  # a worktree folder deleted by hand stays registered until pruned
    folder.parent.mkdir(parents=True, exist_ok=True)
    out = git(repo, "worktree", "add", "--detach", str(folder), commit)
    if out.returncode != 0:
        raise UserError(f"git worktree add {folder} failed: {out.stderr.strip()}")
    return folder


def _check_worktree(folder: Path, commit: str) -> None:
    # A plain folder inside the checkout would answer for the checkout itself: ask for its own top first.
    top = git(folder, "rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != folder.resolve():
        raise UserError(f"{folder} exists but is not a git worktree: remove it, run 'git worktree prune'")
    head = git(folder, "rev-parse", "HEAD").stdout.strip()
    if head != commit:
        raise UserError(f"worktree {folder} is at {head[:SHORT]}, not {commit[:SHORT]}: remove it with "
                        f"'git worktree remove {folder}' and rerun")
    changed = changed_files(folder)
    if changed:
        raise UserError(f"worktree {folder} has local changes ({', '.join(changed[:3])}); its runs would not "
                        f"be commit {commit[:SHORT]}: remove it with 'git worktree remove --force {folder}'")


# --------------------------------------------------------------------------------------------- plan
def plan_sides(repo: Path, ref_a: str, ref_b: str, dataset: str, root: Path | None,
               allow_dirty: bool) -> tuple[list[Side], list[str]]:
    """The two sides (worktrees not made yet) and the notes to print beside the table."""
    commits = [resolve_commit(repo, ref_a), resolve_commit(repo, ref_b)]
    if commits[0] == commits[1]:
        raise UserError(f"{ref_a!r} and {ref_b!r} are the same commit {commits[0][:SHORT]}: nothing to "
                        "compare")
    notes = []
    changed = changed_files(repo)
    files = f"{len(changed)} tracked file{'s' if len(changed) != 1 else ''}"
    if changed and not allow_dirty:
        raise UserError(f"the working tree of {repo} has uncommitted changes ({files}, e.g. {changed[0]}); "
                        "the refs are commits, so those changes would be part of neither side: commit or "
                        "stash them, or pass --allow-dirty")
    if changed:
        notes.append(f"the working tree has uncommitted changes ({files}): {ref_a} and {ref_b} are commits, "
                     "so those changes are part of neither side")
    if root is None:
        pair = f"{commits[0][:SHORT]}-vs-{commits[1][:SHORT]}"
        root = repo / "runs" / "compare-refs" / Path(dataset).name / pair
    names = _side_names([ref_a, ref_b], commits)
    sides = [Side(ref, c, worktree_path(repo, c), Path(root) / name)
             for ref, c, name in zip([ref_a, ref_b], commits, names)]
    return sides, notes


def worktree_path(repo: Path, commit: str) -> Path:
    return repo / "runs" / "compare-refs" / "worktrees" / commit


def _side_names(refs: list[str], commits: list[str]) -> list[str]:
    """Folder names: the refs made safe for a path ('feature/x' -> 'feature_x'); commits if they clash."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", r).strip("_") for r in refs]
    if names[0] == names[1] or any(n in ("", ".", "..") for n in names):
        return [c[:SHORT] for c in commits]
    return names


def absolute_options(template: RunOptions) -> RunOptions:
    """The options with every path made absolute: the training runs with the worktree as its folder."""
    from xmlbench.data.dataset import DATASETS
    from xmlbench.data.synth import PRESETS
    from xmlbench.encoders import ENCODERS

    def local(path: str) -> str:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    dataset = template.dataset if template.dataset in DATASETS or template.dataset in PRESETS else \
        local(template.dataset)
    overrides = dict(template.overrides)
    encoder = overrides.get("encoder")
    if isinstance(encoder, str) and encoder not in ENCODERS:
        overrides["encoder"] = local(encoder)
    return replace(template, dataset=dataset, config_file=local(template.config_file),
                   init_from=local(template.init_from), overrides=overrides)


# ---------------------------------------------------------------------------------------------- run
def run_sides(sides: list[Side], repo: Path, template: RunOptions, seeds: list[int],
              argv_for: Callable[[RunOptions], list[str]], log=print) -> dict[str, list[Path]]:
    """Train every (side, seed) not finished yet, each with its side's worktree; the run folders per ref.

    ``argv_for(options)`` is the command that trains with ``options`` (the CLI passes its own inverse of
    argument parsing). Seeds alternate between the sides, so a stopped sweep still has matched pairs."""
    template = absolute_options(template)
    for side in sides:
        _claim_folder(side)
        ensure_worktree(repo, side.commit, side.worktree)
    options = {(side, s): replace(template, seed=s, out=str(side.run_dir(s).resolve()), resume=True)
               for s in seeds for side in sides}
    for (side, _), opts in options.items():
        check_same_options(side.run_dir(opts.seed), opts)
    todo = [key for key in options if not rec.is_complete(key[0].run_dir(key[1]))]
    log(f"compare-refs: {len(sides)} refs x {len(seeds)} seeds; "
        f"{len(options) - len(todo)} finished, {len(todo)} to run")
    for i, (side, seed) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {side.ref} ({side.short}) seed {seed} -> {side.run_dir(seed)}")
        _train(side, argv_for(options[side, seed]))
    for side in sides:
        for s in seeds:
            check_record(side, side.run_dir(s))
    return {side.ref: [side.run_dir(s) for s in seeds] for side in sides}


# What makes two runs the same experiment; where they are, how they print and whether they resumed do not.
SAME_OPTIONS = ("dataset", "model", "protocol", "seed", "valid_size", "select_on", "preset", "init_from",
                "overrides", "config_file")


def check_same_options(run_dir: Path, wanted: RunOptions) -> None:
    """A run folder already there (finished or not) must have been started with the options wanted now.

    Otherwise a sweep with, say, another --model or --set would skip (or resume) runs of the first one.
    Only keys both sides know are compared: a ref's RunOptions may have fewer or more fields."""
    stored = _stored_options(run_dir)
    if stored is None:
        return
    want = json.loads(json.dumps(to_dict(wanted)))  # as a record stores them (tuples become lists)
    # None (--seed, --select-on, --valid-size left open) is the protocol's to choose; the record holds
    # what it chose, and the protocol itself is compared.
    differ = [k for k in SAME_OPTIONS if k in stored and k in want and want[k] is not None
              and stored[k] != want[k]]
    if differ:
        shown = "; ".join(f"{k} {stored[k]!r} there, {want[k]!r} now" for k in differ)
        raise UserError(f"{run_dir} holds a run with other train options ({shown}): give this comparison "
                        "its own --root")


def _stored_options(run_dir: Path) -> dict | None:
    """The options a run folder was started with: its record's, or (interrupted) its config.json's."""
    for name in (rec.RECORD, "config.json"):
        path = run_dir / name
        if path.is_file():
            try:
                return read_json(path).get("options")
            except ValueError:  # a torn file from a killed writer: the runner decides what to do with it
                return None
    return None


def _claim_folder(side: Side) -> None:
    """Mark a side's folder with its commit; refuse one made for another commit (a branch that moved)."""
    marker = side.folder / MARKER
    if marker.is_file():
        made = read_json(marker).get("commit")
        if made != side.commit:
            raise UserError(f"{side.folder} holds runs of commit {str(made)[:SHORT]}, but {side.ref} is now "
                            f"{side.short}: choose another --root or remove that folder")
        return
    write_json(marker, {"ref": side.ref, "commit": side.commit})


def _train(side: Side, argv: list[str]) -> None:
    code = subprocess.call(argv, cwd=side.worktree, env=worktree_env(side.worktree))
    if code:
        raise UserError(f"training at {side.ref} ({side.short}) failed with exit code {code}: "
                        f"{' '.join(argv)} (in {side.worktree})")


def worktree_env(worktree: Path) -> dict[str, str]:
    """The environment of a run at ``worktree``: that worktree's package first, the caller's data.

    The worktree's ``datasets/`` holds only manifests (data is never committed), so the runs read the data
    where the caller's ``xmlbench train`` would: both sides train and test on the very same files."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(worktree), env.get("PYTHONPATH", "")) if p)
    env["XMLBENCH_DATASETS"] = str(datasets_dir().resolve())
    return env


def check_record(side: Side, run_dir: Path) -> None:
    """A finished run must have been made by the side's commit, from a clean worktree."""
    code = rec.read_record(run_dir).get("code") or {}
    if code.get("commit") != side.commit:
        raise UserError(f"{run_dir}: the record names commit {str(code.get('commit'))[:SHORT]}, not "
                        f"{side.ref}'s {side.short}: remove that run folder and rerun")
    if code.get("dirty"):
        raise UserError(f"{run_dir}: made from a worktree with uncommitted changes, so not {side.short} "
                        "itself: remove that run folder and rerun")
