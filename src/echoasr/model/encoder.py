"""The Echo encoder: one convolutional stem per input feature, optional per-feature layers,
fusion, shared pre-norm transformer layers with pitch-aware rotary attention.

Stems (all with the same time subsampling, so features stay frame-aligned):

* `mel` (B, 80, T), `harmonic` (B, H, T), `aperiodic` (B, A, T), `waveform` (B, 160, T): the
  feature's channels as they come;
* `f0`: two channels, the voicing-aware z-score of log f0 (0 on unvoiced frames) and the
  voicing flag (see `pitch.log_f0_zscore`);
* `phase`: two channels, sin and cos of the accumulated phase.

Each stem is Whisper's: conv(k=3, stride 1) + GELU, then conv(k=3, stride 2) + GELU once per
factor of 2 of `subsampling` (one more stride-1 conv when `subsampling == 1`). A stride-2 conv
with kernel 3 and padding 1 maps T frames to `floor((T - 1) / 2) + 1 = ceil(T / 2)`, so the
stem gives exactly `ceil(T / subsampling)` frames and each example's length goes through the
same formula. Everything past an example's length is zeroed before every conv, so padding
never leaks into valid frames (a batch equals its examples run one by one).

Pitch for the attention mechanisms is pooled to the subsampled frame rate per example
(`pitch.pitch_track`); padding masks always come from lengths.

With `rotary_axial_bands` = F > 0 the mel stem is a `BandStem` (F frequency bands, one shared
stem) and the mel feature layers run over the (time, band) token grid with the axial rotary of
`positions.py` (its own `PitchRotary` for the time half, same settings as the encoder's), before a
projection of each frame's F band tokens back to one frame token (`band_pool`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionContext, SelfAttention
from .attention_variants import make_scores
from .configuration import EchoConfig
from .gates import CrossFeatureGate, attention_residual, feed_forward_residual
from .layers import FeedForward, ZeroProjection, make_norm, padding_bias
from .pitch import PitchTrack, constant_f0, length_mask, log_f0_zscore, pitch_similarity, pitch_track
from .positions import AbsolutePositions, axial_tables
from .rotary import PitchRotary


@dataclass
class EncoderOutput:
    hidden: Tensor  # (B, S, d_model), zero on padded frames
    lengths: Tensor  # (B,) int64 true lengths after subsampling
    pitch: PitchTrack | None  # pitch at the encoder frame rate, when a pitch mechanism uses it

    @property
    def valid(self) -> Tensor:
        return length_mask(self.lengths, self.hidden.shape[1])

    def expand(self, repeats: int) -> EncoderOutput:
        pitch = None if self.pitch is None else self.pitch.expand(repeats)
        return EncoderOutput(
            self.hidden.repeat_interleave(repeats, dim=0), self.lengths.repeat_interleave(repeats, dim=0), pitch
        )


def conv_output_length(lengths: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


class ConvStem(nn.Module):
    """Whisper-style conv stem with exact length bookkeeping and masking of padded frames."""

    def __init__(self, in_channels: int, dim: int, subsampling: int):
        super().__init__()
        strides = [1] + [2] * int(math.log2(subsampling)) if subsampling > 1 else [1, 1]
        channels = [in_channels] + [dim] * len(strides)
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, kernel_size=3, stride=s, padding=1)
            for c_in, c_out, s in zip(channels[:-1], channels[1:], strides)
        )

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for conv in self.convs:
            lengths = conv_output_length(lengths, 3, conv.stride[0], 1)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, T), (B,) -> (B, T', dim), (B,)."""
        # torch.where, not multiplication: padding may hold NaN, and NaN * 0 is NaN.
        for conv in self.convs:
            x = torch.where(length_mask(lengths, x.shape[-1])[:, None, :], x, 0.0)
            x = F.gelu(conv(x))
            lengths = conv_output_length(lengths, 3, conv.stride[0], 1)
        x = torch.where(length_mask(lengths, x.shape[-1])[:, None, :], x, 0.0)
        return x.transpose(1, 2), lengths


