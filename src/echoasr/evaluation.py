"""Evaluation by real decoding: WER, CER, substitutions/deletions/insertions and real-time factor.

Every utterance of the test set is scored: one longer than the model takes is cut at silences
into chunks (as ``transcribe`` does) whose texts are joined, and one whose audio cannot be read
counts as all-deleted (listed in ``failed`` with the reason). A truncated file (less audio than
its header declares) is scored on what it holds and listed in ``truncated``. Reference recognisers
(:mod:`echoasr.references`) score the same utterances.

References and hypotheses are both passed through :func:`echoasr.text.normalize` before scoring
(jiwer, corpus-level: total errors over total reference words or characters). Decoding is batched
(utterances sorted by length, batches within a frame budget) and uses the model's joint
CTC/attention beam search, or the CTC head's best path (``ctc_greedy``) for speed comparisons.

The real-time factor counts this run's wall-clock time for feature extraction plus decoding,
divided by the audio's duration (model loading excluded); ``rtf_decode`` counts decoding alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from echoasr import atomic
from echoasr.audio import FRAME_PERIOD
from echoasr.errors import EchoError
# Below evaluation, references and transcribe alike (still importable from here).
from echoasr.runtime import DEFAULT_BATCH_FRAMES, check_precision, torch_threads
from echoasr.scoring import score
from echoasr.text import normalize

log = logging.getLogger(__name__)

def decode_dataset(model, processor, dataset, *, beams: int = 1, ctc_weight: float | None = None,
                   ctc_greedy: bool = False, batch_frames: int = DEFAULT_BATCH_FRAMES, bf16: bool = False,
                   progress: bool = True, decoding=None) -> list[str]:
    """Hypotheses (text) for every item of a :class:`~echoasr.data.featurize.SpeechDataset`, in order:
    the CTC best path (``ctc_greedy``), or :func:`echoasr.decoding.decode_transcripts` with the
    :class:`~echoasr.decoding.DecodingOptions` ``decoding`` (default: ``beams`` and ``ctc_weight``,
    no LM, hallucination guard on)."""
    from echoasr.decoding import DecodingOptions, decode_transcripts

    options = decoding or DecodingOptions(beams=1 if ctc_greedy else beams, ctc_weight=ctc_weight, ctc_greedy=ctc_greedy)
    transcripts = decode_transcripts(model, processor, dataset, options, batch_frames=batch_frames, bf16=bf16,
                                     progress=progress)
    return [t.text for t in transcripts]


def decode_chunks(model, processor, chunks: Sequence[Sequence[dict]], **options) -> list[str]:
    """One text per item of ``chunks`` (each a list of feature dicts: the chunks of one recording,
    or none for a recording that could not be read): all chunks are decoded together by
    :func:`decode_dataset` (``options``), and each recording's chunk texts joined in order."""
    from echoasr.data.featurize import SpeechDataset

    owners = [index for index, pieces in enumerate(chunks) for _ in pieces]
    features = [piece for pieces in chunks for piece in pieces]
    texts = decode_dataset(model, processor, SpeechDataset(features), **options) if features else []
    joined: list[list[str]] = [[] for _ in chunks]
    for owner, text in zip(owners, texts, strict=True):
        if text:
            joined[owner].append(text)
    return [" ".join(parts) for parts in joined]


def load_test_set(data: str | os.PathLike, split: str | None = None):
    """Every utterance of ``data`` that has a transcript, whatever its length, including those whose
    audio cannot be read (scored as all-deleted): a test set is never shrunk silently."""
    from echoasr.data import load_dataset_any

    return load_dataset_any(data, split=split, check_audio=False)


