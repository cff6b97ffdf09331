import numpy as np
import pytest

from echoasr.audio import num_frames
from echoasr.features.waveform import frame_waveform


@pytest.mark.parametrize("length", [1, 80, 159, 160, 241, 1000])
def test_frames_are_centred_and_zero_padded(length):
    audio = np.arange(1, length + 1, dtype=np.float32)
    frames = frame_waveform(audio)
    assert frames.shape == (160, num_frames(length)) and frames.flags["C_CONTIGUOUS"]
    flat = frames.T.reshape(-1)  # sample s of the signal sits at flat[s + 80]
    covered = min(length, len(flat) - 80)
    np.testing.assert_array_equal(flat[80 : 80 + covered], audio[:covered])
    assert not flat[:80].any() and not flat[80 + covered :].any()
    assert length - covered < 80  # at most 79 trailing samples fall past the last frame
    # frame t is centred on sample t * 160: its middle sample (index 80) is that sample
    for t in range(frames.shape[1]):
        if t * 160 < length:
            assert frames[80, t] == audio[t * 160]


def test_blocks_do_not_change_the_frames(monkeypatch):
    from echoasr.features import waveform

    audio = np.random.default_rng(0).normal(size=16000 + 33).astype(np.float32)
    whole = frame_waveform(audio)
    monkeypatch.setattr(waveform, "_BLOCK_FRAMES", 7)
    np.testing.assert_array_equal(frame_waveform(audio), whole)
