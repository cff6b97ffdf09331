import logging
import math

import pytest
import torch
from transformers.modeling_outputs import Seq2SeqLMOutput

from echoasr.model.modeling import ctc_targets, shift_right

PITCH_ON = dict(
    features=["mel", "f0", "phase"],
    rotary_theta_mode="phase",
    rotary_radius="learned",
    rotary_learnable_theta=True,
    pitch_bias=True,
)


def test_lazy_public_exports():
    import echoasr
    from echoasr.model import EchoConfig, EchoForConditionalGeneration

    assert echoasr.EchoConfig is EchoConfig
    assert echoasr.EchoForConditionalGeneration is EchoForConditionalGeneration


def test_forward_contract(echo):
    model = echo.tiny_model(**PITCH_ON)
    features, lengths = echo.make_features(model.config, [14, 9])
    labels = echo.make_labels([[5, 6, 7], [8]])
    out = model(features=features, feature_lengths=lengths, labels=labels)
    assert isinstance(out, Seq2SeqLMOutput)
    assert out.logits.shape == (2, 4, 16)
    assert out.ctc_logits.shape == (2, 7, 16) and out.encoder_lengths.tolist() == [7, 5]
    expected = 0.3 * out.ctc_loss + 0.7 * out.attention_loss
    torch.testing.assert_close(out.loss.detach(), expected)
    # Same logits when decoder inputs are given explicitly.
    decoder_input_ids = shift_right(labels, [1], 0)
    assert decoder_input_ids.tolist() == [[1, 5, 6, 7], [1, 8, 2, 0]]
    explicit = model(features=features, feature_lengths=lengths, decoder_input_ids=decoder_input_ids)
    torch.testing.assert_close(explicit.logits, out.logits)
    assert explicit.loss is None


def reference_cross_entropy(logits, labels, smoothing=0.0):
    """Token-mean cross-entropy written out: -(1 - e) log p(y) - e * mean_v log p(v)."""
    total, count = 0.0, 0
    for row, targets in zip(logits.double(), labels):
        for position, target in enumerate(targets.tolist()):
            if target == -100:
                continue
            log_p = row[position] - torch.logsumexp(row[position], dim=0)
            total += -(1 - smoothing) * log_p[target].item() - smoothing * log_p.mean().item()
            count += 1
    return total / count


def test_attention_loss_is_token_mean_cross_entropy(echo):
    model = echo.tiny_model(ctc_weight=0.0, label_smoothing=0.0)
    assert model.ctc_head is None
    features, lengths = echo.make_features(model.config, [10, 8])
    labels = echo.make_labels([[5, 6], [7, 8, 9]])
    out = model(features=features, feature_lengths=lengths, labels=labels)
    assert out.loss.item() == pytest.approx(reference_cross_entropy(out.logits, labels), rel=1e-5)
    smoothed = echo.tiny_model(ctc_weight=0.0, label_smoothing=0.2)
    smoothed_out = smoothed(features=features, feature_lengths=lengths, labels=labels)
    expected = reference_cross_entropy(smoothed_out.logits, labels, smoothing=0.2)
    assert smoothed_out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert abs(expected - reference_cross_entropy(smoothed_out.logits, labels)) > 1e-3


def test_ctc_targets_drop_eos_and_padding():
    labels = torch.tensor([[5, 6, 2, -100], [7, 2, -100, -100], [2, -100, -100, -100]])
    targets, lengths = ctc_targets(labels, eos_id=2, blank_id=0)
    assert lengths.tolist() == [2, 1, 0]
    assert targets[0, :2].tolist() == [5, 6] and targets[1, 0].item() == 7


def reference_ctc_nll(log_probs, target, blank=0):
    """-log P(target) by the textbook forward recursion over the blank-extended label sequence."""
    extended = [blank]
    for token in target:
        extended += [token, blank]
    alpha = [-math.inf] * len(extended)
    alpha[0] = log_probs[0, blank].item()
    if target:
        alpha[1] = log_probs[0, extended[1]].item()
    for t in range(1, log_probs.shape[0]):
        previous, alpha = alpha, [-math.inf] * len(extended)
        for s, token in enumerate(extended):
            paths = [previous[s]] + ([previous[s - 1]] if s >= 1 else [])
            if s >= 2 and token != blank and token != extended[s - 2]:
                paths.append(previous[s - 2])
            alpha[s] = torch.logsumexp(torch.tensor(paths, dtype=torch.float64), 0).item() + log_probs[t, token].item()
    ends = alpha[-1:] + (alpha[-2:-1] if target else [])
    return -torch.logsumexp(torch.tensor(ends, dtype=torch.float64), 0).item()


