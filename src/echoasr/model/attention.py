"""Multi-head attention with pitch-aware rotary tables and the pitch similarity bias.

Every call passes one additive float mask to `scaled_dot_product_attention`: padding (and the
causal structure in the decoder) plus, when enabled, the per-head pitch bias

* self-attention (encoder): `s_h * exp(-|z_i - z_j|)` between voiced frames i, j;
* cross-attention: text tokens have no pitch at inference (the seed's transcript-derived f0t is
  not used), so each head compares the key frame's pitch with a learned reference pitch `r_h`:
  `s_h * exp(-|z_j - r_h|)` on voiced frames j, the same for every query (a (B, H, 1, S) mask).

`s_h` starts at `pitch_bias_init` (0 by default: the model starts as plain attention and
learns how much pitch similarity to use). The similarity itself is computed once per forward
and shared by the layers of a stack; only the per-head scaling happens per layer.

The score function is SDPA's scaled dot product unless a `attention_variants.ScoreFunction` is
configured (cosine, RBF, pad-score scaling); decoder self-attention may carry the seed's
`Curiosity` key/value set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_variants import Curiosity, ScoreFunction, scaled_dot_product
from .pitch import PitchTrack
from .rotary import RotaryTables, apply_rotary

logger = logging.getLogger(__name__)



@dataclass
class AttentionContext:
    """What the self-attention layers of one stack share in a forward pass."""

    rotary: RotaryTables | None
    mask: Tensor | None  # additive float32, broadcastable to (B, H, Tq, Tk); None: nothing masked
    is_causal: bool = False  # only used when `mask` is None
    similarity: Tensor | None = None  # (B, 1, Tq, Tk) pitch similarity, float32
    valid: Tensor | None = None  # (B, Tk) bool, for debug statistics

    def expand(self, repeats: int) -> AttentionContext:
        def rep(t: Tensor | None) -> Tensor | None:
            return t if t is None or t.shape[0] == 1 else t.repeat_interleave(repeats, dim=0)

        rotary = None if self.rotary is None else self.rotary.expand(repeats)
        return AttentionContext(rotary, rep(self.mask), self.is_causal, rep(self.similarity), rep(self.valid))


def _to_mask_dtype(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == dtype:
        return mask
    if torch.finfo(dtype).max < torch.finfo(mask.dtype).max:  # narrower range: keep padding finite
        mask = mask.clamp_min(torch.finfo(dtype).min)
    return mask.to(dtype)


class KVCache:
    """Self-attention keys and values of one decoder layer, preallocated for `max_length` steps."""

    def __init__(self, batch: int, heads: int, max_length: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.k = torch.zeros(batch, heads, max_length, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (beam search); only the filled part is copied."""
        n = self.length
        self.k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
        self.v[:, :, :n] = self.v[:, :, :n].index_select(0, index)


class PitchBiasScale(nn.Module):
    """Learned per-head scale `s_h` of the self-attention pitch similarity bias."""

    def __init__(self, heads: int, init: float):
        super().__init__()
        self.init = init
        self.scale = nn.Parameter(torch.full((heads,), float(init)))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(self.init)

    def forward(self, mask: Tensor | None, similarity: Tensor) -> Tensor:
        """Additive mask + s_h * similarity: (B, H, Tq, Tk) float32."""
        scale = self.scale.float()[None, :, None, None]
        if mask is None:
            return scale * similarity
        return torch.addcmul(mask, scale, similarity)


class CrossPitchBias(nn.Module):
    """Cross-attention pitch bias `s_h * exp(-|z_j - r_h|) * voiced_j` (queries have no pitch)."""

    def __init__(self, heads: int, init: float):
        super().__init__()
        self.init = init
        self.scale = nn.Parameter(torch.full((heads,), float(init)))
        self.reference = nn.Parameter(self._initial_reference(heads))

    @staticmethod
    def _initial_reference(heads: int) -> Tensor:
        # Spread the heads over the usual z range so that they can specialise on low/high pitch.
        return torch.linspace(-1.0, 1.0, heads) if heads > 1 else torch.zeros(1)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(self.init)
            self.reference.copy_(self._initial_reference(self.reference.numel()))

    def forward(self, mask: Tensor, memory_pitch: PitchTrack) -> Tensor:
        """Additive (B, 1, 1, S) mask + bias: (B, H, 1, S) float32."""
        distance = (memory_pitch.z[:, None, :] - self.reference.float()[None, :, None]).abs()
        bias = torch.where(memory_pitch.voiced[:, None, :], torch.exp(-distance), 0.0)
        return mask + (self.scale.float()[None, :, None] * bias)[:, :, None, :]