def evaluate(
    model_path: str | os.PathLike | None,
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
    references: str | Sequence[str] = (),
    progress: bool = True,
    lm: str | None = None,
    int8: bool = False,
    guard: bool = True,
    nbest: int | None = None,
) -> dict[str, Any]:
    """Decode every utterance of ``data`` (manifest or dataset folder + ``split``) with the model at
    ``model_path`` and score it; the reference recognisers named in ``references``
    (:mod:`echoasr.references`) score the same utterances, under ``result["references"]``.

    Per-utterance hypotheses (TSV) go to ``out`` (default ``<model>/eval/<data name>.tsv``, or
    ``./eval/<data name>.tsv`` for the model shipped in the package), a
    reference's beside it as ``<stem>.<recogniser>.tsv`` (none without a model or ``out``).
    ``model_path`` None: the default model (:func:`echoasr.pretrained.default_model`), or no model
    when ``references`` are given (``"default"`` names the default model alongside them). ``lm``:
    an ARPA file, ``"none"``, ``"default"``, or None for the LM saved with the model
    (:func:`echoasr.decoding.resolve_options`).
    ``int8``: decode on the CPU with dynamically quantised Linear layers (not with ``bf16``).
    ``guard``: the hallucination guard of :mod:`echoasr.decoding` (off: the search alone).
    ``nbest``: hypotheses the LM search keeps, or the attention n-best the LM rescores
    (:class:`echoasr.decoding.DecodingOptions`).
    """
    from echoasr.pretrained import resolve_model
    from echoasr.processor import resolve_model_dir
    from echoasr.references import parse_names, require, score_reference

    names = parse_names(references)
    check_precision(bf16, int8)
    if model_path is not None or not names:  # references alone score without a model
        model_path = resolve_model(model_path)
    for recogniser in names:
        require(recogniser)  # a missing package fails before any decoding
    model_dir = None if model_path is None else resolve_model_dir(model_path)  # a wrong folder fails first
    utterances = load_test_set(data, split)
    name = Path(data).stem if split is None else f"{Path(data).name}-{split}"
    target = Path(out) if out else (_results_dir(model_dir) / "eval" / f"{name}.tsv" if model_dir else None)
    result: dict[str, Any] = {"data": str(data) if split is None else f"{data} ({split})",
                              "utterances": len(utterances), "truncated": truncated_files(utterances)}
    if model_path is not None:
        with torch_threads(threads):
            hypotheses, facts = _decode_test_set(model_path, utterances, beams, ctc_weight, ctc_greedy, batch_frames,
                                                 bf16, workers, cache_dir, progress, lm, int8, guard, nbest)
        write_hypotheses(target, utterances, hypotheses, facts["failed"], facts.pop("chunks"))
        result |= {**score([u.text for u in utterances], hypotheses), **facts, "model": str(model_path),
                   "hypotheses": str(target)}
    if names:
        result["references"] = {}
        for recogniser in names:
            reference = score_reference(recogniser, utterances, threads=threads, progress=progress)
            texts = reference.pop("texts")
            path = None if target is None else target.with_name(f"{target.stem}.{recogniser}.tsv")
            if path is not None:
                write_hypotheses(path, utterances, texts, reference["failed"])
            result["references"][recogniser] = {**reference, "hypotheses": None if path is None else str(path)}
    return result


def truncated_files(utterances) -> list[dict[str, Any]]:
    """{id, path, frames_read, frames_declared} for every utterance whose file holds less audio
    than its header declares (:func:`echoasr.audio.find_truncation`; features may come from the
    cache, so the loader's own warning cannot be counted on)."""
    from echoasr.audio import find_truncation

    found = []
    for utterance in utterances:
        truncation = find_truncation(utterance.path) if utterance.audio is None and utterance.path else None
        if truncation is not None:
            found.append({"id": utterance.id, "path": str(utterance.path), "frames_read": truncation.frames_read,
                          "frames_declared": truncation.frames_declared})
    if found:
        log.warning("%d of %d files are truncated and scored on the audio they hold: %s", len(found),
                    len(utterances), ", ".join(f"{entry['path']} ({entry['frames_read']} of {entry['frames_declared']} "
                                               "frames)" for entry in found[:5]) + (", ..." if len(found) > 5 else ""))
    return found


def _results_dir(model_dir: Path) -> Path:
    """Where hypotheses go by default: beside the model, or for the model shipped inside the
    package (read-only where installed), the working directory."""
    from echoasr import pretrained

    return Path() if model_dir.resolve() == pretrained.SHIPPED_DIR.resolve() else model_dir


