"""Low-rank adapters (LoRA, Hu et al. 2021) on the model's linear layers, and their merge.

`LoRALinear` is an `nn.Linear` whose output gains a trainable low-rank term:
``y = W x + b + (alpha / r) * B A dropout(x)``, with A (r x in) drawn as `nn.Linear` draws its
weights (Kaiming uniform, as loralib does) and B (out x r) zero, so a fresh adapter computes the
base layer exactly and only training moves it. The base weight and bias keep their names
(``...qkv.weight``), so a backbone's state dict loads into an adapted model unchanged; the adapter
adds ``lora_down`` (A) and ``lora_up`` (B).

A fused projection (self-attention's q/k/v, cross-attention's k/v) gets one adapter per part
(`parts`): each slice of the output has its own A and B, which is what separate q, k and v
projections with their own adapters would compute (loralib's `MergedLinear` does the same for
GPT-2's fused attention). One rank-r adapter over the fused output would instead share A between
q, k and v.

`merge_adapters` folds every adapter into its base weight (``W + (alpha / r) B A``) and puts plain
`nn.Linear` layers back: the same function with no extra products, and layers that int8 dynamic
quantisation recognises (it swaps exact `nn.Linear` types only, so an unmerged adapter would stay
in float32 and keep its adapter products).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Where adapters can go: target name -> (stack, the attribute path of the linear layer inside a
# layer of that stack, the number of parts a fused projection holds).
ADAPTER_TARGETS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "encoder.self_attn": (("encoder.layers", "self_attn.qkv", 3), ("encoder.layers", "self_attn.out", 1)),
    "decoder.self_attn": (("decoder.layers", "self_attn.qkv", 3), ("decoder.layers", "self_attn.out", 1)),
    "decoder.cross_attn": (("decoder.layers", "cross_attn.q", 1), ("decoder.layers", "cross_attn.kv", 2),
                           ("decoder.layers", "cross_attn.out", 1)),
    "encoder.ffn": (("encoder.layers", "ffn.up", 1), ("encoder.layers", "ffn.down", 1)),
    "decoder.ffn": (("decoder.layers", "ffn.up", 1), ("decoder.layers", "ffn.down", 1)),
}


class LoRALinear(nn.Linear):
    """`nn.Linear` plus a rank-`rank` update per output part, scaled by `alpha / rank`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int, alpha: float,
                 dropout: float = 0.0, parts: int = 1):
        if rank < 1 or out_features % parts:
            raise ValueError(f"LoRALinear: rank {rank} must be >= 1 and {out_features} outputs divisible by {parts} parts")
        super().__init__(in_features, out_features, bias=bias)
        self.rank, self.parts, self.scale = rank, parts, alpha / rank
        self.lora_down = nn.Parameter(torch.empty(parts * rank, in_features))
        self.lora_up = nn.Parameter(torch.empty(parts, out_features // parts, rank))
        self.adapter_dropout = nn.Dropout(dropout)
        self.reset_adapter()

    @classmethod
    def around(cls, linear: nn.Linear, rank: int, alpha: float, dropout: float, parts: int) -> LoRALinear:
        """An adapted layer sharing `linear`'s weight and bias parameters."""
        adapted = cls(linear.in_features, linear.out_features, linear.bias is not None, rank, alpha, dropout, parts)
        adapted.weight = linear.weight
        adapted.bias = linear.bias
        return adapted

    def reset_adapter(self) -> None:
        """A as `nn.Linear` initialises its weight (Kaiming uniform), B zero: the adapter adds 0.
        (`nn.init` functions: transformers guards them, so loaded adapter weights are kept.)"""
        nn.init.kaiming_uniform_(self.lora_down, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up)

    def delta_weight(self) -> Tensor:
        """(out, in): the adapter's contribution to the weight, ``(alpha / r) B A``, per part."""
        down = self.lora_down.view(self.parts, self.rank, self.in_features)
        return self.scale * torch.bmm(self.lora_up, down).reshape(self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        base = F.linear(x, self.weight, self.bias)
        low = F.linear(self.adapter_dropout(x), self.lora_down)  # (..., parts * r)
        low = low.unflatten(-1, (self.parts, self.rank))
        # under autocast `low` is bfloat16 while the parameter is float32
        update = torch.einsum("...pr,por->...po", low, self.lora_up.to(low.dtype)).flatten(-2)
        return base + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing what this layer computes (in eval mode)."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(self.weight.float() + self.delta_weight().float())
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, parts={self.parts}, scale={self.scale:g}"


def _adapter_sites(model: nn.Module, targets: list[str]) -> list[tuple[nn.Module, str, int]]:
    """(parent module, attribute name, parts) of every linear layer the targets name."""
    sites = []
    for target in targets:
        for stack_path, linear_path, parts in ADAPTER_TARGETS[target]:
            for layer in model.get_submodule(stack_path):
                parent_path, _, attribute = linear_path.rpartition(".")
                sites.append((layer.get_submodule(parent_path), attribute, parts))
    return sites


def add_adapters(model: nn.Module, rank: int, alpha: float, targets: list[str], dropout: float = 0.0) -> int:
    """Replace the targeted `nn.Linear` layers of `model` by `LoRALinear` layers sharing their
    weights; returns how many were adapted."""
    sites = _adapter_sites(model, targets)
    for parent, attribute, parts in sites:
        setattr(parent, attribute, LoRALinear.around(getattr(parent, attribute), rank, alpha, dropout, parts))
    return len(sites)


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter of `model` into its base weight, in place; returns how many were merged."""
    adapted = [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name, module in adapted:
        parent_path, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_path), attribute, module.merged())
    return len(adapted)