class BandStem(nn.Module):
    """The mel stem of the axial layout: F bands of n_mels / F bins, one shared conv stem over
    time per band; (B, n_mels, T) -> (B, T', F, dim) (see `positions.py`)."""

    def __init__(self, n_mels: int, bands: int, dim: int, subsampling: int):
        super().__init__()
        self.bands = bands
        self.stem = ConvStem(n_mels // bands, dim, subsampling)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.stem.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        batch, channels, frames = x.shape
        per_band = x.reshape(batch * self.bands, channels // self.bands, frames)
        out, band_lengths = self.stem(per_band, lengths.repeat_interleave(self.bands))
        out = out.unflatten(0, (batch, self.bands)).transpose(1, 2)
        return out, band_lengths.view(batch, self.bands)[:, 0]


class FeatureFusion(nn.Module):
    """Combines the per-feature sequences (all (B, S, d)): sum, gated sum, concat+projection or
    the seed's cross-feature gate (`gates.CrossFeatureGate`).

    `gated`: each feature is scaled by a per-channel sigmoid gate computed from itself.
    """

    def __init__(self, names: list[str], dim: int, mode: str):
        super().__init__()
        self.mode = mode if len(names) > 1 else "sum"
        self.names = list(names)
        if self.mode == "gated":
            self.gates = nn.ModuleDict({name: nn.Linear(dim, dim) for name in names})
        elif self.mode == "concat":
            self.project = nn.Linear(dim * len(names), dim)
        elif self.mode == "c_gate":
            self.cross_gate = CrossFeatureGate(self.names, dim)

    def forward(self, streams: dict[str, Tensor]) -> Tensor:
        if self.mode == "c_gate":
            return self.cross_gate(streams)
        if self.mode == "concat":
            return self.project(torch.cat([streams[name] for name in self.names], dim=-1))
        if self.mode == "gated":
            return sum(torch.sigmoid(self.gates[name](streams[name])) * streams[name] for name in self.names)
        return sum(streams[name] for name in self.names)


class EncoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)); the residuals are the
    configured ones (`gates.attention_residual`, `gates.feed_forward_residual`)."""

    def __init__(self, config: EchoConfig, pitch_bias: bool | None = None):
        super().__init__()
        self.attn_norm = make_norm(config)
        self.self_attn = SelfAttention(
            config.d_model,
            config.attention_heads,
            config.attention_dropout,
            config.pitch_bias if pitch_bias is None else pitch_bias,
            config.pitch_bias_init,
            scores=make_scores(config),
            bias=config.attention_bias,
        )
        self.attn_residual = attention_residual(config)
        self.ffn_norm = make_norm(config)
        self.ffn = FeedForward(config.d_model, config.ffn_dim, config.dropout)
        self.ffn_residual = feed_forward_residual(config)

    def forward(self, x: Tensor, context: AttentionContext) -> Tensor:
        x = self.attn_residual(x, self.self_attn(self.attn_norm(x), context))
        h = self.ffn_norm(x)
        return self.ffn_residual(x, self.ffn(h), h)


def feature_inputs(name: str, features: dict[str, Tensor], lengths: Tensor, f0_representation: str = "log_z",
                   reference_hz: float = 150.0) -> Tensor:
    """The (B, C, T) tensor a stem reads for feature `name` (f0 and phase expanded to 2 channels;
    the f0 channel in `f0_representation`, see `EchoConfig`)."""
    if name == "f0":
        f0, voiced = features["f0"].float(), features["voiced"]
        is_voiced = (voiced > 0.5) & (f0 > 0) & length_mask(lengths, f0.shape[-1])
        if f0_representation == "hz":
            pitch = torch.where(is_voiced, f0 / reference_hz, 0.0)
        elif f0_representation == "voicing":
            pitch = torch.zeros_like(f0)
        else:
            pitch = log_f0_zscore(f0, is_voiced)
        return torch.stack((pitch, is_voiced.float()), dim=1)
    if name == "phase":
        phase = features["phase"].float()
        return torch.stack((torch.sin(phase), torch.cos(phase)), dim=1)
    return features[name]


class EchoEncoder(nn.Module):
    def __init__(self, config: EchoConfig):
        super().__init__()
        self.config = config
        self.features = list(config.features)
        self.bands = config.rotary_axial_bands
        self.stems = nn.ModuleDict(
            {
                name: BandStem(config.n_mels, self.bands, config.d_model, config.subsampling)
                if name == "mel" and self.bands
                else ConvStem(config.feature_channels(name), config.d_model, config.subsampling)
                for name in self.features
            }
        )
        self.feature_layers = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    EncoderLayer(config, pitch_bias=False if name == "mel" and self.bands else None)
                    for _ in range(config.feature_layers)
                )
                for name in self.features
            }
            if config.feature_layers > 0
            else {}
        )
        if self.bands:
            self.band_pool = nn.Linear(self.bands * config.d_model, config.d_model)
            self.axial_rotary = PitchRotary(
                config.head_dim // 2,
                config.attention_heads,
                frequencies=config.rotary_frequencies,
                theta=config.rotary_theta,
                learnable_theta=config.rotary_learnable_theta,
                theta_mode=config.rotary_theta_mode,
                additive_scale=config.rotary_additive_scale,
                radius=config.rotary_radius,
                radius_scale=config.rotary_radius_scale,
                reference_hz=config.pitch_reference_hz,
            )
        else:
            self.band_pool = self.axial_rotary = None
        # With zero start, every stream after the first joins the first (the backbone's) through a
        # projection that starts at zero.
        self.joins = nn.ModuleDict(
            {name: ZeroProjection(config.d_model) for name in self.features[1:]} if config.pitch_zero_start else {}
        )
        self.fusion = FeatureFusion(self.features, config.d_model, config.fusion)
        self.positions = (
            AbsolutePositions(config.encoder_absolute_positions, config.max_source_positions, config.d_model, False)
            if config.encoder_absolute_positions != "none"
            else None
        )
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.norm = make_norm(config)
        self.rotary = PitchRotary(
            config.head_dim,
            config.attention_heads,
            frequencies=config.rotary_frequencies,
            theta=config.rotary_theta,
            learnable_theta=config.rotary_learnable_theta,
            theta_mode=config.rotary_theta_mode,
            additive_scale=config.rotary_additive_scale,
            radius=config.rotary_radius,
            radius_scale=config.rotary_radius_scale,
            reference_hz=config.pitch_reference_hz,
            zero_start=config.pitch_zero_start,
        )

    @property
    def needs_pitch_track(self) -> bool:
        """Whether the attention layers (or the decoder's cross-attention bias) read pitch."""
        return self.rotary.uses_pitch or self.config.pitch_bias

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return next(iter(self.stems.values())).output_lengths(lengths)

    def _band_layers(self, x: Tensor, layers: nn.ModuleList, valid: Tensor, pitch: PitchTrack | None) -> Tensor:
        """Mel feature layers over the (time, band) token grid, then one token per frame."""
        batch, frames, bands, dim = x.shape
        rotary = self.axial_rotary
        tables = axial_tables(rotary.angles(frames, pitch, valid.device), rotary.radius(pitch), bands)
        context = AttentionContext(rotary=tables, mask=padding_bias(valid.repeat_interleave(bands, dim=1), torch.float32))
        x = x.flatten(1, 2)
        for layer in layers:
            x = layer(x, context)
        return self.band_pool(x.view(batch, frames, bands * dim))

    def forward(self, features: dict[str, Tensor], lengths: Tensor) -> EncoderOutput:
        dtype = next(self.stems.parameters()).dtype
        if self.config.pitch_f0_source == "constant" and "f0" in features:
            features = constant_f0(features, self.config.pitch_reference_hz)
        streams, out_lengths = {}, None
        for name in self.features:
            inputs = feature_inputs(name, features, lengths, self.config.feature_f0_representation,
                                    self.config.pitch_reference_hz)
            streams[name], out_lengths = self.stems[name](inputs.to(dtype), lengths)
        length = next(iter(streams.values())).shape[1]
        valid = length_mask(out_lengths, length)

        pitch = None
        if self.needs_pitch_track:
            pitch = pitch_track(features["f0"], features["voiced"], lengths, self.config.subsampling)
        rotary = self.rotary(length, pitch, device=valid.device) if self.config.rotary_positions else None
        if pitch is not None and self.config.pitch_bias_mode == "voicing":
            # The voicing-only control: every bias sees z = 0 (exp(-|z_i - z_j|) = 1 between voiced
            # frames); the rotary tables above were built from the real track.
            pitch = dataclasses.replace(pitch, z=torch.zeros_like(pitch.z))
        context = AttentionContext(
            rotary=rotary,
            mask=padding_bias(valid, torch.float32),
            similarity=pitch_similarity(pitch, pitch) if self.config.pitch_bias else None,
            valid=valid,
        )
        for name, layers in self.feature_layers.items():
            if name == "mel" and self.bands:
                streams[name] = self._band_layers(streams[name], layers, valid, pitch)
                continue
            for layer in layers:
                streams[name] = layer(streams[name], context)
        for name, join in self.joins.items():
            streams[name] = join(streams[name])
        x = self.fusion(streams)
        if self.positions is not None:
            x = self.positions(x)
        for layer in self.layers:
            x = layer(x, context)
        x = torch.where(valid[..., None], self.norm(x), 0.0)
        return EncoderOutput(hidden=x, lengths=out_lengths, pitch=pitch)
