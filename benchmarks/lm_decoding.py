"""Speed of decoding with the word LM against decoding without it, same model, same run.

Features are extracted once (not timed). Then, in interleaved rounds, the utterances are decoded
(1) with the model's joint CTC/attention beam search (`--beam`, hallucination guard on) and
(2) with CTC beam search + the word LM + attention rescoring of the n-best. The figure per mode is
the fastest round (other processes on a shared machine only ever add time); real-time factor =
decoding seconds / audio seconds. Loading the LM (reading the ARPA file, building the lexicon
trie) is timed apart. Prints one JSON object.

    PYTHONPATH=src .venv/bin/python benchmarks/lm_decoding.py --model RUN --data DEV.tsv \
        [--lm LM.arpa|default] [--limit 50] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from echoasr.data import load_dataset_any
from echoasr.data.featurize import SpeechDataset, extract_features
from echoasr.decoding import DecodingOptions, SpeechDecoder, decode_transcripts, resolve_options
from echoasr.evaluation import DEFAULT_BATCH_FRAMES, score
from echoasr.processor import load_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--lm", default="default", help="ARPA file, or 'default' (the general English model)")
    parser.add_argument("--limit", type=int, default=50, help="utterances (a fixed random sample)")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, processor = load_pretrained(args.model, device="cpu")
    utterances = load_dataset_any(args.data, max_duration=processor.max_duration)
    if args.limit and len(utterances) > args.limit:
        utterances = random.Random(0).sample(utterances, args.limit)
    arrays, _ = extract_features(utterances, processor.features, processor.settings, progress=False)
    kept = [(u, a) for u, a in zip(utterances, arrays, strict=True) if a is not None]
    dataset = SpeechDataset([a for _, a in kept])
    references = [u.text for u, _ in kept]
    audio_seconds = sum(u.duration or 0.0 for u, _ in kept) or dataset.seconds()

    plain = DecodingOptions(beams=args.beam)
    with_lm = resolve_options(args.model, args.lm, beams=args.beam)
    start = time.perf_counter()
    lm_decoder = SpeechDecoder(model, processor, with_lm)
    load_seconds = time.perf_counter() - start
    plain_decoder = SpeechDecoder(model, processor, plain)

    best = {"no_lm": float("inf"), "lm": float("inf")}
    outputs = {}
    for _ in range(args.rounds):
        for name, options, decoder in (("no_lm", plain, plain_decoder), ("lm", with_lm, lm_decoder)):
            start = time.perf_counter()
            transcripts = decode_transcripts(model, processor, dataset, options, batch_frames=DEFAULT_BATCH_FRAMES,
                                             progress=False, decoder=decoder)
            best[name] = min(best[name], time.perf_counter() - start)
            outputs[name] = [t.text for t in transcripts]
    result = {
        "model": args.model, "data": args.data, "utterances": len(kept), "audio_seconds": round(audio_seconds, 2),
        "threads": args.threads, "beam": args.beam, "lm": with_lm.lm,
        "lm_options": {k: getattr(with_lm, k) for k in ("lm_weight", "word_bonus", "rescore_weight", "lm_beam", "nbest")},
        "lm_load_seconds": round(load_seconds, 2),
        "rtf_no_lm": round(best["no_lm"] / audio_seconds, 4),
        "rtf_lm": round(best["lm"] / audio_seconds, 4),
        "ratio_lm_to_no_lm": round(best["lm"] / best["no_lm"], 3),
    }
    for name in ("no_lm", "lm"):
        metrics = score(references, outputs[name])
        result[f"wer_{name}"] = round(metrics["wer"], 4)
        result[f"insertions_{name}"] = metrics["insertions"]
    result["words"] = score(references, outputs["lm"])["words"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
