"""Features to transcripts: the model's joint CTC/attention beam search, or CTC beam search with a
word language model rescored by the attention decoder, or (a model the CTC word search cannot
serve) the attention beam search's n-best rescored by the word LM; guarded against hallucination;
with word times, confidences and n-best lists.

Where the model (``echoasr.model``) and the language model (``echoasr.lm``) meet; the model package
never sees the LM.

* **Guard** (on by default, needs a CTC head): an utterance whose CTC best path is empty (every
  frame's best token is the blank: silence, noise, a tone) gives an empty transcript without
  running the attention decoder, which would otherwise write a plausible sentence; and the
  attention decoder may write at most ``1.5 x`` the CTC best path's tokens + 4 (besides the
  length limit from the audio in ``generate``).
* **LM decoding**: flashlight's lexicon beam search over the CTC log-probabilities with the word
  LM (:mod:`echoasr.lm.decoding`) gives an n-best list; each hypothesis is then scored by the
  attention decoder teacher-forced (WeNet's attention rescoring) and ranked by
  ``search score + rescore_weight * log p_att``.
* **LM rescoring of the attention n-best**, for a model without a CTC head or whose tokens the
  lexicon search cannot spell words in (not in :data:`~echoasr.lm.decoding.CTC_LM_TOKENIZERS`: a
  Whisper backbone's BPE): the attention beam search gives its N best finished hypotheses
  (``nbest``, default the beams) with their log-probabilities; each text is scored by the word LM
  (:mod:`echoasr.lm.rescoring`, natural logs) and the hypothesis with the best
  ``(log P_att + lm_weight * ln P_lm + word_bonus * words) / length ** length_penalty`` is chosen
  (length: its tokens + EOS): the search's own ranking (length penalty 1 by default) plus the LM's
  terms, so that with both weights at 0 the choice is the search's 1-best (:class:`Candidate`).
* **Times**: the chosen text's words, spelt in the model's tokens, are aligned to the CTC
  log-probabilities (Viterbi), whichever search chose the text, so the timed words (subtitles)
  and the text (plain, JSON) never differ; a word's start is its first token's frame, its end one
  frame after its last token's (frames of ``10 ms x subsampling``). Confidence: geometric mean of the CTC posteriors
  of the word's tokens at their frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.lm.decoding import CTC_LM_TOKENIZERS, LMOptions, Word, align_words

log = logging.getLogger(__name__)

LM_CONFIG = "lm.json"  # beside the model weights: which LM and its tuned weights
DEFAULT_LM = "default"  # the general English LM (echoasr.lm.arpa.default_lm), by name
CTC_LM_NBEST = 8  # hypotheses kept from the CTC word search unless told


@dataclass
class DecodingOptions:
    beams: int = 8
    ctc_weight: float | None = None  # joint search; None: the model's
    lm: str | None = None  # ARPA file; None: no LM
    lm_weight: float = 0.5
    word_bonus: float = 0.0
    rescore_weight: float = 1.0  # attention rescoring of the LM n-best (0: off)
    lm_beam: int = 32
    nbest: int | None = None  # hypotheses kept from the LM search, or rescored (None: 8, or the beams when rescoring)
    guard: bool = True
    ctc_greedy: bool = False  # the CTC head's best path alone (no search, no LM)


@dataclass
class Candidate:
    """One hypothesis of the attention beam search and what n-best LM rescoring ranks it by."""

    text: str
    search_score: float  # the search's ranking score: log P_att / length_norm
    length_norm: float  # (tokens + EOS) ** length_penalty
    lm_log_prob: float  # ln P_lm(words, </s> | <s>)
    words: int

    def score(self, lm_weight: float, word_bonus: float) -> float:
        """``(log P_att + lm_weight * ln P_lm + word_bonus * words) / length_norm``."""
        return self.search_score + (lm_weight * self.lm_log_prob + word_bonus * self.words) / self.length_norm


def best_candidate(candidates: list[Candidate], lm_weight: float, word_bonus: float) -> Candidate:
    """The best-scoring candidate; on a tie the one the search ranked first."""
    return max(candidates, key=lambda candidate: candidate.score(lm_weight, word_bonus))


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    nbest: list[tuple[str, float | None]] = field(default_factory=list)  # (text, score), best first
    candidates: list[Candidate] = field(default_factory=list)  # LM rescoring's n-best, to re-rank when tuning


def rescores_attention_nbest(model, tokenizer) -> bool:
    """Whether a word LM enters this model's decoding as rescoring of the attention beam search's
    n-best (no CTC head, or tokens the CTC word search cannot spell words in) rather than as the
    CTC word search."""
    return model.ctc_head is None or tokenizer.kind not in CTC_LM_TOKENIZERS


def read_lm_config(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(model_dir) / LM_CONFIG
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise EchoError(f"not an LM config: {error}", path) from None


def write_lm_config(model_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    path = Path(model_dir) / LM_CONFIG
    atomic.write_text(path, json.dumps(settings, indent=1) + "\n")
    return path


def lm_reference(lm: str | os.PathLike, model_dir: str | os.PathLike) -> str:
    """How ``lm.json`` names an LM, so that the model folder still works once copied elsewhere:
    :data:`DEFAULT_LM` for the general English model (whichever user's cache holds it), else its
    path relative to the model folder (``lm.arpa`` for one inside it)."""
    from echoasr.lm.arpa import DEFAULT_NAME, default_lm_cache

    if str(lm) == DEFAULT_LM:
        return DEFAULT_LM
    path = Path(lm).resolve()
    if path.name == DEFAULT_NAME or path == default_lm_cache().resolve():
        return DEFAULT_LM
    try:
        return Path(os.path.relpath(path, Path(model_dir).resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return str(path)


def saved_lm_path(settings: dict[str, Any], model_dir: str | os.PathLike) -> str | None:
    """The LM an ``lm.json`` names: :data:`DEFAULT_LM`, or a path relative to the model folder.
    Older folders recorded an absolute path: the general English model's (in some user's cache)
    is read as :data:`DEFAULT_LM`, any other as written."""
    from echoasr.lm.arpa import DEFAULT_NAME

    lm = settings.get("lm")
    if not lm or lm == DEFAULT_LM:
        return lm or None
    if Path(lm).is_absolute() and Path(lm).name == DEFAULT_NAME:
        return DEFAULT_LM
    return str(Path(model_dir) / lm)


def resolve_options(model_path: str | os.PathLike, lm: str | None, **options: Any) -> DecodingOptions:
    """Decoding options for a model: ``lm`` None uses the LM saved with the model (``lm.json``, if
    any, with its tuned weights), ``"none"`` none, ``"default"`` the general English model, else
    the ARPA file at that path (with the saved weights when it is the saved LM). Explicit options
    (not None) win.

    A saved ``default`` LM is built on first use (:func:`echoasr.lm.arpa.default_lm`); where it
    cannot be (no pocketsphinx), the model decodes without an LM and a warning says so."""
    from echoasr.processor import resolve_model_dir

    model_dir = resolve_model_dir(model_path)
    saved = read_lm_config(model_dir) or {}
    saved_lm = saved_lm_path(saved, model_dir)
    chosen = DecodingOptions()
    if lm is None:
        lm = saved_lm
        if lm == DEFAULT_LM:
            lm = _saved_default_lm(model_dir)
    elif lm == "none":
        lm = None
    elif lm == DEFAULT_LM:
        from echoasr.lm.arpa import default_lm

        lm = str(default_lm())
    if lm is not None:
        if not Path(lm).is_file():
            if lm == saved_lm:
                raise EchoError(f"the language model that {model_dir / LM_CONFIG} names is missing; give --lm FILE "
                                "or --lm none", lm)
            raise EchoError("no such language model file", lm)
        chosen.lm = str(lm)
        if saved_lm == DEFAULT_LM:
            from echoasr.lm.arpa import default_lm_cache

            saved_lm = str(default_lm_cache())
        if saved_lm and Path(saved_lm).resolve() == Path(lm).resolve():
            for name in ("lm_weight", "word_bonus", "rescore_weight"):
                if name in saved:
                    setattr(chosen, name, float(saved[name]))
    for name, value in options.items():
        if value is not None:
            setattr(chosen, name, value)
    return chosen


def lm_decoding_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flashlight") is not None


def _saved_default_lm(model_dir: Path) -> str | None:
    """The general English LM for a model tuned with it, or None (with a warning) when it cannot be
    built or decoded with (a plain ``pip install echoasr`` has neither pocketsphinx nor flashlight-text)."""
    from echoasr.lm.arpa import default_lm

    try:
        if not lm_decoding_installed():
            raise EchoError("LM decoding needs flashlight-text")
        return str(default_lm())
    except EchoError as error:
        log.warning("%s/%s asks for the general English LM, which is not available (%s): decoding without an LM",
                    model_dir, LM_CONFIG, error)
        return None


class SpeechDecoder:
    """Decodes batches of features with one model and one set of :class:`DecodingOptions`."""

    def __init__(self, model, processor, options: DecodingOptions):
        from echoasr.audio import FRAME_PERIOD

        self.model, self.processor, self.options = model, processor, options
        self.has_ctc = model.ctc_head is not None
        self.frame_seconds = FRAME_PERIOD * model.config.subsampling
        self.lm_decoder = None  # the CTC word search
        self.lm_scorer = None  # the word LM rescoring the attention n-best
        if options.ctc_greedy and not self.has_ctc:
            raise EchoError("CTC best-path decoding needs a model with a CTC head")
        if options.lm is not None and rescores_attention_nbest(model, processor.tokenizer):
            from echoasr.lm.rescoring import WordLMScorer

            if options.nbest is not None and not 1 <= options.nbest <= options.beams:
                raise EchoError(f"the n-best to rescore must be between 1 and the beams ({options.beams}), "
                                f"not {options.nbest}")
            self.lm_scorer = WordLMScorer(options.lm)
        elif options.lm is not None:
            from echoasr.lm.decoding import make_decoder

            self.lm_decoder = make_decoder(options.lm, processor.tokenizer, LMOptions(
                lm_weight=options.lm_weight, word_bonus=options.word_bonus, beam=options.lm_beam,
                nbest=options.nbest or CTC_LM_NBEST))

    def set_lm_weights(self, lm_weight: float, word_bonus: float) -> None:
        self.options.lm_weight, self.options.word_bonus = lm_weight, word_bonus
        if self.lm_decoder is not None:
            self.lm_decoder.set_weights(lm_weight, word_bonus)

    def decode_batch(self, features, lengths) -> list[Transcript]:
        import torch

        from echoasr.model import ctc_greedy_decode
        from echoasr.model.rescoring import ctc_speech_evidence, select_rows, token_limits

        model = self.model
        encoder = model.encode(features, lengths)
        batch = encoder.hidden.shape[0]
        log_probs = model.ctc_log_probs(encoder) if self.has_ctc else None
        frames = encoder.lengths.tolist()
        ctc = None if log_probs is None else log_probs.float().cpu().numpy()
        if self.options.ctc_greedy:
            ids = ctc_greedy_decode(log_probs, encoder.lengths, model.config.pad_token_id)
            return [self._transcript(row, None if ctc is None else ctc[b, : frames[b]]) for b, row in enumerate(ids.tolist())]
        rows = list(range(batch))
        limits = None
        if log_probs is not None and self.options.guard:
            heard, _ = ctc_speech_evidence(log_probs, encoder.lengths, model.config.pad_token_id)
            rows = [b for b in rows if heard[b] > 0]
            limits = token_limits(heard)
        transcripts = [Transcript("") for _ in range(batch)]
        if not rows:
            return transcripts
        if self.lm_decoder is not None:
            for b in rows:
                transcripts[b] = self._decode_with_lm(encoder, b, ctc[b, : frames[b]])
            return transcripts
        index = torch.tensor(rows, device=encoder.lengths.device)
        search = dict(encoder_outputs=select_rows(encoder, index), num_beams=self.options.beams,
                      ctc_weight=self.options.ctc_weight, token_limits=None if limits is None else limits[index])
        if self.lm_scorer is not None:
            nbest = model.generate(**search, nbest=self.options.nbest or self.options.beams)
            for position, b in enumerate(rows):
                transcripts[b] = self._rescore_nbest(nbest, position, None if ctc is None else ctc[b, : frames[b]])
            return transcripts
        ids = model.generate(**search)
        for b, row in zip(rows, ids.tolist(), strict=True):
            transcripts[b] = self._transcript(row, None if ctc is None else ctc[b, : frames[b]])
        return transcripts

    def _transcript(self, ids: list[int], log_probs) -> Transcript:
        """Text of token ids, with word times aligned to the CTC log-probabilities (when there are any)."""
        text = " ".join(self.processor.decode(ids).split())
        return self._timed(text, log_probs, nbest=[(text, None)])  # the joint search reports no scores

    def _timed(self, text: str, log_probs, nbest: list[tuple[str, float | None]]) -> Transcript:
        """One text for every output format: the timed words are the text's words, aligned."""
        words = [] if log_probs is None or not text else align_words(text, log_probs, self.processor.tokenizer,
                                                                      self.frame_seconds)
        return Transcript(text, words, nbest)

    def _rescore_nbest(self, nbest, position: int, log_probs) -> Transcript:
        """The hypothesis of ``nbest`` (one utterance's, at ``position``) that the search and the
        word LM together prefer."""
        from echoasr.lm.rescoring import lm_words

        found = [(" ".join(self.processor.decode(ids).split()), score, norm) for ids, score, norm in zip(
            nbest.sequences[position].tolist(), nbest.scores[position].tolist(),
            nbest.length_norms[position].tolist(), strict=True)]
        found = found[:1] + [hypothesis for hypothesis in found[1:] if hypothesis[1] > -math.inf]  # slots left empty
        lm = self.lm_scorer.score([text for text, _, _ in found])
        candidates = [Candidate(text, score, norm, lm_score, len(lm_words(text)))
                      for (text, score, norm), lm_score in zip(found, lm, strict=True)]
        weights = self.options.lm_weight, self.options.word_bonus
        chosen = best_candidate(candidates, *weights)
        ranked = sorted(candidates, key=lambda candidate: -candidate.score(*weights))
        transcript = self._timed(chosen.text, log_probs, [(c.text, round(c.score(*weights), 4)) for c in ranked])
        transcript.candidates = candidates
        return transcript

    def _decode_with_lm(self, encoder, row: int, log_probs) -> Transcript:
        from echoasr.model.rescoring import sequence_log_probs

        hypotheses = self.lm_decoder.decode(log_probs)
        tokenizer = self.processor.tokenizer
        if self.options.rescore_weight and len(hypotheses) > 1:
            sequences = [tokenizer.encode(h.text) for h in hypotheses]
            attention = sequence_log_probs(self.model, encoder, sequences, [row] * len(sequences)).tolist()
            for hypothesis, score in zip(hypotheses, attention, strict=True):
                hypothesis.attention_score = score
                hypothesis.score += self.options.rescore_weight * score
            hypotheses.sort(key=lambda h: -h.score)
        return self._timed(" ".join(hypotheses[0].text.split()), log_probs,
                           [(h.text, round(h.score, 4)) for h in hypotheses])


