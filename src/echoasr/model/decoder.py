"""The Echo text decoder: pre-norm blocks of causal self-attention, cross-attention to the
encoder and a feed-forward layer; token embedding tied to the output projection.

Self-attention uses standard RoPE on token positions (the configured frequency spacing and
base theta, never pitch: text positions have no pitch, and per-token pitch would need the
transcript); `decoder_rotary=False` turns it off and `decoder_absolute_positions` adds absolute
position embeddings (`positions.py`). Causality is a real mask (`is_causal`, or a (B, 1, L, L)
float mask when a decoder attention mask is given). Cross-attention may add the pitch bias of
`attention.CrossPitchBias`. `DecoderState` holds the KV caches for incremental decoding.

The seed's layouts (`decoder_layout`, `modal_layers`):

* `blended`: in each layer, the state after cross-attention and feed-forward, c, is interpolated
  with the state after self-attention, h: `h + sigmoid(beta) * (c - h)` (the seed's
  `a * y + (1 - a) * x`; its `sequential` switch is the standard layout).
* modal layers (after the decoder layers): a joint attention over the concatenation [audio; text]
  followed by a cross-attention from the text part to the audio part, each with a residual and
  the feed-forward layer, sharing one attention and one feed-forward module (the seed called one
  block for both), and the result blended with the layer's input, `m + sigmoid(beta) * (x - m)`
  (the seed's `a * x + (1 - a) * xm`). The joint attention is masked (the seed's had no mask):
  a text position sees the valid audio frames and text positions <= its own; an audio frame sees
  the valid audio frames only, never text (a frame that saw text would leak later tokens into
  earlier ones through the cross-attention). No rotary there: audio and text have different
  clocks, and the seed's positions over the concatenation shifted every audio position as the
  text grew. So the audio part depends only on the utterance: it is computed once (its keys and
  values prefill the layer's KV cache) and cached decoding equals uncached decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionContext, CrossAttention, KVCache, SelfAttention, _to_mask_dtype
from .attention_variants import ScoreFunction, make_scores
from .configuration import EchoConfig
from .encoder import EncoderOutput
from .gates import LearnedBlend, attention_residual, feed_forward_residual
from .layers import FeedForward, causal_bias, make_norm, padding_bias
from .positions import AbsolutePositions
from .rotary import PitchRotary


@dataclass
class ModalMemory:
    """What a modal layer needs from the audio side, computed once per utterance."""

    joint: tuple[Tensor, Tensor]  # keys/values of the audio rows of the joint attention
    cross: tuple[Tensor, Tensor]  # keys/values of the joint layer's audio output (cross step)


@dataclass
class DecoderMemory:
    """Per-layer encoder-side tensors of one batch: cross-attention keys/values and masks, the
    curiosity keys/values, the modal layers' audio side, and the (B, 1, 1, S) audio padding."""

    cross: list[tuple[Tensor, Tensor]]
    cross_masks: list[Tensor]
    aux: list[tuple[Tensor, Tensor, Tensor] | None]
    modal: list[ModalMemory]
    padding: Tensor


@dataclass
class DecoderState:
    """Incremental decoding state: per-layer self-attention caches, the modal layers' caches
    (prefilled with their audio keys/values) and the encoder-side memory."""

    caches: list[KVCache]
    memory: DecoderMemory
    modal_caches: list[KVCache]

    @property
    def length(self) -> int:
        return self.caches[0].length

    def reorder(self, index: Tensor) -> None:
        """Keep hypotheses `index` (rows of the same utterance: memory is unchanged)."""
        for cache in self.caches + self.modal_caches:
            cache.reorder(index)