def test_ctc_loss_matches_a_reference_forward_recursion(echo):
    # ctc_weight 1: the loss is the CTC loss alone, mean over the batch of -log P / target length.
    model = echo.tiny_model(ctc_weight=1.0)
    features, lengths = echo.make_features(model.config, [12, 10])
    targets = [[5, 6, 6], [9]]  # a repeated label needs a blank between its two copies
    out = model(features=features, feature_lengths=lengths, labels=echo.make_labels(targets))
    log_probs = torch.log_softmax(out.ctc_logits.double(), -1)
    expected = sum(
        reference_ctc_nll(log_probs[i, : out.encoder_lengths[i]], target) / len(target) for i, target in enumerate(targets)
    ) / len(targets)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("with_mask", [False, True])
def test_decoder_is_causal(echo, with_mask):
    model = echo.tiny_model(**PITCH_ON)
    features, lengths = echo.make_features(model.config, [12])
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9]])
    mask = torch.ones_like(tokens) if with_mask else None
    base = model(features=features, feature_lengths=lengths, decoder_input_ids=tokens, decoder_attention_mask=mask).logits
    for t in range(tokens.shape[1] - 1):
        changed = tokens.clone()
        changed[0, t + 1 :] = 11
        logits = model(features=features, feature_lengths=lengths, decoder_input_ids=changed, decoder_attention_mask=mask).logits
        torch.testing.assert_close(logits[0, : t + 1], base[0, : t + 1])
        assert not torch.allclose(logits[0, t + 1 :], base[0, t + 1 :])


def test_batch_equals_examples_end_to_end(echo):
    model = echo.tiny_model(features=echo.ALL_FEATURES, subsampling=4, rotary_theta_mode="additive", rotary_radius="bounded", pitch_bias=True)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "scale") and isinstance(module.scale, torch.nn.Parameter):
                module.scale.fill_(0.5)
    lengths = [21, 13, 6]
    sequences = [[5, 6, 7, 8], [9, 10], [11]]
    features, lengths_t = echo.make_features(model.config, lengths, pad_value=2.0)
    labels = echo.make_labels(sequences)
    batched = model(features=features, feature_lengths=lengths_t, labels=labels)
    for i, (length, sequence) in enumerate(zip(lengths, sequences)):
        alone = model(
            features=echo.slice_example(features, i, length),
            feature_lengths=torch.tensor([length]),
            labels=echo.make_labels([sequence]),
        )
        n, s = len(sequence) + 1, alone.encoder_lengths.item()
        torch.testing.assert_close(batched.logits[i, :n], alone.logits[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batched.ctc_logits[i, :s], alone.ctc_logits[0], rtol=1e-4, atol=1e-5)


def test_save_load_round_trip(echo, tmp_path):
    from echoasr import EchoConfig, EchoForConditionalGeneration

    model = echo.tiny_model(**PITCH_ON)
    with torch.no_grad():  # move the pitch parameters off their initial values
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    features, lengths = echo.make_features(model.config, [12, 7])
    labels = echo.make_labels([[5, 6], [7]])
    before = model(features=features, feature_lengths=lengths, labels=labels)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = EchoForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.config, EchoConfig)
    saved, reloaded = model.config.to_dict(), loaded.config.to_dict()
    assert {k: v for k, v in saved.items() if k != "_name_or_path"} == {k: v for k, v in reloaded.items() if k != "_name_or_path"}
    after = loaded(features=features, feature_lengths=lengths, labels=labels)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    torch.testing.assert_close(after.loss, before.loss, rtol=0, atol=0)
    assert torch.equal(loaded.decoder.embed_tokens.weight, model.decoder.embed_tokens.weight)


