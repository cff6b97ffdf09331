"""How a decoding run uses the machine: torch threads, precision checks and the batch budget,
shared by ``evaluate``, ``transcribe``, the reference recognisers, training and LM tuning."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from echoasr.errors import EchoError

DEFAULT_BATCH_FRAMES = 40000


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch threads (None: unchanged), then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_precision(bf16: bool, int8: bool) -> None:
    if bf16 and int8:
        raise EchoError("--int8 and --bf16 exclude each other (the int8 layers take float32)")