class SelfAttention(nn.Module):
    """Multi-head self-attention: fused q/k/v projection, rotary on q and k (radius included),
    optional per-head pitch bias, `scaled_dot_product_attention` with one float mask."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        pitch_bias: bool = False,
        pitch_bias_init: float = 0.0,
        scores: ScoreFunction | None = None,
        curiosity: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.pitch_bias = PitchBiasScale(heads, pitch_bias_init) if pitch_bias else None
        self.scores = scores
        self.curiosity = Curiosity(dim, heads) if curiosity else None
        self.debug_name: str | None = None

    def forward(
        self,
        x: Tensor,
        context: AttentionContext,
        cache: KVCache | None = None,
        aux: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """`aux`: the curiosity keys, values and additive mask of the auxiliary sequence."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk, v = qkv[:2], qkv[2]
        plain_q = qkv[0]
        if context.rotary is not None:
            qk = apply_rotary(qk, context.rotary.cos, context.rotary.sin)
        q, k = qk.unbind(0)
        if cache is not None:
            k, v = cache.append(k, v)
        mask = context.mask
        if self.pitch_bias is not None and context.similarity is not None:
            mask = self.pitch_bias(mask, context.similarity)
            if self.debug_name is not None:
                self._log_bias(context)
        is_causal = context.is_causal and mask is None and cache is None
        if mask is not None:
            mask = _to_mask_dtype(mask, q.dtype)
        out = self._attend(q, k, v, mask, is_causal)
        if self.curiosity is not None and aux is not None:
            aux_k, aux_v, aux_mask = aux
            out = self.curiosity.mix(out, self._attend(plain_q, aux_k, aux_v, _to_mask_dtype(aux_mask, q.dtype), False))
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
        """Attention core on (B, H, T, head_dim) tensors: SDPA, or a configured score function."""
        dropout = self.dropout if self.training else 0.0
        if self.scores is not None:
            return self.scores(q, k, v, mask, is_causal, dropout)
        return scaled_dot_product(q, k, v, mask, dropout, is_causal)

    def _log_bias(self, context: AttentionContext) -> None:
        scale = self.pitch_bias.scale.detach().float()
        voiced_pairs = context.similarity > 0
        mean_similarity = context.similarity[voiced_pairs].mean().item() if voiced_pairs.any() else 0.0
        logger.info(
            "%s pitch bias scale per head=%s mean|bias| on voiced pairs=%.4f",
            self.debug_name,
            [round(s, 4) for s in scale.tolist()],
            scale.abs().mean().item() * mean_similarity,
        )


class CrossAttention(nn.Module):
    """Text queries attend to encoder frames; no rotary (the two sides have different clocks)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        pitch_bias: bool = False,
        pitch_bias_init: float = 0.0,
        scores: ScoreFunction | None = None,
        bias: bool = False,
    ):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.scores = scores
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.pitch_bias = CrossPitchBias(heads, pitch_bias_init) if pitch_bias else None
        self.debug_name: str | None = None

    def memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, S, head_dim) of the encoder output; computed once per utterance."""
        batch, length, _ = memory.shape
        kv = self.kv(memory).view(batch, length, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def memory_mask(self, padding: Tensor, memory_pitch: PitchTrack | None) -> Tensor:
        """Additive mask for this layer: padding (B, 1, 1, S) plus the pitch bias (B, H, 1, S)."""
        if self.pitch_bias is None or memory_pitch is None:
            return padding
        if self.debug_name is not None:
            logger.info(
                "%s cross pitch bias scale=%s reference z=%s",
                self.debug_name,
                [round(s, 4) for s in self.pitch_bias.scale.detach().tolist()],
                [round(r, 3) for r in self.pitch_bias.reference.detach().tolist()],
            )
        return self.pitch_bias(padding, memory_pitch)

    def forward(self, x: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q = self.q(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        mask = _to_mask_dtype(mask, q.dtype)
        if self.scores is not None:
            out = self.scores(q, key, value, mask, False, dropout)
        else:
            out = scaled_dot_product(q, key, value, mask, dropout)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))
