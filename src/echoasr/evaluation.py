"""Evaluation by real decoding: WER, CER, substitutions/deletions/insertions and real-time factor.

References and hypotheses are both passed through :func:`echoasr.text.normalize` before scoring
(jiwer, corpus-level: total errors over total reference words or characters). Decoding is batched
(utterances sorted by length, batches within a frame budget) and uses the model's joint
CTC/attention beam search, or the CTC head's best path (``ctc_greedy``) for speed comparisons.

The real-time factor counts this run's wall-clock time for feature extraction plus decoding,
divided by the audio's duration (model loading excluded); ``rtf_decode`` counts decoding alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.text import normalize

log = logging.getLogger(__name__)

DEFAULT_BATCH_FRAMES = 40000


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch threads (None: unchanged), then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus-level WER and CER (fractions) with word-level substitutions, deletions, insertions."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]  # an empty reference has no errors to count
    if not pairs:
        return {"wer": 0.0, "cer": 0.0, "substitutions": 0, "deletions": 0, "insertions": 0, "words": 0, "characters": 0}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {
        "wer": float(words.wer), "cer": float(chars.cer),
        "substitutions": int(words.substitutions), "deletions": int(words.deletions), "insertions": int(words.insertions),
        "words": int(words.hits + words.substitutions + words.deletions),
        "characters": int(chars.hits + chars.substitutions + chars.deletions),
    }


def decode_dataset(model, processor, dataset, *, beams: int = 1, ctc_weight: float | None = None,
                   ctc_greedy: bool = False, batch_frames: int = DEFAULT_BATCH_FRAMES, bf16: bool = False,
                   progress: bool = True, decoding=None) -> list[str]:
    """Hypotheses (text) for every item of a :class:`~echoasr.data.featurize.SpeechDataset`, in order:
    the CTC best path (``ctc_greedy``), or :func:`echoasr.decoding.decode_transcripts` with the
    :class:`~echoasr.decoding.DecodingOptions` ``decoding`` (default: ``beams`` and ``ctc_weight``,
    no LM, hallucination guard on)."""
    import torch
    from tqdm import tqdm

    from echoasr.data.collate import FrameBatchSampler
    from echoasr.decoding import DecodingOptions, decode_transcripts

    if not ctc_greedy:
        options = decoding or DecodingOptions(beams=beams, ctc_weight=ctc_weight)
        transcripts = decode_transcripts(model, processor, dataset, options, batch_frames=batch_frames, bf16=bf16,
                                         progress=progress)
        return [t.text for t in transcripts]
    device = next(model.parameters()).device
    sampler = FrameBatchSampler(dataset.lengths, batch_frames, shuffle=False, max_items=64)
    collate = processor.collator()
    texts: list[str] = [""] * len(dataset)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    bar = tqdm(total=len(dataset), desc="decoding", unit="utt", disable=not progress, dynamic_ncols=True)
    with bar, torch.inference_mode(), autocast:
        for indices in sampler:
            batch = collate([{"features": dataset.features[i]} for i in indices])
            features = {name: tensor.to(device) for name, tensor in batch["features"].items()}
            ids = model.ctc_greedy_decode(features, batch["feature_lengths"].to(device))
            for index, row in zip(indices, ids.tolist(), strict=True):
                texts[index] = processor.decode(row)
            bar.update(len(indices))
    return texts


def evaluate(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    *,
    split: str | None = None,
    beams: int = 8,
    ctc_weight: float | None = None,
    ctc_greedy: bool = False,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    bf16: bool = False,
    workers: int | None = 1,
    cache_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    threads: int | None = None,
    progress: bool = True,
    lm: str | None = None,
) -> dict[str, Any]:
    """Decode ``data`` (manifest or dataset folder + ``split``) with the model at ``model_path``
    and score it; writes per-utterance hypotheses (TSV) to ``out`` (default
    ``<model>/eval/<data name>.tsv``) and returns the metrics. ``lm``: an ARPA file, ``"none"``,
    ``"default"``, or None for the LM saved with the model (see :func:`echoasr.decoding.resolve_options`)."""
    import torch

    from echoasr.data import load_dataset_any
    from echoasr.data.featurize import SpeechDataset, extract_features
    from echoasr.processor import load_pretrained, resolve_model_dir

    with torch_threads(threads):
        return _evaluate(model_path, data, split, beams, ctc_weight, ctc_greedy, batch_frames, bf16, workers,
                         cache_dir, out, progress, lm)


def _evaluate(model_path, data, split, beams, ctc_weight, ctc_greedy, batch_frames, bf16, workers, cache_dir, out,
              progress, lm=None) -> dict[str, Any]:
    import torch

    from echoasr.data import load_dataset_any
    from echoasr.data.featurize import SpeechDataset, extract_features
    from echoasr.decoding import options_summary, resolve_options
    from echoasr.processor import load_pretrained, resolve_model_dir

    model, processor = load_pretrained(model_path)
    decoding = None if ctc_greedy else resolve_options(model_path, lm, beams=beams, ctc_weight=ctc_weight)
    utterances = load_dataset_any(data, split=split, max_duration=processor.max_duration)
    start = time.perf_counter()
    arrays, failures = extract_features(utterances, processor.features, processor.settings, cache_dir=cache_dir,
                                        workers=workers, progress=progress, description="features")
    kept = [(u, a) for u, a in zip(utterances, arrays, strict=True) if a is not None]
    if not kept:
        raise EchoError("no utterance could be decoded", data)
    dataset = SpeechDataset([a for _, a in kept], utterances=[u for u, _ in kept])
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hypotheses = decode_dataset(model, processor, dataset, beams=beams, ctc_weight=ctc_weight, ctc_greedy=ctc_greedy,
                                batch_frames=batch_frames, bf16=bf16, progress=progress, decoding=decoding)
    decode_seconds = time.perf_counter() - start

    references = [u.text for u, _ in kept]
    audio_seconds = sum(u.duration or 0.0 for u, _ in kept) or dataset.seconds()
    metrics = score(references, hypotheses)
    name = Path(data).stem if split is None else f"{Path(data).name}-{split}"
    target = Path(out) if out else resolve_model_dir(model_path) / "eval" / f"{name}.tsv"
    write_hypotheses(target, [u for u, _ in kept], references, hypotheses)
    method = "ctc-greedy" if ctc_greedy else ("attention" if model.ctc_head is None or ctc_weight == 0 else "joint")
    if decoding is not None and decoding.lm is not None:
        method = f"ctc+lm, attention rescoring {decoding.rescore_weight:g}"
    return {
        **metrics,
        "utterances": len(kept),
        "skipped": failures,
        "audio_seconds": round(audio_seconds, 2),
        "rtf": (feature_seconds + decode_seconds) / audio_seconds,
        "rtf_decode": decode_seconds / audio_seconds,
        "feature_seconds": round(feature_seconds, 2),
        "decode_seconds": round(decode_seconds, 2),
        "decoding": method,
        "lm": None if decoding is None else options_summary(decoding).get("lm"),
        "lm_options": None if decoding is None or decoding.lm is None else options_summary(decoding),
        "beams": 1 if ctc_greedy else beams,
        "bf16": bf16,
        "threads": torch.get_num_threads(),
        "model": str(model_path),
        "data": str(data) if split is None else f"{data} ({split})",
        "hypotheses": str(target),
    }


def write_hypotheses(path: Path, utterances, references: Sequence[str], hypotheses: Sequence[str]) -> None:
    """TSV: id, normalised reference, normalised hypothesis, word errors of that utterance."""
    import jiwer

    lines = ["id\treference\thypothesis\tword_errors\treference_words"]
    for utterance, reference, hypothesis in zip(utterances, references, hypotheses, strict=True):
        ref, hyp = normalize(reference), normalize(hypothesis)
        errors = 0
        if ref:
            measure = jiwer.process_words(ref, hyp)
            errors = measure.substitutions + measure.deletions + measure.insertions
        lines.append(f"{utterance.id}\t{ref}\t{hyp}\t{errors}\t{len(ref.split())}")
    atomic.write_text(path, "\n".join(lines) + "\n")


def format_result(result: dict[str, Any]) -> str:
    return (
        f"{result['data']}: {result['utterances']} utterances, {result['audio_seconds'] / 60:.1f} min of audio"
        + (f" ({result['skipped']} skipped)" if result["skipped"] else "") + "\n"
        f"WER {100 * result['wer']:.2f}%  (S {result['substitutions']}, D {result['deletions']}, "
        f"I {result['insertions']} of {result['words']} words)   CER {100 * result['cer']:.2f}%\n"
        f"decoding: {result['decoding']}, beams {result['beams']}; RTF {result['rtf']:.3f} "
        f"(decoding {result['rtf_decode']:.3f}, {result['threads']} threads)\n"
        f"hypotheses: {result['hypotheses']}"
    )


# ------------------------------------------------------------------------------- pocketsphinx


def pocketsphinx_evaluate(data: str | os.PathLike, *, workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """The pocketsphinx reference (PyPI wheel, its bundled US English model) on a manifest."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from echoasr.data import load_dataset_any

    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        raise EchoError("pocketsphinx is not installed (pip install 'echoasr[reference]')") from None
    utterances = load_dataset_any(data)
    workers = max(1, min(workers or os.cpu_count() or 1, len(utterances)))
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool, \
            tqdm(total=len(utterances), desc="pocketsphinx", unit="utt", disable=not progress, dynamic_ncols=True) as bar:
        hypotheses, cpu_seconds = [], 0.0
        for text, seconds in pool.map(_pocketsphinx_one, utterances, chunksize=4):
            hypotheses.append(text)
            cpu_seconds += seconds
            bar.update()
    wall = time.perf_counter() - start
    audio_seconds = sum(u.duration or 0.0 for u in utterances)
    return {
        **score([u.text for u in utterances], hypotheses),
        "utterances": len(utterances),
        "audio_seconds": round(audio_seconds, 2),
        "rtf": cpu_seconds / audio_seconds,  # per core, like the single-core figure in the notes
        "wall_seconds": round(wall, 1),
        "workers": workers,
        "data": str(data),
    }


_DECODER = None


def _pocketsphinx_one(utterance) -> tuple[str, float]:
    global _DECODER
    import numpy as np
    import pocketsphinx

    from echoasr.data import read_audio

    if _DECODER is None:
        _DECODER = pocketsphinx.Decoder(loglevel="FATAL")
    start = time.process_time()
    audio = read_audio(utterance)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    _DECODER.start_utt()
    _DECODER.process_raw(pcm, full_utt=True)
    _DECODER.end_utt()
    hypothesis = _DECODER.hyp()
    return (hypothesis.hypstr if hypothesis is not None else ""), time.process_time() - start
