"""``xmlbench compare-refs``: two commits of a clone of this repository, each trained from its own worktree
(the records name their own commits), the compare table, reruns that skip or resume but never reuse runs
of other options or commits, and one clear line for a dirty tree, an unknown ref, no checkout and no git.

One sweep (label-frequency, 2 seeds, 4 runs) is shared by the module: each run is a fresh process that
compiles the metric kernels once per worktree, so a sweep per test would cost minutes on 2 cores."""

from __future__ import annotations

import contextlib
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from xmlbench.cli import main
from xmlbench.runs.record import read_record

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--model", "label-frequency", "--seeds", "2", "--valid-size", "20", "--no-progress"]


@dataclass
class Sweep:
    repo: Path
    dataset: Path
    commits: dict[str, str]  # branch -> commit
    out: str  # what the first compare-refs printed

    def args(self, *extra: str, refs: tuple[str, str] = ("base", "idea")) -> list[str]:
        return ["compare-refs", *refs, str(self.dataset), *TRAIN, *extra]

    def run_dir(self, ref: str, seed: int) -> Path:
        pair = f"{self.commits['base'][:12]}-vs-{self.commits['idea'][:12]}"
        return self.repo / "runs" / "compare-refs" / self.dataset.name / pair / ref / f"seed{seed}"


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _xmlbench(argv: list[str]) -> tuple[int, str, str]:
    """``xmlbench ARGV`` in this process (this tree's code), with its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path} no longer holds {old!r}: update this test's observable change"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _clone_with_an_idea(repo: Path) -> dict[str, str]:
    """A clone of this checkout's history, plus a branch 'idea' whose change shows in records and metrics."""
    _git(repo.parent, "clone", "--quiet", "--local", str(ROOT), str(repo))
    _git(repo, "branch", "base")
    _git(repo, "checkout", "--quiet", "-b", "idea")
    _edit(repo / "xmlbench" / "__init__.py", '__version__ = "', '__version__ = "idea-')  # in code.xmlbench
    _edit(repo / "xmlbench" / "models" / "baselines" / "label_frequency.py",  # least frequent first
          "np.lexsort((np.arange(self.n_labels), -self.frequency))",
          "np.lexsort((np.arange(self.n_labels), self.frequency))")
    _git(repo, "commit", "--quiet", "-am", "idea: predict the rarest labels")
    _git(repo, "checkout", "--quiet", "base")
    return {b: _git(repo, "rev-parse", b) for b in ("base", "idea")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_dataset) -> Sweep:
    repo = tmp_path_factory.mktemp("refs") / "repo"
    commits = _clone_with_an_idea(repo)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        s = Sweep(repo, tiny_dataset, commits, "")
        code, s.out, err = _xmlbench(s.args())
    assert code == 0, err
    return s


@pytest.fixture
def in_repo(sweep, monkeypatch) -> Sweep:
    monkeypatch.chdir(sweep.repo)
    return sweep


def test_each_side_is_trained_by_its_own_commit_with_the_same_options(sweep):
    options = []
    for ref in ("base", "idea"):
        for seed in (0, 1):
            record = read_record(sweep.run_dir(ref, seed))
            assert record["code"]["commit"] == sweep.commits[ref] and not record["code"]["dirty"]
            assert record["code"]["xmlbench"].startswith("idea-") == (ref == "idea")
            assert record["seed"] == seed
            opts = record["options"]
            options.append({k: v for k, v in opts.items() if k not in ("out", "seed", "command")})
    assert all(o == options[0] for o in options) and options[0]["valid_size"] == 20
    worktrees = {Path(w.split()[0]).name for w in _git(sweep.repo, "worktree", "list").splitlines()[1:]}
    assert worktrees == set(sweep.commits.values())