class DecoderLayer(nn.Module):
    def __init__(self, config: EchoConfig):
        super().__init__()
        dim, heads = config.d_model, config.attention_heads
        self.self_norm = make_norm(config)
        self.self_attn = SelfAttention(
            dim, heads, config.attention_dropout, scores=make_scores(config), curiosity=config.attention_curiosity,
            bias=config.attention_bias,
        )
        self.self_residual = attention_residual(config)
        self.cross_norm = make_norm(config)
        self.cross_attn = CrossAttention(
            dim, heads, config.attention_dropout, config.pitch_bias, config.pitch_bias_init, scores=make_scores(config),
            bias=config.attention_bias,
        )
        self.cross_residual = attention_residual(config)
        self.ffn_norm = make_norm(config)
        self.ffn = FeedForward(dim, config.ffn_dim, config.dropout)
        self.ffn_residual = feed_forward_residual(config)
        self.blend = LearnedBlend() if config.decoder_layout == "blended" else None

    def forward(
        self,
        x: Tensor,
        context: AttentionContext,
        memory: tuple[Tensor, Tensor],
        memory_mask: Tensor,
        cache: KVCache | None = None,
        aux: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        h = self.self_residual(x, self.self_attn(self.self_norm(x), context, cache, aux))
        x = self.cross_residual(h, self.cross_attn(self.cross_norm(h), *memory, memory_mask))
        normed = self.ffn_norm(x)
        x = self.ffn_residual(x, self.ffn(normed), normed)
        return x if self.blend is None else self.blend(h, x)


class ModalAttention(nn.Module):
    """Multi-head attention whose queries and keys/values may come from different sequences."""

    def __init__(self, dim: int, heads: int, dropout: float, scores: ScoreFunction | None):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.scores = scores
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, d) -> q, k, v, each (B, H, T, head_dim)."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        mask = _to_mask_dtype(mask, q.dtype)
        if self.scores is not None:
            out = self.scores(q, k, v, mask, False, dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        batch, _, length, _ = q.shape
        return self.out(out.transpose(1, 2).reshape(batch, length, -1))


class ModalLayer(nn.Module):
    """The seed's joint text/audio layer (see the module docstring)."""

    def __init__(self, config: EchoConfig):
        super().__init__()
        dim = config.d_model
        self.attn_norm = make_norm(config)
        self.attn = ModalAttention(dim, config.attention_heads, config.attention_dropout, make_scores(config))
        self.attn_residual = attention_residual(config)
        self.ffn_norm = make_norm(config)
        self.ffn = FeedForward(dim, config.ffn_dim, config.dropout)
        self.ffn_residual = feed_forward_residual(config)
        self.blend = LearnedBlend()

    def _feed_forward(self, x: Tensor) -> Tensor:
        normed = self.ffn_norm(x)
        return self.ffn_residual(x, self.ffn(normed), normed)

    def memory(self, audio: Tensor, padding: Tensor) -> ModalMemory:
        """Audio rows of the joint attention (they see valid audio only) and the keys/values the
        cross step reads from their output."""
        q, k, v = self.attn.project(self.attn_norm(audio))
        joint_audio = self._feed_forward(self.attn_residual(audio, self.attn(q, k, v, padding)))
        _, cross_k, cross_v = self.attn.project(self.attn_norm(joint_audio))
        return ModalMemory(joint=(k, v), cross=(cross_k, cross_v))

    def forward(
        self, x: Tensor, memory: ModalMemory, joint_mask: Tensor, padding: Tensor, cache: KVCache | None = None
    ) -> Tensor:
        """Text rows: `joint_mask` covers the keys [audio; text] (B, 1, L, S + L'), where L' is the
        text seen so far (the cache, prefilled with the audio keys, holds both when given)."""
        q, k, v = self.attn.project(self.attn_norm(x))
        if cache is not None:
            k, v = cache.append(k, v)
        else:
            k, v = torch.cat([memory.joint[0], k], dim=2), torch.cat([memory.joint[1], v], dim=2)
        text = self._feed_forward(self.attn_residual(x, self.attn(q, k, v, joint_mask)))
        q, _, _ = self.attn.project(self.attn_norm(text))
        modal = self._feed_forward(self.attn_residual(text, self.attn(q, *memory.cross, padding)))
        return self.blend(modal, x)


class EchoDecoder(nn.Module):
    def __init__(self, config: EchoConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = (
            AbsolutePositions(config.decoder_absolute_positions, config.max_target_positions + len(config.decoder_prompt),
                              config.d_model, config.decoder_scale_embeddings)
            if config.decoder_absolute_positions != "none"
            else None
        )
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.modal_layers = nn.ModuleList(ModalLayer(config) for _ in range(config.modal_layers))
        self.norm = make_norm(config)
        self.rotary = (
            PitchRotary(config.head_dim, config.attention_heads, frequencies=config.rotary_frequencies, theta=config.rotary_theta)
            if config.decoder_rotary
            else None
        )

    def logits(self, hidden: Tensor) -> Tensor:
        """Output projection tied to the token embedding."""
        return hidden @ self.embed_tokens.weight.to(hidden.dtype).t()

    def embed(self, input_ids: Tensor, offset: int = 0) -> Tensor:
        x = self.embed_tokens(input_ids)
        return x if self.positions is None else self.positions(x, offset)

    def _context(self, length: int, device: torch.device, offset: int = 0, **mask) -> AttentionContext:
        rotary = None if self.rotary is None else self.rotary(length, device=device, offset=offset)
        return AttentionContext(rotary=rotary, **mask)

    def memory(self, encoder: EncoderOutput) -> DecoderMemory:
        """Everything the decoder reads from the encoder, per layer (computed once per batch)."""
        padding = padding_bias(encoder.valid, torch.float32)
        cross = [layer.cross_attn.memory(encoder.hidden) for layer in self.layers]
        masks = [layer.cross_attn.memory_mask(padding, encoder.pitch) for layer in self.layers]
        aux = [
            (*layer.self_attn.curiosity.memory(encoder.hidden), padding) if layer.self_attn.curiosity is not None else None
            for layer in self.layers
        ]
        modal = [layer.memory(encoder.hidden, padding) for layer in self.modal_layers]
        return DecoderMemory(cross=cross, cross_masks=masks, aux=aux, modal=modal, padding=padding)

    def forward(self, input_ids: Tensor, encoder: EncoderOutput, attention_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced pass over (B, L) tokens; returns the final hidden states (B, L, d)."""
        length = input_ids.shape[1]
        x = self.embed(input_ids)
        if attention_mask is None:
            mask, is_causal = None, True
        else:
            mask, is_causal = causal_bias(attention_mask.bool(), torch.float32), False
        context = self._context(length, input_ids.device, mask=mask, is_causal=is_causal)
        memory = self.memory(encoder)
        for layer, kv, memory_mask, aux in zip(self.layers, memory.cross, memory.cross_masks, memory.aux):
            x = layer(x, context, kv, memory_mask, aux=aux)
        if self.modal_layers:
            if mask is None:
                mask = causal_bias(torch.ones(1, length, dtype=torch.bool, device=x.device), torch.float32)
            batch = max(mask.shape[0], memory.padding.shape[0])
            audio = memory.padding.expand(batch, 1, length, -1)
            joint_mask = torch.cat([audio, mask.expand(batch, 1, length, length)], dim=-1)
            for layer, modal in zip(self.modal_layers, memory.modal):
                x = layer(x, modal, joint_mask, memory.padding)
        return self.norm(x)

    def start(self, encoder: EncoderOutput, max_length: int) -> DecoderState:
        """Empty state for decoding up to `max_length` tokens (including the start token)."""
        memory = self.memory(encoder)
        batch, frames = encoder.hidden.shape[:2]
        dtype, device = memory.cross[0][0].dtype, encoder.hidden.device
        heads, head_dim = self.config.attention_heads, self.config.head_dim
        caches = [KVCache(batch, heads, max_length, head_dim, dtype, device) for _ in self.layers]
        modal_caches = []
        for modal in memory.modal:
            cache = KVCache(batch, heads, frames + max_length, head_dim, dtype, device)
            cache.append(*modal.joint)
            modal_caches.append(cache)
        return DecoderState(caches=caches, memory=memory, modal_caches=modal_caches)

    def step(self, input_ids: Tensor, state: DecoderState) -> Tensor:
        """One incremental step: (N, 1) newest tokens -> (N, d) final hidden states."""
        offset = state.length
        x = self.embed(input_ids, offset)
        context = self._context(1, input_ids.device, offset, mask=None)
        memory = state.memory
        for layer, cache, kv, memory_mask, aux in zip(
            self.layers, state.caches, memory.cross, memory.cross_masks, memory.aux
        ):
            x = layer(x, context, kv, memory_mask, cache, aux)
        if self.modal_layers:
            text = memory.padding.new_zeros(memory.padding.shape[0], 1, 1, offset + 1)
            joint_mask = torch.cat([memory.padding, text], dim=-1)
            for layer, modal, cache in zip(self.modal_layers, memory.modal, state.modal_caches):
                x = layer(x, modal, joint_mask, memory.padding, cache)
        return self.norm(x)[:, -1]
