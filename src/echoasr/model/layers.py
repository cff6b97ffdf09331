"""Small building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in at least float32 (stable under bf16 autocast)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        compute = torch.promote_types(x.dtype, torch.float32)
        normed = F.rms_norm(x.to(compute), (x.shape[-1],), eps=self.eps)
        return (normed * self.weight.to(compute)).to(x.dtype)


def make_norm(config, dim: int | None = None) -> nn.Module:
    """The configured norm (`config.norm`): RMSNorm, or LayerNorm with bias (Whisper's)."""
    dim = config.d_model if dim is None else dim
    if config.norm == "layer":
        return nn.LayerNorm(dim, eps=config.layer_norm_eps)
    return RMSNorm(dim, config.rms_norm_eps)


class ZeroProjection(nn.Linear):
    """A linear projection that starts at zero (weight and bias), so that whatever it carries
    joins a pretrained model without changing it; its weight still gets a gradient at step 0."""

    def __init__(self, dim: int):
        super().__init__(dim, dim)  # nn.Linear calls reset_parameters, i.e. the zeros below

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.gelu(self.up(x))))


class ResidualAdd(nn.Module):
    """`x + dropout(update)`: the residual connection of every pre-norm block.

    Kept as a module so that other combinations (the seed's learned blend, gates: see
    `gates.py`) replace it by configuration; `source` (the sublayer's normalised input, read by
    the gates) is ignored here.
    """

    def __init__(self, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, update: Tensor, source: Tensor | None = None) -> Tensor:
        return x + self.dropout(update)


def padding_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, 1, 1, S) additive mask: 0 on valid keys, the dtype's lowest finite value on padding.

    Finite (not -inf) so that a row whose keys are all masked stays NaN-free.
    """
    return torch.where(valid, 0.0, torch.finfo(dtype).min).to(dtype)[:, None, None, :]


def causal_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, 1, L, L) additive mask hiding future positions and padded keys."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    allowed = causal[None] & valid[:, None, :]
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]
