import numpy as np
import pytest

from echoasr.audio import HOP_LENGTH, num_frames
from echoasr.features import pitch, segments, world
from echoasr.features.segments import fit_frames, map_segments


def frame_energy(samples: np.ndarray, first_frame: int) -> np.ndarray:
    """A strictly local analysis: energy of the 400 samples around each frame centre."""
    padded = np.pad(samples.astype(np.float64), 200)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 400)[::HOP_LENGTH]
    return (windows**2).sum(axis=1)[: num_frames(len(samples))]


@pytest.mark.parametrize("length", [16000, 16000 * 3 + 77])
def test_local_analysis_is_identical_in_segments(length):
    audio = np.random.default_rng(0).normal(size=length)
    whole = frame_energy(audio, 0)
    pieces = map_segments(audio, frame_energy, segment_frames=37, margin_frames=3)
    assert pieces.shape == (num_frames(length),)
    np.testing.assert_allclose(pieces, whole, rtol=1e-12)


def test_fit_frames_crops_and_pads():
    assert fit_frames(np.ones((2, 5)), 3).shape == (2, 3)
    padded = fit_frames(np.ones(2), 4)
    np.testing.assert_array_equal(padded, [1, 1, 0, 0])


@pytest.fixture
def long_speech(tts_wav):
    """~11 s of real speech: three copies of the TTS recording."""
    from echoasr.audio import load_audio

    return np.tile(load_audio(tts_wav), 3)


def test_segmented_dio_and_world_match_whole_signal_analysis(long_speech, monkeypatch):
    whole_f0, whole_voiced = pitch.track_pitch(long_speech)
    whole_harmonic, whole_aperiodic = world.world_features(long_speech, whole_f0)
    monkeypatch.setattr(segments, "SEGMENT_FRAMES", 300)  # 3 s segments
    f0, voiced = pitch.track_pitch(long_speech)
    harmonic, aperiodic = world.world_features(long_speech, whole_f0)
    assert (voiced == whole_voiced).mean() >= 0.99
    both = (voiced > 0) & (whole_voiced > 0)
    assert np.median(np.abs(f0[both] / whole_f0[both] - 1)) < 1e-3
    np.testing.assert_allclose(harmonic, whole_harmonic, atol=1e-4)
    # D4C is not strictly frame-local (the same frames analysed in a shorter signal differ by
    # ~0.2 dB), so segmenting moves aperiodicity by a little but never by more than that.
    np.testing.assert_allclose(aperiodic, whole_aperiodic, atol=0.01)
