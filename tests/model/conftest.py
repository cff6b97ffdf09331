"""Tiny configurations and synthetic batches for the model tests (the `echo` fixture)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from echoasr.model import EchoConfig, EchoForConditionalGeneration

ALL_FEATURES = ["mel", "f0", "harmonic", "aperiodic", "phase", "waveform"]


def tiny_config(**overrides) -> EchoConfig:
    options = dict(
        vocab_size=16,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        attention_heads=4,
        ffn_dim=64,
        dropout=0.0,
        n_mels=8,
        harmonic_bands=6,
        aperiodic_bands=3,
        waveform_frame_length=10,
        subsampling=2,
        ctc_weight=0.3,
    )
    options.update(overrides)
    return EchoConfig(**options)


def tiny_model(seed: int = 0, active: bool = True, **overrides) -> EchoForConditionalGeneration:
    """A tiny model; with `active`, the pitch mechanisms that start as no-ops (bias scales 0,
    learned radius 1) get nonzero weights, so that tests of padding, caching and batching
    exercise them."""
    torch.manual_seed(seed)
    model = EchoForConditionalGeneration(tiny_config(**overrides)).eval()
    if active:
        activate_pitch_mechanisms(model, seed)
    return model


def activate_pitch_mechanisms(model, seed: int = 0) -> int:
    """Set pitch-bias scales and learned-radius weights to nonzero values; returns how many
    parameters were set."""
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            for name in ("scale", "radius_weight", "radius_bias"):
                parameter = getattr(module, name, None)
                if isinstance(parameter, torch.nn.Parameter) and type(module).__name__ in ACTIVATED:
                    parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
                    count += 1
    return count


ACTIVATED = ("PitchBiasScale", "CrossPitchBias", "PitchRotary")


def pitch_inputs(batch: int, frames: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth f0 contour per example (80-300 Hz) with unvoiced stretches; f0 = 0 there."""
    t = torch.arange(frames, dtype=torch.float32)
    base = 80.0 + 180.0 * torch.rand(batch, 1, generator=generator)
    f0 = base * (1.0 + 0.2 * torch.sin(t / 5.0 + 6.0 * torch.rand(batch, 1, generator=generator)))
    voiced = (torch.sin(t / 3.0 + 6.0 * torch.rand(batch, 1, generator=generator)) > -0.4).float()
    return f0 * voiced, voiced


def make_features(config: EchoConfig, lengths: list[int], seed: int = 0, pad_value: float = 0.0) -> tuple[dict, torch.Tensor]:
    """Right-padded random features for every contract key; padding filled with `pad_value`
    (the model must not care what the padding holds)."""
    generator = torch.Generator().manual_seed(seed)
    batch, frames = len(lengths), max(lengths)
    f0, voiced = pitch_inputs(batch, frames, generator)
    features = {
        "mel": torch.randn(batch, config.n_mels, frames, generator=generator),
        "f0": f0,
        "voiced": voiced,
        "harmonic": torch.randn(batch, config.harmonic_bands, frames, generator=generator),
        "aperiodic": torch.randn(batch, config.aperiodic_bands, frames, generator=generator),
        "phase": torch.rand(batch, frames, generator=generator) * 6.28,
        "waveform": torch.randn(batch, config.waveform_frame_length, frames, generator=generator) * 0.1,
    }
    valid = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]
    for name, tensor in features.items():
        mask = valid if tensor.dim() == 2 else valid[:, None, :]
        features[name] = torch.where(mask, tensor, torch.full_like(tensor, pad_value))
    return features, torch.tensor(lengths)


def slice_example(features: dict, index: int, length: int) -> dict:
    return {name: tensor[index : index + 1, ..., :length] for name, tensor in features.items()}


def make_labels(sequences: list[list[int]], eos: int = 2) -> torch.Tensor:
    width = max(len(s) for s in sequences) + 1
    labels = torch.full((len(sequences), width), -100)
    for row, sequence in enumerate(sequences):
        labels[row, : len(sequence) + 1] = torch.tensor(sequence + [eos])
    return labels


