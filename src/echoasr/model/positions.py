"""Position encodings besides the rotary of `rotary.py`: the decoder's absolute position
embeddings and the axial 2-D rotary of the band-token mel stem.

**Decoder absolute positions** (`decoder_absolute_positions`, as the seed had): the decoder input
is `sqrt(d) * embed(token) + P[position]` (Vaswani et al.; the seed's `PositionalEncoding`), with
P the fixed sinusoids (`sinusoidal`) or a learned table initialised to the same sinusoids
(`learned`; the seed's learned table was `torch.empty`, i.e. uninitialised memory). They combine
with the rotary of the self-attention (`decoder_rotary`, on by default); the seed used both.

**Axial 2-D rotary** (`rotary_axial_bands` = F > 0). The encoder's tokens are time frames, which
have no frequency coordinate, so a 2-D rotary needs tokens that do: the mel spectrogram is split
into F bands of n_mels / F bins, one shared conv stem turns each band into a sequence of frames,
and the mel feature layers see the (time, band) grid as S * F tokens, time-major. In those
layers the first half of each head's rotary channel pairs rotates by the time position (with the
configured frequency spacing and theta, and the pitch modes and radius of the encoder: pitch is a
property of a time frame) and the second half by the band index (inverse frequencies with the
seed's frequency theta of 100), so q.k depends on (delta t, delta band). After the mel feature
layers, the bands of each frame are concatenated and projected back to one frame token, and the
rest of the encoder is unchanged. The alternative, a fixed per-channel "frequency rotation" on
frame tokens, is a constant rotation that cancels in q.k; a frequency axis needs frequency tokens.
The pitch similarity bias is not used in the band-token layers (it is defined between frames).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .rotary import RotaryTables, rotary_frequencies

# The seed's base for the frequency axis (`freq_theta = 100.0`): bands are few, so a small base
# spreads the rotation over the short axis.
AXIAL_BAND_THETA = 100.0


def sinusoids(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """(len(positions), dim) interleaved table: P[t, 2i] = sin(t w_i), P[t, 2i+1] = cos(t w_i)."""
    frequency = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(base) / dim))
    angle = positions.to(torch.float32)[:, None] * frequency
    return torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1).flatten(-2)


class AbsolutePositions(nn.Module):
    """`sqrt(d) * x + P[offset : offset + L]` (without the sqrt(d) when `scale_input` is False, as
    in Whisper's encoder and decoder), fixed or learned P (at most `max_positions` positions)."""

    def __init__(self, kind: str, max_positions: int, dim: int, scale_input: bool = True):
        super().__init__()
        self.kind = kind
        self.dim = dim
        self.max_positions = max_positions
        self.scale = math.sqrt(dim) if scale_input else 1.0
        self.table = nn.Parameter(self.initial_table()) if kind == "learned" else None

    def initial_table(self) -> Tensor:
        return sinusoids(torch.arange(self.max_positions), self.dim)

    def reset_parameters(self) -> None:
        if self.table is not None:
            with torch.no_grad():
                self.table.copy_(self.initial_table())

    def forward(self, embedded: Tensor, offset: int = 0) -> Tensor:
        end = offset + embedded.shape[1]
        if end > self.max_positions:
            raise ValueError(f"an input of {end} positions exceeds the position table's {self.max_positions} (decoder: "
                             "max_target_positions + prompt length; encoder: max_source_positions)")
        if self.table is not None:
            table = self.table[offset:end]
        else:
            table = sinusoids(torch.arange(offset, end, device=embedded.device), self.dim)
        return embedded * self.scale + table.to(embedded.dtype)


def band_angles(bands: int, pairs: int, device: torch.device | None = None) -> Tensor:
    """(bands, pairs) rotation angles of the band axis."""
    frequency = rotary_frequencies("inverse", 2 * pairs, torch.tensor(AXIAL_BAND_THETA, device=device))
    return torch.arange(bands, device=device, dtype=torch.float32)[:, None] * frequency


def axial_tables(time_angle: Tensor, radius: Tensor | None, bands: int) -> RotaryTables:
    """Rotary tables of the time-major (time, band) grid.

    `time_angle` (B or 1, 1, S, D/4) and `radius` (B, 1 or H, S, 1) come from the time rotary;
    the result covers S * bands tokens with D/2 pairs: time angles in the first half, band angles
    in the second, the radius of the token's frame on both.
    """
    pairs = time_angle.shape[-1]
    time = time_angle.repeat_interleave(bands, dim=-2)
    band = band_angles(bands, pairs, time_angle.device).repeat(time_angle.shape[-2], 1)
    angle = torch.cat([time, band.expand(*time.shape[:-1], pairs)], dim=-1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    if radius is not None:
        radius = radius.repeat_interleave(bands, dim=-2)
        cos, sin = cos * radius, sin * radius
    return RotaryTables(cos=cos, sin=sin, angle=angle, radius=radius)
