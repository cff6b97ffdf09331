"""Dynamic int8 quantisation for faster CPU inference.

Every ``nn.Linear`` (attention projections, feed-forward layers, stems' projections, the CTC
head) becomes a dynamically quantised linear layer (low-rank adapters are merged into their
weights first): int8 weights, activations quantised per
batch at run time, float32 in and out (so not under bf16 autocast). The attention itself (rotary, pitch bias, SDPA) and the
tied output projection (an embedding matrix) stay in float32, so the forward and ``generate``
paths are unchanged. CPU only; the quantised model cannot be trained or saved as a
``save_pretrained`` folder.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .adapters import merge_adapters


def quantize_int8(model: nn.Module) -> nn.Module:
    """``model`` (on the CPU, in eval mode) with its Linear layers dynamically quantised to int8, in place."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on the CPU only")
    merge_adapters(model)  # quantize_dynamic swaps exact nn.Linear types: an adapted layer would stay float32
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager API still works here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
