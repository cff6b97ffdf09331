"""Model options added for the experiment plans: f0 input representation, the phase clock
normalised by median f0, the voicing-only bias control and no encoder positions."""

import pytest
import torch

from echoasr.model import EchoConfig
from echoasr.model.encoder import EchoEncoder, feature_inputs
from echoasr.model.pitch import median_voiced_f0, pitch_track
from echoasr.model.rotary import PitchRotary


def small_config(**options):
    return EchoConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, n_mels=8,
                      subsampling=1, **options)


def test_median_voiced_f0_ignores_unvoiced_frames_and_falls_back():
    f0 = torch.tensor([[100.0, 0.0, 120.0, 400.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    track = pitch_track(f0, (f0 > 0).float(), torch.tensor([5, 5]))
    assert median_voiced_f0(track, 150.0).squeeze(1).tolist() == [120.0, 150.0]


def test_phase_median_clock_is_speaker_independent_for_constant_pitch():
    # Constant 100 Hz and 250 Hz speakers: the plain phase clock runs 2.5x apart, the median-
    # normalised one gives both the standard positions 0, 1, 2, ...
    frames = 12
    f0 = torch.tensor([[100.0] * frames, [250.0] * frames])
    track = pitch_track(f0, torch.ones_like(f0), torch.tensor([frames, frames]))
    plain = PitchRotary(16, 2).angles(frames, None, torch.device("cpu"))
    median = PitchRotary(16, 2, theta_mode="phase_median").angles(frames, track, torch.device("cpu"))
    torch.testing.assert_close(median, plain.expand(2, -1, -1, -1))
    phase = PitchRotary(16, 2, theta_mode="phase").angles(frames, track, torch.device("cpu"))
    torch.testing.assert_close(phase[1, 0, -1, 0] / phase[0, 0, -1, 0], torch.tensor(2.5))


@pytest.mark.parametrize("representation", ["log_z", "hz", "voicing"])
def test_f0_input_representations(representation):
    f0 = torch.tensor([[100.0, 0.0, 200.0, 300.0]])
    voiced = (f0 > 0).float()
    inputs = feature_inputs("f0", {"f0": f0, "voiced": voiced}, torch.tensor([4]), representation, 150.0)
    torch.testing.assert_close(inputs[:, 1], voiced)
    expected = {
        "hz": torch.tensor([[100 / 150, 0.0, 200 / 150, 300 / 150]]),
        "voicing": torch.zeros(1, 4),
    }
    if representation in expected:
        torch.testing.assert_close(inputs[:, 0], expected[representation])
    else:  # per-utterance z-score: zero mean over voiced frames, 0 on the unvoiced one
        assert inputs[0, 0, 1] == 0 and abs(float(inputs[0, 0, [0, 2, 3]].mean())) < 1e-5


def _encoder_inputs():
    f0 = torch.linspace(90.0, 260.0, 20)[None]
    return {"mel": torch.randn(1, 8, 20), "f0": f0, "voiced": torch.ones_like(f0)}, torch.tensor([20])


def test_voicing_bias_sees_zero_z_and_pitch_bias_does_not():
    features, lengths = _encoder_inputs()
    pitch_mode = EchoEncoder(small_config(pitch_bias=True))(features, lengths)
    voicing_mode = EchoEncoder(small_config(pitch_bias=True, pitch_bias_mode="voicing"))(features, lengths)
    assert pitch_mode.pitch.z.abs().max() > 0.5
    assert voicing_mode.pitch.z.abs().max() == 0 and voicing_mode.pitch.voiced.all()


def test_no_positions_skips_the_rotary(monkeypatch):
    features, lengths = _encoder_inputs()
    encoder = EchoEncoder(small_config(rotary_positions=False))
    monkeypatch.setattr(encoder.rotary, "forward", lambda *a, **k: pytest.fail("rotary used without positions"))
    assert encoder(features, lengths).hidden.shape == (1, 20, 32)
    with pytest.raises(ValueError, match="rotary_positions"):
        small_config(rotary_positions=False, rotary_theta_mode="phase")
