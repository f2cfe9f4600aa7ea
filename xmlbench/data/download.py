"""Fetch a registered dataset from its public source (Google Drive archives of AttentionXML) and verify it.

Offline (as on CI), the first request fails and the user gets one line saying what to download and where
to put it. Verification compares the unpacked files' statistics with the manifest's published figures.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from xmlbench.data.manifest import DATASETS, DatasetInfo
from xmlbench.errors import UserError

TIMEOUT_S = 30


def download(name: str, progress: bool = True) -> Path:
    info = DATASETS.get(name)
    dest = info.folder
    if dest.is_dir() and any(dest.glob("train*")):
        return dest
    url = info.download.get("url")
    if not url:
        raise UserError(f"dataset {info.name!r} has no download URL in {info.manifest_path}")
    with tempfile.TemporaryDirectory(prefix=f"xmlbench-{info.name}-") as tmp:
        archive = Path(tmp) / "archive"
        try:
            _fetch_drive(url, archive, progress)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise UserError(_offline_hint(info, e)) from None
        unpacked = Path(tmp) / "unpacked"
        _unpack(archive, unpacked)
        _install(unpacked, dest, info)
    return dest


def _offline_hint(info: DatasetInfo, err: Exception) -> str:
    page = info.download.get("page", info.download.get("url", ""))
    return (
        f"cannot download {info.name!r} ({type(err).__name__}: {err}); download {page} by hand, unpack it and "
        f"put {info.train_texts}, train_labels.txt, {info.test_texts}, test_labels.txt in {info.folder}"
    )


def _fetch_drive(url: str, out: Path, progress: bool) -> None:
    """Google Drive answers large files with a 'virus scan' page whose form carries a confirm token."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(url, timeout=TIMEOUT_S) as resp:
        ctype = resp.headers.get("Content-Type", "")
        if "text/html" not in ctype:
            _stream(resp, out, progress)
            return
        page = resp.read().decode("utf-8", "replace")
    action = re.search(r'action="([^"]+)"', page)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page))
    if not action or "confirm" not in fields:
        raise OSError("unexpected Google Drive page (quota exceeded or link moved)")
    query = urllib.parse.urlencode(fields)
    with opener.open(f"{action.group(1)}?{query}", timeout=TIMEOUT_S) as resp:
        _stream(resp, out, progress)


def _stream(resp, out: Path, progress: bool) -> None:
    from tqdm import tqdm

    total = int(resp.headers.get("Content-Length") or 0) or None
    with open(out, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, disable=not progress) as bar:
        while chunk := resp.read(1 << 20):
            f.write(chunk)
            bar.update(len(chunk))


def _unpack(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise UserError(f"{archive}: downloaded file is neither a zip nor a tar archive")


def _install(unpacked: Path, dest: Path, info: DatasetInfo) -> None:
    hits = sorted(unpacked.rglob("train_labels.txt"))
    if not hits:
        raise UserError(f"the archive for {info.name!r} has no train_labels.txt; was the link right?")
    src = hits[0].parent
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.rename(dest)


def verify(name: str) -> list[str]:
    """Differences between the local files and the published statistics (empty when they agree)."""
    from xmlbench.data.dataset import dataset_stats, open_dataset

    info = DATASETS.get(name)
    stats = dataset_stats(open_dataset(name))
    problems = []
    for key in ("n_train", "n_test"):
        if key in info.published and stats[key] != info.published[key]:
            problems.append(f"{key}: {stats[key]} here, {info.published[key]:g} published")
    return problems
