"""Output folders and files: whose they are, and who is writing them right now.

**Ownership.** xmlbench writes into a folder only if the folder is new or empty, or already holds
xmlbench's output of the same kind (and identity, where it has one: an ensemble of other members, the
predictions of another run, a dataset of another preset are other outputs). When it creates or takes a
folder it leaves a marker, ``.xmlbench-output`` (JSON: kind, identity, the loose files it wrote there);
a non-empty folder without one holds files xmlbench did not write, and is refused unless the user passes
``--force``. Folders written before markers existed are recognised by their contents (``adopt``). A loose
output file (a table, an index, initial weights) is replaced only if its folder's marker lists it as that
kind of output.

**Locks.** While a process writes a folder it holds ``.xmlbench-lock``, created with O_CREAT | O_EXCL (so
exactly one process gets it) and holding its PID, host and start time. A second writer is refused with
one line naming the holder. A lock whose process is gone (this host, PID dead or reused) is stale, left by
a SIGKILL or a power cut, and is taken over. Locks on shared file systems from other hosts cannot be
checked and are never broken automatically: the message says which file to delete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xmlbench.errors import UserError
from xmlbench.io import host_name, naming, process_alive, process_start, read_json_object, write_json

MARKER = ".xmlbench-output"
LOCK = ".xmlbench-lock"
UNREADABLE_LOCK_GRACE_S = 60.0  # an empty lock younger than this is being written by its creator


@dataclass(frozen=True)
class Output:
    """A kind of output folder. ``ident`` names one output of that kind ("" = any output of the kind
    is the same output, e.g. a run folder, whose config is compared separately); ``adopt`` recognises a
    folder of this kind that an older xmlbench wrote without a marker."""

    kind: str
    ident: str = ""
    adopt: Callable[[Path], bool] | None = None


# ------------------------------------------------------------------------------------------ ownership
def read_marker(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MARKER
    return read_json_object(path, required=("kind",)) if path.is_file() else None


def claim_folder(folder: str | os.PathLike, out: Output, force: bool = False) -> bool:
    """Make ``folder`` this output's folder, or refuse (UserError); returns whether it was created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is a file; an output folder is needed here")
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None and _same_output(marker, out):
        return False
    if not force:
        _refuse_foreign(folder, marker, out)
    created = not folder.exists()
    with naming(folder):
        folder.mkdir(parents=True, exist_ok=True)
    files = marker.get("files", {}) if marker and marker.get("kind") == out.kind else {}
    write_json(folder / MARKER, _marker(out.kind, out.ident, files))
    return created


def _same_output(marker: dict[str, Any], out: Output) -> bool:
    ident = marker.get("id", "")
    return marker.get("kind") == out.kind and (not out.ident or not ident or ident == out.ident)


def _refuse_foreign(folder: Path, marker: dict[str, Any] | None, out: Output) -> None:
    if marker is not None:
        what = marker["kind"] + (f": {marker['id']}" if marker.get("id") else "")
        raise UserError(f"{folder} holds another xmlbench output ({what}), not this {out.kind} output"
                        + (f" ({out.ident})" if out.ident else "")
                        + "; choose another folder, or pass --force to write into it anyway")
    entries = foreign_entries(folder)
    if entries and not (out.adopt is not None and out.adopt(folder)):
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise UserError(f"{folder} already holds files xmlbench did not write for this {out.kind} output "
                        f"({shown}); choose a new or empty folder, or pass --force to write into it anyway")


def foreign_entries(folder: Path) -> list[str]:
    """What a folder holds besides xmlbench's own bookkeeping (lock, marker, temporary files)."""
    if not folder.is_dir():
        return []
    return sorted(e.name for e in os.scandir(folder)
                  if e.name not in (MARKER, LOCK) and not e.name.endswith(".tmp"))