def assert_batch_equals_examples(model, lengths=(21, 13, 6), sequences=((5, 6, 7, 8), (9, 10), (11,)), pad_value=2.0):
    """Logits and CTC logits of a padded batch equal those of its examples run one by one."""
    sequences = [list(s) for s in sequences]
    features, lengths_t = make_features(model.config, list(lengths), pad_value=pad_value)
    labels = make_labels(sequences)
    with torch.no_grad():
        batched = model(features=features, feature_lengths=lengths_t, labels=labels)
        for i, (length, sequence) in enumerate(zip(lengths, sequences)):
            alone = model(
                features=slice_example(features, i, length), feature_lengths=torch.tensor([length]), labels=make_labels([sequence])
            )
            n = len(sequence) + 1
            torch.testing.assert_close(batched.logits[i, :n], alone.logits[0], rtol=1e-4, atol=1e-5)
            if alone.ctc_logits is not None:
                s = alone.encoder_lengths.item()
                torch.testing.assert_close(batched.ctc_logits[i, :s], alone.ctc_logits[0], rtol=1e-4, atol=1e-5)


def assert_decoder_causal(model, with_mask=False):
    """Changing tokens after t never changes the logits at <= t, and does change later ones."""
    features, lengths = make_features(model.config, [12])
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9]])
    mask = torch.ones_like(tokens) if with_mask else None
    with torch.no_grad():
        base = model(features=features, feature_lengths=lengths, decoder_input_ids=tokens, decoder_attention_mask=mask).logits
        for t in range(tokens.shape[1] - 1):
            changed = tokens.clone()
            changed[0, t + 1 :] = 11
            logits = model(features=features, feature_lengths=lengths, decoder_input_ids=changed, decoder_attention_mask=mask).logits
            torch.testing.assert_close(logits[0, : t + 1], base[0, : t + 1])
            assert not torch.allclose(logits[0, t + 1 :], base[0, t + 1 :])


def decode(model, features, lengths, beams=1, use_cache=True, ctc_weight=0.0, max_new=12):
    """Greedy (beams=1) or beam search output, straight from the search (no generate() defaults)."""
    from echoasr.model.generation import _search

    encoder = model.encode(features, lengths)
    limits = (encoder.lengths + 1).clamp(max=max_new)
    options = {"length_penalty": 1.0, "ngram": 0, "synced": False}
    with torch.no_grad():
        return _search(model, encoder, beams, limits, int(limits.max()), use_cache, ctc_weight, 10, options, beams == 1)


def assert_cached_equals_uncached(lengths=(30, 22, 13), **options):
    """Greedy and beam search (with and without joint CTC) give the same tokens with and without
    the KV cache, for tiny models with `options` and well-separated random weights. Random models
    often emit one token over and over, which would make the comparison empty: seeds are tried
    until one gives varied output, and every model tried must agree."""
    options = {"vocab_size": 24, "initializer_range": 0.3, **options}
    for seed in range(10):
        model = tiny_model(seed=seed, **options)
        features, lengths_t = make_features(model.config, list(lengths))
        varied = True
        for beams in (1, 3):
            for ctc_weight in (0.0, 0.4) if model.ctc_head is not None else (0.0,):
                cached = decode(model, features, lengths_t, beams, True, ctc_weight)
                uncached = decode(model, features, lengths_t, beams, False, ctc_weight)
                assert torch.equal(cached, uncached)
                varied &= cached.shape[1] > 3 and len(set(cached.flatten().tolist())) > 3
        if varied:
            return
    raise AssertionError("no seed gave a non-degenerate output to compare")


def assert_gradients_reach(model, parameters: dict):
    """One training step's loss reaches every named parameter with a nonzero gradient."""
    model.train().zero_grad()
    features, lengths = make_features(model.config, [14, 9])
    model(features=features, feature_lengths=lengths, labels=make_labels([[5, 6], [7]])).loss.backward()
    for name, parameter in parameters.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.eval()


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    threads that wait for each other make the suite several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def echo() -> SimpleNamespace:
    """Helpers for tests (test modules cannot import each other under importlib mode)."""
    return SimpleNamespace(
        ALL_FEATURES=ALL_FEATURES,
        tiny_config=tiny_config,
        tiny_model=tiny_model,
        activate_pitch_mechanisms=activate_pitch_mechanisms,
        make_features=make_features,
        slice_example=slice_example,
        make_labels=make_labels,
        pitch_inputs=pitch_inputs,
        assert_batch_equals_examples=assert_batch_equals_examples,
        assert_decoder_causal=assert_decoder_causal,
        assert_cached_equals_uncached=assert_cached_equals_uncached,
        assert_gradients_reach=assert_gradients_reach,
        decode=decode,
    )
