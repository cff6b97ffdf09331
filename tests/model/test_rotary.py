import math

import pytest
import torch

from echoasr.model.pitch import PitchTrack, pitch_track
from echoasr.model.rotary import (
    PitchRotary,
    apply_rotary,
    apply_rotary_complex,
    mel_spaced_hz,
    rotary_frequencies,
)

THETA_MODES = ["none", "additive", "phase"]
RADIUS_MODES = ["none", "raw", "bounded", "learned"]


def standard_rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Independent textbook RoPE on interleaved pairs (torchtune's formulation)."""
    *_, length, dim = x.shape
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freqs
    cos, sin = torch.cos(angle), torch.sin(angle)
    x = x.double().unflatten(-1, (-1, 2))
    out = torch.stack((x[..., 0] * cos - x[..., 1] * sin, x[..., 1] * cos + x[..., 0] * sin), dim=-1)
    return out.flatten(-2).float()


def constant_pitch(batch: int, frames: int, hz: float) -> PitchTrack:
    f0 = torch.full((batch, frames), hz)
    return pitch_track(f0, torch.ones(batch, frames), torch.full((batch,), frames))


def varying_pitch(echo, batch: int = 3, frames: int = 11) -> PitchTrack:
    f0, voiced = echo.pitch_inputs(batch, frames, torch.Generator().manual_seed(5))
    return pitch_track(f0, voiced, torch.tensor([frames, frames - 3, 4][:batch]))


def test_golden_inverse_frequencies():
    # head_dim 4, theta 10000: w = (1, 10000^-0.5 = 0.01); x = (1, 0, 1, 0) rotates to known points.
    rotary = PitchRotary(head_dim=4, num_heads=1)
    tables = rotary(4, device=torch.device("cpu"))
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).expand(1, 1, 4, 4)
    out = apply_rotary(x, tables.cos, tables.sin)[0, 0]
    t = torch.arange(4.0)
    expected = torch.stack([torch.cos(t), torch.sin(t), torch.cos(0.01 * t), torch.sin(0.01 * t)], dim=-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert out[1, 0].item() == pytest.approx(0.5403023, abs=1e-6)  # cos(1)
    assert out[1, 1].item() == pytest.approx(0.8414710, abs=1e-6)  # sin(1)


def test_golden_mel_frequencies():
    # 0 Hz ... 8000 Hz on the mel scale; the default spacing maps 8000 Hz to pi rad per frame at
    # theta 10000, the seed's (aliased) one to theta / 220 * hz / 1000.
    hz = mel_spaced_hz(3)
    assert hz[0].item() == pytest.approx(0.0, abs=1e-3)
    assert hz[-1].item() == pytest.approx(8000.0, rel=1e-5)
    mel_mid = 2595.0 * math.log10(1 + 8000 / 700) / 2
    assert hz[1].item() == pytest.approx(700 * (10 ** (mel_mid / 2595) - 1), rel=1e-5)
    w = rotary_frequencies("mel", 6, torch.tensor(10000.0))
    torch.testing.assert_close(w, hz / 8000.0 * math.pi)
    torch.testing.assert_close(rotary_frequencies("mel", 6, torch.tensor(20000.0)), w / 2)
    w_seed = rotary_frequencies("mel_seed_aliased", 6, torch.tensor(10000.0))
    torch.testing.assert_close(w_seed, hz / 1000.0 * 10000.0 / 220.0)


def test_angle_ranges_per_frame():
    # Head size 48 (24 pairs), theta 10000: the seed's spacing turns 23 of 24 pairs by more than
    # pi per frame (up to 363.6 rad); the default mel and inverse spacings never exceed pi.
    theta = torch.tensor(10000.0)
    seed = rotary_frequencies("mel_seed_aliased", 48, theta)
    assert seed.max().item() == pytest.approx(363.64, abs=0.01)
    assert int((seed > math.pi).sum()) == 23
    mel = rotary_frequencies("mel", 48, theta)
    assert mel.max().item() == pytest.approx(math.pi, rel=1e-6)
    assert int((mel > math.pi + 1e-6).sum()) == 0
    assert rotary_frequencies("inverse", 48, theta).max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("frequencies", ["inverse", "mel"])
def test_additive_pitch_moves_angles_measurably_without_aliasing(frequencies):
    # 200 Hz against unvoiced, frame 100: the seed's theta + f0 barely moves inverse angles;
    # the default scale (theta * (1 + f0 / 150)) moves them by radians and stays under pi/frame.
    frames, head = 101, 48
    voiced = PitchRotary(head, 1, frequencies=frequencies, theta_mode="additive", reference_hz=150.0)
    seed_scale = PitchRotary(head, 1, frequencies=frequencies, theta_mode="additive", reference_hz=150.0,
                             additive_scale=150.0 / 10000.0)
    on, off = constant_pitch(1, frames, 200.0), constant_pitch(1, frames, 0.0)
    moved = (voiced.angles(frames, on, torch.device("cpu")) - voiced.angles(frames, off, torch.device("cpu")))[0, 0, 100]
    seed_moved = (seed_scale.angles(frames, on, torch.device("cpu"))
                  - seed_scale.angles(frames, off, torch.device("cpu")))[0, 0, 100]
    assert moved.abs().max().item() > 1.0
    per_frame = voiced.angles(frames, on, torch.device("cpu"))[0, 0, 1]  # angle at position 1 = w
    assert per_frame.max().item() <= math.pi + 1e-6
    if frequencies == "inverse":
        # The seed's offset: < 0.001 rad per frame (0.08 rad by frame 100), 20x less than the default.
        assert seed_moved.abs().max().item() < 0.1
        assert moved.abs().max().item() > 20 * seed_moved.abs().max().item()
        # theta_t = 10000 * (1 + 200/150): pair i turns by 100 * theta_t^(-2i/48).
        i = torch.arange(24.0)
        expected = 100 * (10000 * (1 + 200 / 150)) ** (-2 * i / 48) - 100 * 10000.0 ** (-2 * i / 48)
        torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-4)


