"""Files to text: ``echoasr transcribe [--model RUN] AUDIO...`` prints one line per file.

A file longer than the model takes (its ``max_duration``, or ``chunk_seconds``) is cut at silences
into chunks (:func:`silence_cuts`: the last pause in the allowed span, so chunks stay long and
rarely split a word). The
chunks of all files are decoded together in length-sorted batches and joined back per file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from echoasr.audio import HOP_LENGTH, SAMPLE_RATE
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

SMOOTHING_FRAMES = 10  # 100 ms


def silence_cuts(audio: np.ndarray, max_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges (start, end) covering ``audio`` in order, each at most ``max_seconds`` long,
    cut in pauses.

    Each cut goes in the last quiet stretch between a quarter and all of the allowed span from the
    previous cut (quiet: smoothed frame energy within 10% of the window's floor-to-median range),
    at its middle; without a pause, at the quietest frame.
    """
    total = len(audio)
    span = int(max_seconds * SAMPLE_RATE)
    if span < HOP_LENGTH * 4:
        raise EchoError(f"chunks of {max_seconds:g} s are too short")
    if total <= span:
        return [(0, total)]
    frames = total // HOP_LENGTH
    energy = np.square(audio[: frames * HOP_LENGTH].astype(np.float64)).reshape(frames, HOP_LENGTH).mean(1)
    smooth = np.convolve(energy, np.ones(SMOOTHING_FRAMES) / SMOOTHING_FRAMES, mode="same")
    ranges, start = [], 0
    while total - start > span:
        low = (start + span // 4) // HOP_LENGTH
        high = min((start + span) // HOP_LENGTH, frames)
        window = smooth[low:high]
        floor = window.min()
        quiet = window <= floor + 0.1 * (np.median(window) - floor)
        last = int(np.flatnonzero(quiet)[-1])
        first = last
        while first > 0 and quiet[first - 1]:
            first -= 1
        cut = (low + (first + last) // 2) * HOP_LENGTH
        ranges.append((start, cut))
        start = cut
    ranges.append((start, total))
    return ranges


def chunk_features(processor, audio: np.ndarray, max_seconds: float) -> list[dict[str, np.ndarray]]:
    """The model's features of ``audio``, one dict per chunk cut at silences (:func:`silence_cuts`)."""
    return [processor.extract(audio[start:end]) for start, end in silence_cuts(audio, max_seconds)]


def transcribe(model_path: str | os.PathLike | None, paths: Sequence[str | os.PathLike], **options) -> list[tuple[str, str]]:
    """(path, text) for every file, in order; ``options`` as for :func:`transcribe_detailed`. A bad
    file stops the run before any decoding."""
    return [(path, transcript.text) for path, transcript, _ in transcribe_detailed(model_path, paths, **options)]


def transcribe_detailed(
    model_path: str | os.PathLike | None,
    paths: Sequence[str | os.PathLike],
    *,
    beams: int = 8,
    chunk_seconds: float | None = None,
    batch_frames: int | None = None,
    bf16: bool = False,
    threads: int | None = None,
    progress: bool = True,
    lm: str | None = None,
    int8: bool = False,
    guard: bool = True,
    nbest: int | None = None,
):
    """(path, :class:`~echoasr.decoding.Transcript`, duration in seconds) for every file: text,
    timed words with confidences (times from the start of the file), and the n-best list (for a
    file decoded in one piece). ``model_path`` None or ``"default"``: the default model
    (:func:`echoasr.pretrained.default_model`). ``lm``: see :func:`echoasr.decoding.resolve_options`;
    ``int8``: dynamically quantised Linear layers on the CPU (not with ``bf16``); ``guard``: the
    hallucination guard; ``nbest``: the LM search's n-best size (:class:`echoasr.decoding.DecodingOptions`)."""
    from echoasr.pretrained import resolve_model
    from echoasr.runtime import check_precision, torch_threads

    check_precision(bf16, int8)
    model_path = resolve_model(model_path)
    with torch_threads(threads):
        return _transcribe(model_path, paths, beams, chunk_seconds, batch_frames, bf16, progress, lm, int8, guard,
                           nbest)


def _transcribe(model_path, paths, beams, chunk_seconds, batch_frames, bf16, progress, lm, int8, guard, nbest):
    from tqdm import tqdm

    from echoasr.audio import load_audio
    from echoasr.data.featurize import SpeechDataset
    from echoasr.decoding import Transcript, decode_transcripts, resolve_options
    from echoasr.lm.decoding import Word
    from echoasr.loading import load_pretrained
    from echoasr.runtime import DEFAULT_BATCH_FRAMES

    audios = [load_audio(path) for path in paths]  # a bad file fails before any work
    model, processor = load_pretrained(model_path, int8=int8)
    options = resolve_options(model_path, lm, beams=beams, guard=guard, nbest=nbest)
    chunk_seconds = chunk_seconds or processor.max_duration
    owners, offsets, features = [], [], []
    bar = tqdm(total=len(paths), desc="features", unit="file", disable=not progress or len(paths) < 2)
    for index, (path, audio) in enumerate(zip(paths, audios, strict=True)):
        cuts = silence_cuts(audio, chunk_seconds)
        if len(cuts) > 1:
            log.info("%s: %.1f s cut into %d chunks", path, len(audio) / SAMPLE_RATE, len(cuts))
        for start, end in cuts:
            features.append(processor.extract(audio[start:end]))
            owners.append(index)
            offsets.append(start / SAMPLE_RATE)
        bar.update()
    bar.close()
    pieces = decode_transcripts(model, processor, SpeechDataset(features), options,
                                batch_frames=batch_frames or DEFAULT_BATCH_FRAMES, bf16=bf16,
                                progress=progress and len(features) > 1)
    merged = [Transcript("") for _ in paths]
    chunks = [owners.count(index) for index in range(len(paths))]
    for owner, offset, piece in zip(owners, offsets, pieces, strict=True):
        target = merged[owner]
        if piece.text:
            target.text = f"{target.text} {piece.text}".strip()
        target.words += [Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3), w.confidence)
                         for w in piece.words]
        if chunks[owner] == 1:
            target.nbest = piece.nbest
    return [(str(Path(path)), transcript, len(audio) / SAMPLE_RATE)
            for path, transcript, audio in zip(paths, merged, audios, strict=True)]
