"""The record every loader returns, and the checks that drop unusable rows with a summary."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterable
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from echoasr.errors import EchoError
from echoasr.text import normalize

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# How many skipped rows are named one by one before only the summary line counts them.
MAX_NAMED_SKIPS = 5


@dataclass(frozen=True)
class Utterance:
    """One utterance: its audio lives in a file (``path``) or in memory (``audio``).

    ``audio`` is either float32 samples at 16 kHz or the bytes of an encoded file (what a
    Hugging Face dataset stores); :func:`read_audio` decodes any of them.
    """

    id: str
    text: str
    speaker: str = ""
    duration: float | None = None  # seconds
    path: str | None = None
    audio: np.ndarray | bytes | None = field(default=None, repr=False, compare=False)
    voice: str = ""


def read_audio(utterance: Utterance) -> np.ndarray:
    """The utterance's audio as float32 mono at 16 kHz (down-mixed and resampled as needed)."""
    if isinstance(utterance.audio, np.ndarray):
        return utterance.audio.astype(np.float32, copy=False)
    source = io.BytesIO(utterance.audio) if utterance.audio is not None else utterance.path
    if source is None:
        raise EchoError(f"utterance {utterance.id} has neither a path nor audio")
    if utterance.audio is None and not Path(source).is_file():
        raise EchoError("cannot read audio: no such file", source)
    try:
        audio, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise EchoError(f"cannot read audio: {error}", utterance.path or utterance.id) from None
    return resample(audio.mean(axis=1), rate)


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def keep_usable(
    candidates: Iterable[Utterance],
    source: str | Path,
    *,
    check_audio: bool = True,
    max_duration: float | None = None,
    skipped: Counter | None = None,
) -> list[Utterance]:
    """Drop rows whose audio is missing, unreadable, empty (unless ``check_audio`` is false: then
    such rows are kept, for evaluation to count them) or longer than ``max_duration`` seconds, and
    rows with an empty transcript; warn about them, log one summary line, and fail with an
    EchoError naming ``source`` when nothing is left. ``skipped`` carries counts from parsing."""
    skipped = Counter() if skipped is None else skipped
    kept: list[Utterance] = []
    for utterance in candidates:
        problem, utterance = _check(utterance, check_audio, max_duration)
        if problem is None:
            kept.append(utterance)
            continue
        skipped[problem] += 1
        if sum(skipped.values()) <= MAX_NAMED_SKIPS:
            log.warning("%s: skipping %s (%s)", source, utterance.path or utterance.id, problem)
    seen = len(kept) + sum(skipped.values())  # the parsers count what they skip as they go
    hours = sum(u.duration or 0.0 for u in kept) / 3600
    if skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        log.warning("%s: %d of %d utterances usable (%.2f h); skipped %s", source, len(kept), seen, hours, reasons)
    else:
        log.info("%s: %d utterances (%.2f h)", source, len(kept), hours)
    if not kept:
        raise EchoError(f"no usable utterances (of {seen} rows)", source)
    return kept


def _check(utterance: Utterance, check_audio: bool, max_duration: float | None) -> tuple[str | None, Utterance]:
    if not normalize(utterance.text):
        return "empty transcript", utterance
    duration = utterance.duration
    if check_audio or duration is None:
        problem, duration = _measure_duration(utterance)
        if problem is not None and check_audio:
            return problem, utterance
    if check_audio and (not duration or duration <= 0):
        return "empty audio", utterance
    if max_duration is not None and duration is not None and duration > max_duration:
        return f"longer than {max_duration:g} s", utterance
    if duration != utterance.duration:
        utterance = dataclasses.replace(utterance, duration=None if duration is None else round(duration, 3))
    return None, utterance


def _measure_duration(utterance: Utterance) -> tuple[str | None, float | None]:
    """(problem or None, duration in seconds or None) from the audio's header."""
    if isinstance(utterance.audio, np.ndarray):
        return None, len(utterance.audio) / SAMPLE_RATE
    if utterance.audio is None and (utterance.path is None or not Path(utterance.path).is_file()):
        return "missing file", None
    try:
        info = soundfile.info(io.BytesIO(utterance.audio) if utterance.audio is not None else utterance.path)
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return "unreadable audio", None
    return None, info.frames / info.samplerate if info.samplerate else 0.0
