import numpy as np
import pytest

from echoasr.audio import num_frames
from echoasr.features.pitch import track_pitch
from echoasr.features.world import (
    N_APERIODIC_BANDS, N_HARMONIC_BANDS, band_weights, world_features, world_fft_size,
)


def test_fft_size_suits_16k():
    assert world_fft_size(60.0) == 1024
    weights = band_weights(N_HARMONIC_BANDS, 1024)
    assert weights.shape == (N_HARMONIC_BANDS, 513)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_shapes_and_ranges_on_a_harmonic_signal(signals):
    audio, _ = signals.make("vibrato")
    f0, voiced = track_pitch(audio)
    harmonic, aperiodic = world_features(audio, f0)
    frames = num_frames(len(audio))
    assert harmonic.shape == (N_HARMONIC_BANDS, frames) and aperiodic.shape == (N_APERIODIC_BANDS, frames)
    assert np.isfinite(harmonic).all() and np.isfinite(aperiodic).all()
    assert (aperiodic >= -1).all() and (aperiodic <= 1).all()
    inner = voiced[5:-5] > 0
    # 190-210 Hz with harmonics up to 1 kHz: energy sits in the low bands, little above 4 kHz
    assert (harmonic[:8, 5:-5][:, inner].mean() - harmonic[-6:, 5:-5][:, inner].mean()) > 1.0
    # a clean periodic signal is periodic at low frequencies and noise-like only near 8 kHz
    assert aperiodic[0, 5:-5][inner].mean() < aperiodic[-1, 5:-5][inner].mean()


def test_level_shifts_harmonic_bands_by_a_constant(signals):
    """Fixed normalisation: +20 dB adds 2 log10 units, i.e. 1.0 after the scale of 2."""
    audio, _ = signals.make("glide")
    f0, voiced = track_pitch(audio)
    quiet, _ = world_features(audio * 0.05, f0)
    loud, _ = world_features(audio * 0.5, f0)
    inner = np.flatnonzero(voiced[5:-5] > 0) + 5
    above_floor = quiet[:, inner].min(axis=1) > -1.5  # the glide's harmonics reach ~1.2 kHz only
    assert above_floor.sum() >= 6
    np.testing.assert_allclose((loud - quiet)[above_floor][:, inner], 1.0, atol=1e-3)


def test_unvoiced_frames_are_fully_aperiodic():
    audio = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    _, aperiodic = world_features(audio, np.zeros(num_frames(8000), np.float32))
    np.testing.assert_allclose(aperiodic, 1.0, atol=1e-6)


def test_f0_length_must_match():
    with pytest.raises(ValueError, match="expected"):
        world_features(np.zeros(1600, np.float32), np.zeros(3, np.float32))
