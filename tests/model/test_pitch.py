import math

import pytest
import torch

from echoasr.model.encoder import ConvStem
from echoasr.model.pitch import (
    PitchTrack,
    log_f0_zscore,
    pitch_similarity,
    pitch_track,
    pitch_warped_positions,
)


def test_zscore_over_voiced_frames_only():
    f0 = torch.tensor([[100.0, 0.0, 200.0, 400.0, 0.0]])
    voiced = f0 > 0
    z = log_f0_zscore(f0, voiced)
    assert torch.all(z[~voiced] == 0)
    assert z[voiced].mean().abs() < 1e-6
    assert abs(z[voiced].std(unbiased=False).item() - 1.0) < 1e-5
    assert z[0, 0] < z[0, 2] < z[0, 3]  # monotone in log f0


def test_zscore_degenerate_inputs_are_finite_zero():
    zero = log_f0_zscore(torch.zeros(2, 7), torch.zeros(2, 7, dtype=torch.bool))
    constant = log_f0_zscore(torch.full((1, 5), 150.0), torch.ones(1, 5, dtype=torch.bool))
    assert torch.all(zero == 0) and torch.all(constant == 0)


def test_pooling_windows_mean_of_voiced_and_majority():
    # factor 4, length 10 of 12 frames: windows [-2,2], [2,6], [6,10] centred on frames 0, 4, 8
    # (frames 10, 11 and the left edge are padding).
    f0 = torch.tensor([[100.0, 0.0, 300.0, 200.0, 0.0, 0.0, 0.0, 120.0, 110.0, 0.0, 500.0, 500.0]])
    voiced = (f0 > 0).float()
    track = pitch_track(f0, voiced, torch.tensor([10]), factor=4)
    assert track.f0.shape == (1, 3)
    torch.testing.assert_close(track.f0, torch.tensor([[200.0, 0.0, 115.0]]))
    assert track.voiced.tolist() == [[True, False, True]]  # 2/3 voiced, 2/5, 2/4 (tie -> voiced)
    assert track.valid.tolist() == [[True, True, True]]
    # The padded frames (f0 500) never count; frames past ceil(length / 4) are never voiced.
    short = pitch_track(f0, voiced, torch.tensor([4]), factor=4)
    assert short.valid.tolist() == [[True, False, False]] and short.f0[0, 1:].abs().sum() == 0


@pytest.mark.parametrize("factor", [2, 4])
def test_pooling_is_centred_on_the_stem_receptive_field(factor):
    # The receptive field of the conv stem's output frame u, found from its gradient, is centred
    # on input frame factor * u; so is the pooling window: a voiced f0 ramp pools to f0 there.
    frames = 40
    stem = ConvStem(1, 4, factor)
    x = torch.randn(1, 1, frames, requires_grad=True)
    out, _ = stem(x, torch.tensor([frames]))
    u = 5
    out[0, u].sum().backward()
    support = torch.nonzero(x.grad[0, 0]).flatten().float()
    centre = (support.min() + support.max()) / 2
    assert centre.item() == factor * u
    ramp = 100.0 + torch.arange(frames, dtype=torch.float32)[None]
    track = pitch_track(ramp, torch.ones(1, frames), torch.tensor([frames]), factor=factor)
    assert track.f0[0, u].item() == pytest.approx(ramp[0, factor * u].item())


def test_voicing_flag_not_f0_zeros_decides():
    f0 = torch.tensor([[120.0, 130.0, 140.0]])
    track = pitch_track(f0, torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([3]))
    assert track.voiced.tolist() == [[True, False, True]] and track.f0[0, 1] == 0


def test_pooled_batch_equals_examples():
    generator = torch.Generator().manual_seed(0)
    f0 = 100 + 100 * torch.rand(3, 17, generator=generator)
    voiced = (torch.rand(3, 17, generator=generator) > 0.4).float()
    lengths = torch.tensor([17, 9, 5])
    batched = pitch_track(f0, voiced, lengths, factor=4)
    for i, length in enumerate(lengths.tolist()):
        alone = pitch_track(f0[i : i + 1, :length], voiced[i : i + 1, :length], lengths[i : i + 1], factor=4)
        n = alone.f0.shape[1]
        torch.testing.assert_close(batched.f0[i : i + 1, :n], alone.f0)
        torch.testing.assert_close(batched.z[i : i + 1, :n], alone.z)
        assert torch.all(batched.f0[i, n:] == 0) and not batched.valid[i, n:].any()


def test_similarity_voicing_aware_and_rectangular():
    q = pitch_track(torch.tensor([[100.0, 0.0, 150.0]]), torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([3]))
    k = pitch_track(torch.tensor([[100.0, 150.0, 200.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.tensor([4]))
    similarity = pitch_similarity(q, k)
    assert similarity.shape == (1, 1, 3, 4)
    assert torch.all(similarity[0, 0, 1] == 0) and torch.all(similarity[0, 0, :, 3] == 0)
    expected = math.exp(-abs(q.z[0, 0].item() - k.z[0, 2].item()))
    assert abs(similarity[0, 0, 0, 2].item() - expected) < 1e-6
    self_similarity = pitch_similarity(k, k)[0, 0]
    torch.testing.assert_close(self_similarity, self_similarity.t())
    assert torch.all(self_similarity.diagonal()[:3] == 1.0)


def test_warped_positions():
    def track(f0: list[float]) -> PitchTrack:
        t = torch.tensor([f0])
        return pitch_track(t, (t > 0).float(), torch.tensor([len(f0)]))

    torch.testing.assert_close(pitch_warped_positions(track([150.0] * 5), 150.0), torch.arange(5.0)[None])
    torch.testing.assert_close(pitch_warped_positions(track([300.0] * 4), 150.0), 2 * torch.arange(4.0)[None])
    torch.testing.assert_close(pitch_warped_positions(track([0.0] * 4), 150.0), torch.arange(4.0)[None])
