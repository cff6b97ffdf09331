import numpy as np
import pytest

from echoasr.audio import num_frames
from echoasr.errors import EchoError
from echoasr.features import (
    DEFAULT_FEATURES, FEATURE_NAMES, N_APERIODIC_BANDS, N_HARMONIC_BANDS, N_MELS, FeatureSettings,
    extract, output_keys,
)

EXPECTED_ROWS = {"mel": N_MELS, "harmonic": N_HARMONIC_BANDS, "aperiodic": N_APERIODIC_BANDS, "waveform": 160}


@pytest.mark.parametrize("length", [1, 159, 161, 4001, 16000 + 77])
def test_every_feature_has_the_same_frame_count(length):
    audio = np.random.default_rng(length).normal(0, 0.1, length).astype(np.float32)
    out = extract(audio, FEATURE_NAMES)
    assert set(out) == {"mel", "f0", "voiced", "harmonic", "aperiodic", "phase", "waveform"}
    frames = num_frames(length)
    for key, array in out.items():
        assert array.dtype == np.float32, key
        assert array.shape == ((EXPECTED_ROWS[key], frames) if key in EXPECTED_ROWS else (frames,)), key
        assert np.isfinite(array).all(), key


def test_silence_gives_unvoiced_frames_and_no_nan():
    out = extract(np.zeros(16000, np.float32))
    assert not out["voiced"].any() and not out["f0"].any()
    assert all(np.isfinite(array).all() for array in out.values())
    np.testing.assert_array_equal(out["aperiodic"], 1.0)  # unvoiced frames are fully aperiodic


def test_subset_and_voiced_alias():
    audio = np.random.default_rng(0).normal(0, 0.1, 3200).astype(np.float32)
    assert list(extract(audio, ["mel"])) == ["mel"]
    assert list(extract(audio, ["voiced"])) == ["f0", "voiced"]
    assert list(extract(audio, ["phase", "mel"])) == ["phase", "mel"]
    assert output_keys(DEFAULT_FEATURES) == ("mel", "f0", "voiced", "harmonic", "aperiodic", "phase", "waveform")


def test_features_share_one_f0_track(signals):
    audio, _ = signals.make("glide")
    together = extract(audio, ["f0", "phase"], FeatureSettings(f0_method="praat"))
    alone = extract(audio, ["phase"], FeatureSettings(f0_method="praat"))
    np.testing.assert_array_equal(together["phase"], alone["phase"])
    assert together["voiced"].mean() > 0.9


def test_unknown_feature_is_a_user_error():
    with pytest.raises(EchoError, match="unknown feature 'pitch'"):
        extract(np.zeros(160, np.float32), ["pitch"])


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.zeros((2, 160), np.float32), np.array([0.0, np.nan])])
def test_bad_arrays_are_refused(bad):
    with pytest.raises(ValueError):
        extract(bad, ["mel"])
