"""CTC beam search with a word n-gram language model (flashlight-text's lexicon decoder and KenLM).

The lexicon is the LM's vocabulary, each word spelt in the acoustic model's tokens (characters, or
SentencePiece pieces): no pronunciations. A hypothesis' score is
``log P_ctc(best alignment) + lm_weight * log10 P_lm(words, </s>) + word_bonus * words``
(flashlight's Viterbi scoring: ``log_add`` off). Between words a character model emits its space
token (flashlight's "silence"); a SentencePiece model marks word starts inside its pieces, so its
silence is the blank.

A character LM (units: characters, ``|`` between words) is used lexicon-free instead
(:class:`CTCCharLMDecoder`): words outside any vocabulary can then be written.

The n-best come back as :class:`Hypothesis` records with the emitting frame of every token.
Word times and confidences come from :func:`align_words`: the words of the chosen text, spelt in
the model's tokens and aligned to the CTC log-probabilities, so the timed words always spell the
text (flashlight may put a word's doubled letter on adjacent frames without a blank, which a
collapse of its path would merge: "less" timed as "les").
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoasr.errors import EchoError
from echoasr.lm.arpa import CHARACTER_SEPARATOR, SENTENCE_MARKERS, is_character_lm, read_unigrams

log = logging.getLogger(__name__)

BLANK_ID = 0  # the CTC blank is the pad id (echoasr.model.modeling)
SENTENCEPIECE_WORD_START = "\u2581"
CTC_LM_TOKENIZERS = ("char", "sentencepiece")  # what this search spells words in (and whose blank is id 0)


@contextlib.contextmanager
def kenlm_output_to_log(lm_path: str | os.PathLike):
    """KenLM (C++) writes its ARPA-loading banner and progress bar straight to the process's
    stderr on every load; catch file descriptor 2 meanwhile and pass the text to the debug log, so
    that `transcribe` and `evaluate` print only what the user asked for."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace").strip()
            if text:
                log.debug("KenLM loading %s: %s", lm_path, text)


@dataclass
class Hypothesis:
    """One decoded transcript: token ids (collapsed, no blanks), the CTC frame of each token, and
    its scores (``score`` is what the hypotheses are ranked by)."""

    text: str
    tokens: list[int]
    frames: list[int]
    score: float
    ctc_score: float = 0.0
    lm_score: float = 0.0
    attention_score: float | None = None


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float  # geometric mean of the CTC posteriors of its tokens at their frames


@dataclass
class LMOptions:
    lm_weight: float = 0.5
    word_bonus: float = 0.0
    beam: int = 32
    beam_tokens: int = 16
    beam_threshold: float = 25.0
    nbest: int = 8


def token_pieces(tokenizer) -> list[str]:
    """The string of every id of ``tokenizer`` (specials as their names)."""
    from echoasr.text.tokenizers import SPECIAL_TOKENS

    require_ctc_lm_tokenizer(tokenizer)
    if tokenizer.kind == "char":
        return list(SPECIAL_TOKENS) + list(tokenizer.characters)
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def require_ctc_lm_tokenizer(tokenizer) -> None:
    if tokenizer.kind not in CTC_LM_TOKENIZERS:
        raise EchoError(f"the word LM search knows character and SentencePiece tokenizers, not this model's "
                        f"{tokenizer.kind} tokenizer: decode with --lm none")


def word_separator(tokenizer) -> int:
    """The token between words in the CTC output: a character model's space, else the blank."""
    if tokenizer.kind == "char":
        return token_pieces(tokenizer).index(" ")
    return BLANK_ID


def spell(word: str, tokenizer) -> list[int] | None:
    """``word`` in the model's tokens, or None when the model cannot write it as one word."""
    if not word or " " in word:
        return None
    ids = tokenizer.encode(word)  # normalises: the word must come back unchanged
    if not ids or any(i <= 3 for i in ids) or tokenizer.decode(ids) != word:  # specials and unknowns
        return None
    return ids


class _FlashlightDecoder:
    """What the lexicon and lexicon-free decoders share: rebuilding with new weights and turning
    flashlight's results into :class:`Hypothesis` objects. Subclasses give ``_build`` (the
    flashlight decoder for ``self.options``) and ``_text`` (a result's words)."""

    options: LMOptions

    def set_weights(self, lm_weight: float, word_bonus: float) -> None:
        self.options.lm_weight, self.options.word_bonus = lm_weight, word_bonus
        self._decoder = self._build()

    def decode(self, log_probs: np.ndarray) -> list[Hypothesis]:
        """Best hypotheses first for one utterance's CTC log-probabilities (T, V)."""
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        frames, vocab = emissions.shape
        if frames == 0:
            return [Hypothesis("", [], [], 0.0)]
        hypotheses = []
        for result in self._decoder.decode(emissions.ctypes.data, frames, vocab)[: self.options.nbest]:
            # flashlight adds a silence frame before and after the path
            tokens, token_frames = collapse(list(result.tokens)[1 : frames + 1])
            hypotheses.append(Hypothesis(
                text=self._text(result, tokens), tokens=tokens, frames=token_frames, score=float(result.score),
                ctc_score=float(result.emittingModelScore), lm_score=float(result.lmScore),
            ))
        return hypotheses or [Hypothesis("", [], [], -math.inf)]


