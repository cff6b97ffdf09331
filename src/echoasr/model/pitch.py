"""Pitch as the model sees it: voicing-aware normalisation, pooling to the encoder frame rate,
and the pitch similarity used by the attention bias.

Conventions (all per example, batched, right-padded, padding decided by lengths only):

* a frame is *voiced* when the voicing flag is set, f0 > 0 and the frame is inside the true
  length; f0 = 0 is never used as the voicing flag on its own, and padding is never voiced;
* `z` is the per-utterance z-score of log f0 over voiced frames, 0 on unvoiced and padded
  frames (an utterance with no voiced frame, or a constant pitch, gets z = 0 everywhere);
* pooling to a frame rate `factor` times lower uses windows `[factor*t - factor/2,
  factor*t + factor/2]`, centred on the receptive field of the subsampling stem's output frame t
  (the stems give exactly `ceil(T / factor)` frames, see `encoder.ConvStem`): the window is
  voiced when at least half of its valid frames are voiced, and its f0 is the mean f0 of its
  voiced frames. No nearest-index slicing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Floor on the variance of log f0 (natural log units): a constant (synthetic) pitch gives z = 0
# instead of dividing noise by zero; real speech has a variance of about 0.01-0.05.
_MIN_LOG_F0_VARIANCE = 1e-4


@dataclass
class PitchTrack:
    """Pitch of a batch at one frame rate; every field is (B, T) and float32 (masks are bool)."""

    f0: Tensor  # Hz, 0 where unvoiced or padded
    voiced: Tensor  # bool
    z: Tensor  # voicing-aware z-score of log f0, 0 where unvoiced or padded
    valid: Tensor  # bool, inside the true length

    def expand(self, repeats: int) -> PitchTrack:
        """Repeat every example `repeats` times along the batch (beam search)."""
        return PitchTrack(*(t.repeat_interleave(repeats, dim=0) for t in (self.f0, self.voiced, self.z, self.valid)))


def length_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B, max_length) bool mask, True inside each example's true length."""
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]


def log_f0_zscore(f0: Tensor, voiced: Tensor) -> Tensor:
    """Per-row z-score of log f0 over the frames where `voiced` (bool) is set; 0 elsewhere."""
    # torch.where, not multiplication by the mask: unvoiced or padded f0 may be NaN.
    log_f0 = torch.where(voiced, torch.log(f0.to(torch.float32).clamp_min(1.0)), 0.0)
    count = voiced.sum(-1, keepdim=True).clamp_min(1).to(torch.float32)
    mean = log_f0.sum(-1, keepdim=True) / count
    variance = torch.where(voiced, (log_f0 - mean).square(), 0.0).sum(-1, keepdim=True) / count
    return torch.where(voiced, (log_f0 - mean) * torch.rsqrt(variance.clamp_min(_MIN_LOG_F0_VARIANCE)), 0.0)


def constant_f0(features: dict[str, Tensor], hz: float) -> dict[str, Tensor]:
    """``features`` with every voiced frame's f0 set to ``hz`` (unvoiced frames stay 0, voicing
    unchanged): the same inputs without the pitch information."""
    f0 = features["f0"]
    voiced = (features["voiced"] > 0.5) & (f0 > 0)
    return {**features, "f0": torch.where(voiced, torch.full_like(f0, hz), torch.zeros_like(f0))}


def pitch_track(f0: Tensor, voiced: Tensor, lengths: Tensor, factor: int = 1) -> PitchTrack:
    """Pitch at the frame rate of the input divided by `factor` (1, 2, 4, ...).

    `f0` and `voiced` are (B, T) at the feature frame rate, `lengths` (B,) their true lengths.
    The result has `ceil(T / factor)` frames.
    """
    batch, frames = f0.shape
    f0 = f0.to(torch.float32)
    valid = length_mask(lengths, frames)
    is_voiced = (voiced > 0.5) & (f0 > 0) & valid
    if factor > 1:
        # Centred on the stem's receptive field: with kernel-3 convolutions (strides 1, 2, 2)
        # output frame u sees input frames factor*u - factor .. factor*u + factor, centred on
        # factor*u, so pool [factor*u - factor/2, factor*u + factor/2] (factor + 1 frames;
        # neighbouring windows share an edge frame). [factor*u, factor*u + factor) lagged 15 ms.
        out_frames = -(-frames // factor)
        half = factor // 2
        right = out_frames * factor + half - frames

        def windows(x: Tensor) -> Tensor:
            return torch.nn.functional.pad(x, (half, right)).unfold(-1, factor + 1, factor)

        n_valid = windows(valid.to(torch.float32)).sum(-1)
        n_voiced = windows(is_voiced.to(torch.float32)).sum(-1)
        f0_sum = windows(torch.where(is_voiced, f0, 0.0)).sum(-1)
        valid = length_mask(-(-lengths // factor), out_frames)
        is_voiced = valid & (n_voiced > 0) & (2 * n_voiced >= n_valid)
        f0 = f0_sum / n_voiced.clamp_min(1.0)
    f0 = torch.where(is_voiced, f0, 0.0)
    return PitchTrack(f0=f0, voiced=is_voiced, z=log_f0_zscore(f0, is_voiced), valid=valid)


def pitch_similarity(query: PitchTrack, key: PitchTrack) -> Tensor:
    """(B, 1, Tq, Tk) `exp(-|z_i - z_j|)` between voiced frames, 0 if either frame is unvoiced."""
    distance = (query.z[:, :, None] - key.z[:, None, :]).abs()
    both_voiced = query.voiced[:, :, None] & key.voiced[:, None, :]
    return torch.where(both_voiced, torch.exp(-distance), 0.0)[:, None]


def pitch_warped_positions(track: PitchTrack, reference_hz: float) -> Tensor:
    """(B, T) positions `p_t = sum_{s<t} f_s / reference_hz`, `f_s` = f0 on voiced frames and
    `reference_hz` elsewhere.

    The exclusive sum makes `p_0 = 0`, so a constant pitch equal to the reference gives exactly
    the standard positions 0, 1, 2, ...; any constant pitch scales positions uniformly, which
    keeps rotary scores a function of (i - j). Built from f0 (not from the mod-2*pi phase
    feature, which aliases at a 10 ms frame). Padded frames come after the valid ones, so
    they cannot change a valid frame's position.
    """
    rate = torch.where(track.voiced, track.f0 / reference_hz, 1.0)
    return torch.cumsum(rate, dim=-1) - rate


def median_voiced_f0(track: PitchTrack, fallback_hz: float) -> Tensor:
    """(B, 1) median f0 over each example's voiced frames (`fallback_hz` when none is voiced)."""
    masked = torch.where(track.voiced, track.f0, torch.nan)
    median = torch.nanmedian(masked, dim=-1, keepdim=True).values
    return torch.nan_to_num(median, nan=fallback_hz)