def _decode_test_set(model_path, utterances, beams, ctc_weight, ctc_greedy, batch_frames, bf16, workers, cache_dir,
                     progress, lm=None, int8=False, guard=True, nbest=None) -> tuple[list[str], dict[str, Any]]:
    """Hypotheses for every utterance (empty where its audio failed) and the run's facts."""
    import torch

    from echoasr.decoding import options_summary, rescores_attention_nbest, resolve_options
    from echoasr.loading import load_pretrained

    model, processor = load_pretrained(model_path, int8=int8)
    options = resolve_options(model_path, "none" if ctc_greedy else lm, beams=1 if ctc_greedy else beams,
                              ctc_weight=ctc_weight, guard=guard, ctc_greedy=ctc_greedy, nbest=nbest)
    start = time.perf_counter()
    chunks, failed = model_inputs(utterances, processor, cache_dir=cache_dir, workers=workers, progress=progress)
    if len(failed) == len(utterances):
        raise EchoError(f"none of the {len(utterances)} utterances could be read (first: {failed[0]['reason']})")
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hypotheses = decode_chunks(model, processor, chunks, beams=beams, ctc_weight=ctc_weight, ctc_greedy=ctc_greedy,
                               batch_frames=batch_frames, bf16=bf16, progress=progress, decoding=options)
    decode_seconds = time.perf_counter() - start
    frames = [sum(_frames(piece) for piece in pieces) for pieces in chunks]
    audio_seconds = sum(u.duration or n * FRAME_PERIOD for u, n in zip(utterances, frames, strict=True))
    decoding = "ctc-greedy" if ctc_greedy else ("attention" if model.ctc_head is None or ctc_weight == 0 else "joint")
    if options is not None and options.lm is not None:
        decoding = (f"attention n-best {options.nbest or options.beams}, lm rescoring"
                    if rescores_attention_nbest(model, processor.tokenizer)
                    else f"ctc+lm, attention rescoring {options.rescore_weight:g}")
    return hypotheses, {
        "chunked": sum(len(pieces) > 1 for pieces in chunks),
        "failed": failed,
        "chunks": [len(pieces) for pieces in chunks],
        "audio_seconds": round(audio_seconds, 2),
        "rtf": (feature_seconds + decode_seconds) / audio_seconds,
        "rtf_decode": decode_seconds / audio_seconds,
        "feature_seconds": round(feature_seconds, 2),
        "decode_seconds": round(decode_seconds, 2),
        "decoding": decoding,
        "lm": None if options is None else options.lm,
        "lm_options": None if options is None or options.lm is None else options_summary(options),
        "beams": 1 if ctc_greedy else beams,
        "bf16": bf16,
        "int8": int8,
        "threads": torch.get_num_threads(),
    }


def model_inputs(utterances, processor, *, cache_dir=None, workers: int | None = 1,
                 progress: bool = True) -> tuple[list[list[dict]], list[dict[str, str]]]:
    """The model's features for every utterance, as a list of chunks each (one for an utterance the
    model takes whole, several cut at silences for a longer one, none for one that cannot be read),
    and the failures ({id, reason}).

    Utterances within the model's ``max_duration`` go through the parallel, cached
    :func:`~echoasr.data.featurize.extract_features`; longer ones (or of unknown length and found
    longer) are read and cut by :func:`echoasr.transcribe.chunk_features`.
    """
    from echoasr.data import read_audio
    from echoasr.data.featurize import extract_features
    from echoasr.transcribe import chunk_features

    limit = processor.max_duration
    chunks: list[list[dict]] = [[] for _ in utterances]
    whole = [i for i, u in enumerate(utterances) if u.duration is None or u.duration <= limit]
    long = sorted(set(range(len(utterances))) - set(whole))
    arrays, _ = extract_features([utterances[i] for i in whole], processor.features, processor.settings,
                                 cache_dir=cache_dir, workers=workers, progress=progress, description="features")
    reasons: dict[int, str] = {}
    for index, features in zip(whole, arrays, strict=True):
        if features is None:
            reasons[index] = _read_failure(utterances[index]) or "feature extraction failed"
        elif _frames(features) * FRAME_PERIOD > limit + 0.05:  # its length was unknown or wrong
            long.append(index)
        else:
            chunks[index] = [features]
    for index in long:
        try:
            chunks[index] = chunk_features(processor, read_audio(utterances[index]), limit)
        except (EchoError, ValueError) as error:
            reasons[index] = str(error)
    failed = [{"id": utterances[i].id, "reason": reason} for i, reason in sorted(reasons.items())]
    for failure in failed:
        log.warning("%s: scored as all-deleted (%s)", failure["id"], failure["reason"])
    return chunks, failed


