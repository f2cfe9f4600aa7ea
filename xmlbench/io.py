"""Atomic file writes: a killed process never leaves a half-written file behind.

Temporary files are named ``.NAME.HOST-PID.RANDOM.tmp``: the next write into the same folder removes
those a dead process of this host left behind (a SIGKILL or a power cut skips every ``finally``), and never
touches those of a live writer. Write errors name the file they were writing (an ``OSError`` from a full
disk names none by itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xmlbench.errors import UserError


def host_name() -> str:
    """This machine's name as one file-name-safe word (it goes into temporary names and locks)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", socket.gethostname()) or "host"


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux), or "" where unknown: a process id the
    system reused for a new process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else ""


def tmp_prefix(name: str) -> str:
    """The start of a temporary name for ``name``, owned by this process (``sweep_stale_tmp`` parses it)."""
    return f".{name}.{host_name()}-{os.getpid()}."


_TMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_swept: set[tuple[int, Path]] = set()  # (pid, folder): each process sweeps a folder once


def sweep_stale_tmp(folder: Path) -> None:
    """Remove the temporary files and folders that dead processes of this host left in ``folder``."""
    key = (os.getpid(), folder)
    if key in _swept:
        return
    _swept.add(key)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    host = host_name()
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if not m or m["host"] != host or process_alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:  # another sweeper got there first, or no permission: not ours to insist on
            pass


def make_tmp_dir(folder: Path, name: str) -> Path:
    """A temporary folder beside ``folder / name``, named like the temporary files (swept the same way)."""
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(folder)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(name), suffix=".tmp", dir=folder))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; the finished folder gets the usual permissions
    return tmp


@contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """Give an ``OSError`` raised inside the block the file name it lacks (ENOSPC, EFBIG, EIO carry none)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces ``path`` in one rename."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_tmp(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
    tmp_path = Path(tmp)
    try:
        with naming(path):
            yield tmp_path
            with open(tmp_path, "rb+") as f:  # flush to disk before the rename makes it visible
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which would briefly affect other threads' files.
_UMASK = _read_umask()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file xmlbench wrote; a damaged one (truncated, not UTF-8, not JSON) is one line naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: damaged (not UTF-8 at byte {e.start}); delete it or restore it") from None
    except json.JSONDecodeError as e:
        what = "empty" if not e.doc.strip() else f"not valid JSON ({e.msg} at line {e.lineno})"
        raise UserError(f"{path}: damaged or truncated: {what}; delete it or restore it") from None


def read_json_object(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``read_json`` of a file that must hold an object with the ``required`` keys."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: damaged: expected a JSON object, found {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"{path}: damaged or not written by xmlbench: no {missing[0]!r} entry")
    return data


def read_npz(path: str | os.PathLike, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The named arrays of an ``.npz`` xmlbench wrote (no pickle), and those of ``optional`` it holds; a
    missing, truncated or foreign file is one line naming it."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise UserError(f"{path}: damaged or not written by xmlbench (no {missing[0]!r} array)")
            return {k: z[k] for k in (*keys, *optional) if k in z.files}
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError):
        raise UserError(f"{path}: damaged or truncated; delete it or rerun") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
