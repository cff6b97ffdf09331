"""The seed's residual variants: the learned blend of attention residuals, the gates of the
feed-forward residual, and the cross-feature gate used as a fusion of feature streams.

Where each acts (the seed's `Residual.forward` was confused: `ex = self.t_gate(cx) if not None
else ...` always took `t_gate`, and `fx = x + ex + dx` *added* the gate value, a number in
(0, 1) broadcast over channels, to the residual stream, so nothing was gated; it also added the
feed-forward output to the block input `x`, dropping the attention update):

* `BlendResidual` replaces `x + update` after an attention sublayer by the seed's
  `b * (x + update) + (1 - b) * x = x + b * update`, `b = sigmoid(beta)` learned per block
  (beta starts at the seed's 0.5);
* `GatedResidual` replaces `x + ffn(h)` (h = the sublayer's normalised input) by
  `x + g(h) * ffn(h)`: the gate scales the feed-forward update per position. Gates:
  `mlp` (`sigmoid(w.h + c)`), `t_gate` (`sum_k softmax(W h)_k sigmoid(w_k.h + c_k)`, a
  softmax over gate "types" mixing sigmoid gates), `m_gate` (the mean of a data gate
  `sigmoid(MLP(h))` and a memory gate `sigmoid(softmax(h K^T / sqrt(d)) V)` over learned
  key/value slots K (M, d), V (M, 1));
* `CrossFeatureGate` (`fusion="c_gate"`): each feature stream s_f is scaled per frame by
  `sigmoid(w_f.c + b_f)`, c = the mean of the streams, and the gated streams are integrated by a
  projection of their concatenation (the seed's `c_gate` gated fixed feature slots from the
  hidden state; here the slots are the configured features).

All gates are per position, so they never mix padded and valid frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configuration import EchoConfig
from .layers import ResidualAdd

# The seed's initial blend logit: sigmoid(0.5) = 0.62 of the attention update at the start.
BLEND_INIT = 0.5


class BlendResidual(nn.Module):
    """`x + sigmoid(beta) * dropout(update)` (the seed's learned blend of input and output)."""

    def __init__(self, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.beta = nn.Parameter(torch.tensor(BLEND_INIT))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.beta.fill_(BLEND_INIT)

    def forward(self, x: Tensor, update: Tensor, source: Tensor | None = None) -> Tensor:
        return x + torch.sigmoid(self.beta).to(update.dtype) * self.dropout(update)


class LearnedBlend(nn.Module):
    """`a + sigmoid(beta) * (b - a)`: the seed's blend of two states (its decoder layouts)."""

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(BLEND_INIT))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.beta.fill_(BLEND_INIT)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.lerp(a, b, torch.sigmoid(self.beta).to(a.dtype))


class MLPGate(nn.Module):
    """The plain gate: `sigmoid(w.h + c)`, (..., d) -> (..., 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Linear(dim, 1)

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.project(h))


class TypeGate(nn.Module):
    """`t_gate`: a softmax over `types` gate types mixing one sigmoid gate per type.

    The seed's per-type `Linear(d, 1)` projections and its classifier are fused into one
    `Linear(d, 2 * types)` (the same function, one matrix multiply)."""

    def __init__(self, dim: int, types: int):
        super().__init__()
        self.types = types
        self.project = nn.Linear(dim, 2 * types)

    def forward(self, h: Tensor) -> Tensor:
        type_logits, gate_logits = self.project(h).split(self.types, dim=-1)
        return (F.softmax(type_logits, dim=-1) * torch.sigmoid(gate_logits)).sum(-1, keepdim=True)


class MemoryGate(nn.Module):
    """`m_gate`: `(sigmoid(MLP(h)) + sigmoid(softmax(h K^T / sqrt(d)) V)) / 2`."""

    def __init__(self, dim: int, slots: int):
        super().__init__()
        self.keys = nn.Parameter(torch.randn(slots, dim))
        self.values = nn.Parameter(torch.randn(slots, 1))
        self.data = nn.Sequential(nn.Linear(dim, dim // 2), nn.SiLU(), nn.Linear(dim // 2, 1))

    def reset_parameters(self) -> None:
        # Unit-variance slots as in the seed: with a normalised h the logits h.k / sqrt(d) are O(1).
        with torch.no_grad():
            self.keys.normal_()
            self.values.normal_()

    def forward(self, h: Tensor) -> Tensor:
        weights = F.softmax(h @ self.keys.to(h.dtype).t() / math.sqrt(h.shape[-1]), dim=-1)
        memory = torch.sigmoid(weights @ self.values.to(h.dtype))
        return 0.5 * (torch.sigmoid(self.data(h)) + memory)


def make_gate(kind: str, dim: int, types: int = 8, slots: int = 64) -> nn.Module:
    if kind == "mlp":
        return MLPGate(dim)
    if kind == "t_gate":
        return TypeGate(dim, types)
    if kind == "m_gate":
        return MemoryGate(dim, slots)
    raise ValueError(f"unknown residual gate {kind!r}")


class GatedResidual(nn.Module):
    """`x + gate(h) * dropout(update)`: the gate reads the sublayer's normalised input `h`."""

    def __init__(self, gate: nn.Module, dropout: float):
        super().__init__()
        self.gate = gate
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, update: Tensor, source: Tensor | None = None) -> Tensor:
        if source is None:
            raise ValueError("a gated residual needs the sublayer's input")
        return x + self.gate(source) * self.dropout(update)


class CrossFeatureGate(nn.Module):
    """`c_gate` fusion: per-feature sigmoid gates (per frame, from the mean of the streams) and a
    projection of the concatenated gated streams back to d_model."""

    def __init__(self, names: list[str], dim: int):
        super().__init__()
        self.names = list(names)
        self.gates = nn.Linear(dim, len(self.names))
        self.integrate = nn.Linear(dim * len(self.names), dim)

    def forward(self, streams: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([streams[name] for name in self.names], dim=-2)  # (B, S, F, d)
        gates = torch.sigmoid(self.gates(stacked.mean(dim=-2)))  # (B, S, F)
        return self.integrate((gates[..., None] * stacked).flatten(-2))


def attention_residual(config: EchoConfig) -> nn.Module:
    """The residual after an attention sublayer: plain or the seed's learned blend."""
    return BlendResidual(config.dropout) if config.residual_blend else ResidualAdd(config.dropout)


def feed_forward_residual(config: EchoConfig) -> nn.Module:
    """The residual after a feed-forward sublayer: plain or gated by `config.residual_gate`."""
    if config.residual_gate == "none":
        return ResidualAdd(config.dropout)
    gate = make_gate(config.residual_gate, config.d_model, config.residual_gate_types, config.residual_gate_memory)
    return GatedResidual(gate, config.dropout)
