"""MaxFactor vs AdamW at equal steps: final loss, step time and optimizer-state bytes, as JSON.

    .venv/bin/python benchmarks/optimizers.py --steps 300 --seeds 0 1 2 --out runs/optimizers.json

Optimizers: AdamW (the baseline), MaxFactor with its defaults, and MaxFactor in the seed's form
(``relative_step=True``). Each runs every learning rate of a small grid on every seed, with the
same model initialisation and the same batches; the ratios (X / AdamW) compare each at its best
learning rate (lowest mean final training loss), so none wins by an untuned lr. Final loss is
the mean training loss of the last 5% of steps; eval loss is on held-out batches. Times are
medians over separate timing runs at the best learning rates, their steps interleaved so that
all optimizers see the same machine load (one CPU thread by default).

A task is a function ``(seed, device) -> Task`` (model, deterministic batches, loss, held-out
batches): register another in ``TASKS`` (e.g. the tiny ASR training task) and pick it with
``--task``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echoasr.optim import MaxFactor, state_bytes


@dataclass
class Task:
    model: nn.Module
    batch: Callable[[int], Any]  # training step -> batch, deterministic
    loss: Callable[[nn.Module, Any], torch.Tensor]
    eval_batches: Sequence[Any]  # held out: never returned by `batch`


class _ReversalTagger(nn.Module):
    def __init__(self, vocab: int, length: int, width: int, layers: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.position))


def tiny_transformer_task(seed: int, device: torch.device) -> Task:
    """Reverse a random token sequence with a 2-layer transformer encoder (matrix-heavy)."""
    vocab, length, batch_size = 32, 24, 32
    torch.manual_seed(seed)
    model = _ReversalTagger(vocab, length, width=64, layers=2, heads=4).to(device)

    def batch(step: int):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        tokens = torch.randint(0, vocab, (batch_size, length), generator=generator)
        return tokens.to(device), tokens.flip(1).to(device)

    def loss(model: nn.Module, batch) -> torch.Tensor:
        tokens, targets = batch
        return nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())

    # negative step numbers are never used for training
    return Task(model, batch, loss, eval_batches=[batch(-1 - i) for i in range(8)])


TASKS: dict[str, Callable[[int, torch.device], Task]] = {"tiny-transformer": tiny_transformer_task}

BASELINE = "adamw"
OPTIMIZERS: dict[str, Callable[[Any, float, float], torch.optim.Optimizer]] = {
    "adamw": lambda params, lr, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
    "maxfactor": lambda params, lr, weight_decay: MaxFactor(params, lr=lr, weight_decay=weight_decay),
    # the seed's form: steps relative to each parameter's RMS
    "maxfactor-relative": lambda params, lr, weight_decay: MaxFactor(
        params, lr=lr, weight_decay=weight_decay, relative_step=True
    ),
}
DEFAULT_LRS = {
    "adamw": [1e-3, 3e-3, 1e-2, 3e-2],
    "maxfactor": [3e-3, 1e-2, 3e-2, 1e-1],
    "maxfactor-relative": [1e-2, 3e-2, 1e-1, 3e-1],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(task: Task, optimizer: torch.optim.Optimizer, step: int, device: torch.device):
    """One training step; returns (loss, seconds for the whole step, seconds in optimizer.step)."""
    batch = task.batch(step)
    _sync(device)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = task.loss(task.model, batch)
    loss.backward()
    _sync(device)
    before_step = time.perf_counter()
    optimizer.step()
    _sync(device)
    end = time.perf_counter()
    return loss.item(), end - start, end - before_step


def train_once(task: Task, optimizer: torch.optim.Optimizer, steps: int, device: torch.device) -> dict:
    task.model.train()
    losses = [train_step(task, optimizer, step, device)[0] for step in range(steps)]
    task.model.eval()
    with torch.no_grad():
        eval_loss = statistics.fmean(task.loss(task.model, b).item() for b in task.eval_batches)
    window = max(1, steps // 20)
    return dict(
        final_loss=statistics.fmean(losses[-window:]),
        eval_loss=eval_loss,
        diverged=not all(map(math.isfinite, losses)),
        state_bytes=state_bytes(optimizer),
    )


def time_interleaved(
    make_task: Callable[[int, torch.device], Task],
    lrs: dict[str, float],
    steps: int,
    weight_decay: float,
    device: torch.device,
) -> dict[str, tuple[float, float]]:
    """Median (step, optimizer.step) seconds per optimizer, their steps interleaved one by one.

    Interleaving makes every optimizer see the same load on a shared machine.
    """
    setups = {}
    for name, lr in lrs.items():
        task = make_task(0, device)
        setups[name] = (task, OPTIMIZERS[name](task.model.parameters(), lr, weight_decay))
    warmup = min(10, steps // 10)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in lrs}
    names = list(lrs)
    for step in range(warmup + steps):
        for name in names[step % len(names):] + names[: step % len(names)]:
            _, step_s, optimizer_s = train_step(*setups[name], step, device)
            if step >= warmup:
                times[name][0].append(step_s)
                times[name][1].append(optimizer_s)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in times.items()}


def benchmark(
    task_name: str,
    steps: int,
    seeds: Sequence[int],
    lrs: dict[str, Sequence[float]],
    weight_decay: float,
    device: torch.device,
    timing_steps: int = 200,
) -> dict[str, Any]:
    make_task = TASKS[task_name]
    runs = []
    for seed in seeds:
        for name in lrs:
            for lr in lrs[name]:
                task = make_task(seed, device)
                optimizer = OPTIMIZERS[name](task.model.parameters(), lr, weight_decay)
                runs.append(dict(optimizer=name, lr=lr, seed=seed, **train_once(task, optimizer, steps, device)))
    param_bytes = sum(p.numel() * p.element_size() for p in make_task(seeds[0], device).model.parameters())

    summary = {}
    for name in lrs:
        by_lr = {
            lr: [r for r in runs if r["optimizer"] == name and r["lr"] == lr] for lr in lrs[name]
        }
        best_lr = min(by_lr, key=lambda lr: statistics.fmean(r["final_loss"] for r in by_lr[lr]))
        best = by_lr[best_lr]
        summary[name] = dict(
            best_lr=best_lr,
            final_loss=statistics.fmean(r["final_loss"] for r in best),
            eval_loss=statistics.fmean(r["eval_loss"] for r in best),
            final_loss_by_lr={
                str(lr): statistics.fmean(r["final_loss"] for r in rs) for lr, rs in by_lr.items()
            },
            state_bytes=best[0]["state_bytes"],
        )
    timings = time_interleaved(
        make_task, {name: summary[name]["best_lr"] for name in summary}, timing_steps, weight_decay, device
    )
    for name, (step_s, optimizer_s) in timings.items():
        summary[name].update(step_ms=1e3 * step_s, optimizer_step_ms=1e3 * optimizer_s)
    base = summary[BASELINE]
    ratios = {
        f"{name}/{BASELINE}": dict(
            final_loss=summary[name]["final_loss"] / base["final_loss"],
            eval_loss=summary[name]["eval_loss"] / base["eval_loss"],
            step_time=summary[name]["step_ms"] / base["step_ms"],
            optimizer_step_time=summary[name]["optimizer_step_ms"] / base["optimizer_step_ms"],
            state_bytes=summary[name]["state_bytes"] / base["state_bytes"],
        )
        for name in summary
        if name != BASELINE
    }
    return dict(
        benchmark="optimizers",
        task=task_name,
        steps=steps,
        timing_steps=timing_steps,
        seeds=list(seeds),
        weight_decay=weight_decay,
        device=str(device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        param_bytes=param_bytes,
        summary=summary,
        ratios=ratios,
        runs=runs,
    )


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="tiny-transformer")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timing-steps", type=int, default=200, help="interleaved steps timed per optimizer")
    parser.add_argument(
        "--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=list(OPTIMIZERS),
        help=f"which to run ({BASELINE} always runs: it is the baseline)",
    )
    parser.add_argument(
        "--lrs", action="append", default=[], metavar="NAME=LR,LR",
        help="learning-rate grid of one optimizer, e.g. maxfactor=1e-2,3e-2 (repeatable)",
    )
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noisy)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    lrs = {name: DEFAULT_LRS[name] for name in dict.fromkeys([BASELINE, *args.optimizers])}
    for spec in args.lrs:
        name, _, values = spec.partition("=")
        if name not in lrs or not values:
            parser.error(f"--lrs {spec}: expected NAME=LR[,LR...] with NAME one of {', '.join(lrs)}")
        try:
            lrs[name] = [float(value) for value in values.split(",")]
        except ValueError:
            parser.error(f"--lrs {spec}: learning rates must be numbers")
    torch.set_num_threads(args.threads)
    result = benchmark(
        args.task, args.steps, args.seeds, lrs, args.weight_decay, torch.device(args.device), args.timing_steps
    )
    text = json.dumps(result, indent=2)
    if args.out:
        write_atomically(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
