import pytest
import torch

from echoasr.model.encoder import ConvStem

PITCH_SETUPS = [
    dict(rotary_theta_mode="phase", rotary_radius="bounded", pitch_bias=True),
    dict(rotary_theta_mode="additive", rotary_radius="raw", pitch_bias=True, rotary_frequencies="mel"),
    dict(rotary_theta_mode="none", rotary_radius="learned", pitch_bias=True, rotary_learnable_theta=True),
]


@pytest.mark.parametrize("subsampling", [1, 2, 4])
def test_stem_lengths_are_exact(subsampling):
    stem = ConvStem(3, 8, subsampling)
    for length in range(1, 23):
        out, out_length = stem(torch.randn(1, 3, length), torch.tensor([length]))
        assert out.shape[1] == out_length.item() == -(-length // subsampling)


@pytest.mark.parametrize("setup", PITCH_SETUPS)
@pytest.mark.parametrize("subsampling", [1, 4])
def test_encoder_padding_invariance_all_features(echo, setup, subsampling):
    # float64: the raw radius (~f0^2 ~ 4e4 on scores) amplifies float32 rounding past any useful
    # tolerance, while a real leak of padding would show at any precision.
    model = echo.tiny_model(
        features=echo.ALL_FEATURES, subsampling=subsampling, feature_layers=1, encoder_layers=2, fusion="concat", **setup
    ).double()
    with torch.no_grad():  # a nonzero bias so that its masking is exercised
        for module in model.modules():
            if hasattr(module, "scale") and isinstance(module.scale, torch.nn.Parameter):
                module.scale.fill_(0.7)
    lengths = [23, 14, 9, 5]
    features, lengths_t = echo.make_features(model.config, lengths, pad_value=7.0)
    features = {name: tensor.double() for name, tensor in features.items()}
    batched = model.encode(features, lengths_t)
    for i, length in enumerate(lengths):
        alone = model.encode(echo.slice_example(features, i, length), torch.tensor([length]))
        n = alone.lengths.item()
        assert batched.lengths[i].item() == n
        torch.testing.assert_close(batched.hidden[i, :n], alone.hidden[0], rtol=1e-6, atol=1e-7)
        assert torch.all(batched.hidden[i, n:] == 0)


def test_encoder_padding_invariance_float32(echo):
    model = echo.tiny_model(features=["mel", "f0"], rotary_theta_mode="phase", rotary_radius="bounded", pitch_bias=True)
    lengths = [19, 11, 6]
    features, lengths_t = echo.make_features(model.config, lengths, pad_value=-3.0)
    batched = model.encode(features, lengths_t)
    for i, length in enumerate(lengths):
        alone = model.encode(echo.slice_example(features, i, length), torch.tensor([length]))
        torch.testing.assert_close(batched.hidden[i, : alone.lengths.item()], alone.hidden[0], rtol=1e-4, atol=1e-5)


def test_fusion_modes_run_and_differ(echo):
    features, lengths = echo.make_features(echo.tiny_config(), [12, 8])
    outputs = {}
    for fusion in ("sum", "gated", "concat", "c_gate"):
        model = echo.tiny_model(features=["mel", "harmonic", "aperiodic"], fusion=fusion)
        out = model.encode(features, lengths).hidden
        assert out.shape == (2, 6, 32) and torch.isfinite(out).all()
        outputs[fusion] = out
    # Same seed and stems: only the fusion differs, and every pair of modes gives other encodings.
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (outputs[a] - outputs[b]).abs().max() > 1e-3, (a, b)
    # "sum" is exactly the sum of the per-feature stems (no layers before fusion).
    model = echo.tiny_model(features=["mel", "harmonic", "aperiodic"], fusion="sum", encoder_layers=0)
    from echoasr.model.encoder import feature_inputs

    streams = [model.encoder.stems[name](feature_inputs(name, features, lengths), lengths)[0]
               for name in ("mel", "harmonic", "aperiodic")]
    expected = model.encoder.norm(sum(streams))
    valid = torch.arange(6)[None] < torch.tensor([6, 4])[:, None]
    torch.testing.assert_close(model.encode(features, lengths).hidden, torch.where(valid[..., None], expected, 0.0))


def test_padding_content_is_ignored_even_nan(echo):
    # Every feature and pitch mechanism on (bias scales and learned radius nonzero); the padding
    # holds NaN, which any mask applied by multiplication would leak (NaN * 0 = NaN).
    options = dict(features=echo.ALL_FEATURES, rotary_theta_mode="phase", rotary_radius="learned", pitch_bias=True)
    model = echo.tiny_model(**options)
    assert echo.activate_pitch_mechanisms(model) > 0
    features, lengths = echo.make_features(model.config, [10, 6])
    clean = model.encode(features, lengths).hidden
    dirty_features, _ = echo.make_features(model.config, [10, 6], pad_value=float("nan"))
    assert torch.isnan(dirty_features["mel"]).any()
    dirty = model.encode(dirty_features, lengths).hidden
    torch.testing.assert_close(clean, dirty)
    assert not torch.allclose(clean, echo.tiny_model(active=False, **options).encode(features, lengths).hidden)


def test_missing_or_malformed_inputs_are_reported(echo):
    model = echo.tiny_model(features=["mel"], rotary_radius="bounded")
    features, lengths = echo.make_features(model.config, [8])
    with pytest.raises(ValueError, match="missing"):
        model.encode({"mel": features["mel"]}, lengths)  # pitch is on: f0/voiced required
    with pytest.raises(ValueError, match="channels"):
        model.encode({**features, "mel": torch.randn(1, 5, 8)}, lengths)
    with pytest.raises(ValueError, match="feature_lengths"):
        model.encode(features, torch.tensor([9]))


def test_f0_only_encoder_reads_f0_and_voicing(echo):
    model = echo.tiny_model(features=["f0"])
    features, lengths = echo.make_features(model.config, [12])
    base = model.encode(features, lengths).hidden
    flipped = dict(features, voiced=1.0 - features["voiced"])
    assert not torch.allclose(base, model.encode(flipped, lengths).hidden)