def _read_failure(utterance) -> str | None:
    """Why the utterance's audio cannot be read, or None if it can."""
    from echoasr.data import read_audio

    try:
        read_audio(utterance)
    except (EchoError, ValueError) as error:
        return str(error)
    return None


def _frames(features: dict) -> int:
    return int(next(iter(features.values())).shape[-1])


def write_hypotheses(path: Path, utterances, hypotheses: Sequence[str], failed: Sequence[dict] = (),
                     chunks: Sequence[int] | None = None) -> None:
    """TSV, a row for every utterance: id, normalised reference, normalised hypothesis, word errors
    of that utterance, reference words, and a note (``N chunks``, or ``failed: reason``)."""
    reasons = {failure["id"]: failure["reason"] for failure in failed}
    lines = ["id\treference\thypothesis\tword_errors\treference_words\tnote"]
    for index, (utterance, hypothesis) in enumerate(zip(utterances, hypotheses, strict=True)):
        ref, hyp = normalize(utterance.text), normalize(hypothesis)
        measure = score([ref], [hyp])
        errors = measure["substitutions"] + measure["deletions"] + measure["insertions"]
        if utterance.id in reasons:
            note = "failed: " + " ".join(reasons[utterance.id].split())
        else:
            note = f"{chunks[index]} chunks" if chunks and chunks[index] > 1 else ""
        lines.append(f"{utterance.id}\t{ref}\t{hyp}\t{errors}\t{len(ref.split())}\t{note}")
    atomic.write_text(path, "\n".join(lines) + "\n")


def format_result(result: dict[str, Any]) -> str:
    """The model's scores (if any), then one line per reference recogniser."""
    lines = []
    if "wer" in result:
        notes = [f"{result['chunked']} chunked"] * bool(result["chunked"])
        notes += [f"{len(result['failed'])} failed (scored as all-deleted)"] * bool(result["failed"])
        notes += [f"{len(result['truncated'])} truncated (scored on what they hold)"] * bool(result.get("truncated"))
        lines += [
            f"{result['data']}: {result['utterances']} utterances, {result['audio_seconds'] / 60:.1f} min of audio"
            + (f" ({', '.join(notes)})" if notes else ""),
            f"WER {100 * result['wer']:.2f}%  (S {result['substitutions']}, D {result['deletions']}, "
            f"I {result['insertions']} of {result['words']} words)   CER {100 * result['cer']:.2f}%",
            f"decoding: {result['decoding']}, beams {result['beams']}{', int8' if result.get('int8') else ''}; RTF {result['rtf']:.3f} "
            f"(decoding {result['rtf_decode']:.3f}, {result['threads']} threads)",
            f"hypotheses: {result['hypotheses']}",
        ]
    else:
        truncated = f" ({len(result['truncated'])} truncated)" if result.get("truncated") else ""
        lines.append(f"{result['data']}: {result['utterances']} utterances{truncated}")
    for name, reference in result.get("references", {}).items():
        failed = f", {len(reference['failed'])} failed" if reference["failed"] else ""
        lines.append(f"{name}: WER {100 * reference['wer']:.2f}%  CER {100 * reference['cer']:.2f}%  "
                     f"RTF {reference['rtf']:.3f} ({reference['threads']} thread(s) per process){failed}"
                     + (f"; hypotheses: {reference['hypotheses']}" if reference["hypotheses"] else ""))
    return "\n".join(lines)
