"""How fast the synthetic corpus builds, against the bare TTS engines on the same utterances.

    .venv/bin/python benchmarks/synth_build.py [--utterances 300] [--workers 2]

Prints one JSON object: wall/CPU seconds of (a) the engines alone (no effects, serial), (b) the
full pipeline serial and (c) the full pipeline with --workers threads, audio hours, and the
ratios b/a (cost of sox effects, noise and writing) and b/c (parallel speed-up).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import soundfile

from echoasr.data.synth import corpus, render
from echoasr.data.synth.render import Effects
from echoasr.data.synth.sentences import load_sentences


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(function, *args) -> dict:
    wall, cpu = time.perf_counter(), children_cpu() + time.process_time()
    function(*args)
    return {"wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(children_cpu() + time.process_time() - cpu, 2)}


def engines_only(jobs, root: Path) -> None:
    """The engines' raw output, converted to 16 kHz by sox and nothing else."""
    plain = [replace(job, effects=Effects(engine_f0=job.effects.engine_f0)) for job in jobs]
    for batch in corpus._batches(plain):
        render.render_jobs(batch, root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = corpus.plan_corpus(corpus.make_settings(args.utterances, seed=0), load_sentences())
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        results = {
            "engines_only_serial": timed(engines_only, jobs, scratch / "a"),
            "pipeline_serial": timed(corpus.render_all, jobs, scratch / "b", 1, False),
            "pipeline_parallel": timed(corpus.render_all, jobs, scratch / "c", args.workers, False),
        }
        hours = sum(soundfile.info(str(p)).duration for p in (scratch / "c").rglob("*.wav")) / 3600
    serial, parallel = results["pipeline_serial"], results["pipeline_parallel"]
    results.update({
        "utterances": args.utterances, "workers": args.workers, "audio_hours": round(hours, 3),
        "effects_cost_ratio": round(serial["wall_s"] / results["engines_only_serial"]["wall_s"], 2),
        "parallel_speedup": round(serial["wall_s"] / parallel["wall_s"], 2),
        "audio_seconds_per_cpu_second": round(hours * 3600 / parallel["cpu_s"], 1),
    })
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
