"""Word n-gram LM scores of whole sentences, for rescoring the attention decoder's n-best (a model
whose tokens the CTC lexicon search cannot spell words in, such as a Whisper backbone's byte-level
BPE, or a model without a CTC head; the choice is made in :mod:`echoasr.decoding`).

A text is put in the LM's form first: :func:`echoasr.text.normalize` (lower case, numbers spelt
out, punctuation dropped), which is how ``lm build`` writes its corpus and how the general English
LM spells its words; then split at spaces. Its score is ``ln P_lm(w1 .. wn </s> | <s>)`` in natural
logs (KenLM's log10 x ln 10), so that it adds to the decoder's log-probabilities without a hidden
factor; a word outside the vocabulary scores as ``<unk>``.

KenLM is read through the ``kenlm`` module where it is installed, else through flashlight-text's
binding (the ``lm`` extra), which scores the same back-off model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from echoasr.errors import EchoError
from echoasr.lm.arpa import is_character_lm, read_unigrams, vocabulary
from echoasr.lm.decoding import kenlm_output_to_log

LN_10 = math.log(10.0)


def lm_words(text: str) -> list[str]:
    """The words of ``text`` as the LM spells them."""
    from echoasr.text import normalize

    return normalize(text).split()


class _KenLMModule:
    """Sentence log10 probabilities through the ``kenlm`` module."""

    def __init__(self, lm_path: Path):
        import kenlm

        self.model = kenlm.Model(str(lm_path))

    def log10(self, words: Sequence[str]) -> float:
        return float(self.model.score(" ".join(words), bos=True, eos=True))


class _FlashlightKenLM:
    """Sentence log10 probabilities through flashlight-text's KenLM, one word at a time."""

    def __init__(self, lm_path: Path):
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.words = Dictionary()
        for word, _ in read_unigrams(lm_path):
            self.words.add_entry(word)
        if not self.words.contains("<unk>"):
            self.words.add_entry("<unk>")  # KenLM scores any unknown word as its <unk>
        self.unknown = self.words.get_index("<unk>")
        self.model = KenLM(str(lm_path), self.words)

    def log10(self, words: Sequence[str]) -> float:
        state, total = self.model.start(False), 0.0  # False: the context starts at <s>
        for word in words:
            index = self.words.get_index(word) if self.words.contains(word) else self.unknown
            state, score = self.model.score(state, index)
            total += score
        _, end = self.model.finish(state)
        return total + end


def _backend():
    import importlib.util

    if importlib.util.find_spec("kenlm") is not None:
        return _KenLMModule
    if importlib.util.find_spec("flashlight") is not None:
        return _FlashlightKenLM
    raise EchoError("word LM rescoring needs KenLM: pip install kenlm, or flashlight-text==0.0.7 (the lm extra)")


class WordLMScorer:
    """``ln P_lm`` of whole sentences under a word n-gram LM (an ARPA file)."""

    def __init__(self, lm_path: str | os.PathLike):
        self.lm_path = Path(lm_path)
        if is_character_lm(vocabulary(self.lm_path)):
            raise EchoError("a character LM can only guide the CTC search of a character model; rescoring this "
                            "model's n-best needs a word LM", self.lm_path)
        backend = _backend()
        try:
            with kenlm_output_to_log(self.lm_path):
                self._model = backend(self.lm_path)
        except (OSError, RuntimeError) as error:
            raise EchoError(f"cannot load the language model: {str(error)[-200:]}", self.lm_path) from None

    def score(self, texts: Sequence[str]) -> list[float]:
        """``ln P_lm(words, </s> | <s>)`` of each text's :func:`lm_words`."""
        return [LN_10 * self._model.log10(lm_words(text)) for text in texts]
