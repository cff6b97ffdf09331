"""Features for many utterances at once: extracted in parallel, cached on disk, kept in memory.

:func:`extract_features` computes (or reads from the on-disk cache) the requested features of every
utterance, over ``workers`` processes with a progress bar, and returns them as float16 arrays
(4 h of 80-bin log-mel is ~230 MB). An utterance whose audio fails to decode is skipped with a
warning and counted, never a crash halfway through. :class:`SpeechDataset` pairs the arrays with
token ids for the collator.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from echoasr.audio import FRAME_PERIOD
from echoasr.data.records import Utterance, read_audio
from echoasr.errors import EchoError
from echoasr.features import FeatureSettings, extract, extract_file

log = logging.getLogger(__name__)

STORAGE_DTYPE = np.float16
# Arrays kept in float32: f0 in Hz up to ~600 fits float16 (1/8 Hz steps at 600 Hz) but the
# voicing-aware z-score of log f0 is computed from it; keep pitch exact, it is tiny.
EXACT_KEYS = ("f0", "voiced", "phase")


def extract_features(
    utterances: Sequence[Utterance],
    features: Sequence[str],
    settings: FeatureSettings | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    description: str = "features",
) -> tuple[list[dict[str, np.ndarray] | None], int]:
    """Features of every utterance in order (None where the audio could not be read) and the
    number of such failures."""
    from tqdm import tqdm

    settings = settings or FeatureSettings()
    workers = max(1, min(workers or os.cpu_count() or 1, len(utterances)))
    jobs = [(u, tuple(features), settings, None if cache_dir is None else str(cache_dir)) for u in utterances]
    results: list[dict[str, np.ndarray] | None] = []
    bar = tqdm(total=len(jobs), desc=description, unit="utt", disable=not progress, dynamic_ncols=True)
    with bar:
        if workers == 1 or len(jobs) < 4 * workers:
            for job in jobs:
                results.append(_extract_one(job))
                bar.update()
        else:
            # spawn, not fork: the parent may hold OpenMP threads (torch), which fork leaves broken.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded) as pool:
                for result in pool.map(_extract_one, jobs, chunksize=8):
                    results.append(result)
                    bar.update()
    failures = sum(result is None for result in results)
    if failures:
        log.warning("%s: %d of %d utterances could not be decoded and are skipped", description, failures, len(jobs))
    return results, failures


def _single_threaded() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _extract_one(job) -> dict[str, np.ndarray] | None:
    utterance, features, settings, cache_dir = job
    try:
        if utterance.path is not None and utterance.audio is None:
            arrays = extract_file(utterance.path, features, settings, cache_dir)
        else:
            arrays = extract(read_audio(utterance), features, settings)
    except (EchoError, ValueError) as error:
        log.warning("%s: skipping (%s)", utterance.path or utterance.id, error)
        return None
    return {k: v.astype(np.float32 if k in EXACT_KEYS else STORAGE_DTYPE) for k, v in arrays.items()}


def default_cache_dir(source: str | os.PathLike) -> Path | None:
    """``<data folder>/features-cache`` (the manifest's folder for a manifest), if writable."""
    folder = Path(source)
    folder = folder if folder.is_dir() else folder.parent
    return folder / "features-cache" if os.access(folder, os.W_OK) else None


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances with their features in memory and, for training, token ids ending with EOS."""

    def __init__(self, features: Sequence[dict[str, np.ndarray]], labels: Sequence[list[int]] | None = None,
                 utterances: Sequence[Utterance] | None = None):
        if (labels is not None and len(labels) != len(features)) or (utterances is not None and len(utterances) != len(features)):
            raise ValueError("features, labels and utterances must have the same length")
        self.features = list(features)
        self.labels = None if labels is None else list(labels)
        self.utterances = None if utterances is None else list(utterances)
        first = next(iter(self.features[0])) if self.features else None
        self.lengths = [int(f[first].shape[-1]) for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        item = {"features": self.features[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def seconds(self) -> float:
        return sum(self.lengths) * FRAME_PERIOD
