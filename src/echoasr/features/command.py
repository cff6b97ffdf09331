"""``echoasr features``: extract features from audio files, print a summary, optionally save them.

Output rule for ``--out``: with one input and a path that is not an existing folder, the arrays go
to exactly that ``.npz`` file; with several inputs (or an existing folder) ``--out`` is a folder
and each input gets ``<folder>/<input stem>.npz`` (inputs sharing a stem are refused up front).
Each ``.npz`` holds one array per feature key (``mel``, ``f0``, ``voiced``, ...).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from echoasr.atomic import atomic_write
from echoasr.audio import FRAME_PERIOD, SAMPLE_RATE, load_audio
from echoasr.errors import EchoError
from echoasr.features import FeatureSettings, check_feature_names, extract_file


def summarize(path: str | os.PathLike, num_samples: int, arrays: dict[str, np.ndarray], settings: FeatureSettings) -> dict:
    """Per-file facts: duration, frame count, array shapes and (if extracted) f0 statistics."""
    frames = next(iter(arrays.values())).shape[-1]
    summary = {
        "path": os.fspath(path),
        "duration_s": round(num_samples / SAMPLE_RATE, 4),
        "frames": frames,
        "frame_period_s": FRAME_PERIOD,
        "shapes": {key: list(array.shape) for key, array in arrays.items()},
        "f0_method": None,
        "voiced_fraction": None,
        "f0_median_hz": None,
        "f0_min_hz": None,
        "f0_max_hz": None,
    }
    if "f0" in arrays:
        voiced = arrays["voiced"] > 0
        f0 = arrays["f0"][voiced]
        summary |= {"f0_method": settings.f0_method, "voiced_fraction": round(float(voiced.mean()), 4)}
        if f0.size:
            summary |= {
                "f0_median_hz": round(float(np.median(f0)), 2),
                "f0_min_hz": round(float(f0.min()), 2),
                "f0_max_hz": round(float(f0.max()), 2),
            }
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['path']}: {summary['duration_s']:.2f} s, {summary['frames']} frames of 10 ms"]
    for key, shape in summary["shapes"].items():
        lines.append(f"  {key:<10} {' x '.join(map(str, shape))}")
    if summary["voiced_fraction"] is not None:
        line = f"  f0 ({summary['f0_method']}): voiced {100 * summary['voiced_fraction']:.1f}% of frames"
        if summary["f0_median_hz"] is not None:
            line += (
                f", median {summary['f0_median_hz']:.1f} Hz,"
                f" range {summary['f0_min_hz']:.1f}-{summary['f0_max_hz']:.1f} Hz"
            )
        lines.append(line)
    return "\n".join(lines)


def output_paths(inputs: Sequence[str], out: str | None) -> list[Path | None]:
    """Where each input's ``.npz`` goes under the ``--out`` rule (None: not saved)."""
    if out is None:
        return [None] * len(inputs)
    target = Path(out)
    if len(inputs) == 1 and not target.is_dir():
        return [target]
    if target.exists() and not target.is_dir():
        raise EchoError("with several inputs --out must be a folder", target)
    paths = [target / f"{Path(name).stem}.npz" for name in inputs]
    seen: dict[Path, str] = {}
    for name, path in zip(inputs, paths):
        if path in seen:
            raise EchoError(f"would overwrite the output of {seen[path]} (same file stem)", name)
        seen[path] = name
    return paths


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to ``path`` atomically."""
    with atomic_write(path) as file:
        np.savez(file, **arrays)


def run(
    inputs: Sequence[str],
    features: Sequence[str],
    settings: FeatureSettings,
    *,
    as_json: bool = False,
    out: str | None = None,
    cache_dir: str | None = None,
    pcm_sample_rate: int,
    pcm_channels: int,
) -> int:
    names = check_feature_names(features)
    destinations = output_paths(inputs, out)
    for name, destination in zip(inputs, destinations):
        audio = load_audio(name, pcm_sample_rate=pcm_sample_rate, pcm_channels=pcm_channels)
        arrays = extract_file(
            name, names, settings, cache_dir,
            pcm_sample_rate=pcm_sample_rate, pcm_channels=pcm_channels, audio=audio,
        )
        summary = summarize(name, len(audio), arrays, settings)
        if destination is not None:
            save_npz(destination, arrays)
            summary["out"] = os.fspath(destination)
        text = json.dumps(summary) if as_json else format_summary(summary)
        if destination is not None and not as_json:
            text += f"\n  saved {destination}"
        print(text, file=sys.stdout, flush=True)
    return 0
