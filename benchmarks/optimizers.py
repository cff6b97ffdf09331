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
batches) registered in ``TASKS`` and picked with ``--task``: ``tiny-transformer`` (a toy
sequence-reversal transformer) or ``tiny-asr`` (the ``tiny`` training preset's Echo model on 40
utterances synthesised with flite; needs flite)::

    .venv/bin/python benchmarks/optimizers.py --task tiny-asr --steps 300 --seeds 0 1 --timing-steps 100
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
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


# Tiny ASR: short sentences spoken by two flite voices; 20 sentences train, 4 are held out.
TINY_ASR_SENTENCES = [
    "the cat sat on the mat", "a dog ran to the park", "she sells sea shells", "the sun is warm today",
    "open the door please", "we like green apples", "the bird can sing", "rain falls on the hill",
    "turn left at the light", "the book is on the desk", "my hat is red", "he reads a long letter",
    "the milk is cold", "cars stop at the corner", "a fish swims in the pond", "close the window now",
    "they walk to school", "the tea is too hot", "birds fly over the sea", "put the cup on the table",
    "the lamp is bright", "we sing a happy song", "the road is wet", "her coat is blue",
]  # fmt: skip
TINY_ASR_HELD_OUT = 4
TINY_ASR_VOICES = ("kal16", "slt")
TINY_ASR_BATCH = 8


@functools.cache
def _tiny_asr_corpus() -> tuple[list[tuple[dict[str, torch.Tensor], list[int]]], list[tuple[dict[str, torch.Tensor], list[int]]], int]:
    """(train items, held-out items, vocabulary size); an item is (features, token ids + EOS).
    Synthesised and featurised once per process (a few seconds)."""
    from echoasr.audio import load_audio
    from echoasr.features import extract
    from echoasr.text.tokenizers import CharTokenizer

    if shutil.which("flite") is None:
        raise SystemExit("the tiny-asr task needs flite (scripts/install-system-deps)")
    tokenizer = CharTokenizer.train(TINY_ASR_SENTENCES)
    items = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, text in enumerate(TINY_ASR_SENTENCES):
            for voice in TINY_ASR_VOICES:
                path = Path(scratch) / f"{voice}-{index}.wav"
                subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
                arrays = extract(load_audio(path), ["mel", "f0"])
                features = {name: torch.from_numpy(arrays[name]).float() for name in ("mel", "f0", "voiced")}
                items.append((index, (features, tokenizer.encode(text) + [tokenizer.eos_id])))
    held_out = len(TINY_ASR_SENTENCES) - TINY_ASR_HELD_OUT
    train = [item for index, item in items if index < held_out]
    evaluation = [item for index, item in items if index >= held_out]
    return train, evaluation, tokenizer.vocab_size


def _collate(items: Sequence[tuple[dict[str, torch.Tensor], list[int]]], device: torch.device) -> dict[str, Any]:
    lengths = torch.tensor([features["mel"].shape[-1] for features, _ in items])
    frames, width = int(lengths.max()), max(len(ids) for _, ids in items)
    batch = {name: torch.zeros(len(items), *tensor.shape[:-1], frames) for name, tensor in items[0][0].items()}
    labels = torch.full((len(items), width), -100)
    for row, (features, ids) in enumerate(items):
        for name, tensor in features.items():
            batch[name][row, ..., : tensor.shape[-1]] = tensor
        labels[row, : len(ids)] = torch.tensor(ids)
    return dict(
        features={name: tensor.to(device) for name, tensor in batch.items()},
        feature_lengths=lengths.to(device),
        labels=labels.to(device),
    )


def tiny_asr_task(seed: int, device: torch.device) -> Task:
    """The `tiny` training preset's Echo model (mel + f0, pitch-aware rotary, hybrid CTC loss,
    ~0.1 M parameters) on 40 real TTS utterances, batches of 8 in a per-epoch shuffled order."""
    from echoasr.model import EchoConfig, EchoForConditionalGeneration

    train, evaluation, vocab_size = _tiny_asr_corpus()
    torch.manual_seed(seed)
    config = EchoConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=1, attention_heads=4, ffn_dim=128,
        dropout=0.0, subsampling=4, ctc_weight=0.3, features=["mel", "f0"], rotary_theta_mode="phase",
        rotary_radius="bounded", pitch_bias=True,
    )  # fmt: skip
    model = EchoForConditionalGeneration(config).to(device)
    per_epoch = len(train) // TINY_ASR_BATCH

    def batch(step: int) -> dict[str, Any]:
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        rows = order[index * TINY_ASR_BATCH : (index + 1) * TINY_ASR_BATCH].tolist()
        return _collate([train[i] for i in rows], device)

    def loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(**batch).loss

    eval_batches = [_collate(evaluation[i : i + TINY_ASR_BATCH], device) for i in range(0, len(evaluation), TINY_ASR_BATCH)]
    return Task(model, batch, loss, eval_batches)


TASKS: dict[str, Callable[[int, torch.device], Task]] = {
    "tiny-transformer": tiny_transformer_task,
    "tiny-asr": tiny_asr_task,
}

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
