"""Dynamic int8 quantisation: every Linear layer is replaced, and the quantised model's forward
and generate paths (pitch-aware rotary attention, pitch bias, KV cache, joint CTC search) give
outputs close to the float model's."""

import copy

import pytest
import torch
from torch import nn

from echoasr.model import quantize_int8

from .conftest import make_features, make_labels, tiny_model

PITCH_MODEL = dict(features=["mel", "f0"], rotary_theta_mode="phase", rotary_radius="bounded", pitch_bias=True,
                   d_model=64, ffn_dim=128, encoder_layers=2, decoder_layers=2)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def test_int8_logits_follow_float32():
    model = tiny_model(**PITCH_MODEL)
    quantized = quantize_int8(copy.deepcopy(model))
    assert not any(type(m) is nn.Linear for m in quantized.modules())  # the mechanism is active
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules()) >= 10
    features, lengths = make_features(model.config, [40, 27])
    labels = make_labels([[5, 6, 7, 8], [9, 10]])
    with torch.inference_mode():
        exact = model(features=features, feature_lengths=lengths, labels=labels)
        approximate = quantized(features=features, feature_lengths=lengths, labels=labels)
    assert not torch.equal(exact.logits, approximate.logits)  # really int8 arithmetic
    assert correlation(exact.logits, approximate.logits) > 0.99
    assert correlation(exact.ctc_logits, approximate.ctc_logits) > 0.99


@pytest.mark.parametrize("beams", [1, 3])
def test_int8_generate_runs_with_the_kv_cache(beams):
    model = quantize_int8(tiny_model(**PITCH_MODEL))
    features, lengths = make_features(model.config, [40, 27])
    with torch.inference_mode():
        cached = model.generate(features=features, feature_lengths=lengths, num_beams=beams, ctc_weight=0.3,
                                max_new_tokens=6)
        uncached = model.generate(features=features, feature_lengths=lengths, num_beams=beams, ctc_weight=0.3,
                                  max_new_tokens=6, use_cache=False)
    assert cached.shape[0] == 2 and 1 <= cached.shape[1] <= 6
    assert int(cached.max()) < model.config.vocab_size
    torch.testing.assert_close(cached, uncached)

