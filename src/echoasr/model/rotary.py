"""Pitch-aware rotary position embeddings: the complex reference and the exact fast form.

Channels are paired as (even, odd) = (real, imaginary), the convention of the seed and of
`torch.view_as_complex`. For a pair `x` at frame `t` the reference computes

    x * polar(r_t, angle_t,i)          (complex multiplication)

which is exactly a real rotation by `angle_t,i` followed by a scale by `r_t`. The fast form
folds the radius into the cosine and sine tables once per sequence (`r*cos`, `r*sin`) and
rotates q and k with real arithmetic, so the scores become `r_i * r_j * <R_i q_i, R_j k_j>` and
the model can use `scaled_dot_product_attention`. Both forms are kept and tested equal.

Angles: `angle_t,i = position_t * w_i(theta_t)` with

* frequencies `inverse`: `w_i = theta^(-2i/d)` (standard RoPE, at most 1 rad per frame);
  `mel`: mel-spaced `w_i = pi * mel_hz_i / 8000 * (10000 / theta)`, `mel_hz` spanning 0-8000 Hz
  on the mel scale, so at theta >= 10000 no channel turns by more than pi per frame (faster
  rotations alias: a pair turning by pi + e looks like one turning by e - pi);
  `mel_seed_aliased`: the seed's `w_i = theta / 220 * mel_hz_i / 1000`, up to 363.6 rad per frame
  at theta 10000 (at head size 48, 23 of 24 pairs turn by more than pi: positions are scrambled);
  kept only to reproduce the seed;
* theta mode `none`: `theta_t = theta`, `position_t = t`;
  `additive`: `theta_t = theta * (1 + s * f0_t / f_ref)` per frame and example (f0 = 0 when
  unvoiced; `s` = `additive_scale`, `f_ref` = `reference_hz`). The seed's `theta + f0_t` is
  `s = f_ref / theta`: with `inverse` spacing that moves angles by < 0.01 rad (a no-op), with the
  aliased mel spacing by ~15 rad at frame 100 (noise); at `s = 1` a voiced frame at the reference
  pitch doubles theta, which slows every pair but the first measurably and never aliases, since
  theta_t >= theta;
  `phase`: `theta_t = theta`, `position_t = p_t` the pitch-warped position of
  `pitch.pitch_warped_positions`; `phase_median`: the same with the utterance's median voiced f0
  as the reference (`pitch.median_voiced_f0`).

Radius: `none` (1), `raw` (seed: f0 in Hz, 0 on unvoiced frames: q and k vanish there, and
voiced scores scale by ~f0^2; kept for fidelity), `bounded` (`1 + a*tanh(z)`, unvoiced 1),
`learned` (`1 + a*tanh(w_h*z + b_h)` per head on voiced frames, unvoiced 1; starts at 1).
Theta may be learned (stored as log theta).

`zero_start` (a model on a pretrained backbone, `EchoConfig.pitch_zero_start`): the angles are
multiplied by a learned per-head scale and the bounded radius's `a` becomes a learned per-head
`a_h = radius_scale * tanh(g_h)`, both starting at 0, so the tables start as the identity (cos 1, sin 0, radius 1) and the
scales still get gradients at step 0 (d sin(s * angle) / ds = angle at s = 0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .pitch import PitchTrack, median_voiced_f0, pitch_warped_positions

logger = logging.getLogger(__name__)


@dataclass
class RotaryTables:
    """Per-sequence rotary tables, shared by all layers of a stack.

    `cos`/`sin` are (B or 1, 1 or H, T, head_dim/2) with the radius already folded in;
    `angle` and `radius` are kept for the complex reference and for debugging.
    """

    cos: Tensor
    sin: Tensor
    angle: Tensor
    radius: Tensor | None

    def expand(self, repeats: int) -> RotaryTables:
        def rep(t: Tensor | None) -> Tensor | None:
            return t if t is None or t.shape[0] == 1 else t.repeat_interleave(repeats, dim=0)

        return RotaryTables(rep(self.cos), rep(self.sin), rep(self.angle), rep(self.radius))


MEL_TOP_HZ = 8000.0
# The theta at which the top mel channel turns by exactly pi per frame.
MEL_THETA = 10000.0


def mel_spaced_hz(count: int, device: torch.device | None = None) -> Tensor:
    """`count` frequencies in Hz, equally spaced on the mel scale from 0 to 8000 Hz (the seed's)."""
    mel_max = 2595.0 * math.log10(1.0 + MEL_TOP_HZ / 700.0)
    mel = torch.linspace(0.0, mel_max, count, device=device, dtype=torch.float32)
    return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)


