"""On-disk feature cache keyed by file content, extraction settings and feature version.

Layout: ``CACHE_DIR/<sha[:2]>/<sha256 of file>-<settings key>/<array>.npy``, one ``.npy`` per
array (``mel``, ``f0``, ``voiced``, ...), so a later request for more features reuses what is
there. Each array is written to a temporary file in the same folder and renamed into place
(``os.replace`` is atomic), so a reader sees a whole array or none: a run killed mid-write leaves
at worst a ``.tmp`` file that no lookup ever reads. Unreadable entries are recomputed.
The settings key covers every ``FeatureSettings`` field and ``FEATURE_VERSION``; for raw PCM the
assumed sample rate and channel count are part of the key too.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from echoasr.atomic import atomic_write
from echoasr.errors import EchoError

log = logging.getLogger(__name__)


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes (read in blocks)."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        raise EchoError("no such file", path) from None
    except IsADirectoryError:
        raise EchoError("is a directory, not an audio file", path) from None
    except PermissionError:
        raise EchoError("permission denied", path) from None


class FeatureCache:
    """Arrays stored under ``directory``, looked up by (content hash, entry key, array name)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def entry(self, digest: str, key: str) -> Path:
        return self.directory / digest[:2] / f"{digest}-{key}"

    def load(self, digest: str, key: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        """The requested arrays that are present and readable (possibly none)."""
        found = {}
        folder = self.entry(digest, key)
        for name in names:
            path = folder / f"{name}.npy"
            if not path.is_file():
                continue
            try:
                found[name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:
                log.warning("%s: unreadable cache entry, recomputing (%s)", path, error)
        return found

    def store(self, digest: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        folder = self.entry(digest, key)
        for name, array in arrays.items():
            with atomic_write(folder / f"{name}.npy") as file:
                np.save(file, array, allow_pickle=False)