def test_the_table_compares_a_with_b(sweep):
    assert f"A = base ({sweep.commits['base'][:12]})  B = idea ({sweep.commits['idea'][:12]})" in sweep.out
    p1 = next(line for line in sweep.out.splitlines() if line.startswith("P@1 "))
    # 2 seeds: no t-test p-value (it needs >= 3 paired seeds), but the per-document bootstrap CI
    assert "n<3" in p1 and "t=" not in p1 and "[" in p1
    a, b = (read_record(sweep.run_dir(ref, 0))["metrics"]["test"]["P@1"] for ref in ("base", "idea"))
    assert b < a  # the idea's rarest-labels-first prediction is worse, and the table says by how much
    assert float(p1.split()[3]) < 0


def test_a_rerun_skips_finished_runs(in_repo):
    before = {p: p.stat().st_mtime_ns for p in in_repo.repo.rglob("record.json") if "worktrees" not in str(p)}
    code, out, err = _xmlbench(in_repo.args())
    assert code == 0, err
    assert "4 finished, 0 to run" in out and "P@1 " in out
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_an_interrupted_run_is_resumed(in_repo):
    run_dir = in_repo.run_dir("idea", 1)
    (run_dir / "record.json").unlink()  # what a kill before the end leaves: the folder without its record
    code, out, err = _xmlbench(in_repo.args())
    assert code == 0, err
    assert "3 finished, 1 to run" in out
    record = read_record(run_dir)
    assert record["options"]["resume"] and record["code"]["commit"] == in_repo.commits["idea"]


def test_a_dirty_tree_is_refused_unless_allowed(in_repo):
    readme = in_repo.repo / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nnot committed\n", encoding="utf-8")
    try:
        code, out, err = _xmlbench(in_repo.args())
        assert code == 2 and not out
        assert _one_error_line(err).count("uncommitted changes") == 1 and "--allow-dirty" in err
        code, out, err = _xmlbench(in_repo.args("--allow-dirty"))
        assert code == 0, err
        assert "4 finished" in out and "part of neither side" in out.splitlines()[-2]
    finally:
        _git(in_repo.repo, "checkout", "--", "README.md")


def test_runs_with_other_train_options_are_never_reused(in_repo):
    code, _, err = _xmlbench(in_repo.args("--valid-size", "30"))  # the same folders, another experiment
    assert code == 2 and "valid_size 20.0 there, 30.0 now" in _one_error_line(err)


def test_a_branch_that_moved_never_mixes_with_its_old_runs(in_repo):
    old = in_repo.commits["idea"]
    moved = _git(in_repo.repo, "commit-tree", f"{old}^{{tree}}", "-p", old, "-m", "moved on")
    _git(in_repo.repo, "branch", "--force", "idea", moved)
    try:
        code, _, err = _xmlbench(in_repo.args("--root", str(in_repo.run_dir("idea", 0).parents[1])))
        assert code == 2 and "holds runs of commit" in _one_error_line(err)
    finally:
        _git(in_repo.repo, "branch", "--force", "idea", old)


def test_a_record_of_another_commit_is_refused(in_repo):
    path = in_repo.run_dir("base", 0) / "record.json"
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(in_repo.commits["base"], in_repo.commits["idea"]), encoding="utf-8")
    try:
        code, _, err = _xmlbench(in_repo.args())
        assert code == 2 and "the record names commit" in _one_error_line(err)
    finally:
        path.write_text(original, encoding="utf-8")


@pytest.mark.parametrize("refs, message", [
    (("base", "no-such-branch"), "unknown git ref 'no-such-branch'"),
    (("base", "base"), "are the same commit"),
])
def test_bad_refs_give_one_clear_line(in_repo, refs, message):
    code, out, err = _xmlbench(in_repo.args(refs=refs))
    assert code == 2 and not out and message in _one_error_line(err)


def test_outside_a_checkout_or_without_git_one_clear_line(tmp_path, monkeypatch, sweep):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repo above
    code, _, err = _xmlbench(sweep.args())
    assert code == 2 and "is not inside a git checkout" in _one_error_line(err)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without git
    code, _, err = _xmlbench(sweep.args())
    assert code == 2 and "git not found" in _one_error_line(err)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmlbench: error: "), err
    return lines[0]
