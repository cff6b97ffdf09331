"""Atomic writes: readers see the old file (folder) or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from echoasr.errors import EchoError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    On any exception (or interrupt) the temporary file is removed and ``path`` is untouched. A
    process killed outright leaves only a hidden ``.<name>.*.tmp`` file beside ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise EchoError(f"cannot write ({error.strerror})", path) from None
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it to ``path`` on success."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        yield file


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``path`` to fill; on success it becomes ``path``.

    An existing ``path`` is moved aside and removed after the rename (``replace``), or kept, the new
    folder discarded (``replace=False``: another process that built the same folder first won).
    On any exception the staging folder is removed and ``path`` is untouched. The folder gets
    ordinary permissions under the umask (mkdtemp's 0700 would hide shared data from other users).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    aside = None
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        for item in [staging, *staging.rglob("*")]:
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)
        if path.exists():
            if not replace:
                return
            aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, aside / path.name)
        try:
            os.replace(staging, path)
        except OSError:
            if aside is not None:
                os.replace(aside / path.name, path)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
