"""WORLD harmonic envelope (CheapTrick) and aperiodicity (D4C), reduced to a few mel-spaced bands.

Both analyses run on the f0 track of the chosen tracker (0 Hz frames are analysed as unvoiced) at
10 ms frames with CheapTrick's FFT size for 16 kHz (1024 points, 513 bins, for f0 floors >= 47 Hz).

``harmonic`` (N_HARMONIC_BANDS, T): the envelope's power averaged within mel-spaced triangular
bands over 0-8000 Hz (weights summing to 1 per band), then ``log10`` floored at 1e-10 and mapped
with fixed constants, ``(log10(power) - HARMONIC_LOG_CENTRE) / HARMONIC_LOG_SCALE``, measured on
flite/espeak-ng speech at the engines' output level (mean ~0, standard deviation ~1 there;
silence maps to -2.75).
No utterance statistics are used: a frame's value depends on that frame alone, so features are
the same however a file is cut, and level differences between recordings stay visible (as in
Whisper's log-mel, whose only utterance-dependent step is the 80 dB floor).

``aperiodic`` (N_APERIODIC_BANDS, T): D4C's aperiodicity (0 = periodic, 1 = noise) averaged in the
log domain within mel-spaced bands, then ``log10`` (range [-3, 0]) mapped to [-1, 1] by
``(log10(ap) + 1.5) / 1.5``. Unvoiced frames are +1 in every band. At 16 kHz D4C measures
aperiodicity in a single band around 3 kHz and interpolates (in dB) between fixed end points at
0 Hz (-60 dB) and 8 kHz (0 dB), so each voiced frame carries one measured number; the bands give
the model that number in the spectral shape WORLD assumes, hence only four of them.
"""

from __future__ import annotations

import functools

import numpy as np

from echoasr.audio import FRAME_PERIOD, SAMPLE_RATE, num_frames
from echoasr.features.pitch import pyworld
from echoasr.features.segments import map_segments

N_HARMONIC_BANDS = 24
N_APERIODIC_BANDS = 4
HARMONIC_LOG_FLOOR = 1e-10
HARMONIC_LOG_CENTRE = -4.5
HARMONIC_LOG_SCALE = 2.0
APERIODIC_LOG_FLOOR = 1e-3  # D4C's own floor (-60 dB)
_APERIODIC_LOG_CENTRE = -1.5
_APERIODIC_LOG_SCALE = 1.5


def world_fft_size(f0_floor: float) -> int:
    """CheapTrick's FFT size at 16 kHz for this f0 floor (1024 for floors >= 47 Hz)."""
    return int(pyworld().get_cheaptrick_fft_size(SAMPLE_RATE, f0_floor))


@functools.cache
def band_weights(n_bands: int, fft_size: int) -> np.ndarray:
    """Mel-spaced triangular bands over 0-8000 Hz, (n_bands, fft_size // 2 + 1), rows sum to 1."""
    import librosa

    weights = librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=fft_size, n_mels=n_bands, fmin=0.0, fmax=SAMPLE_RATE / 2, norm=None
    ).astype(np.float64)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def world_features(
    audio: np.ndarray, f0: np.ndarray, f0_floor: float = 60.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(harmonic, aperiodic)``: float32 (N_HARMONIC_BANDS, T) and (N_APERIODIC_BANDS, T).

    ``f0`` is the (T,) track in Hz with 0 on unvoiced frames, T = num_frames(len(audio)).
    """
    frames = num_frames(len(audio))
    if f0.shape != (frames,):
        raise ValueError(f"f0 has shape {f0.shape}, expected ({frames},) for {len(audio)} samples")
    pw = pyworld()
    fft_size = world_fft_size(f0_floor)
    harmonic_weights = band_weights(N_HARMONIC_BANDS, fft_size)
    aperiodic_weights = band_weights(N_APERIODIC_BANDS, fft_size)
    f0 = f0.astype(np.float64)

    def analyse(samples: np.ndarray, first_frame: int) -> np.ndarray:
        x = samples.astype(np.float64)
        count = num_frames(len(x))
        track = np.ascontiguousarray(f0[first_frame : first_frame + count])
        times = np.arange(len(track)) * FRAME_PERIOD
        envelope = pw.cheaptrick(x, track, times, SAMPLE_RATE, f0_floor=f0_floor, fft_size=fft_size)
        aperiodicity = pw.d4c(x, track, times, SAMPLE_RATE, fft_size=fft_size)
        harmonic = np.log10(np.maximum(envelope @ harmonic_weights.T, HARMONIC_LOG_FLOOR))
        aperiodic = np.log10(np.clip(aperiodicity, APERIODIC_LOG_FLOOR, 1.0)) @ aperiodic_weights.T
        return np.concatenate([harmonic, aperiodic], axis=1).T

    bands = map_segments(audio, analyse)
    harmonic = (bands[:N_HARMONIC_BANDS] - HARMONIC_LOG_CENTRE) / HARMONIC_LOG_SCALE
    aperiodic = (bands[N_HARMONIC_BANDS:] - _APERIODIC_LOG_CENTRE) / _APERIODIC_LOG_SCALE
    return harmonic.astype(np.float32), aperiodic.astype(np.float32)
