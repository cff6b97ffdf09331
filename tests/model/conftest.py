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


def tiny_model(seed: int = 0, **overrides) -> EchoForConditionalGeneration:
    torch.manual_seed(seed)
    return EchoForConditionalGeneration(tiny_config(**overrides)).eval()


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
        make_features=make_features,
        slice_example=slice_example,
        make_labels=make_labels,
        pitch_inputs=pitch_inputs,
    )
