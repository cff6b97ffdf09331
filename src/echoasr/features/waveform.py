"""Framed waveform for a waveform encoder: (HOP_LENGTH, T) non-overlapping 160-sample frames.

Frame t holds samples ``[t*160 - 80, t*160 + 80)``, i.e. it is centred on sample t*160 like every
other feature's frame t, with zeros outside the signal. T = num_frames(n) frames cover the signal
up to sample ``(T - 1) * 160 + 80``; the at most 79 samples after that (less than 5 ms, past the
last frame's centre) are not represented.
"""

from __future__ import annotations

import numpy as np

from echoasr.audio import HOP_LENGTH, num_frames
from echoasr.features.segments import padded_slice

_BLOCK_FRAMES = 8192


def frame_waveform(audio: np.ndarray) -> np.ndarray:
    """Return float32 (HOP_LENGTH, T); column t is the 10 ms of audio centred on frame t."""
    frames = num_frames(len(audio))
    out = np.empty((HOP_LENGTH, frames), dtype=np.float32)
    half = HOP_LENGTH // 2
    for start in range(0, frames, _BLOCK_FRAMES):  # blocks keep the transposing copy small
        stop = min(start + _BLOCK_FRAMES, frames)
        samples = padded_slice(audio, start * HOP_LENGTH - half, stop * HOP_LENGTH - half)
        out[:, start:stop] = samples.reshape(stop - start, HOP_LENGTH).T
    return out
