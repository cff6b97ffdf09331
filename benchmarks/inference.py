"""Real-time factor of transcription: an Echo model against pocketsphinx and Whisper base, same audio, same run.

The audio is about ``--seconds`` of speech: the utterances of ``--data`` (a manifest or dataset
folder with ``--split``) taken in order until that much, or else flite sentences (voices kal16
and slt alternating) synthesised into a temporary folder. Features are extracted once (their time
is measured and added to every configuration's RTF); each configuration then decodes every
utterance in length-sorted batches of exactly ``batch`` utterances:

* ``fp32`` / ``int8`` (dynamic int8 Linear layers, :func:`echoasr.model.quantize_int8`);
* batch 1 and 8;
* ``greedy`` (attention, 1 beam), ``beam4`` (joint CTC/attention beam search, 4 beams), and
  ``lm`` (CTC beam search with the word LM ``--lm`` + attention rescoring) when ``--lm`` is given.

Every configuration is preceded by one untimed warm-up batch. ``rtf`` = (feature seconds +
decoding seconds) / audio seconds, wall clock, with ``--threads`` torch threads; model loading
(and quantisation) is not counted, like ``echoasr evaluate``. WER is on the same utterances
(normalised text), so the int8 cost can be read off, but on ~60 s of audio it is a rough figure.

The reference recognisers go through :func:`echoasr.references.score_reference` (as
``echoasr evaluate --reference`` does): their ``rtf`` is the time spent per utterance over the
audio (pocketsphinx: per process, one process per thread; Whisper base: one process with all
threads), ``rtf_wall`` the wall clock including model loading. ``vs_<recogniser>`` =
recogniser rtf / configuration rtf (above 1: Echo is faster). ``targets`` are issue 13's RTF
targets on 2 cores; ``meets_target`` compares the configuration at batch 8 with them.
``echo_peak_rss_mib``: the peak resident memory of the benchmark's own process (model loading and
every Echo configuration, the float32 and int8 models side by side; the reference recognisers run
in processes of their own). ``transcription_peak_rss_mib``: per precision, the peak of a fresh
process that loads that model alone and decodes every utterance greedily at batch 8, what one
transcription needs.

    .venv/bin/python benchmarks/inference.py [--model runs/NAME] [--lm words.arpa|default] [--data test.tsv]

Without ``--model`` it times the default model (``$ECHOASR_MODEL``, else the one shipped in the package).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things with her from the store",
    "six spoons of fresh snow peas and five thick slabs of blue cheese",
    "we also need a small plastic snake and a big toy frog for the kids",
    "she can scoop these things into three red bags and we will go meet her",
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
    "the hogs were fed chopped corn and garbage",
    "four hours of steady work faced us",
    "a large size in stockings is hard to sell",
    "the boy was there when the sun rose",
    "a rod is used to catch pink salmon",
    "the source of the huge river is the clear spring",
    "kick the ball straight and follow through",
    "help the woman get back to her feet",
]
VOICES = ("kal16", "slt")
TARGETS = {"greedy": 0.05, "beam4": 0.15, "lm": 0.1}
REFERENCES = ("pocketsphinx", "whisper-base")


def synthesise(seconds: float, folder: Path) -> list:
    """flite utterances (in memory) until ``seconds`` of audio."""
    from echoasr.audio import SAMPLE_RATE, load_audio
    from echoasr.data.records import Utterance

    if shutil.which("flite") is None:
        raise SystemExit("flite is missing (scripts/install-system-deps), and no --data was given")
    utterances, total, index = [], 0.0, 0
    while total < seconds:
        text, voice = SENTENCES[index % len(SENTENCES)], VOICES[index % len(VOICES)]
        path = folder / f"u{index}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
        audio = load_audio(path)
        duration = len(audio) / SAMPLE_RATE
        utterances.append(Utterance(f"u{index}", text, voice, duration, str(path), audio))
        total += duration
        index += 1
    return utterances


def take(utterances: list, seconds: float) -> list:
    """The first utterances of a test set until ``seconds`` of audio (read to know their length)."""
    import dataclasses

    from echoasr.audio import SAMPLE_RATE
    from echoasr.data import read_audio

    chosen, total = [], 0.0
    for utterance in utterances:
        if total >= seconds:
            break
        duration = utterance.duration or len(read_audio(utterance)) / SAMPLE_RATE
        chosen.append(dataclasses.replace(utterance, duration=duration))
        total += duration
    return chosen


def decode_all(decoder, features: list[dict], batch: int) -> tuple[list[str], float]:
    """Texts of every feature dict (batches of ``batch`` by length) and the decoding seconds."""
    import torch

    collate = decoder.processor.collator()
    order = sorted(range(len(features)), key=lambda i: next(iter(features[i].values())).shape[-1])
    groups = [order[i : i + batch] for i in range(0, len(order), batch)]
    texts = [""] * len(features)
    with torch.inference_mode():
        warm = collate([{"features": features[i]} for i in groups[0]])
        decoder.decode_batch(warm["features"], warm["feature_lengths"])
        start = time.perf_counter()
        for group in groups:
            collated = collate([{"features": features[i]} for i in group])
            for index, transcript in zip(group, decoder.decode_batch(collated["features"], collated["feature_lengths"]),
                                         strict=True):
                texts[index] = transcript.text
        return texts, time.perf_counter() - start


def benchmark_model(model_path: str, utterances: list, lm: str | None, batches: list[int], threads: int) -> tuple[dict, dict]:
    from echoasr.decoding import DecodingOptions, SpeechDecoder, resolve_options
    from echoasr.evaluation import model_inputs, score
    from echoasr.loading import load_pretrained

    fp32, processor = load_pretrained(model_path, device="cpu")
    models = {"fp32": fp32, "int8": load_pretrained(model_path, int8=True)[0]}
    start = time.perf_counter()
    chunks, failed = model_inputs(utterances, processor, progress=False)
    feature_seconds = time.perf_counter() - start
    if failed:
        raise SystemExit(f"unreadable audio: {failed[0]}")
    owners = [u for u, pieces in enumerate(chunks) for _ in pieces]
    features = [piece for pieces in chunks for piece in pieces]
    audio_seconds = sum(u.duration for u in utterances)
    modes = {"greedy": DecodingOptions(beams=1), "beam4": DecodingOptions(beams=4)}
    if lm:
        modes["lm"] = resolve_options(model_path, lm)
    results = {}
    for mode, options in modes.items():
        decoder = SpeechDecoder(models["fp32"], processor, options)  # the LM is loaded once per mode
        for precision, model in models.items():
            decoder.model = model
            for batch in batches:
                texts, seconds = decode_all(decoder, features, batch)
                joined = [" ".join(t for o, t in zip(owners, texts, strict=True) if o == u and t)
                          for u in range(len(utterances))]
                measured = score([u.text for u in utterances], joined)
                results[f"{precision}_{mode}_batch{batch}"] = {
                    "precision": precision, "decoding": mode, "batch": batch,
                    "rtf": round((feature_seconds + seconds) / audio_seconds, 4),
                    "rtf_decode": round(seconds / audio_seconds, 4),
                    "wer": round(measured["wer"], 4), "cer": round(measured["cer"], 4),
                }
    facts = {"feature_seconds": round(feature_seconds, 2), "chunks": len(features), "threads": threads,
             "lm": modes["lm"].lm if lm else None}
    return results, facts


def transcription_peak_mib(model_path: str, utterances: list, int8: bool, threads: int) -> float:
    """Peak resident memory (MiB) of a fresh process that loads the model (``int8`` or float32),
    extracts the features of every utterance and decodes them greedily in batches of 8: what one
    transcription needs, without the other configurations this benchmark's own process holds."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_transcription_child, model_path, utterances, int8, threads).result()


