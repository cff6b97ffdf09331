"""The Echo text decoder: pre-norm blocks of causal self-attention, cross-attention to the
encoder and a feed-forward layer; token embedding tied to the output projection.

Self-attention uses standard RoPE on token positions (the configured frequency spacing and
base theta, never pitch: text positions have no pitch, and per-token pitch would need the
transcript). Causality is a real mask (`is_causal`, or a (B, 1, L, L) float mask when a
decoder attention mask is given). Cross-attention may add the pitch bias of
`attention.CrossPitchBias`. `DecoderState` holds the KV cache for incremental decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import AttentionContext, CrossAttention, KVCache, SelfAttention
from .configuration import EchoConfig
from .encoder import EncoderOutput
from .layers import FeedForward, ResidualAdd, RMSNorm, causal_bias, padding_bias
from .rotary import PitchRotary


@dataclass
class DecoderState:
    """Incremental decoding state: per-layer self-attention caches and encoder keys/values."""

    caches: list[KVCache]
    memory: list[tuple[Tensor, Tensor]]
    memory_masks: list[Tensor]

    @property
    def length(self) -> int:
        return self.caches[0].length

    def reorder(self, index: Tensor) -> None:
        """Keep hypotheses `index` (rows of the same utterance: memory is unchanged)."""
        for cache in self.caches:
            cache.reorder(index)


class DecoderLayer(nn.Module):
    def __init__(self, config: EchoConfig):
        super().__init__()
        dim, heads = config.d_model, config.attention_heads
        self.self_norm = RMSNorm(dim, config.rms_norm_eps)
        self.self_attn = SelfAttention(dim, heads, config.attention_dropout)
        self.self_residual = ResidualAdd(config.dropout)
        self.cross_norm = RMSNorm(dim, config.rms_norm_eps)
        self.cross_attn = CrossAttention(dim, heads, config.attention_dropout, config.pitch_bias, config.pitch_bias_init)
        self.cross_residual = ResidualAdd(config.dropout)
        self.ffn_norm = RMSNorm(dim, config.rms_norm_eps)
        self.ffn = FeedForward(dim, config.ffn_dim, config.dropout)
        self.ffn_residual = ResidualAdd(config.dropout)

    def forward(
        self,
        x: Tensor,
        context: AttentionContext,
        memory: tuple[Tensor, Tensor],
        memory_mask: Tensor,
        cache: KVCache | None = None,
    ) -> Tensor:
        x = self.self_residual(x, self.self_attn(self.self_norm(x), context, cache))
        x = self.cross_residual(x, self.cross_attn(self.cross_norm(x), *memory, memory_mask))
        return self.ffn_residual(x, self.ffn(self.ffn_norm(x)))


class EchoDecoder(nn.Module):
    def __init__(self, config: EchoConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.rotary = PitchRotary(
            config.head_dim, config.attention_heads, frequencies=config.rotary_frequencies, theta=config.rotary_theta
        )

    def logits(self, hidden: Tensor) -> Tensor:
        """Output projection tied to the token embedding."""
        return hidden @ self.embed_tokens.weight.to(hidden.dtype).t()

    def memory(self, encoder: EncoderOutput) -> tuple[list[tuple[Tensor, Tensor]], list[Tensor]]:
        """Per-layer encoder keys/values and additive masks (padding + cross pitch bias)."""
        padding = padding_bias(encoder.valid, torch.float32)
        memory = [layer.cross_attn.memory(encoder.hidden) for layer in self.layers]
        masks = [layer.cross_attn.memory_mask(padding, encoder.pitch) for layer in self.layers]
        return memory, masks

    def forward(self, input_ids: Tensor, encoder: EncoderOutput, attention_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced pass over (B, L) tokens; returns the final hidden states (B, L, d)."""
        length = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        if attention_mask is None:
            mask, is_causal = None, True
        else:
            mask, is_causal = causal_bias(attention_mask.bool(), torch.float32), False
        context = AttentionContext(rotary=self.rotary(length, device=input_ids.device), mask=mask, is_causal=is_causal)
        memory, memory_masks = self.memory(encoder)
        for layer, kv, memory_mask in zip(self.layers, memory, memory_masks):
            x = layer(x, context, kv, memory_mask)
        return self.norm(x)

    def start(self, encoder: EncoderOutput, max_length: int) -> DecoderState:
        """Empty state for decoding up to `max_length` tokens (including the start token)."""
        memory, masks = self.memory(encoder)
        batch = encoder.hidden.shape[0]
        dtype = memory[0][0].dtype
        caches = [
            KVCache(batch, self.config.attention_heads, max_length, self.config.head_dim, dtype, encoder.hidden.device)
            for _ in self.layers
        ]
        return DecoderState(caches=caches, memory=memory, memory_masks=masks)

    def step(self, input_ids: Tensor, state: DecoderState) -> Tensor:
        """One incremental step: (N, 1) newest tokens -> (N, d) final hidden states."""
        x = self.embed_tokens(input_ids)
        context = AttentionContext(rotary=self.rotary(1, device=input_ids.device, offset=state.length), mask=None)
        for layer, cache, kv, memory_mask in zip(self.layers, state.caches, state.memory, state.memory_masks):
            x = layer(x, context, kv, memory_mask, cache)
        return self.norm(x)[:, -1]
