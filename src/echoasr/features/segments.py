"""Run a frame-level analysis over long audio in overlapping segments.

pyworld's analyses and the pitch trackers hold whole-signal buffers (DIO FFTs the entire signal;
CheapTrick/D4C return 513 float64 bins per frame), so one hour in one call needs gigabytes.
Cutting the signal into segments with a margin of context on each side keeps memory flat and time
linear. The 1 s margin is long compared with every analysis window (<= ~0.1 s): strictly local
analyses (CheapTrick) come out identical, DIO's voicing agrees on >= 99% of frames, and D4C, whose
output depends weakly on the rest of the signal, moves by < 0.01 (tests/features/test_segments.py).
Audio up to 31 s is analysed in a single call, exactly as the library would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from echoasr.audio import HOP_LENGTH, num_frames

SEGMENT_FRAMES = 3000  # 30 s per call
MARGIN_FRAMES = 100  # 1 s of context on each side


def padded_slice(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``audio[start:stop]`` as a new float32 array, with zeros where the range leaves the signal."""
    out = np.zeros(stop - start, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, len(audio))
    if hi > lo:
        out[lo - start : hi - start] = audio[lo:hi]
    return out


def fit_frames(array: np.ndarray, frames: int) -> np.ndarray:
    """Crop or zero-pad the last axis to ``frames`` (libraries disagree by a frame at the ends)."""
    have = array.shape[-1]
    if have >= frames:
        return array[..., :frames]
    pad = [(0, 0)] * (array.ndim - 1) + [(0, frames - have)]
    return np.pad(array, pad)


def map_segments(
    audio: np.ndarray,
    analyse: Callable[[np.ndarray, int], np.ndarray],
    *,
    segment_frames: int | None = None,
    margin_frames: int | None = None,
) -> np.ndarray:
    """Apply ``analyse(samples, first_frame)`` piecewise; concatenate results on the last axis.

    ``analyse`` gets samples starting at sample ``first_frame * HOP_LENGTH`` and must return an
    array whose last axis has ``num_frames(len(samples))`` frames (frame j = global frame
    ``first_frame + j``). The result has ``num_frames(len(audio))`` frames. Segment and margin
    sizes default to ``SEGMENT_FRAMES`` and ``MARGIN_FRAMES``.
    """
    segment_frames = segment_frames or SEGMENT_FRAMES
    margin_frames = MARGIN_FRAMES if margin_frames is None else margin_frames
    total = num_frames(len(audio))
    if total <= segment_frames + margin_frames:
        return fit_frames(analyse(audio, 0), total)
    pieces = []
    for start in range(0, total, segment_frames):
        stop = min(start + segment_frames, total)
        first = max(0, start - margin_frames)
        last = min(total, stop + margin_frames)
        samples = audio[first * HOP_LENGTH : last * HOP_LENGTH]
        result = fit_frames(analyse(samples, first), num_frames(len(samples)))
        pieces.append(result[..., start - first : stop - first])
    return np.concatenate(pieces, axis=-1)