def _transcription_child(model_path: str, utterances: list, int8: bool, threads: int) -> float:
    import torch

    from echoasr.decoding import DecodingOptions, SpeechDecoder
    from echoasr.evaluation import model_inputs
    from echoasr.loading import load_pretrained

    torch.set_num_threads(threads)
    model, processor = load_pretrained(model_path, device="cpu", int8=int8)
    chunks, _ = model_inputs(utterances, processor, progress=False)
    decode_all(SpeechDecoder(model, processor, DecodingOptions(beams=1)), [p for pieces in chunks for p in pieces], 8)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a spawned child would
    # report at least its parent's size at the fork
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def benchmark_references(names: list[str], utterances: list, threads: int) -> dict:
    from echoasr.errors import EchoError
    from echoasr.references import require, score_reference

    results = {}
    for name in names:
        try:
            require(name)
        except EchoError as error:
            results[name] = {"skipped": str(error)}
            continue
        scored = score_reference(name, utterances, threads=threads, progress=False)
        results[name] = {"rtf": round(scored["rtf"], 4),
                         "rtf_wall": round(scored["wall_seconds"] / scored["audio_seconds"], 4),
                         "wer": round(scored["wer"], 4), "cer": round(scored["cer"], 4),
                         "threads": scored["threads"], "processes": scored["processes"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="run folder, model folder or checkpoint (default: $ECHOASR_MODEL, else the shipped model)")
    parser.add_argument("--lm", default=None, help="word LM (ARPA, or 'default') for the lm configurations")
    parser.add_argument("--data", default=None, help="manifest or dataset folder (default: flite sentences)")
    parser.add_argument("--split", default=None)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio to transcribe (default 60)")
    parser.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads (default 2)")
    parser.add_argument("--references", default=",".join(REFERENCES), help="reference recognisers ('' for none)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    import torch

    from echoasr import atomic
    from echoasr.errors import EchoError
    from echoasr.evaluation import load_test_set
    from echoasr.export import portable_path
    from echoasr.pretrained import resolve_model
    from echoasr.references import parse_names

    torch.set_num_threads(args.threads)
    try:
        references = parse_names(args.references)
        model = str(resolve_model(args.model))  # no model: fail before synthesising audio
        with tempfile.TemporaryDirectory(prefix="echo-bench-") as scratch:
            if args.data:
                utterances = take(load_test_set(args.data, args.split), args.seconds)
            else:
                utterances = synthesise(args.seconds, Path(scratch))
            echo, facts = benchmark_model(model, utterances, args.lm, [int(b) for b in args.batches.split(",")],
                                          args.threads)
            # this process only (the references run in their own): loading + every Echo configuration
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            transcription_mib = {precision: round(transcription_peak_mib(model, utterances, precision == "int8",
                                                                         args.threads), 1)
                                 for precision in ("fp32", "int8")}
            others = benchmark_references(references, utterances, args.threads)
    except EchoError as error:
        raise SystemExit(f"inference benchmark: {error}") from None
    for name, reference in others.items():
        for result in echo.values():
            if "rtf" in reference:
                result[f"vs_{name}"] = round(reference["rtf"] / result["rtf"], 2)
    for result in echo.values():
        if result["batch"] == 8 and result["decoding"] in TARGETS:
            result["meets_target"] = result["rtf"] <= TARGETS[result["decoding"]]
    report = {
        "model": portable_path(Path(model)), "data": args.data or "flite sentences (kal16, slt)",
        "utterances": len(utterances), "audio_seconds": round(sum(u.duration for u in utterances), 2),
        **facts, "echo_peak_rss_mib": round(peak_mib, 1), "transcription_peak_rss_mib": transcription_mib,
        "targets": TARGETS, "echo": echo, "references": others,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        atomic.write_text(Path(args.out), text + "\n")


if __name__ == "__main__":
    main()
