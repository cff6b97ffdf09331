"""Speed of decoding with the word LM against decoding without it, same model, same run.

Features are extracted once (not timed). Then, in interleaved rounds, the utterances are decoded
(1) with the model's joint CTC/attention beam search (`--beam`, hallucination guard on) and
(2) with CTC beam search + the word LM + attention rescoring of the n-best. The figure per mode is
the fastest round (other processes on a shared machine only ever add time); real-time factor =
decoding seconds / audio seconds. Loading the LM (reading the ARPA file, building the lexicon
trie) is timed apart. Prints one JSON object.

    PYTHONPATH=src .venv/bin/python benchmarks/lm_decoding.py --model RUN --data DEV.tsv \
        [--lm LM.arpa|default] [--limit 50] [--rounds 2] [--threads 2]

Without a trained model, ``--preset base`` times a randomly initialised model of that preset (a
character tokenizer, the preset's features and normalisation): its CTC posteriors are noise, so the LM search
sees no clear path and does much work (with ``--no-guard``: its best path is often empty); the
WER figures are then meaningless.
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
from echoasr.lm.arpa import default_lm
from echoasr.loading import load_pretrained


def random_model(preset: str):
    from echoasr.model import EchoConfig, EchoForConditionalGeneration
    from echoasr.processor import SpeechProcessor, model_features
    from echoasr.text.tokenizers import BASE_ALPHABET, CharTokenizer
    from echoasr.training import resolve_config

    config = resolve_config(preset)
    tokenizer = CharTokenizer(sorted(BASE_ALPHABET))
    torch.manual_seed(0)
    model = EchoForConditionalGeneration(EchoConfig(vocab_size=tokenizer.vocab_size, **config.model)).eval()
    return model, SpeechProcessor(tokenizer, model_features(model.config), normalize=tuple(config.normalize))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="run folder (or --preset)")
    parser.add_argument("--preset", default=None, help="a randomly initialised model of this preset")
    parser.add_argument("--data", required=True)
    parser.add_argument("--lm", default="default", help="ARPA file, or 'default' (the general English model)")
    parser.add_argument("--limit", type=int, default=50, help="utterances (a fixed random sample)")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-guard", action="store_true",
                        help="decode utterances whose CTC best path is empty too (a random model's usually is)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if (args.model is None) == (args.preset is None):
        parser.error("give --model or --preset")
    model, processor = load_pretrained(args.model, device="cpu") if args.model else random_model(args.preset)
    utterances = load_dataset_any(args.data, max_duration=processor.max_duration)
    if args.limit and len(utterances) > args.limit:
        utterances = random.Random(0).sample(utterances, args.limit)
    arrays, _ = extract_features(utterances, processor.features, processor.settings, progress=False)
    kept = [(u, a) for u, a in zip(utterances, arrays, strict=True) if a is not None]
    dataset = SpeechDataset([a for _, a in kept])
    references = [u.text for u, _ in kept]
    audio_seconds = sum(u.duration or 0.0 for u, _ in kept) or dataset.seconds()

    plain = DecodingOptions(beams=args.beam, guard=not args.no_guard)
    if args.model:
        with_lm = resolve_options(args.model, args.lm, beams=args.beam)
    else:
        with_lm = DecodingOptions(beams=args.beam, lm=str(default_lm()) if args.lm == "default" else args.lm)
    with_lm.guard = not args.no_guard
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
        "model": args.model or f"{args.preset} (random weights)", "data": args.data, "utterances": len(kept), "audio_seconds": round(audio_seconds, 2),
        "threads": args.threads, "beam": args.beam, "guard": with_lm.guard, "lm": with_lm.lm,
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
    result["empty_outputs_lm"] = sum(not text for text in outputs["lm"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
