"""Tiny models, data and a training loop shared by the optimizer tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the shared 2-core machines stay responsive."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinySequenceTagger(nn.Module):
    """A one-layer transformer encoder that tags every position (stand-in for the ASR model)."""

    def __init__(self, vocab: int = 8, length: int = 8, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.scale = nn.Parameter(torch.tensor(1.0))  # a scalar parameter, as the seed model has

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.position)) * self.scale


def regression_batches(seed: int = 0, inputs: int = 16, outputs: int = 4, size: int = 128):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, inputs, generator=generator)
    weights = torch.randn(inputs, outputs, generator=generator)
    y = x @ weights + 0.01 * torch.randn(size, outputs, generator=generator)
    return lambda step: (x, y)


def reversal_batches(seed: int = 0, vocab: int = 8, length: int = 8, size: int = 64):
    """Per-position targets: the input sequence reversed (needs attention and positions)."""

    def batch(step: int):
        generator = torch.Generator().manual_seed(seed * 100_003 + step)
        tokens = torch.randint(0, vocab, (size, length), generator=generator)
        return tokens, tokens.flip(1)

    return batch


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def cross_entropy(model: nn.Module, batch) -> torch.Tensor:
    tokens, targets = batch
    return nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())


def train(model, optimizer, batches, loss_fn, steps: int, start: int = 0) -> list[float]:
    """Plain training loop; returns the loss of every step."""
    losses = []
    for step in range(start, start + steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batches(step))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (importlib mode cannot import conftest directly)."""
    return SimpleNamespace(
        TinySequenceTagger=TinySequenceTagger,
        regression_batches=regression_batches,
        reversal_batches=reversal_batches,
        mse=mse,
        cross_entropy=cross_entropy,
        train=train,
    )
