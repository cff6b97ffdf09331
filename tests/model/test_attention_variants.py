"""Attention variants of the seed: cosine and RBF scores, pad-score scaling, curiosity attention."""

import math

import pytest
import torch
import torch.nn.functional as F

from echoasr.model.attention_variants import PAD_SCORE_SCALE, Curiosity, ScoreFunction
from echoasr.model.layers import causal_bias, padding_bias


def qkv(batch=2, heads=3, queries=5, keys=7, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=generator) for n in (queries, keys, keys)]


def padding_mask(lengths, keys):
    return padding_bias(torch.arange(keys)[None] < torch.tensor(lengths)[:, None], torch.float32)


def test_cosine_scores_with_learned_temperature():
    q, k, v = qkv()
    scores = ScoreFunction("cosine", heads=3, head_dim=8, cosine_temperature=5.0)
    with torch.no_grad():
        scores.log_temperature.copy_(torch.log(torch.tensor([2.0, 5.0, 11.0])))
    mask = padding_mask([7, 4], 7)
    cosine = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
    temperature = torch.tensor([2.0, 5.0, 11.0])[:, None, None]
    expected = torch.softmax(temperature * cosine + mask, dim=-1) @ v
    torch.testing.assert_close(scores(q, k, v, mask, False, 0.0), expected)
    # Invariant to the scale of q and k (a rotary radius has no effect under cosine scores).
    torch.testing.assert_close(scores(3 * q, 0.5 * k, v, mask, False, 0.0), expected)