def _marker(kind: str, ident: str, files: dict[str, str]) -> dict[str, Any]:
    return {"kind": kind, "id": ident, "files": files,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def claim_file(path: str | os.PathLike, kind: str, force: bool = False) -> None:
    """Before writing the loose output file ``path`` (a table, an index, initial weights): refuse to
    replace a file that xmlbench did not write there as this kind of output; then note it as ours."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; a file name is needed here")
    folder = path.parent
    marker = read_marker(folder) if folder.is_dir() else None
    files = dict(marker.get("files", {})) if marker else {}
    if files.get(path.name) == kind:
        return
    if path.exists() and not force:
        raise UserError(f"{path} exists and xmlbench did not write it (as this {kind} output); choose "
                        "another file, or pass --force to replace it")
    files[path.name] = kind
    base = marker or _marker("files", "", {})
    with naming(folder):
        folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MARKER, {**base, "files": files})


def holding_only(*names: str) -> Callable[[Path], bool]:
    """An ``adopt`` test: the folder holds only sub-folders and files with these names (e.g. an
    experiment's root: run folders and its tables)."""

    def test(folder: Path) -> bool:
        return all((folder / e).is_dir() or e in names for e in foreign_entries(folder))

    return test


# ------------------------------------------------------------------------------------------ locks
def _holder() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": host_name(), "pid_start": process_start(pid),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def acquire_lock(folder: Path, command: str = "") -> dict[str, Any]:
    """Take ``folder``'s lock (taking over a stale one) or refuse with one line naming the holder."""
    path = Path(folder) / LOCK
    me = {**_holder(), "command": command}
    for _ in range(3):  # a stale lock removed by us or by another process: try again
        try:
            with naming(path):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if not _is_stale(path, holder):
                raise UserError(_locked_message(folder, path, holder)) from None
            _take_over(path, holder)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        return me
    raise UserError(f"{folder}: could not take its lock {path} (other processes keep taking it)")


def release_lock(folder: Path, held: dict[str, Any]) -> None:
    """Remove the lock if it is still the one we took (never one a later process holds)."""
    path = Path(folder) / LOCK
    if _read_lock(path) == held:
        path.unlink(missing_ok=True)


@contextmanager
def locked(folder: Path, command: str = "") -> Iterator[None]:
    held = acquire_lock(folder, command)
    try:
        yield
    finally:
        release_lock(folder, held)


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_stale(path: Path, holder: dict[str, Any] | None) -> bool:
    """A lock is stale when its process is gone; an unreadable one when it stayed unreadable a while
    (its creator died between creating and writing it)."""
    if holder == {}:  # removed meanwhile
        return True
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_LOCK_GRACE_S
        except FileNotFoundError:
            return True
    if holder.get("host") != host_name():
        return False  # a process on another machine: nothing here can tell whether it is alive
    pid = int(holder.get("pid", 0) or 0)
    if not process_alive(pid):
        return True
    start = holder.get("pid_start", "")
    return bool(start) and start != process_start(pid)  # the PID now belongs to another process


def _take_over(path: Path, holder: dict[str, Any] | None) -> None:
    """Move the stale lock aside (a rename: of two processes taking over, one wins), and put it back if
    what we moved turns out to be a live lock another process took meanwhile."""
    aside = path.with_name(f"{path.name}.stale.{host_name()}-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read_lock(aside) != holder and holder is not None:
        try:
            os.link(aside, path)  # fails if a third process already holds a new lock: theirs stays
        except OSError:
            pass
    aside.unlink(missing_ok=True)


def _locked_message(folder: Path, path: Path, holder: dict[str, Any] | None) -> str:
    if not holder:
        return f"{folder} is being written by another process (its lock {path} is being created); try again"
    where = "this machine" if holder.get("host") == host_name() else f"host {holder.get('host')}"
    return (f"{folder} is being written by process {holder.get('pid')} on {where} since "
            f"{holder.get('since', '?')}; wait for it to finish (if that process is gone, delete {path})")


# ------------------------------------------------------------------------------------------ both
@contextmanager
def writing(folder: str | os.PathLike, out: Output, force: bool = False, command: str = "") -> Iterator[Path]:
    """Claim ``folder`` for ``out`` and hold its lock while the block writes it. A folder this call
    created is removed again if the block fails before writing anything into it."""
    folder = Path(folder)
    created = claim_folder(folder, out, force)
    try:
        with locked(folder, command):
            yield folder
    except BaseException:
        if created and not foreign_entries(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise
