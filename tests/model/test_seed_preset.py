"""The `seed` preset and the configuration of the seed's components (defaults, validation, round trip)."""

import pytest
import torch

from echoasr.model import EchoConfig, EchoForConditionalGeneration, preset_config

EVERY_OPTION = dict(
    features=["mel", "f0", "phase"],
    feature_layers=1,
    fusion="c_gate",
    rotary_axial_bands=2,
    rotary_theta_mode="phase",
    rotary_radius="bounded",
    pitch_bias=True,
    residual_blend=True,
    residual_gate="m_gate",
    residual_gate_memory=7,
    decoder_layout="blended",
    modal_layers=1,
    attention_score="cosine",
    attention_cosine_temperature=4.0,
    attention_curiosity=True,
    attention_pad_scale=True,
    decoder_rotary=False,
    decoder_absolute_positions="learned",
)

SEED_SIZES = dict(vocab_size=24, d_model=32, ffn_dim=64, feature_layers=1, decoder_layers=1, modal_layers=1, n_mels=8)


def test_defaults_are_the_plain_model():
    config = EchoConfig()
    assert (config.residual_blend, config.residual_gate, config.fusion) == (False, "none", "sum")
    assert (config.decoder_layout, config.modal_layers) == ("sequential", 0)
    assert (config.attention_score, config.attention_curiosity, config.attention_pad_scale) == ("dot", False, False)
    assert (config.rotary_axial_bands, config.decoder_rotary, config.decoder_absolute_positions) == (0, True, "none")
    model = EchoForConditionalGeneration(EchoConfig(vocab_size=16, d_model=32, encoder_layers=1, decoder_layers=1))
    assert model.encoder.layers[0].self_attn.scores is None and model.decoder.layers[0].blend is None
    assert not any("gate" in name or "blend" in name for name, _ in model.named_parameters())


def test_seed_preset_assembles_the_original_design():
    config = preset_config("seed", vocab_size=300)
    assert config.vocab_size == 300
    assert config.rotary_frequencies == "mel" and config.rotary_theta == 10000.0 and config.rotary_learnable_theta
    assert config.rotary_theta_mode == "additive" and config.rotary_radius == "bounded" and config.pitch_bias
    assert config.features == ["mel", "f0"] and config.fusion == "c_gate"
    assert config.residual_blend and config.residual_gate == "t_gate"
    assert config.decoder_layout == "blended" and config.modal_layers == config.decoder_layers
    assert config.decoder_absolute_positions == "learned" and config.decoder_rotary
    with pytest.raises(ValueError, match="unknown model preset"):
        preset_config("seeed")


def tiny_seed(seed=0, **overrides):
    torch.manual_seed(seed)
    return EchoForConditionalGeneration(preset_config("seed", **{**SEED_SIZES, **overrides})).eval()


def test_seed_preset_trains_and_every_parameter_learns(echo):
    model = tiny_seed().train()
    features, lengths = echo.make_features(model.config, [20, 13])
    out = model(features=features, feature_lengths=lengths, labels=echo.make_labels([[5, 6, 7], [8]]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not silent
    # Zero-initialised pitch bias scales give their references no gradient at the first step.
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert all(n.endswith("pitch_bias.reference") for n in zero)


def test_seed_preset_padding_causality_and_cache(echo):
    # Pitch-bias scales start at 0 in the preset: make them (and every learned pitch weight) nonzero.
    padded = tiny_seed(initializer_range=0.3)
    assert echo.activate_pitch_mechanisms(padded) > 0
    echo.assert_batch_equals_examples(padded)
    causal = tiny_seed(initializer_range=0.3)
    echo.activate_pitch_mechanisms(causal)
    echo.assert_decoder_causal(causal, with_mask=True)
    from echoasr.model.presets import SEED_OPTIONS

    echo.assert_cached_equals_uncached(**{**SEED_OPTIONS, **SEED_SIZES, "d_model": 32, "ffn_dim": 64})


def test_every_option_round_trips_through_save_and_load(echo, tmp_path):
    model = echo.tiny_model(**EVERY_OPTION)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    features, lengths = echo.make_features(model.config, [14, 9])
    labels = echo.make_labels([[5, 6], [7]])
    before = model(features=features, feature_lengths=lengths, labels=labels)
    model.save_pretrained(tmp_path)
    loaded = EchoForConditionalGeneration.from_pretrained(tmp_path).eval()
    for name, value in EVERY_OPTION.items():
        assert getattr(loaded.config, name) == value, name
    after = loaded(features=features, feature_lengths=lengths, labels=labels)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    assert "seed components:" in loaded.describe()
    counts = loaded.parameter_counts()
    assert sum(counts.values()) == sum(p.numel() for p in loaded.parameters())


@pytest.mark.parametrize(
    "option, value",
    [
        ("residual_gate", "sigmoid"),
        ("residual_gate_types", 0),
        ("residual_gate_memory", 0),
        ("fusion", "cgate"),
        ("decoder_layout", "parallel"),
        ("modal_layers", -1),
        ("attention_score", "euclid"),
        ("attention_cosine_temperature", 0.0),
        ("attention_rbf_ratio", 1.5),
        ("attention_rbf_sigma", -1.0),
        ("decoder_absolute_positions", "rope"),
        ("rotary_axial_bands", -2),
    ],
)
def test_bad_values_are_rejected_by_name(echo, option, value):
    with pytest.raises(ValueError, match=option):
        echo.tiny_config(**{option: value})


@pytest.mark.parametrize("typo", ["residual_gates", "attention_scores", "decoder_positions", "modal_layer"])
def test_unknown_seed_options_are_rejected(echo, typo):
    with pytest.raises(ValueError, match="unknown option"):
        echo.tiny_config(**{typo: 1})
