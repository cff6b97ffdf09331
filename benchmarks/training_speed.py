"""Training throughput on this CPU: threads, bf16, and one 2-thread run vs two concurrent 1-thread runs.

Each measurement runs full training steps (collator, forward, backward, AdamW step) of a preset's
model on synthetic utterances of realistic lengths (1.5-6 s, mel + f0, ~4 subword tokens per
second) in batches of the preset's ``batch_frames``, in a fresh subprocess:

* ``threads2_bf16``, ``threads1_bf16``, ``threads2_fp32``: one process alone;
* ``concurrent_2x1_bf16``: two 1-thread processes at the same time (how the demo could train its
  two models); its throughput is the sum of both.

The figure per run is the median step time after 2 warm-up steps; ``frames_per_second`` is
input frames (10 ms) trained per wall second, summed over processes; ``vs_threads2_bf16`` is the
throughput ratio against one 2-thread bf16 process measured in the same run.

    .venv/bin/python benchmarks/training_speed.py [--preset small --steps 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def worker(preset: str, threads: int, bf16: bool, steps: int, seed: int) -> dict:
    import numpy as np
    import torch

    from echoasr.data.collate import FrameBatchSampler, SpecAugment, SpeechCollator
    from echoasr.model import EchoConfig, EchoForConditionalGeneration
    from echoasr.training import PRESETS

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = PRESETS[preset]
    model = EchoForConditionalGeneration(EchoConfig(vocab_size=config.vocab_size, **config.model)).train()
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(600):
        frames = int(rng.uniform(150, 600))
        f0 = rng.uniform(90, 250, frames).astype(np.float32) * (rng.random(frames) > 0.4)
        items.append({"features": {"mel": rng.standard_normal((80, frames)).astype(np.float16), "f0": f0,
                                   "voiced": (f0 > 0).astype(np.float32)},
                      "labels": rng.integers(4, config.vocab_size, max(2, frames // 25)).tolist() + [2]})
    sampler = FrameBatchSampler([item["features"]["mel"].shape[1] for item in items], config.batch_frames, seed=seed)
    collate = SpeechCollator(SpecAugment())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, frames_done = [], []
    batches = iter(sampler)
    for _ in range(steps + 2):
        indices = next(batches)
        start = time.perf_counter()
        batch = collate([items[i] for i in indices])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        frames_done.append(int(batch["feature_lengths"].sum()))
    times, frames_done = times[2:], frames_done[2:]
    return {"step_seconds": statistics.median(times), "frames_per_second": sum(frames_done) / sum(times),
            "threads": threads, "bf16": bf16}


def run_workers(specs: list[tuple[int, bool]], preset: str, steps: int) -> list[dict]:
    processes = [
        subprocess.Popen([sys.executable, __file__, "--worker", preset, str(threads), str(int(bf16)), str(steps), str(i)],
                         stdout=subprocess.PIPE, text=True)
        for i, (threads, bf16) in enumerate(specs)
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in processes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, threads, bf16, steps, seed = args.worker
        print(json.dumps(worker(preset, int(threads), bool(int(bf16)), int(steps), int(seed))))
        return
    results = {
        "threads2_bf16": run_workers([(2, True)], args.preset, args.steps)[0],
        "threads1_bf16": run_workers([(1, True)], args.preset, args.steps)[0],
        "threads2_fp32": run_workers([(2, False)], args.preset, args.steps)[0],
    }
    pair = run_workers([(1, True), (1, True)], args.preset, args.steps)
    results["concurrent_2x1_bf16"] = {
        "step_seconds": [r["step_seconds"] for r in pair],
        "frames_per_second": sum(r["frames_per_second"] for r in pair),
    }
    baseline = results["threads2_bf16"]["frames_per_second"]
    for result in results.values():
        result["vs_threads2_bf16"] = round(result["frames_per_second"] / baseline, 3)
    print(json.dumps({"preset": args.preset, "steps": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
