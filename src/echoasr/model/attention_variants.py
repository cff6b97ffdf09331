"""The seed's attention variants: score functions other than the scaled dot product, and the
auxiliary "curiosity" key/value set.

Score functions (`attention_score`), on (B, H, T, head_dim) queries and keys after rotary:

* `cosine`: `tau_h * cos(q, k)` with a learned per-head temperature `tau_h` (stored as log,
  starting at `attention_cosine_temperature`). The seed's `cos_sim` had no temperature, so its
  scores stayed in [-1, 1] and attention was nearly uniform. Normalising q and k divides out the
  rotary radius (pitch radii have no effect under cosine scores); the rotation stays. Runs as
  `scaled_dot_product_attention` on normalised inputs (the fused kernels remain available).
* `rbf`: `(1 - r) * q.k / sqrt(d) + r * exp(-|q - k|^2 / (2 sigma^2 sqrt(d)))` with
  r = `attention_rbf_ratio` (seed 0.3) and sigma = `attention_rbf_sigma` (seed 1.0): the seed's
  RBF term exactly (distances between q and k scaled by d^(-1/4)); its dot-product term applied
  that d^(-1/4) a second time (q.k / d^(3/4)), here it is the usual q.k / sqrt(d). Explicit
  softmax (a distance is not a bilinear form).
* `attention_pad_scale`: the seed multiplied the scores toward "pad" keys by a tiny factor, finding
  them by testing whether the first channel of the *key vector* equalled the pad token id 0 (a
  float that is essentially never exactly 0, so it never fired). Here the keys are the ones the
  real mask hides (padding, and future tokens in the decoder); their scores are scaled by the
  seed's effective factor 1e-6 (its learned factor `clamp(softplus(1e-7), 1e-8, 1e-6)` sat at the
  clamp, so it never learned) before the mask is added. The mask already removes those keys, so on
  valid positions this is exactly the model without it (tested): the seed's aim, keeping padding
  out of attention, is what the mask does. It stays selectable to reproduce the seed's
  configuration and costs the explicit-softmax path.

`Curiosity` (`attention_curiosity`, decoder self-attention): a second key/value projection of an
auxiliary sequence (the encoder output) that the same queries, without rotary (the two sides have
different clocks, as in cross-attention), attend to under its own padding mask; the two results
are mixed per head, `(1 - g_h) * main + g_h * aux` with `g_h = sigmoid(gate_h)`, gate_h starting at
0 as in the seed. (The seed built this module in every block but never called it.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .configuration import EchoConfig

# The seed's pad factor as it actually ran (see the module docstring).
PAD_SCORE_SCALE = 1e-6


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float = 0.0,
                       is_causal: bool = False, scale: float | None = None) -> Tensor:
    """`F.scaled_dot_product_attention`, on the CPU in bf16 with its math backend: there the fused
    CPU kernel made a training step of the plain `small` model 1.34x slower (0.19 s vs 0.14 s,
    `benchmarks/training_speed.py --worker small-plain 1 1 12 0`); in fp32 the two are equal."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, scale=scale)


class ScoreFunction(nn.Module):
    """Attention core for the non-default score functions: (B, H, Tq, d) -> (B, H, Tq, d_v)."""

    def __init__(
        self,
        kind: str,
        heads: int,
        head_dim: int,
        *,
        cosine_temperature: float = 10.0,
        rbf_ratio: float = 0.3,
        rbf_sigma: float = 1.0,
        pad_scale: bool = False,
    ):
        super().__init__()
        self.kind = kind
        self.head_dim = head_dim
        self.rbf_ratio = rbf_ratio
        self.rbf_sigma = rbf_sigma
        self.pad_scale = pad_scale
        self.initial_temperature = float(cosine_temperature)
        if kind == "cosine":
            self.log_temperature = nn.Parameter(torch.full((heads,), math.log(cosine_temperature)))
        else:
            self.log_temperature = None

    def reset_parameters(self) -> None:
        if self.log_temperature is not None:
            with torch.no_grad():
                self.log_temperature.fill_(math.log(self.initial_temperature))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout: float) -> Tensor:
        if self.kind == "cosine":
            temperature = self.log_temperature.exp().to(q.dtype)[:, None, None]
            q, k = F.normalize(q, dim=-1) * temperature, F.normalize(k, dim=-1)
            if not self.pad_scale:
                return scaled_dot_product(q, k, v, mask, dropout, is_causal, scale=1.0)
            scores = q @ k.transpose(-1, -2)
        elif self.kind == "rbf":
            scores = self._rbf_scores(q, k)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if is_causal:
            mask = _causal_mask(q.shape[-2], k.shape[-2], q.dtype, q.device)
        if mask is not None:
            if self.pad_scale:
                hidden = mask <= torch.finfo(mask.dtype).min / 2
                scores = torch.where(hidden, scores * PAD_SCORE_SCALE, scores)
            scores = scores + mask
        weights = F.softmax(scores.float(), dim=-1).to(v.dtype)
        return F.dropout(weights, p=dropout, training=dropout > 0) @ v

    def _rbf_scores(self, q: Tensor, k: Tensor) -> Tensor:
        scale = self.head_dim**-0.25
        q, k = q * scale, k * scale
        dot = q @ k.transpose(-1, -2)
        distance = (q.square().sum(-1)[..., :, None] + k.square().sum(-1)[..., None, :] - 2 * dot).clamp_min(0.0)
        rbf = torch.exp(-distance / (2 * self.rbf_sigma**2))
        return (1 - self.rbf_ratio) * dot + self.rbf_ratio * rbf


def _causal_mask(queries: int, keys: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    allowed = torch.ones(queries, keys, dtype=torch.bool, device=device).tril()
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)


def make_scores(config: EchoConfig) -> ScoreFunction | None:
    """The configured score function, or None for SDPA's scaled dot product (the default)."""
    if config.attention_score == "dot" and not config.attention_pad_scale:
        return None
    return ScoreFunction(
        config.attention_score,
        config.attention_heads,
        config.head_dim,
        cosine_temperature=config.attention_cosine_temperature,
        rbf_ratio=config.attention_rbf_ratio,
        rbf_sigma=config.attention_rbf_sigma,
        pad_scale=config.attention_pad_scale,
    )


class Curiosity(nn.Module):
    """Auxiliary key/value set of a self-attention layer and its per-head mixing gate."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.gate = nn.Parameter(torch.zeros(heads))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gate.zero_()

    def memory(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, S, head_dim) of the auxiliary sequence; once per utterance."""
        batch, length, _ = source.shape
        kv = self.kv(source).view(batch, length, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def mix(self, main: Tensor, aux: Tensor) -> Tensor:
        gate = torch.sigmoid(self.gate).to(main.dtype)[:, None, None]
        return main + gate * (aux - main)