def rotary_frequencies(kind: str, head_dim: int, theta: Tensor) -> Tensor:
    """Angular frequency per channel pair: theta of any shape (...) gives (..., head_dim/2)."""
    half = head_dim // 2
    theta = theta.to(torch.float32)[..., None]
    if kind == "inverse":
        exponent = torch.arange(half, device=theta.device, dtype=torch.float32) * (-2.0 / head_dim)
        return torch.exp(exponent * torch.log(theta))
    if kind == "mel":
        return math.pi * mel_spaced_hz(half, theta.device) / MEL_TOP_HZ * (MEL_THETA / theta)
    if kind == "mel_seed_aliased":
        return theta / 220.0 * mel_spaced_hz(half, theta.device) / 1000.0
    raise ValueError(f"unknown rotary frequencies {kind!r}")


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Fast form: rotate (even, odd) channel pairs of x (..., T, D) by tables (..., T, D/2)
    that already include the radius. Returns x's dtype."""
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def apply_rotary_complex(x: Tensor, angle: Tensor, radius: Tensor | None = None) -> Tensor:
    """Reference form (the seed's): `view_as_complex(x) * polar(radius, angle)` in float32."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    angle = angle.to(torch.float32)
    magnitude = torch.ones_like(angle) if radius is None else radius.to(torch.float32)
    magnitude, angle = torch.broadcast_tensors(magnitude, angle)
    rotated = pairs * torch.polar(magnitude.contiguous(), angle.contiguous())
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


class PitchRotary(nn.Module):
    """Builds the rotary tables of one stack from the sequence length and (optionally) pitch.

    All per example: tables are (B, ...) as soon as pitch enters, so batches of different
    speakers are correct (the seed broadcast one utterance's f0 over the batch).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        *,
        frequencies: str = "inverse",
        theta: float = 10000.0,
        learnable_theta: bool = False,
        theta_mode: str = "none",
        additive_scale: float = 1.0,
        radius: str = "none",
        radius_scale: float = 0.5,
        reference_hz: float = 150.0,
        zero_start: bool = False,
    ):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.frequencies = frequencies
        self.theta_mode = theta_mode
        self.additive_scale = additive_scale
        self.radius_mode = radius
        self.radius_scale = radius_scale
        self.reference_hz = reference_hz
        self.initial_theta = float(theta)
        self.log_theta = nn.Parameter(torch.tensor(math.log(theta))) if learnable_theta else None
        if radius == "learned":
            self.radius_weight = nn.Parameter(torch.zeros(num_heads))
            self.radius_bias = nn.Parameter(torch.zeros(num_heads))
        else:
            self.radius_weight = self.radius_bias = None
        self.angle_scale = nn.Parameter(torch.zeros(num_heads)) if zero_start else None
        self.radius_gain = nn.Parameter(torch.zeros(num_heads)) if zero_start and radius == "bounded" else None
        self.debug = False

    @property
    def uses_pitch(self) -> bool:
        return self.theta_mode != "none" or self.radius_mode != "none"

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.log_theta is not None:
                self.log_theta.fill_(math.log(self.initial_theta))
            if self.radius_weight is not None:
                self.radius_weight.zero_()
                self.radius_bias.zero_()
            for scale in (self.angle_scale, self.radius_gain):
                if scale is not None:
                    scale.zero_()

    def theta(self, device: torch.device) -> Tensor:
        if self.log_theta is not None:
            return self.log_theta.float().exp()
        return torch.tensor(self.initial_theta, device=device)

    def angles(self, length: int, pitch: PitchTrack | None, device: torch.device, offset: int = 0) -> Tensor:
        """(B or 1, 1 or H, T, head_dim/2) rotation angles (float32); H with `zero_start`."""
        angle = self._unscaled_angles(length, pitch, device, offset)
        if self.angle_scale is None:
            return angle
        return angle * self.angle_scale.float()[None, :, None, None]

    def _unscaled_angles(self, length: int, pitch: PitchTrack | None, device: torch.device, offset: int) -> Tensor:
        theta = self.theta(device)
        if self.theta_mode == "none" or pitch is None:
            positions = torch.arange(offset, offset + length, device=device, dtype=torch.float32)
            angle = positions[:, None] * rotary_frequencies(self.frequencies, self.head_dim, theta)
            return angle[None, None]
        if self.theta_mode == "additive":
            positions = torch.arange(length, device=device, dtype=torch.float32)
            theta_t = theta * (1.0 + self.additive_scale * pitch.f0 / self.reference_hz)
            frequency = rotary_frequencies(self.frequencies, self.head_dim, theta_t)  # (B, T, D/2)
            return (positions[None, :, None] * frequency)[:, None]
        reference = median_voiced_f0(pitch, self.reference_hz) if self.theta_mode == "phase_median" else self.reference_hz
        positions = pitch_warped_positions(pitch, reference)  # phase modes, (B, T)
        frequency = rotary_frequencies(self.frequencies, self.head_dim, theta)
        return (positions[:, :, None] * frequency)[:, None]

    def radius(self, pitch: PitchTrack | None) -> Tensor | None:
        """(B, 1 or H, T, 1) radius, or None for radius 1."""
        if self.radius_mode == "none" or pitch is None:
            return None
        if self.radius_mode == "raw":
            radius = pitch.f0[:, None]
        elif self.radius_mode == "bounded" and self.radius_gain is not None:
            # a_h = scale * tanh(g_h): starts at 0 and, like the fixed form, keeps |r - 1| < scale < 1
            gain = self.radius_scale * torch.tanh(self.radius_gain.float())[None, :, None]
            radius = torch.where(pitch.voiced[:, None], 1.0 + gain * torch.tanh(pitch.z)[:, None], 1.0)
        elif self.radius_mode == "bounded":
            radius = torch.where(pitch.voiced, 1.0 + self.radius_scale * torch.tanh(pitch.z), 1.0)[:, None]
        else:
            pre = self.radius_weight[None, :, None] * pitch.z[:, None] + self.radius_bias[None, :, None]
            radius = torch.where(pitch.voiced[:, None], 1.0 + self.radius_scale * torch.tanh(pre), 1.0)
        return radius[..., None].to(torch.float32)

    def forward(self, length: int, pitch: PitchTrack | None = None, device: torch.device | None = None, offset: int = 0) -> RotaryTables:
        """Tables for a sequence of `length` frames (positions start at `offset` without pitch)."""
        if pitch is not None:
            device = pitch.f0.device
        angle = self.angles(length, pitch, device, offset)
        radius = self.radius(pitch)
        cos, sin = torch.cos(angle), torch.sin(angle)
        if radius is not None:
            cos, sin = cos * radius, sin * radius
        if self.debug:
            self._log_stats(angle, radius, pitch)
        return RotaryTables(cos=cos, sin=sin, angle=angle, radius=radius)

    def _log_stats(self, angle: Tensor, radius: Tensor | None, pitch: PitchTrack | None) -> None:
        theta = self.theta(angle.device)
        message = f"rotary[{self.theta_mode}/{self.radius_mode}] theta={theta.item():.1f}"
        if self.theta_mode == "additive" and pitch is not None:
            effective = theta * (1.0 + self.additive_scale * pitch.f0[pitch.valid] / self.reference_hz)
            message += f" theta_t mean={effective.mean().item():.1f} max={effective.max().item():.1f}"
        if self.theta_mode == "phase" and pitch is not None:
            # How far the pitch-warped clock runs ahead of (>1) or behind (<1) frame positions.
            last = (pitch.valid.sum(-1) - 1).clamp_min(1)
            end = pitch_warped_positions(pitch, self.reference_hz).gather(1, last[:, None]).squeeze(1)
            message += f" warped/true length mean={(end / last).mean().item():.3f}"
        if radius is not None and pitch is not None:
            valid = radius.squeeze(-1)[pitch.valid[:, None].expand(-1, radius.shape[1], -1)]
            message += f" radius mean={valid.mean().item():.3f} min={valid.min().item():.3f} max={valid.max().item():.3f}"
        if pitch is not None:
            message += f" voiced={pitch.voiced.float().sum().item() / pitch.valid.float().sum().clamp_min(1).item():.2f}"
        logger.info(message)
