"""The seed's decoder layouts: blended self/cross layers and the modal joint text/audio layers."""

import pytest
import torch


SETUPS = {
    "blended": dict(decoder_layout="blended"),
    "modal": dict(modal_layers=2),
    "both": dict(decoder_layout="blended", modal_layers=1, decoder_layers=2),
    "modal+variants": dict(modal_layers=1, attention_score="rbf", attention_curiosity=True, residual_gate="t_gate"),
}


def logits(model, echo, lengths=(16, 11), sequences=([5, 6, 7], [8])):
    features, lengths_t = echo.make_features(model.config, list(lengths))
    with torch.no_grad():
        return model(features=features, feature_lengths=lengths_t, labels=echo.make_labels(list(sequences))).logits


def test_blended_layout_interpolates_between_self_and_cross_states(echo):
    sequential = echo.tiny_model(initializer_range=0.3)
    blended = echo.tiny_model(initializer_range=0.3, decoder_layout="blended")
    missing, unexpected = blended.load_state_dict(sequential.state_dict(), strict=False)
    assert missing == ["decoder.layers.0.blend.beta"] and not unexpected
    assert blended.decoder.layers[0].blend.beta.item() == 0.5  # the seed's initial blend
    with torch.no_grad():
        blended.decoder.layers[0].blend.beta.fill_(60.0)  # all weight on the cross + ffn state
    torch.testing.assert_close(logits(blended, echo), logits(sequential, echo))
    with torch.no_grad():
        blended.decoder.layers[0].blend.beta.fill_(0.0)
    assert not torch.allclose(logits(blended, echo), logits(sequential, echo))


def test_blended_layer_formula(echo):
    model = echo.tiny_model(initializer_range=0.3, decoder_layout="blended")
    layer = model.decoder.layers[0]
    features, lengths = echo.make_features(model.config, [12])
    encoder = model.encode(features, lengths)
    memory = model.decoder.memory(encoder)
    x = torch.randn(1, 4, 32)
    context = model.decoder._context(4, x.device, mask=None, is_causal=True)
    with torch.no_grad():
        out = layer(x, context, memory.cross[0], memory.cross_masks[0])
        h = x + layer.self_attn(layer.self_norm(x), context)
        c = h + layer.cross_attn(layer.cross_norm(h), *memory.cross[0], memory.cross_masks[0])
        c = c + layer.ffn(layer.ffn_norm(c))
        a = torch.sigmoid(torch.tensor(0.5))
        torch.testing.assert_close(out, a * c + (1 - a) * h)


@pytest.mark.parametrize("name", list(SETUPS))
@pytest.mark.parametrize("with_mask", [False, True])
def test_layout_is_causal(echo, name, with_mask):
    echo.assert_decoder_causal(echo.tiny_model(initializer_range=0.3, **SETUPS[name]), with_mask)


@pytest.mark.parametrize("name", list(SETUPS))
def test_layout_padding_invariance(echo, name):
    model = echo.tiny_model(initializer_range=0.3, features=["mel", "f0"], pitch_bias=True, **SETUPS[name])
    echo.assert_batch_equals_examples(model)


def test_modal_text_padding_with_attention_mask(echo):
    """Padded text tokens (masked by decoder_attention_mask) never reach valid positions."""
    model = echo.tiny_model(initializer_range=0.3, modal_layers=1)
    features, lengths = echo.make_features(model.config, [18, 18])
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        batched = model(features=features, feature_lengths=lengths, decoder_input_ids=tokens, decoder_attention_mask=mask).logits
        changed = tokens.clone()
        changed[1, 3:] = 13  # other padding content
        again = model(features=features, feature_lengths=lengths, decoder_input_ids=changed, decoder_attention_mask=mask).logits
        alone = model(features=echo.slice_example(features, 1, 18), feature_lengths=lengths[1:], decoder_input_ids=tokens[1:, :3]).logits
    torch.testing.assert_close(batched[1, :3], again[1, :3])
    torch.testing.assert_close(batched[1, :3], alone[0], rtol=1e-4, atol=1e-5)


def test_modal_text_attends_to_the_audio(echo):
    """Other audio, other text outputs (with sequential layers removed from the path: the only
    decoder layer's cross-attention output is zeroed, so audio reaches text through the modal layer)."""
    model = echo.tiny_model(initializer_range=0.3, modal_layers=1)
    with torch.no_grad():
        model.decoder.layers[0].cross_attn.out.weight.zero_()
    features, lengths = echo.make_features(model.config, [14])
    other, _ = echo.make_features(model.config, [14], seed=5)
    tokens = torch.tensor([[1, 5, 6]])
    with torch.no_grad():
        a = model(features=features, feature_lengths=lengths, decoder_input_ids=tokens).logits
        b = model(features=other, feature_lengths=lengths, decoder_input_ids=tokens).logits
        model.decoder.modal_layers[0].blend.beta.fill_(60.0)  # all weight on the layer's input
        c = model(features=features, feature_lengths=lengths, decoder_input_ids=tokens).logits
        d = model(features=other, feature_lengths=lengths, decoder_input_ids=tokens).logits
    assert not torch.allclose(a, b)
    torch.testing.assert_close(c, d)


@pytest.mark.parametrize("name", list(SETUPS))
def test_layout_cached_equals_uncached_decoding(echo, name):
    echo.assert_cached_equals_uncached(features=["mel", "f0"], pitch_bias=True, **SETUPS[name])


def test_gradients_reach_layout_parameters(echo):
    model = echo.tiny_model(**SETUPS["both"])
    modal = model.decoder.modal_layers[0]
    echo.assert_gradients_reach(
        model,
        {
            "layer 0 blend": model.decoder.layers[0].blend.beta,
            "layer 1 blend": model.decoder.layers[1].blend.beta,
            "modal blend": modal.blend.beta,
            "modal attention": modal.attn.qkv.weight,
            "modal attention out": modal.attn.out.weight,
            "modal ffn": modal.ffn.up.weight,
        },
    )
