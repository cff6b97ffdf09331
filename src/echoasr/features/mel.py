"""Whisper-style log-mel spectrogram: 80 bins over 0-8000 Hz, 25 ms Hann window, 10 ms hop.

Same recipe as Whisper's ``log_mel_spectrogram``: power STFT (n_fft 400, periodic Hann), librosa's
Slaney mel filterbank, ``log10`` floored at 1e-10, values below (utterance max - 8) raised to it
(an 80 dB dynamic range), then ``(x + 4) / 4``. Two differences, both for the frame convention:
every centred frame is kept (T = 1 + n // 160; Whisper drops the last), and the signal is padded
with zeros rather than reflected at the ends (librosa's default; reflection is undefined for
clips shorter than half a window).

The STFT runs in blocks of frames, so memory stays proportional to the output even for an hour.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

from echoasr.audio import HOP_LENGTH, SAMPLE_RATE, num_frames
from echoasr.features.segments import padded_slice

N_MELS = 80
N_FFT = 400
MEL_FMAX = SAMPLE_RATE / 2
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units below the utterance maximum kept (80 dB)
_BLOCK_FRAMES = 4096


@functools.cache
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-normalised mel filterbank (n_mels, n_fft // 2 + 1) over 0-8000 Hz, as Whisper uses."""
    import librosa

    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=MEL_FMAX)
    filters = filters.astype(np.float32)
    filters.setflags(write=False)
    return filters


@functools.cache
def _window() -> np.ndarray:
    # Periodic Hann, as torch.hann_window(N_FFT) and librosa's get_window("hann", N_FFT).
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    window.setflags(write=False)
    return window


def power_mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Mel-filtered power spectrogram (N_MELS, T), float32, before any log compression."""
    frames = num_frames(len(audio))
    filters = mel_filters()
    out = np.empty((N_MELS, frames), dtype=np.float32)
    for start in range(0, frames, _BLOCK_FRAMES):
        stop = min(start + _BLOCK_FRAMES, frames)
        # Frame t spans samples [t*HOP - N_FFT/2, t*HOP + N_FFT/2): zeros beyond the signal.
        samples = padded_slice(audio, start * HOP_LENGTH - N_FFT // 2, (stop - 1) * HOP_LENGTH + N_FFT // 2)
        block = np.lib.stride_tricks.sliding_window_view(samples, N_FFT)[::HOP_LENGTH] * _window()
        spectrum = scipy.fft.rfft(block, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        np.matmul(filters, power.T, out=out[:, start:stop])
    return out


def log_mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Whisper-compressed log-mel (N_MELS, T), float32, values roughly in [-1.5, 1.5]."""
    spec = power_mel_spectrogram(audio)
    np.maximum(spec, LOG_FLOOR, out=spec)
    np.log10(spec, out=spec)
    np.maximum(spec, spec.max() - DYNAMIC_RANGE, out=spec)
    spec += 4.0
    spec /= 4.0
    return spec