def seed_rbf_scores(q, k, dims, heads, rbf_sigma=1.0, rbf_ratio=0.3):
    """The seed's `MultiheadA.rbf_scores`, called as it did on q * scale and k * scale."""
    scale = (dims // heads) ** -0.25
    q, k = q * scale, k * scale
    dot_scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    q_norm = q.pow(2).sum(dim=-1, keepdim=True)
    k_norm = k.pow(2).sum(dim=-1, keepdim=True)
    qk = torch.matmul(q, k.transpose(-1, -2))
    dist_sq = q_norm + k_norm.transpose(-1, -2) - 2 * qk
    rbf = torch.exp(-dist_sq / (2 * rbf_sigma**2))
    return (1 - rbf_ratio) * dot_scores + rbf_ratio * rbf


def test_rbf_scores_match_the_seed_formula_except_its_double_scaling():
    q, k, v = qkv()
    scores = ScoreFunction("rbf", heads=3, head_dim=8, rbf_ratio=0.3, rbf_sigma=1.0)
    mask = padding_mask([7, 3], 7)
    ours = scores._rbf_scores(q, k)
    # The seed scaled its dot product by d^-0.25 once more after scaling q and k (so d^-0.75 in
    # all); ours is the usual 1/sqrt(d). The RBF part is the seed's exactly.
    dot = q @ k.transpose(-1, -2) / math.sqrt(8)
    seed = seed_rbf_scores(q, k, dims=24, heads=3)
    seed_dot = (q @ k.transpose(-1, -2)) * 8**-0.75
    torch.testing.assert_close(ours - 0.7 * dot, seed - 0.7 * seed_dot)
    expected = torch.softmax(ours + mask, dim=-1) @ v
    torch.testing.assert_close(scores(q, k, v, mask, False, 0.0), expected)


def test_rbf_ratio_zero_is_dot_product_attention():
    q, k, v = qkv()
    mask = padding_mask([7, 2], 7)
    out = ScoreFunction("rbf", heads=3, head_dim=8, rbf_ratio=0.0)(q, k, v, mask, False, 0.0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_explicit_scores_respect_is_causal():
    q, k, v = qkv(queries=6, keys=6)
    out = ScoreFunction("rbf", heads=3, head_dim=8, rbf_ratio=0.0)(q, k, v, None, True, 0.0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_pad_scale_acts_only_where_the_mask_hides_keys():
    q, k, v = qkv(queries=6, keys=6)
    mask = causal_bias(torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool), torch.float32)
    scaled = ScoreFunction("dot", heads=3, head_dim=8, pad_scale=True)(q, k, v, mask, False, 0.0)
    torch.testing.assert_close(scaled, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert 0 < PAD_SCORE_SCALE <= 1e-6  # the seed's factor where its clamp held it


def test_curiosity_mix_is_per_head():
    curiosity = Curiosity(12, 3)
    main, aux = torch.randn(2, 2, 3, 4, 4).unbind(0)
    torch.testing.assert_close(curiosity.mix(main, aux), 0.5 * (main + aux))  # gate starts at sigmoid(0)
    with torch.no_grad():
        curiosity.gate.copy_(torch.tensor([-60.0, 0.0, 60.0]))
    mixed = curiosity.mix(main, aux)
    torch.testing.assert_close(mixed[:, 0], main[:, 0])
    torch.testing.assert_close(mixed[:, 2], aux[:, 2])


SETUPS = {
    "cosine": dict(attention_score="cosine"),
    "rbf": dict(attention_score="rbf", attention_rbf_ratio=0.5),
    "pad_scale": dict(attention_pad_scale=True),
    "curiosity": dict(attention_curiosity=True),
    "all": dict(attention_score="rbf", attention_pad_scale=True, attention_curiosity=True),
}


@pytest.mark.parametrize("name", list(SETUPS))
def test_variant_padding_invariance(echo, name):
    model = echo.tiny_model(initializer_range=0.3, features=["mel", "f0"], pitch_bias=True, rotary_radius="bounded", **SETUPS[name])
    echo.assert_batch_equals_examples(model)


@pytest.mark.parametrize("name", list(SETUPS))
@pytest.mark.parametrize("with_mask", [False, True])
def test_variant_keeps_decoder_causal(echo, name, with_mask):
    echo.assert_decoder_causal(echo.tiny_model(**SETUPS[name]), with_mask)


@pytest.mark.parametrize("name", ["cosine", "rbf", "curiosity", "all"])
def test_variant_cached_equals_uncached_decoding(echo, name):
    echo.assert_cached_equals_uncached(**SETUPS[name])


def test_gradients_reach_variant_parameters(echo):
    cosine = echo.tiny_model(**SETUPS["cosine"])
    echo.assert_gradients_reach(
        cosine,
        {
            "encoder temperature": cosine.encoder.layers[0].self_attn.scores.log_temperature,
            "decoder self temperature": cosine.decoder.layers[0].self_attn.scores.log_temperature,
            "cross temperature": cosine.decoder.layers[0].cross_attn.scores.log_temperature,
        },
    )
    curious = echo.tiny_model(**SETUPS["curiosity"])
    attention = curious.decoder.layers[0].self_attn
    echo.assert_gradients_reach(curious, {"gate": attention.curiosity.gate, "aux kv": attention.curiosity.kv.weight})


def with_weights_of(echo, reference, **options):
    model = echo.tiny_model(**options)
    missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected
    return model, missing


def logits_of(model, echo):
    features, lengths = echo.make_features(model.config, [16, 11])
    labels = echo.make_labels([[5, 6, 7], [8]])
    with torch.no_grad():
        return model(features=features, feature_lengths=lengths, labels=labels).logits


def test_pad_scale_is_the_plain_model_on_valid_positions(echo):
    """The seed's pad-score scaling, on the real mask, changes nothing: the mask already removes
    those keys (the finding the option documents)."""
    plain = echo.tiny_model(initializer_range=0.3)
    scaled, missing = with_weights_of(echo, plain, initializer_range=0.3, attention_pad_scale=True)
    assert not missing
    torch.testing.assert_close(logits_of(scaled, echo), logits_of(plain, echo), rtol=1e-5, atol=1e-5)


def test_closed_curiosity_gate_is_plain_self_attention(echo):
    plain = echo.tiny_model(initializer_range=0.3)
    curious, missing = with_weights_of(echo, plain, initializer_range=0.3, attention_curiosity=True)
    assert all("curiosity" in name for name in missing)
    with torch.no_grad():
        curious.decoder.layers[0].self_attn.curiosity.gate.fill_(-60.0)
    torch.testing.assert_close(logits_of(curious, echo), logits_of(plain, echo))
    with torch.no_grad():
        curious.decoder.layers[0].self_attn.curiosity.gate.fill_(0.0)
    assert not torch.allclose(logits_of(curious, echo), logits_of(plain, echo))


@pytest.mark.parametrize("score", ["cosine", "rbf"])
def test_scores_change_the_model(echo, score):
    plain = echo.tiny_model(initializer_range=0.3)
    variant, _ = with_weights_of(echo, plain, initializer_range=0.3, attention_score=score)
    assert not torch.allclose(logits_of(variant, echo), logits_of(plain, echo))
