"""Pitch mechanisms on a backbone (`pitch_zero_start`): at initialisation the model computes exactly
what the model without them computes, every zero scale still gets a gradient, and once the scales
move the output changes (the mechanisms are wired in, not dead)."""

from __future__ import annotations

import torch

from echoasr.model import EchoConfig, EchoForConditionalGeneration

from .conftest import make_features, make_labels

# A tiny Whisper-shaped configuration (the options echoasr.backbones.whisper sets for Whisper base).
WHISPER_LIKE = dict(
    vocab_size=40, d_model=32, encoder_layers=2, decoder_layers=2, attention_heads=4, ffn_dim=64, dropout=0.0,
    n_mels=8, subsampling=2, norm="layer", attention_bias=True, rotary_positions=False, decoder_rotary=False,
    encoder_absolute_positions="learned", max_source_positions=32, decoder_absolute_positions="learned",
    decoder_scale_embeddings=False, max_target_positions=20, ctc_weight=0.0, pad_token_id=36, bos_token_id=33,
    eos_token_id=32, decoder_start_token_id=33, decoder_prompt_ids=[33, 34, 35], decode_suppress_ids=[37, 38, 39],
    initializer_range=0.3,  # sharp attention, so that a rotation of q and k shows in the output
)
ALL_PITCH = dict(features=["mel", "f0"], rotary_positions=True, rotary_theta_mode="phase", rotary_radius="bounded",
                 pitch_bias=True, pitch_zero_start=True)
ZERO_SCALES = ("encoder.rotary.angle_scale", "encoder.rotary.radius_gain", "encoder.joins.f0.weight",
               "encoder.layers.0.self_attn.pitch_bias.scale", "decoder.layers.1.cross_attn.pitch_bias.scale")


def backbone_and_pitch_model():
    torch.manual_seed(0)
    backbone = EchoForConditionalGeneration(EchoConfig(**WHISPER_LIKE)).eval()
    pitch = EchoForConditionalGeneration(EchoConfig(**{**WHISPER_LIKE, **ALL_PITCH})).eval()
    missing, unexpected = pitch.load_state_dict(backbone.state_dict(), strict=False)
    assert not unexpected
    assert set(ZERO_SCALES) <= set(missing)
    return backbone, pitch


def test_pitch_model_at_initialisation_equals_the_backbone_on_a_padded_batch():
    backbone, pitch = backbone_and_pitch_model()
    features, lengths = make_features(pitch.config, [40, 27, 13])
    labels = make_labels([[3, 4, 5, 6], [7, 8], [9]], eos=32)
    with torch.no_grad():
        expected = backbone(features=features, feature_lengths=lengths, labels=labels)
        got = pitch(features=features, feature_lengths=lengths, labels=labels)
    assert (expected.logits - got.logits).abs().max().item() < 1e-5
    assert abs(expected.loss.item() - got.loss.item()) < 1e-6
    for name in ZERO_SCALES:
        assert pitch.get_parameter(name).abs().max().item() == 0.0


def test_every_zero_scale_gets_a_gradient_at_step_zero():
    _, pitch = backbone_and_pitch_model()
    pitch.train()
    features, lengths = make_features(pitch.config, [40, 27])
    loss = pitch(features=features, feature_lengths=lengths, labels=make_labels([[3, 4, 5], [6, 7]], eos=32)).loss
    loss.backward()
    for name in ZERO_SCALES:
        gradient = pitch.get_parameter(name).grad
        assert gradient is not None and gradient.abs().max().item() > 0, name


def test_moved_scales_change_the_output():
    backbone, pitch = backbone_and_pitch_model()
    features, lengths = make_features(pitch.config, [40])
    tokens = torch.tensor([[33, 34, 35, 3, 4]])
    with torch.no_grad():
        base = backbone(features=features, feature_lengths=lengths, decoder_input_ids=tokens).logits
        for name in ZERO_SCALES:
            parameter = pitch.get_parameter(name)
            # random, not constant: a constant join shifts every channel alike, which LayerNorm removes
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
            moved = pitch(features=features, feature_lengths=lengths, decoder_input_ids=tokens).logits
            assert (moved - base).abs().max().item() > 1e-4, name
            parameter.zero_()


def test_prompt_decoding_with_and_without_cache_agree_and_never_emit_suppressed_tokens():
    _, pitch = backbone_and_pitch_model()
    with torch.no_grad():
        for parameter in (pitch.get_parameter(name) for name in ZERO_SCALES):
            parameter.fill_(0.3)
    features, lengths = make_features(pitch.config, [40, 21])
    cached = pitch.generate(features, lengths, max_new_tokens=10, num_beams=3)
    uncached = pitch.generate(features, lengths, max_new_tokens=10, num_beams=3, use_cache=False)
    assert torch.equal(cached, uncached)
    assert not torch.isin(cached, torch.tensor([33, 34, 35, 37, 38, 39])).any()


def test_labels_follow_the_prompt():
    """The loss from labels equals the loss of logits computed on prompt + labels by hand."""
    backbone, _ = backbone_and_pitch_model()
    features, lengths = make_features(backbone.config, [30])
    labels = make_labels([[3, 4, 5]], eos=32)
    tokens = torch.tensor([[33, 34, 35, 3, 4, 5]])
    with torch.no_grad():
        from_labels = backbone(features=features, feature_lengths=lengths, labels=labels)
        by_hand = backbone(features=features, feature_lengths=lengths, decoder_input_ids=tokens).logits[:, 2:]
    torch.testing.assert_close(from_labels.logits, by_hand)
    expected = torch.nn.functional.cross_entropy(by_hand[0], labels[0])
    assert abs(from_labels.loss.item() - expected.item()) < 1e-6


def test_a_constant_f0_model_ignores_the_pitch_values_but_not_the_voicing():
    """`pitch_f0_source="constant"`: the parameter-matched control sees voicing, never f0 values; the
    same weights reading the measured f0 do react to them (the mechanisms are active)."""
    _, measured = backbone_and_pitch_model()
    with torch.no_grad():
        for name in ZERO_SCALES:
            parameter = measured.get_parameter(name)
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(5)))
    constant = EchoForConditionalGeneration(EchoConfig(**{**WHISPER_LIKE, **ALL_PITCH, "pitch_f0_source": "constant"}))
    constant.load_state_dict(measured.state_dict())
    constant.eval()
    features, lengths = make_features(measured.config, [40])
    other_f0 = dict(features, f0=torch.where(features["f0"] > 0, features["f0"].flip(-1).clamp_min(60.0) * 1.7, 0.0))
    other_voicing = dict(features, voiced=torch.zeros_like(features["voiced"]), f0=torch.zeros_like(features["f0"]))
    tokens = torch.tensor([[33, 34, 35, 3, 4]])

    def logits(model, inputs):
        with torch.no_grad():
            return model(features=inputs, feature_lengths=lengths, decoder_input_ids=tokens).logits

    assert (logits(measured, features) - logits(measured, other_f0)).abs().max().item() > 1e-4
    torch.testing.assert_close(logits(constant, features), logits(constant, other_f0), rtol=0, atol=1e-6)
    assert (logits(constant, features) - logits(constant, other_voicing)).abs().max().item() > 1e-4