def test_gradients_reach_pitch_parameters(echo):
    model = echo.tiny_model(**PITCH_ON).train()
    features, lengths = echo.make_features(model.config, [14, 9])
    model(features=features, feature_lengths=lengths, labels=echo.make_labels([[5, 6], [7]])).loss.backward()
    encoder_attention = model.encoder.layers[0].self_attn
    cross_attention = model.decoder.layers[0].cross_attn
    for name, parameter in [
        ("theta", model.encoder.rotary.log_theta),
        ("radius weight", model.encoder.rotary.radius_weight),
        ("radius bias", model.encoder.rotary.radius_bias),
        ("self bias scale", encoder_attention.pitch_bias.scale),
        ("cross bias scale", cross_attention.pitch_bias.scale),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("radius", ["raw", "bounded", "learned"])
def test_no_nan_all_unvoiced_or_raw_radius(echo, radius):
    model = echo.tiny_model(features=["mel", "f0"], rotary_theta_mode="additive", rotary_radius=radius, pitch_bias=True)
    features, lengths = echo.make_features(model.config, [12, 8])
    labels = echo.make_labels([[5, 6], [7]])
    for f0, voiced in [(features["f0"], features["voiced"]), (torch.zeros_like(features["f0"]), torch.zeros_like(features["f0"]))]:
        model.zero_grad()
        out = model(features=dict(features, f0=f0, voiced=voiced), feature_lengths=lengths, labels=labels)
        out.loss.backward()
        assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        ids = model.generate(features=dict(features, f0=f0, voiced=voiced), feature_lengths=lengths, max_new_tokens=4)
        assert ids.shape[0] == 2


def test_bf16_autocast_trains(echo):
    model = echo.tiny_model(**PITCH_ON).train()
    features, lengths = echo.make_features(model.config, [14, 9])
    labels = echo.make_labels([[5, 6], [7]])
    reference = model(features=features, feature_lengths=lengths, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(features=features, feature_lengths=lengths, labels=labels)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16
    assert abs(out.loss.item() - reference.item()) < 0.05 * reference.item()
    assert model.encoder.rotary.log_theta.grad is not None


def test_describe_and_parameter_counts(echo):
    model = echo.tiny_model(**PITCH_ON)
    counts = model.parameter_counts()
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    # theta (1) + learned radius (2 x 4 heads) + self bias (4) + cross bias (4 scales + 4 references)
    assert counts["pitch (theta, radius, bias)"] == 1 + 8 + 4 + 8
    text = model.describe()
    assert "encoder.stem.f0" in text and "theta_mode=phase" in text and "ctc_head" in text


def test_pitch_debug_hook_logs(echo, caplog):
    model = echo.tiny_model(**PITCH_ON)
    features, lengths = echo.make_features(model.config, [10])
    with caplog.at_level(logging.INFO, logger="echoasr.model"):
        model(features=features, feature_lengths=lengths, labels=echo.make_labels([[5]]))
    assert not caplog.records
    model.set_pitch_debug(True)
    with caplog.at_level(logging.INFO, logger="echoasr.model"):
        model(features=features, feature_lengths=lengths, labels=echo.make_labels([[5]]))
    text = caplog.text
    assert "theta=" in text and "radius mean=" in text
    assert "encoder.layers.0.self_attn pitch bias" in text and "decoder.layers.0.cross_attn cross pitch bias" in text


def test_config_rejects_bad_options(echo):
    with pytest.raises(ValueError, match="rotary_radius"):
        echo.tiny_config(rotary_radius="huge")
    with pytest.raises(ValueError, match="unknown option"):
        echo.tiny_config(rotary_theta_mod="phase")
    with pytest.raises(ValueError, match="subsampling"):
        echo.tiny_config(subsampling=3)


def test_cpu_bf16_attention_matches_the_reference_formula():
    """`scaled_dot_product` (math backend on the CPU in bf16) computes softmax(q·k/√d + mask)·v."""
    from echoasr.model.attention_variants import scaled_dot_product

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 16, generator=generator) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 7)
    mask[1, ..., 5:] = float("-inf")
    reference = torch.softmax(q @ k.transpose(-1, -2) / 4.0 + mask, dim=-1) @ v
    out = scaled_dot_product(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(scaled_dot_product(q, k, v, mask), reference, atol=1e-5, rtol=1e-5)
