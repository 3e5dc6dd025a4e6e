"""Finds a dataset folder, unpacking a distributed archive once if needed.

Archives are untrusted input: members with absolute paths, ``..`` parts,
links or device files are refused before anything is written. Extraction goes
to a temporary folder that is renamed into place, so an interrupted or
concurrent run never leaves a half-unpacked dataset behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from mammojax.data.adapters._common import find_file
from mammojax.errors import MammojaxError
from mammojax.runtime import default_cache_dir

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_folder(data_dir: Path, *, marker: str, name: str, cache_dir: str | None = None) -> Path:
    """The folder that holds ``marker`` (e.g. ``Info.txt``).

    ``data_dir`` may be that folder, a parent of it, an archive, or a folder
    holding exactly one archive.
    """
    archive = None
    if is_archive(data_dir):
        archive = data_dir
    elif data_dir.is_dir():
        found = find_file(data_dir, [marker])
        if found is not None:
            return found.parent
        archives = sorted(p for p in data_dir.iterdir() if is_archive(p))
        if len(archives) == 1:
            archive = archives[0]
        elif len(archives) > 1:
            raise MammojaxError(f"{data_dir}: no {marker} and several archives; pass one archive as the data dir")
    if archive is None:
        raise MammojaxError(f"{data_dir}: no {marker} found (nor a .tar.gz archive holding it)")
    folder = extract_once(archive, Path(cache_dir) if cache_dir else default_cache_dir() / "datasets" / name)
    found = find_file(folder, [marker])
    if found is None:
        raise MammojaxError(f"{archive}: archive holds no {marker}")
    return found.parent


def extract_once(archive: Path, cache_root: Path) -> Path:
    """Unpacks ``archive`` under ``cache_root`` unless an identical copy is there.

    The target folder name carries the archive's size and mtime, so a changed
    archive gets a fresh copy instead of a stale one.
    """
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    target = cache_root / f"{stem}-{key}"
    if (target / ".complete").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=cache_root))
    try:
        safe_extract(archive, scratch)
        (scratch / ".complete").write_text(str(archive) + "\n")
        try:
            os.replace(scratch, target)
        except OSError:
            if not (target / ".complete").is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def safe_extract(archive: Path, destination: Path) -> None:
    """Extracts regular files and folders only; refuses anything that could escape."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706 filters
                tar.extractall(destination, members=members)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise MammojaxError(f"{archive}: cannot unpack archive: {err}") from None


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or member.name.startswith(("/", "\\")) or ".." in path.parts:
        raise MammojaxError(f"{archive}: unsafe member path {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise MammojaxError(f"{archive}: refusing link or special file {member.name!r}")