class CTCLMDecoder(_FlashlightDecoder):
    """n-best word sequences from CTC log-probabilities (T, V) with a word LM."""

    def __init__(self, lm_path: str | os.PathLike, tokenizer, options: LMOptions | None = None):
        try:
            from flashlight.lib.text.decoder import (CriterionType, LexiconDecoder, LexiconDecoderOptions,
                                                     SmearingMode, Trie)
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary
        except ImportError:
            raise EchoError("LM decoding needs flashlight-text (pip install flashlight-text==0.0.7)") from None
        self.options = options or LMOptions()
        self.tokenizer = tokenizer
        self.lm_path = Path(lm_path)
        self.words = Dictionary()
        spellings = []
        vocabulary = [word for word, _ in read_unigrams(lm_path)]
        for word in vocabulary:
            self.words.add_entry(word)
            if word not in SENTENCE_MARKERS and (ids := spell(word, tokenizer)) is not None:
                spellings.append((word, ids))
        if "<unk>" not in vocabulary:
            self.words.add_entry("<unk>")  # flashlight needs one
        if not spellings:
            raise EchoError("no word of the language model can be spelt with the model's tokens", lm_path)
        self.lexicon_size = len(spellings)
        try:
            with kenlm_output_to_log(lm_path):
                self.lm = KenLM(str(lm_path), self.words)
        except RuntimeError as error:
            raise EchoError(f"cannot load the language model: {str(error)[-200:]}", lm_path) from None
        self.separator = word_separator(tokenizer)
        self.trie = Trie(tokenizer.vocab_size, self.separator)
        start = self.lm.start(False)
        for word, ids in spellings:
            index = self.words.get_index(word)
            _, unigram = self.lm.score(start, index)
            self.trie.insert(ids, index, unigram)
        self.trie.smear(SmearingMode.MAX)
        self._classes = (LexiconDecoder, LexiconDecoderOptions, CriterionType)
        self._decoder = self._build()
        log.info("LM %s: %d words spelt in the model's tokens", lm_path, self.lexicon_size)

    def _build(self):
        LexiconDecoder, LexiconDecoderOptions, CriterionType = self._classes
        o = self.options
        settings = LexiconDecoderOptions(
            beam_size=o.beam, beam_size_token=min(o.beam_tokens, self.tokenizer.vocab_size),
            beam_threshold=o.beam_threshold, lm_weight=o.lm_weight, word_score=o.word_bonus,
            unk_score=-math.inf, sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC,
        )
        return LexiconDecoder(settings, self.trie, self.lm, self.separator, BLANK_ID,
                              self.words.get_index("<unk>"), [], False)

    def _text(self, result, tokens: list[int]) -> str:
        return " ".join(self.words.get_entry(i) for i in result.words if i >= 0)


class CTCCharLMDecoder(_FlashlightDecoder):
    """Lexicon-free CTC beam search with a character LM (``echoasr lm build --characters``): any
    word can be written, including words no lexicon holds. Score:
    ``log P_ctc + lm_weight * log10 P_lm(characters, | between words) + word_bonus * frames of the
    space token`` (flashlight's silence score, added on every frame the space is emitted)."""

    def __init__(self, lm_path: str | os.PathLike, tokenizer, options: LMOptions | None = None):
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        if tokenizer.kind != "char":
            raise EchoError("a character LM needs a model with a character tokenizer", lm_path)
        self.options = options or LMOptions()
        self.tokenizer = tokenizer
        self.units = Dictionary()
        for piece in token_pieces(tokenizer):  # dictionary index = token id
            self.units.add_entry(CHARACTER_SEPARATOR if piece == " " else piece)
        try:
            with kenlm_output_to_log(lm_path):
                self.lm = KenLM(str(lm_path), self.units)
        except RuntimeError as error:
            raise EchoError(f"cannot load the language model: {str(error)[-200:]}", lm_path) from None
        self.separator = word_separator(tokenizer)
        self._decoder = self._build()

    def _build(self):
        from flashlight.lib.text.decoder import CriterionType, LexiconFreeDecoder, LexiconFreeDecoderOptions

        o = self.options
        settings = LexiconFreeDecoderOptions(
            beam_size=o.beam, beam_size_token=min(o.beam_tokens, self.tokenizer.vocab_size),
            beam_threshold=o.beam_threshold, lm_weight=o.lm_weight, sil_score=o.word_bonus, log_add=False,
            criterion_type=CriterionType.CTC)
        return LexiconFreeDecoder(settings, self.lm, self.separator, BLANK_ID, [])

    def _text(self, result, tokens: list[int]) -> str:
        return " ".join(self.tokenizer.decode(tokens).split())