def decode_transcripts(model, processor, dataset, options: DecodingOptions, *, batch_frames: int,
                       bf16: bool = False, progress: bool = True, decoder: SpeechDecoder | None = None) -> list[Transcript]:
    """A :class:`Transcript` for every item of a :class:`~echoasr.data.featurize.SpeechDataset`, in order."""
    import torch
    from tqdm import tqdm

    from echoasr.data.collate import FrameBatchSampler

    decoder = decoder or SpeechDecoder(model, processor, options)
    device = next(model.parameters()).device
    frames = max(1, batch_frames // max(1, options.beams))
    sampler = FrameBatchSampler(dataset.lengths, frames, shuffle=False, max_items=64)
    collate = processor.collator()
    results: list[Transcript] = [Transcript("")] * len(dataset)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    bar = tqdm(total=len(dataset), desc="decoding", unit="utt", disable=not progress, dynamic_ncols=True)
    with bar, torch.inference_mode(), autocast:
        for indices in sampler:
            batch = collate([{"features": dataset.features[i]} for i in indices])
            features = {name: tensor.to(device) for name, tensor in batch["features"].items()}
            for index, transcript in zip(indices, decoder.decode_batch(features, batch["feature_lengths"].to(device)),
                                         strict=True):
                results[index] = transcript
            bar.update(len(indices))
    return results


def options_summary(options: DecodingOptions) -> dict[str, Any]:
    summary = dataclasses.asdict(options)
    if options.lm is None:
        for name in ("lm_weight", "word_bonus", "rescore_weight", "lm_beam", "nbest"):
            summary.pop(name)
    return summary
