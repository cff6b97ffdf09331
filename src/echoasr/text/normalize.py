"""The scoring normaliser: one function applied to references and hypotheses alike.

Output alphabet: lower-case letters, apostrophes inside words, single spaces. Latin letters with
accents fold to ASCII (``café`` -> ``cafe``); letters of other scripts are kept (lower-cased) so
that a non-English transcript is not silently erased; every other symbol becomes a word break.
Numbers are spelled out (cardinals, ordinals, years, decimals, ``$``/``%``). The function is
idempotent: ``normalize(normalize(t)) == normalize(t)``.
"""

from __future__ import annotations

import re
import unicodedata

from echoasr.text import numbers

# Letters that NFKD does not decompose into ASCII (casefold already maps ß -> ss).
_LETTER_FOLDS = str.maketrans({
    "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "ŋ": "ng",
})
_APOSTROPHES = "\u2018\u2019\u201b\u2032\u02bc\u0060\u00b4"

_NUMBER = re.compile(
    r"(?P<currency>[$£€])?"
    r"(?P<integer>\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
    r"(?:\.(?P<fraction>\d+))?"
    r"(?P<suffix>st|nd|rd|th|'?s)?"
    r"(?:\s?(?P<percent>%))?"
)
_CURRENCY = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros")}
_STRAY_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")
_NON_WORD_ASCII = re.compile(r"[^a-z']+")


def normalize(text: str) -> str:
    """Normalise a transcript for scoring and tokenising (see the module docstring)."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).casefold()
    for apostrophe in _APOSTROPHES:
        text = text.replace(apostrophe, "'")
    if not text.isascii():
        text = _fold_accents(text.translate(_LETTER_FOLDS))
    text = _NUMBER.sub(_spell_number, text)
    text = text.replace("&", " and ").replace("%", " percent ")
    if text.isascii():
        text = _NON_WORD_ASCII.sub(" ", text)
    else:
        text = "".join(char if _is_word_char(char) else " " for char in text)
    text = _STRAY_APOSTROPHE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _fold_accents(text: str) -> str:
    folded: list[str] = []
    for char in text:
        # A mark left on an ASCII letter (casefold("İ") == "i" + dot above) folds away too.
        if unicodedata.combining(char) and folded and folded[-1].isascii():
            continue
        folded.append(_fold_char(char))
    return "".join(folded)


def _fold_char(char: str) -> str:
    """``é`` -> ``e``; a letter without an ASCII base (``日``, ``ж``) stays as it is."""
    if char.isascii():
        return char
    base = "".join(part for part in unicodedata.normalize("NFKD", char) if not unicodedata.combining(part))
    return base if base and base.isascii() else char


def _is_word_char(char: str) -> bool:
    # Combining marks survive only inside non-Latin scripts (Devanagari vowel signs, ...).
    return char.isalpha() or char == "'" or unicodedata.category(char).startswith("M")


def _spell_number(match: re.Match) -> str:
    integer = match["integer"].replace(",", "")
    fraction, suffix = match["fraction"], match["suffix"] or ""
    if fraction is not None:
        words = numbers.decimal(integer, fraction)
    elif suffix in ("st", "nd", "rd", "th"):
        return f" {numbers.ordinal(int(integer))} "
    elif "," not in match["integer"] and numbers.looks_like_year(integer):
        words = numbers.year(int(integer))
    else:
        words = numbers.cardinal(int(integer))
    if suffix.endswith("s") and fraction is None:
        words = numbers.plural(words)
    elif suffix:  # a decimal followed by letters: keep them as a word
        words += " " + suffix
    if match["currency"]:
        singular, plural = _CURRENCY[match["currency"]]
        words += " " + (singular if words == "one" else plural)
    if match["percent"]:
        words += " percent"
    return f" {words} "


def spell_numbers(text: str) -> str:
    """Spell out the numbers of ``text`` and leave everything else (case, punctuation) alone."""
    return _SPACES.sub(" ", _NUMBER.sub(_spell_number, text)).strip()
