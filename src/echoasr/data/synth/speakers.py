"""New apparent speakers from one voice: WORLD analysis/synthesis with another f0 register and
another vocal-tract length.

A :class:`SpeakerTransform` scales f0 by ``f0_ratio`` and warps the spectral envelope (and the
aperiodicity) along frequency by ``warp``: the envelope at frequency f becomes the original's at
f / warp, so formants move up by ``warp`` (a shorter vocal tract; ``warp`` < 1 is a longer one).
The two are independent: f0 moves without the formants and the formants without f0.

Each voice gets ``speakers_per_voice`` speakers: number 0 is the voice itself, the others draw
their transform from the corpus seed and the speaker's name (:func:`speaker_transforms`), so the
same settings always give the same speakers. A transformed speaker's id is ``<speaker>~<n>``; it
belongs to its base speaker for the train/test split, so transforms of a held-out voice stay held out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from echoasr.features.pitch import pyworld

FRAME_PERIOD_MS = 10.0  # 10 ms frames: ~2x faster than WORLD's default 5 ms, no audible difference here
# Log-uniform ranges per sex of the base voice, reaching towards the other sex. Formants moved
# further than an adult of either sex has hurt intelligibility (pocketsphinx WER on 10 sentences,
# from 33/31%: slt warped x1.08 54%, x1.16 89%; kal16 warped x0.92 59%, x1.16 42%; slt x0.92 29%,
# kal16 x1.08 30%); f0 alone moved x0.72 or x1.4 left slt's WER unchanged.
F0_RATIO_RANGE = {"male": (0.8, 1.8), "female": (0.6, 1.2)}
WARP_RANGE = {"male": (0.97, 1.16), "female": (0.86, 1.03)}


@dataclass(frozen=True)
class SpeakerTransform:
    f0_ratio: float = 1.0
    warp: float = 1.0

    @property
    def identity(self) -> bool:
        return self.f0_ratio == 1.0 and self.warp == 1.0


def speaker_id(base: str, index: int) -> str:
    return base if index == 0 else f"{base}~{index}"


def base_speaker(speaker: str) -> str:
    return speaker.split("~", 1)[0]


def speaker_transforms(base: str, sex: str, count: int, seed: int) -> list[SpeakerTransform]:
    """``count`` transforms for ``base`` (the first is the identity), a function of (seed, base) only."""
    digest = int.from_bytes(hashlib.sha256(f"{seed}:{base}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(digest)
    transforms = [SpeakerTransform()]
    for _ in range(count - 1):
        f0_ratio = float(np.exp(rng.uniform(*np.log(F0_RATIO_RANGE[sex]))))
        warp = float(np.exp(rng.uniform(*np.log(WARP_RANGE[sex]))))
        transforms.append(SpeakerTransform(round(f0_ratio, 4), round(warp, 4)))
    return transforms


def warp_envelope(envelope: np.ndarray, warp: float) -> np.ndarray:
    """(frames, bins) spectral envelope (or aperiodicity) warped along linear frequency:
    out[f] = in[f / warp], the top bin's value held beyond the original band."""
    bins = envelope.shape[1]
    source = np.arange(bins) / warp
    grid = np.arange(bins)
    return np.stack([np.interp(source, grid, row) for row in envelope])


def transform_audio(audio: np.ndarray, rate: int, transform: SpeakerTransform) -> np.ndarray:
    """``audio`` (float, mono) spoken by the transformed speaker, same rate and length."""
    if transform.identity:
        return audio
    world = pyworld()
    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, times = world.dio(x, rate, frame_period=FRAME_PERIOD_MS)
    f0 = world.stonemask(x, f0, times, rate)
    envelope = world.cheaptrick(x, f0, times, rate)
    aperiodicity = world.d4c(x, f0, times, rate)
    if transform.warp != 1.0:
        envelope = warp_envelope(envelope, transform.warp)
        aperiodicity = np.clip(warp_envelope(aperiodicity, transform.warp), 0.0, 1.0)
    out = world.synthesize(f0 * transform.f0_ratio, envelope, aperiodicity, rate, FRAME_PERIOD_MS)
    if len(out) < len(x):
        out = np.pad(out, (0, len(x) - len(out)))
    return out[: len(x)]
