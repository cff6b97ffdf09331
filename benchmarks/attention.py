"""Cost of pitch-aware attention in a realistic Echo encoder layer, forward + backward on CPU.

Variants, all timed in the same run on the same weights and inputs, in interleaved rounds; the
figure is the fastest round (other processes on a shared machine only ever add time):

* `baseline`: plain RoPE + `scaled_dot_product_attention` with the padding mask;
* `pitch_rotary`: phase-mode theta + bounded radius (fast form), no bias;
* `pitch_fast`: phase-mode theta + bounded radius + per-head pitch similarity bias (the model's
  path; the target is <= 1.3x the baseline);
* `complex_reference`: the same pitch mechanisms computed the seed's way (complex
  `torch.polar` rotation, explicit softmax(q k^T + mask) v).

`seconds`/`ratio_vs_baseline` time the whole layer (attention + feed-forward, the target's
measure); `attention_only` times the attention sublayer alone (norm, projections, rotary,
attention), where the variants differ.

Each iteration builds the per-sequence tables (rotary, masks, pitch similarity) too, as the
encoder does once per forward. A second measurement, `model_step`, times a whole training step
(forward + backward of `EchoForConditionalGeneration`, mel + f0 input, 4x subsampling, 4 encoder
and 2 decoder layers, hybrid CTC loss) with and without all pitch mechanisms, the pitch model
under bf16 autocast, and decoding that batch (greedy and 4 beams, joint CTC, up to 80 tokens). Peak memory: each variant runs one forward + backward in a fresh
subprocess; the figure is the growth of the peak resident set size over the set-up (Linux).
`model_step` also times the `seed` preset (the original design, `echoasr.model.presets`) at the
same width, and `seed_components` times one encoder layer with each of the seed's layer-level
options alone against the plain layer.

    .venv/bin/python benchmarks/attention.py [--batch 8 --frames 500 --dim 256 --heads 4]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from echoasr.model import EchoForConditionalGeneration, preset_config
from echoasr.model.attention import AttentionContext
from echoasr.model.configuration import EchoConfig
from echoasr.model.encoder import EncoderLayer
from echoasr.model.layers import padding_bias
from echoasr.model.pitch import length_mask, pitch_similarity, pitch_track
from echoasr.model.rotary import PitchRotary, apply_rotary_complex

VARIANTS = ("baseline", "pitch_rotary", "pitch_fast", "complex_reference")
TARGET_RATIO = 1.3


def make_inputs(batch: int, frames: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(0.6 * frames), frames + 1, (batch,), generator=generator)
    lengths[0] = frames
    time_axis = torch.arange(frames, dtype=torch.float32)
    base = 100.0 + 150.0 * torch.rand(batch, 1, generator=generator)
    f0 = base * (1.0 + 0.15 * torch.sin(time_axis / 25.0 + torch.rand(batch, 1, generator=generator) * 6.0))
    voiced = (torch.sin(time_axis / 13.0 + torch.rand(batch, 1, generator=generator) * 6.0) > -0.3).float()
    x = torch.randn(batch, frames, dim, generator=generator)
    return x, lengths, f0 * voiced, voiced


class Variant:
    """One layer plus the per-sequence tables its stack would build."""

    def __init__(self, name: str, batch: int, frames: int, dim: int, heads: int):
        pitch = name != "baseline"
        self.name = name
        self.config = EchoConfig(
            d_model=dim,
            attention_heads=heads,
            dropout=0.0,
            rotary_theta_mode="phase" if pitch else "none",
            rotary_radius="bounded" if pitch else "none",
            pitch_bias=name in ("pitch_fast", "complex_reference"),
            pitch_bias_init=0.1,
        )
        torch.manual_seed(0)
        self.layer = EncoderLayer(self.config)
        self.rotary = PitchRotary(
            self.config.head_dim,
            heads,
            theta_mode=self.config.rotary_theta_mode,
            radius=self.config.rotary_radius,
        )
        x, self.lengths, self.f0, self.voiced = make_inputs(batch, frames, dim)
        self.x = x.requires_grad_(True)

    def context(self) -> AttentionContext:
        valid = length_mask(self.lengths, self.x.shape[1])
        pitch = None
        if self.name != "baseline":
            pitch = pitch_track(self.f0, self.voiced, self.lengths)
        similarity = pitch_similarity(pitch, pitch) if self.config.pitch_bias else None
        rotary = self.rotary(self.x.shape[1], pitch, device=self.x.device)
        return AttentionContext(rotary=rotary, mask=padding_bias(valid, torch.float32), similarity=similarity)

    def reference_attention(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        """The seed's path: complex rotation with torch.polar, explicit softmax attention."""
        attention = self.layer.self_attn
        batch, length, dim = x.shape
        qkv = attention.qkv(x).view(batch, length, 3, attention.heads, attention.head_dim).permute(2, 0, 3, 1, 4)
        q = apply_rotary_complex(qkv[0], context.rotary.angle, context.rotary.radius)
        k = apply_rotary_complex(qkv[1], context.rotary.angle, context.rotary.radius)
        scores = q @ k.transpose(-1, -2) / math.sqrt(attention.head_dim)
        scores = scores + attention.pitch_bias(context.mask, context.similarity)
        out = F.softmax(scores, dim=-1) @ qkv[2]
        return attention.out(out.transpose(1, 2).reshape(batch, length, dim))

    def step(self, attention_only: bool = False) -> None:
        context = self.context()
        layer = self.layer
        if attention_only:
            attend = self.reference_attention if self.name == "complex_reference" else layer.self_attn
            out = attend(layer.attn_norm(self.x), context)
        elif self.name == "complex_reference":
            h = layer.attn_residual(self.x, self.reference_attention(layer.attn_norm(self.x), context))
            out = layer.ffn_residual(h, layer.ffn(layer.ffn_norm(h)))
        else:
            out = layer(self.x, context)
        out.sum().backward()
        self.x.grad = None
        layer.zero_grad(set_to_none=True)