def make_decoder(lm_path: str | os.PathLike, tokenizer, options: LMOptions | None = None):
    """The lexicon decoder for a word LM, the lexicon-free one for a character LM."""
    from echoasr.lm.arpa import vocabulary

    require_ctc_lm_tokenizer(tokenizer)

    if is_character_lm(vocabulary(lm_path)):
        return CTCCharLMDecoder(lm_path, tokenizer, options)
    return CTCLMDecoder(lm_path, tokenizer, options)


def collapse(path: list[int], blank: int = BLANK_ID) -> tuple[list[int], list[int]]:
    """Tokens of a frame-level CTC path (repeats merged, blanks and padding dropped) and the first
    frame of each."""
    tokens, frames = [], []
    previous = None
    for frame, token in enumerate(path):
        if token != previous and token != blank and token >= 0:
            tokens.append(int(token))
            frames.append(frame)
        previous = token
    return tokens, frames


def ctc_align(log_probs: np.ndarray, tokens: list[int], blank: int = BLANK_ID) -> list[int]:
    """The frame at which each token starts on the best CTC alignment (Viterbi) of ``tokens``
    to ``log_probs`` (T, V); tokens that cannot fit get the last frame."""
    frames = log_probs.shape[0]
    if not tokens or frames == 0:
        return []
    states = [blank]
    for token in tokens:
        states += [token, blank]
    n = len(states)
    emit = log_probs[:, states]  # (T, n)
    labels = np.array(states)
    skip = np.zeros(n, dtype=bool)
    skip[2:] = (labels[2:] != blank) & (labels[2:] != labels[:-2])
    score = np.full(n, -np.inf)
    score[0], score[1] = emit[0, 0], emit[0, 1]
    back = np.zeros((frames, n), dtype=np.int8)  # 0 stay, 1 from previous state, 2 skip
    for t in range(1, frames):
        stay, step = score, np.concatenate([[-np.inf], score[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        choices = np.stack([stay, step, jump])
        back[t] = choices.argmax(0)
        score = choices.max(0) + emit[t]
    state = n - 1 if n < 2 or score[n - 1] >= score[n - 2] else n - 2
    starts = [frames - 1] * len(tokens)
    for t in range(frames - 1, -1, -1):
        if state % 2 == 1:
            starts[state // 2] = t
        state -= int(back[t, state]) if t > 0 else 0
    return starts


def word_timings(hypothesis: Hypothesis, log_probs: np.ndarray, tokenizer, frame_seconds: float) -> list[Word]:
    """Words of ``hypothesis`` with times from its token frames and confidences from the CTC
    posteriors."""
    pieces = token_pieces(tokenizer)
    char_model = tokenizer.kind == "char"
    groups: list[list[int]] = []  # indices into hypothesis.tokens
    for index, token in enumerate(hypothesis.tokens):
        piece = pieces[token] if token < len(pieces) else ""
        if char_model and piece == " ":
            groups.append([])
            continue
        if not groups or (not char_model and piece.startswith(SENTENCEPIECE_WORD_START)):
            groups.append([])
        groups[-1].append(index)
    words = []
    for group in groups:
        if not group:
            continue
        ids = [hypothesis.tokens[i] for i in group]
        frames = [hypothesis.frames[i] for i in group]
        posterior = float(np.mean([log_probs[f, t] for f, t in zip(frames, ids, strict=True)]))
        text = tokenizer.decode(ids).strip()
        if text:
            words.append(Word(text, round(frames[0] * frame_seconds, 3), round((frames[-1] + 1) * frame_seconds, 3),
                              round(math.exp(posterior), 4)))
    return words


def align_words(text: str, log_probs: np.ndarray, tokenizer, frame_seconds: float) -> list[Word]:
    """The words of ``text`` (split at spaces, none dropped or respelt) with times and confidences:
    each word is spelt in the model's tokens (a character model's space between words) and the
    whole is aligned to ``log_probs`` (T, V) by :func:`ctc_align`. A word with no token the model
    can emit (unknown characters only) gets the previous word's end as its time and confidence 0."""
    words = text.split()
    separator = word_separator(tokenizer) if tokenizer.kind == "char" else None
    tokens: list[int] = []
    owners: list[int] = []  # index of the word each token spells; -1 for the space between words
    for index, word in enumerate(words):
        if separator is not None and index:
            tokens.append(separator)
            owners.append(-1)
        spelling = tokenizer.content_ids(tokenizer.encode(word))
        tokens += spelling
        owners += [index] * len(spelling)
    frames = ctc_align(log_probs, tokens, blank=tokenizer.pad_id)  # the CTC blank is the pad id
    timed = []
    previous_end = 0.0
    for index, word in enumerate(words):
        mine = [(frame, token) for frame, token, owner in zip(frames, tokens, owners, strict=True) if owner == index]
        if not mine:
            timed.append(Word(word, previous_end, previous_end, 0.0))
            continue
        posterior = float(np.mean([log_probs[frame, token] for frame, token in mine]))
        start, end = round(mine[0][0] * frame_seconds, 3), round((mine[-1][0] + 1) * frame_seconds, 3)
        timed.append(Word(word, start, end, round(math.exp(posterior), 4)))
        previous_end = end
    return timed
