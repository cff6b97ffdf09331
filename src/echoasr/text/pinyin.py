"""Tone-marked pinyin: how the tones corpus writes a Mandarin syllable and its tone.

espeak-ng reads pinyin with tone digits (``ma1 ba3``), but the scoring normaliser spells digits
out (``ma one ba three``) and folds Latin accents away (``mā`` -> ``ma``), so neither survives into
the labels. The transcripts carry the tone as a letter after the syllable instead: the Zhuyin
tone letters ``ˉ ˊ ˇ ˋ`` (U+02C9, U+02CA, U+02C7, U+02CB) are Unicode modifier letters (category
Lm), which the normaliser keeps as part of the word. So ``maˇ`` is one word, and a word error is
a syllable or a tone error.
"""

from __future__ import annotations

TONE_MARKS = {1: "\u02c9", 2: "\u02ca", 3: "\u02c7", 4: "\u02cb"}
_TONE_OF_MARK = {mark: tone for tone, mark in TONE_MARKS.items()}


def marked(pinyin: str) -> str:
    """``"ma1 ba3"`` -> ``"maˉ baˇ"``: every syllable's tone digit (1-4) as its tone letter."""
    words = []
    for syllable in pinyin.split():
        base, digit = syllable[:-1], syllable[-1:]
        if not base or not digit.isdigit() or int(digit) not in TONE_MARKS:
            raise ValueError(f"not a syllable with a tone digit 1-4: {syllable!r}")
        words.append(base + TONE_MARKS[int(digit)])
    return " ".join(words)


def split_tone(word: str) -> tuple[str, int | None]:
    """``"maˇ"`` -> ``("ma", 3)``; a word without a tone letter at its end has tone None."""
    if word and word[-1] in _TONE_OF_MARK:
        return word[:-1], _TONE_OF_MARK[word[-1]]
    return word, None


def strip_tones(text: str) -> str:
    """The syllables without their tone letters (``"maˉ baˇ"`` -> ``"ma ba"``); a tone letter
    standing alone (a hypothesis may hold one) goes with them."""
    return " ".join(base for base, _ in map(split_tone, text.split()) if base)