def test_no_pitch_reduces_to_standard_rope():
    x = torch.randn(2, 3, 9, 16)
    rotary = PitchRotary(head_dim=16, num_heads=3)
    tables = rotary(9, device=torch.device("cpu"))
    assert tables.radius is None and tables.cos.shape == (1, 1, 9, 8)
    torch.testing.assert_close(apply_rotary(x, tables.cos, tables.sin), standard_rope(x), rtol=1e-5, atol=1e-5)
    # Pitch is ignored entirely when both modes are "none".
    with_pitch = rotary(9, constant_pitch(2, 9, 180.0))
    torch.testing.assert_close(with_pitch.cos, tables.cos)


def test_phase_at_reference_pitch_is_standard_rope():
    rotary = PitchRotary(head_dim=8, num_heads=2, theta_mode="phase", reference_hz=150.0)
    tables = rotary(12, constant_pitch(2, 12, 150.0))
    x = torch.randn(2, 2, 12, 8)
    torch.testing.assert_close(apply_rotary(x, tables.cos, tables.sin), standard_rope(x), rtol=1e-5, atol=1e-5)


def toeplitz_error(scores: torch.Tensor) -> float:
    """Max deviation of a (T, T) matrix from being a function of (i - j)."""
    return (scores[1:, 1:] - scores[:-1, :-1]).abs().max().item()


@pytest.mark.parametrize("theta_mode", ["additive", "phase"])
@pytest.mark.parametrize("hz", [90.0, 230.0])
def test_constant_pitch_keeps_scores_relative(theta_mode, hz):
    frames, dim = 24, 16
    rotary = PitchRotary(head_dim=dim, num_heads=1, theta_mode=theta_mode)
    tables = rotary(frames, constant_pitch(1, frames, hz))
    q = torch.randn(dim).expand(1, 1, frames, dim)
    k = torch.randn(dim).expand(1, 1, frames, dim)
    scores = (apply_rotary(q, tables.cos, tables.sin) @ apply_rotary(k, tables.cos, tables.sin).transpose(-1, -2))[0, 0]
    assert toeplitz_error(scores) < 1e-4
    assert (scores - scores.mean()).abs().max() > 0.1  # the check is not vacuous