def time_variants(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Fastest-round seconds per variant, for the whole layer and for its attention sublayer alone."""
    variants = {name: Variant(name, args.batch, args.frames, args.dim, args.heads) for name in VARIANTS}
    for variant in variants.values():
        for _ in range(args.warmup):
            variant.step()
    samples = {part: {name: [] for name in VARIANTS} for part in ("layer", "attention")}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            for part in samples:
                start = time.perf_counter()
                variant.step(attention_only=part == "attention")
                samples[part][name].append(time.perf_counter() - start)
    return {part: {name: min(v) for name, v in times.items()} for part, times in samples.items()}


def time_model_steps(args: argparse.Namespace) -> dict[str, float]:
    """Fastest-round seconds of a full training step (plain RoPE; all pitch mechanisms, in float32
    and under bf16 autocast) and of decoding the same batch with the pitch model (joint CTC)."""
    batch, frames, tokens = args.batch, args.model_frames, args.model_tokens
    generator = torch.Generator().manual_seed(0)
    _, lengths, f0, voiced = make_inputs(batch, frames, args.dim)
    features = {"mel": torch.randn(batch, 80, frames, generator=generator), "f0": f0, "voiced": voiced}
    labels = torch.randint(3, 256, (batch, tokens), generator=generator)
    labels[:, -1] = 2
    pitch = dict(rotary_theta_mode="phase", rotary_radius="bounded", pitch_bias=True)
    models = {}
    for name, options in [("baseline", {}), ("pitch_fast", pitch)]:
        torch.manual_seed(0)
        config = EchoConfig(
            vocab_size=256, d_model=args.dim, attention_heads=args.heads, encoder_layers=4, decoder_layers=2,
            features=["mel", "f0"], subsampling=4, **options,
        )  # fmt: skip
        models[name] = EchoForConditionalGeneration(config).train()
    torch.manual_seed(0)
    seed_config = preset_config("seed", vocab_size=256, d_model=args.dim, attention_heads=args.heads, dropout=0.0)
    models["seed_preset"] = EchoForConditionalGeneration(seed_config).train()

    def step(model: EchoForConditionalGeneration, bf16: bool = False) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(features=features, feature_lengths=lengths, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    def decode(beams: int) -> None:
        with torch.no_grad():
            models["pitch_fast"].eval().generate(
                features=features, feature_lengths=lengths, num_beams=beams, max_new_tokens=tokens
            )
        models["pitch_fast"].train()

    runs = {
        "baseline": lambda: step(models["baseline"]),
        "pitch_fast": lambda: step(models["pitch_fast"]),
        "pitch_fast_bf16": lambda: step(models["pitch_fast"], bf16=True),
        "seed_preset": lambda: step(models["seed_preset"]),
        "decode_greedy": lambda: decode(1),
        "decode_beam4": lambda: decode(4),
    }
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.model_rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in samples.items()}


SEED_COMPONENTS = {
    "plain": {},
    "residual_blend": dict(residual_blend=True),
    "t_gate": dict(residual_gate="t_gate"),
    "m_gate": dict(residual_gate="m_gate"),
    "cosine": dict(attention_score="cosine"),
    "rbf": dict(attention_score="rbf"),
    "pad_scale": dict(attention_pad_scale=True),
}


def time_seed_components(args: argparse.Namespace) -> dict[str, float]:
    """Fastest-round seconds of one encoder layer (forward + backward, plain RoPE, padding mask)
    with each of the seed's layer-level options, interleaved with the plain layer."""
    x, lengths, _, _ = make_inputs(args.batch, args.frames, args.dim)
    x.requires_grad_(True)
    valid = length_mask(lengths, args.frames)
    rotary = PitchRotary(args.dim // args.heads, args.heads)
    layers = {}
    for name, options in SEED_COMPONENTS.items():
        torch.manual_seed(0)
        layers[name] = EncoderLayer(EchoConfig(d_model=args.dim, attention_heads=args.heads, dropout=0.0, **options))

    def step(layer: EncoderLayer) -> None:
        context = AttentionContext(rotary=rotary(args.frames, None, device=x.device), mask=padding_bias(valid, torch.float32))
        layer(x, context).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    for layer in layers.values():
        step(layer)
    samples: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(args.seed_rounds):
        for name, layer in layers.items():
            start = time.perf_counter()
            step(layer)
            samples[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in samples.items()}


def memory_status_kb() -> dict[str, int]:
    with open("/proc/self/status") as status:
        return {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}


def measure_memory_here(args: argparse.Namespace) -> None:
    """Child process: one forward + backward of one variant; prints the peak RSS growth in MB.

    The kernel's high-water mark is reset after the set-up (Linux `clear_refs` 5), so imports
    and input construction do not count."""
    variant = Variant(args.memory_of, args.batch, args.frames, args.dim, args.heads)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = memory_status_kb()["VmRSS"]
    variant.step()
    peak = memory_status_kb()["VmHWM"]
    print(json.dumps({"peak_mb": max(peak - before, 0) / 1024}))


def measure_memory(args: argparse.Namespace, name: str) -> float:
    command = [sys.executable, __file__, "--memory-of", name, "--threads", str(args.threads)]
    command += ["--batch", str(args.batch), "--frames", str(args.frames), "--dim", str(args.dim), "--heads", str(args.heads)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model-frames", type=int, default=500, help="input frames for model_step (before 4x)")
    parser.add_argument("--model-tokens", type=int, default=80)
    parser.add_argument("--model-rounds", type=int, default=7, help="0 skips model_step")
    parser.add_argument("--seed-rounds", type=int, default=7, help="0 skips seed_components")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        measure_memory_here(args)
        return

    timings = time_variants(args)
    seconds, attention_seconds = timings["layer"], timings["attention"]
    memory = {name: measure_memory(args, name) for name in VARIANTS}
    ratio = {name: seconds[name] / seconds["baseline"] for name in VARIANTS}
    report = {
        "benchmark": "pitch-aware attention, one encoder layer, forward + backward",
        "torch": torch.__version__,
        "threads": args.threads,
        "shape": {"batch": args.batch, "frames": args.frames, "d_model": args.dim, "heads": args.heads},
        "seconds": {name: round(value, 5) for name, value in seconds.items()},
        "ratio_vs_baseline": {name: round(value, 3) for name, value in ratio.items()},
        "attention_only": {
            "seconds": {name: round(value, 5) for name, value in attention_seconds.items()},
            "ratio_vs_baseline": {name: round(attention_seconds[name] / attention_seconds["baseline"], 3) for name in VARIANTS},
        },
        "peak_memory_mb": {name: round(value, 1) for name, value in memory.items()},
        "memory_ratio_vs_baseline": {name: round(memory[name] / memory["baseline"], 3) for name in VARIANTS},
        "target": {"pitch_fast_max_ratio": TARGET_RATIO, "met": ratio["pitch_fast"] <= TARGET_RATIO},
    }
    if args.model_rounds > 0:
        model_seconds = time_model_steps(args)
        report["model_step"] = {
            "shape": {"batch": args.batch, "frames": args.model_frames, "tokens": args.model_tokens},
            "note": "decode_* time generate() on the untrained pitch model (it runs to the token limit)",
            "seconds": {name: round(value, 4) for name, value in model_seconds.items()},
            "ratio_vs_baseline": round(model_seconds["pitch_fast"] / model_seconds["baseline"], 3),
            "bf16_speedup": round(model_seconds["pitch_fast"] / model_seconds["pitch_fast_bf16"], 3),
            "seed_preset_ratio_vs_baseline": round(model_seconds["seed_preset"] / model_seconds["baseline"], 3),
        }
    if args.seed_rounds > 0:
        component_seconds = time_seed_components(args)
        report["seed_components"] = {
            "note": "one encoder layer, forward + backward, each seed option alone (plain RoPE, padding mask)",
            "seconds": {name: round(value, 5) for name, value in component_seconds.items()},
            "ratio_vs_plain": {name: round(value / component_seconds["plain"], 3) for name, value in component_seconds.items()},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
