"""Checkpoint averaging: the element-wise mean of the last N checkpoints' weights.

``echoasr average RUN --last N`` (or the ``average_last`` training option) reads
``RUN/checkpoint-*/model.safetensors`` (the Hugging Face Trainer's checkpoints), averages the
floating-point tensors of the N with the highest step (integer buffers come from the newest) and
writes ``RUN/model.safetensors``; the newest checkpoint's own weights stay in its folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from echoasr import atomic
from echoasr.errors import EchoError

WEIGHTS = "model.safetensors"


def checkpoints(run: str | os.PathLike) -> list[Path]:
    """The run's checkpoint folders holding weights, oldest first."""
    found = [(int(match.group(1)), path) for path in Path(run).glob("checkpoint-*")
             if (match := re.fullmatch(r"checkpoint-(\d+)", path.name)) and (path / WEIGHTS).is_file()]
    return [path for _, path in sorted(found)]


def average_state_dicts(paths: Sequence[str | os.PathLike]) -> dict:
    """Mean of the safetensors files' floating-point tensors (in float32, stored in each tensor's dtype)."""
    import torch
    from safetensors.torch import load_file

    if not paths:
        raise EchoError("no checkpoints to average")
    states = [load_file(str(path)) for path in paths]
    names = set(states[0])
    for path, state in zip(paths, states, strict=True):
        if set(state) != names:
            raise EchoError("checkpoints of different models cannot be averaged", path)
    averaged = {}
    for name, newest in states[-1].items():
        # A tensor every checkpoint shares (a frozen weight) stays bit-exact: a float mean of equal
        # values can be an ulp off, and a delta export would then count it as trained.
        if newest.is_floating_point() and not all(torch.equal(state[name], newest) for state in states):
            mean = torch.stack([state[name].float() for state in states]).mean(0)
            averaged[name] = mean.to(newest.dtype).contiguous()
        else:
            averaged[name] = newest.clone()
    return averaged


def average_run(run: str | os.PathLike, last: int, out: str | os.PathLike | None = None) -> tuple[Path, list[Path]]:
    """Average ``run``'s last ``last`` checkpoints into ``out`` (default ``run/model.safetensors``)."""
    from safetensors.torch import save_file

    if last < 1:
        raise EchoError(f"--last must be at least 1, got {last}")
    found = checkpoints(run)
    if not found:
        raise EchoError("no checkpoint-*/model.safetensors to average", run)
    chosen = found[-last:]
    target = Path(out) if out is not None else Path(run) / WEIGHTS
    if target.is_dir():
        target = target / WEIGHTS
    averaged = average_state_dicts([path / WEIGHTS for path in chosen])
    with atomic.atomic_path(target) as temporary:
        save_file(averaged, str(temporary), metadata={"format": "pt"})
    return target, chosen