def test_varying_pitch_phase_mode_warps_positions():
    rotary = PitchRotary(head_dim=8, num_heads=1, theta_mode="phase", reference_hz=100.0)
    f0 = torch.tensor([[100.0, 200.0, 0.0, 50.0, 100.0]])
    track = pitch_track(f0, (f0 > 0).float(), torch.tensor([5]))
    angle = rotary.angles(5, track, torch.device("cpu"))
    # p = 0, 1, 3, 4, 4.5 (unvoiced frame advances at the reference rate)
    torch.testing.assert_close(angle[0, 0, :, 0], torch.tensor([0.0, 1.0, 3.0, 4.0, 4.5]))


@pytest.mark.parametrize("theta_mode", THETA_MODES)
@pytest.mark.parametrize("radius", RADIUS_MODES)
@pytest.mark.parametrize("frequencies", ["inverse", "mel", "mel_seed_aliased"])
def test_fast_form_equals_complex_reference(echo, theta_mode, radius, frequencies):
    torch.manual_seed(0)
    rotary = PitchRotary(
        head_dim=8,
        num_heads=2,
        frequencies=frequencies,
        theta_mode=theta_mode,
        radius=radius,
        learnable_theta=True,
    )
    if radius == "learned":
        with torch.no_grad():
            rotary.radius_weight.normal_()
            rotary.radius_bias.normal_()
    pitch = varying_pitch(echo)
    tables = rotary(11, pitch)
    x = torch.randn(3, 2, 11, 8)
    fast = apply_rotary(x, tables.cos, tables.sin)
    reference = apply_rotary_complex(x, tables.angle, tables.radius)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    if radius != "none":
        # Radius really is a per-position scale of the rotated vector.
        unit = apply_rotary_complex(x, tables.angle)
        torch.testing.assert_close(fast, unit * tables.radius, rtol=1e-5, atol=1e-4 * fast.abs().max().item())


def test_tables_are_per_example(echo):
    pitch = varying_pitch(echo)
    rotary = PitchRotary(head_dim=8, num_heads=2, theta_mode="additive", radius="bounded")
    batched = rotary(11, pitch)
    for i in range(3):
        single = PitchTrack(pitch.f0[i : i + 1], pitch.voiced[i : i + 1], pitch.z[i : i + 1], pitch.valid[i : i + 1])
        alone = rotary(11, single)
        torch.testing.assert_close(batched.cos[i : i + 1], alone.cos)
        torch.testing.assert_close(batched.radius[i : i + 1], alone.radius)
    assert not torch.allclose(batched.cos[0], batched.cos[1])


def test_radius_modes(echo):
    pitch = varying_pitch(echo)
    voiced = pitch.voiced[:, None, :, None]
    bounded = PitchRotary(8, 2, radius="bounded", radius_scale=0.4).radius(pitch)
    assert bounded.shape == (3, 1, 11, 1)
    assert torch.all(bounded[~voiced.expand_as(bounded)] == 1.0)
    assert bounded.min() > 0.6 and bounded.max() < 1.4
    raw = PitchRotary(8, 2, radius="raw").radius(pitch)
    torch.testing.assert_close(raw[:, 0, :, 0], pitch.f0)
    learned = PitchRotary(8, 2, radius="learned")
    assert learned.radius(pitch).shape == (3, 2, 11, 1)
    assert torch.all(learned.radius(pitch) == 1.0)  # starts as plain RoPE
    assert PitchRotary(8, 2).radius(pitch) is None


def test_learnable_theta_gets_gradient():
    rotary = PitchRotary(8, 1, learnable_theta=True, theta=500.0)
    tables = rotary(6, device=torch.device("cpu"))
    x = torch.randn(1, 1, 6, 8)
    (apply_rotary(x, tables.cos, tables.sin) * torch.randn(1, 1, 6, 8)).sum().backward()
    assert rotary.log_theta.grad is not None and rotary.log_theta.grad.abs() > 0
    assert rotary.theta(torch.device("cpu")).item() == pytest.approx(500.0, rel=1e-5)
