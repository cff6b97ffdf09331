"""Real-time factor (compute seconds / audio seconds) of the front end, single thread.

    .venv/bin/python benchmarks/features.py [--seconds 60] [--repeats 3]

Synthesises speech offline (flite voices, espeak-ng as fallback), then times each feature and each
f0 tracker on it with one thread on one CPU core. Compute seconds are the process's CPU time
(equal to wall time for single-threaded code on an idle core, and far less disturbed by other jobs
on a shared machine); wall-clock RTFs are reported beside them. Prints JSON: RTF per item (best of
--repeats; one run for the slow trackers), the ratio of each item to librosa's mel spectrogram
measured in the same run (a baseline that absorbs machine speed), and the issue's targets with
pass/fail: log-mel + DIO f0 RTF <= 0.01, all default features RTF <= 0.03.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy/scipy/numba load their thread pools

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {"mel+f0 (dio)": 0.01, "all default features": 0.03}
SLOW = {"f0 harvest", "f0 pyin"}
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """At least ``seconds`` of TTS speech at 16 kHz (several voices), cut to exactly that length."""
    from echoasr.audio import SAMPLE_RATE, load_audio

    if shutil.which("flite"):
        engine, voices = "flite", ["slt", "awb", "rms", "kal16"]
    elif shutil.which("espeak-ng"):
        engine, voices = "espeak-ng", ["en-us", "en-us+f3", "en", "en-us+m3"]
    else:
        sys.exit("benchmarks/features.py needs flite or espeak-ng to synthesise speech")
    pieces, total, index = [], 0, 0
    with tempfile.TemporaryDirectory() as folder:
        while total < seconds * SAMPLE_RATE:
            voice, text = voices[index % len(voices)], SENTENCES[index % len(SENTENCES)]
            wav = Path(folder) / f"{index}.wav"
            command = (["flite", "-voice", voice, "-t", text, "-o", str(wav)] if engine == "flite"
                       else ["espeak-ng", "-v", voice, "-w", str(wav), text])
            subprocess.run(command, check=True, capture_output=True)
            pieces.append(load_audio(wav))
            total += len(pieces[-1])
            index += 1
    return np.concatenate(pieces)[: int(seconds * SAMPLE_RATE)], f"{engine} ({', '.join(voices)})"


def best_times(function, repeats: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        function()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import librosa

    from echoasr.features import DEFAULT_FEATURES, FeatureSettings, extract
    from echoasr.features.mel import log_mel_spectrogram
    from echoasr.features.phase import accumulated_phase
    from echoasr.features.pitch import track_pitch
    from echoasr.features.waveform import frame_waveform
    from echoasr.features.world import world_features

    audio, source = speech(args.seconds)
    duration = len(audio) / 16000
    f0, voiced = track_pitch(audio, "dio")
    # Harvest and pYIN run last: after pYIN's large allocations glibc serves big buffers from the
    # heap instead of fresh mmap pages, which makes DIO ~1/3 faster; the others are timed cold.
    items = {
        "baseline: librosa mel power spectrogram": lambda: librosa.feature.melspectrogram(
            y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=80),
        "mel": lambda: log_mel_spectrogram(audio),
        "f0 dio": lambda: track_pitch(audio, "dio"),
        "f0 praat": lambda: track_pitch(audio, "praat"),
        "harmonic+aperiodic (CheapTrick+D4C)": lambda: world_features(audio, f0),
        "phase": lambda: accumulated_phase(f0, voiced),
        "waveform": lambda: frame_waveform(audio),
        "mel+f0 (dio)": lambda: extract(audio, ["mel", "f0"], FeatureSettings()),
        "all default features": lambda: extract(audio, DEFAULT_FEATURES, FeatureSettings()),
        "f0 harvest": lambda: track_pitch(audio, "harvest"),
        "f0 pyin": lambda: track_pitch(audio, "pyin"),
    }
    short = audio[:16000]
    for method in ("dio", "harvest", "praat", "pyin"):  # warm-up: imports, numba compilation
        track_pitch(short, method)
    extract(short)
    librosa.feature.melspectrogram(y=short, sr=16000, n_fft=400, hop_length=160, n_mels=80)

    times = {name: best_times(function, 1 if name in SLOW else args.repeats) for name, function in items.items()}
    rtf = {name: cpu / duration for name, (cpu, _) in times.items()}
    rtf_wall = {name: wall / duration for name, (_, wall) in times.items()}
    baseline = rtf["baseline: librosa mel power spectrogram"]
    targets = {name: {"rtf": round(rtf[name], 5), "target": limit, "pass": rtf[name] <= limit}
               for name, limit in TARGETS.items()}
    report = {
        "benchmark": "front-end real-time factor (compute s / audio s), one thread on one core",
        "audio_seconds": round(duration, 2),
        "audio": source,
        "voiced_fraction_dio": round(float(voiced.mean()), 3),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "repeats": args.repeats,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rtf": {name: round(value, 5) for name, value in rtf.items()},
        "rtf_wall": {name: round(value, 5) for name, value in rtf_wall.items()},
        "ratio_to_baseline": {name: round(value / baseline, 2) for name, value in rtf.items()},
        "targets": targets,
        "pass": all(target["pass"] for target in targets.values()),
    }
    print(json.dumps(report, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
