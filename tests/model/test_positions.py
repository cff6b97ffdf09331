"""Decoder absolute positions and the axial 2-D rotary of the band-token mel stem."""

import math

import pytest
import torch

from echoasr.model.encoder import BandStem
from echoasr.model.positions import AXIAL_BAND_THETA, axial_tables, sinusoids
from echoasr.model.rotary import apply_rotary, rotary_frequencies

# ------------------------------------------------------------------ decoder positions


def test_sinusoid_table():
    table = sinusoids(torch.arange(7), 6)
    for t in range(7):
        for i in range(3):
            w = 10000.0 ** (-2 * i / 6)
            assert table[t, 2 * i].item() == pytest.approx(math.sin(t * w), abs=1e-6)
            assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(t * w), abs=1e-6)


POSITION_SETUPS = {
    "sinusoidal": dict(decoder_absolute_positions="sinusoidal"),
    "learned": dict(decoder_absolute_positions="learned"),
    "learned, no rope": dict(decoder_absolute_positions="learned", decoder_rotary=False),
    "no positions": dict(decoder_rotary=False),
}


def test_learned_table_starts_as_the_sinusoids(echo):
    """The seed's learned table was `torch.empty`; ours starts as the fixed table, so both options
    give the same model at initialisation."""
    fixed = echo.tiny_model(decoder_absolute_positions="sinusoidal")
    learned = echo.tiny_model(decoder_absolute_positions="learned")
    torch.testing.assert_close(learned.decoder.positions.table.detach(), sinusoids(torch.arange(513), 32))
    assert learned.load_state_dict(fixed.state_dict(), strict=False).missing_keys == ["decoder.positions.table"]
    features, lengths = echo.make_features(fixed.config, [12])
    labels = echo.make_labels([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(
            learned(features=features, feature_lengths=lengths, labels=labels).logits,
            fixed(features=features, feature_lengths=lengths, labels=labels).logits,
        )


def test_decoder_input_scaled_and_shifted(echo):
    model = echo.tiny_model(decoder_absolute_positions="sinusoidal")
    tokens = torch.tensor([[1, 5, 6]])
    expected = model.decoder.embed_tokens(tokens) * math.sqrt(32) + sinusoids(torch.arange(3), 32)
    torch.testing.assert_close(model.decoder.embed(tokens), expected)
    torch.testing.assert_close(model.decoder.embed(tokens[:, 2:], offset=2), expected[:, 2:])


@pytest.mark.parametrize("name", list(POSITION_SETUPS))
def test_positions_causal_and_cached(echo, name):
    echo.assert_decoder_causal(echo.tiny_model(initializer_range=0.3, **POSITION_SETUPS[name]))
    echo.assert_cached_equals_uncached(**POSITION_SETUPS[name])


def test_positions_padding_invariance(echo):
    echo.assert_batch_equals_examples(echo.tiny_model(initializer_range=0.3, decoder_absolute_positions="learned"))


def test_gradients_reach_learned_positions(echo):
    model = echo.tiny_model(decoder_absolute_positions="learned")
    echo.assert_gradients_reach(model, {"table": model.decoder.positions.table})


def test_too_long_decoder_input_is_a_clear_error(echo):
    model = echo.tiny_model(decoder_absolute_positions="sinusoidal", max_target_positions=4)
    features, lengths = echo.make_features(model.config, [12])
    with pytest.raises(ValueError, match="max_target_positions"):
        model(features=features, feature_lengths=lengths, decoder_input_ids=torch.ones(1, 6, dtype=torch.long))


# ---------------------------------------------------------------------- axial rotary


def test_axial_tables_split_time_and_band():
    frames, bands, pairs = 5, 3, 4
    time_angle = torch.arange(frames, dtype=torch.float32)[:, None] * rotary_frequencies("inverse", 2 * pairs, torch.tensor(10000.0))
    tables = axial_tables(time_angle[None, None], None, bands)
    assert tables.cos.shape == (1, 1, frames * bands, 2 * pairs)
    band_w = rotary_frequencies("inverse", 2 * pairs, torch.tensor(AXIAL_BAND_THETA))
    for t in range(frames):
        for f in range(bands):
            token = t * bands + f  # time-major grid
            torch.testing.assert_close(tables.angle[0, 0, token, :pairs], time_angle[t])
            torch.testing.assert_close(tables.angle[0, 0, token, pairs:], f * band_w)


def test_axial_scores_depend_on_time_and_band_offsets_only():
    """Rotated q.k is a function of (delta t, delta band): shifting both tokens by the same
    (a, b) on the grid keeps every score."""
    frames, bands, pairs = 9, 4, 4
    time_angle = torch.arange(frames, dtype=torch.float32)[:, None] * rotary_frequencies("inverse", 2 * pairs, torch.tensor(10000.0))
    tables = axial_tables(time_angle[None, None], None, bands)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4 * pairs, generator=generator)

    def score(t1, f1, t2, f2):
        def rotated(x, t, f):
            token = t * bands + f
            return apply_rotary(x[None], tables.cos[0, 0, token : token + 1], tables.sin[0, 0, token : token + 1])[0]

        return (rotated(q, t1, f1) * rotated(k, t2, f2)).sum()

    for (t1, f1, t2, f2), (a, b) in [((0, 0, 3, 2), (4, 1)), ((2, 3, 1, 0), (5, 0)), ((1, 1, 1, 2), (0, 1))]:
        torch.testing.assert_close(score(t1, f1, t2, f2), score(t1 + a, f1 + b, t2 + a, f2 + b))
    assert not torch.allclose(score(0, 0, 3, 2), score(0, 0, 3, 1))  # the band offset matters


def test_band_stem_runs_one_stem_per_band():
    torch.manual_seed(0)
    stem = BandStem(n_mels=8, bands=4, dim=6, subsampling=2)
    mel = torch.randn(2, 8, 11)
    lengths = torch.tensor([11, 7])
    out, out_lengths = stem(mel, lengths)
    assert out.shape == (2, 6, 4, 6) and out_lengths.tolist() == [6, 4]
    for f in range(4):
        alone, _ = stem.stem(mel[:, 2 * f : 2 * f + 2], lengths)
        torch.testing.assert_close(out[:, :, f], alone)


AXIAL = dict(rotary_axial_bands=4, feature_layers=1, features=["mel", "f0"])


@pytest.mark.parametrize("pitch", [{}, dict(rotary_theta_mode="phase", rotary_radius="learned", pitch_bias=True)])
def test_axial_padding_invariance(echo, pitch):
    echo.assert_batch_equals_examples(echo.tiny_model(initializer_range=0.3, **AXIAL, **pitch))


def test_axial_encoder_shapes_and_gradients(echo):
    model = echo.tiny_model(rotary_learnable_theta=True, **AXIAL)
    features, lengths = echo.make_features(model.config, [15, 8])
    encoder = model.encode(features, lengths)
    assert encoder.hidden.shape == (2, 8, 32) and encoder.lengths.tolist() == [8, 4]
    echo.assert_gradients_reach(
        model,
        {
            "band pool": model.encoder.band_pool.weight,
            "band stem": model.encoder.stems["mel"].stem.convs[0].weight,
            "time theta": model.encoder.axial_rotary.log_theta,
        },
    )


def test_axial_changes_the_model_only_through_band_tokens(echo):
    plain = echo.tiny_model(initializer_range=0.3, feature_layers=1, features=["mel", "f0"])
    axial = echo.tiny_model(initializer_range=0.3, **AXIAL)
    features, lengths = echo.make_features(plain.config, [12])
    with torch.no_grad():
        a = plain.encode(features, lengths).hidden
        b = axial.encode(features, lengths).hidden
    assert a.shape == b.shape and not torch.allclose(a, b)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(rotary_axial_bands=4, feature_layers=0), "feature_layers"),
        (dict(rotary_axial_bands=4, feature_layers=1, features=["f0"]), "mel"),
        (dict(rotary_axial_bands=3, feature_layers=1), "divisible"),
        (dict(rotary_axial_bands=2, feature_layers=1, d_model=24, attention_heads=4), "divisible by 4"),
    ],
)
def test_axial_configuration_errors(echo, options, message):
    with pytest.raises(ValueError, match=message):
        echo.tiny_config(**options)
