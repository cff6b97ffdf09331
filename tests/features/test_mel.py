import warnings

import librosa
import numpy as np
import pytest

from echoasr.audio import num_frames
from echoasr.features.mel import N_MELS, log_mel_spectrogram, mel_filters, power_mel_spectrogram


def whisper_reference(audio: np.ndarray) -> np.ndarray:
    """librosa's mel power spectrogram with Whisper's log compression."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "n_fft too large" for clips under 400 samples
        power = librosa.feature.melspectrogram(
            y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=80, fmin=0.0, fmax=8000.0,
            center=True, pad_mode="constant", power=2.0,
        )
    log_spec = np.log10(np.maximum(power, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("length", [1, 399, 16001, 48000 + 77])
def test_log_mel_matches_librosa_reference(length):
    audio = np.random.default_rng(length).normal(0, 0.1, length).astype(np.float32)
    ours = log_mel_spectrogram(audio)
    assert ours.shape == (N_MELS, num_frames(length)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, whisper_reference(audio), atol=2e-5)


def test_filterbank_is_whisper_s():
    reference = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    np.testing.assert_allclose(mel_filters(), reference, rtol=1e-6, atol=1e-9)


def test_blocked_stft_equals_one_block(monkeypatch):
    from echoasr.features import mel

    audio = np.random.default_rng(3).normal(0, 0.1, 16000 * 2).astype(np.float32)
    whole = power_mel_spectrogram(audio)
    monkeypatch.setattr(mel, "_BLOCK_FRAMES", 7)
    np.testing.assert_allclose(power_mel_spectrogram(audio), whole, rtol=1e-5, atol=1e-9)


def test_compression_keeps_80_db_below_the_peak():
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    audio[8000:] = 0.0
    spec = log_mel_spectrogram(audio)
    assert spec.max() - spec.min() == pytest.approx(2.0, abs=1e-5)  # 8 log10 units / 4


def test_silence_gives_a_finite_constant():
    spec = log_mel_spectrogram(np.zeros(1000, np.float32))
    np.testing.assert_allclose(spec, (-10.0 + 4.0) / 4.0, atol=1e-6)
