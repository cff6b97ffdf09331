"""English sentences for the synthetic corpus, from Debian text packages.

Sources: fortunes (``fortunes``, ``fortunes-min``), the King James Bible (``bible-kjv`` +
``bible-kjv-text``, read through the ``bible`` command) and the example sentences of WordNet
(``wordnet-base``). Each sentence is cleaned so that a TTS engine reads exactly its words and the
scoring normaliser leaves it readable: no markup or symbols, no abbreviations or acronyms, numbers
spelled out, every word in the system dictionary (``wamerican``), 4 to 20 words.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from echoasr.errors import EchoError
from echoasr.text import normalize
from echoasr.text.normalize import spell_numbers

log = logging.getLogger(__name__)

FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
DICTIONARY = Path("/usr/share/dict/american-english")
MIN_WORDS, MAX_WORDS = 4, 20
# Fortune files that are pictures or program text rather than sentences.
SKIPPED_FORTUNES = frozenset({"ascii-art", "perl", "translate-me"})

_ABBREVIATIONS = re.compile(
    r"\b(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|prof|gen|col|lt|sgt|capt|rev|mt|ft|no|inc|ltd|co|corp|"
    r"dept|approx|vol|ch|fig|al|ca|cf|viz|[a-z])\.",
    re.IGNORECASE,
)
_FORBIDDEN = re.compile(r"[@#$%&*/\\<>\[\]{}|_=+~^`\t]|\.\.|\w\.\w|https?:|www")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


@dataclass(frozen=True)
class Sentence:
    text: str      # what the voices read and the manifest stores
    source: str    # "fortunes", "kjv" or "wordnet"


@functools.lru_cache(maxsize=1)
def load_sentences() -> tuple[Sentence, ...]:
    """All usable sentences of the installed sources, deduplicated on their normalised text,
    in a fixed order (sorted by normalised text) so that a seed picks the same ones every time.
    (Cached: the sources are read once per process, ~3 s.)"""
    dictionary = _load_dictionary()
    by_key: dict[str, Sentence] = {}
    counts: dict[str, int] = {}
    for source, paragraphs in (("wordnet", _wordnet()), ("kjv", _kjv()), ("fortunes", _fortunes())):
        for paragraph in paragraphs:
            for text in split_sentences(paragraph):
                cleaned = clean_sentence(text, dictionary)
                if cleaned is None:
                    continue
                key = normalize(cleaned)
                if key not in by_key:
                    by_key[key] = Sentence(cleaned, source)
                    counts[source] = counts.get(source, 0) + 1
    if not by_key:
        raise EchoError(
            "no sentences found: install the Debian packages fortunes, bible-kjv, bible-kjv-text, "
            "wordnet-base and wamerican (scripts/install-system-deps)"
        )
    log.info("sentences: %s", ", ".join(f"{source} {count}" for source, count in counts.items()))
    return tuple(by_key[key] for key in sorted(by_key))


def split_sentences(paragraph: str) -> list[str]:
    """Split running text into sentences, unless it holds abbreviations that make the cut unsafe."""
    paragraph = " ".join(paragraph.split())
    if _ABBREVIATIONS.search(paragraph):
        return []
    return _SENTENCE_END.split(paragraph)


def clean_sentence(text: str, dictionary: frozenset[str]) -> str | None:
    """The sentence as a voice should read it, or None when it is not clean enough to keep."""
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}))
    if not text.isascii() or _FORBIDDEN.search(text):
        return None  # (abbreviations were ruled out when the paragraph was split)
    text = text.replace("--", ", ").replace('"', "").replace("(", "").replace(")", "")
    text = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", "", text)  # quote marks, not apostrophes
    if re.search(r"\d", text):
        text = spell_numbers(text)
    words = _WORD.findall(text)
    if not MIN_WORDS <= len(words) <= MAX_WORDS or len(normalize(text).split()) != len(words):
        return None  # stray symbols the word pattern does not see
    for word in words:
        if len(word) > 1 and word.isupper():
            if word.lower() not in dictionary:
                return None  # an acronym: voices spell it out, the transcript does not
            text = re.sub(rf"\b{word}\b", word.capitalize(), text)
        elif word.lower() not in dictionary:
            return None
    text = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(text.split()))
    text = re.sub(r"([,;:])(?:[,;:]\s*)+", r"\1 ", text).strip(" ,;:-")
    return text[0].upper() + text[1:] if text else None


def _load_dictionary() -> frozenset[str]:
    try:
        words = DICTIONARY.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        raise EchoError("the word list is missing: install the Debian package wamerican", DICTIONARY) from None
    return dictionary_from_words(words)


def dictionary_from_words(words: Iterable[str]) -> frozenset[str]:
    """Lower-cased words, without the acronyms (``NASA``): voices spell those out letter by letter."""
    return frozenset(word.lower() for word in words if len(word) == 1 or not word.isupper())


def _fortunes() -> Iterator[str]:
    if not FORTUNES_DIR.is_dir():
        log.warning("%s: not found (Debian fortunes); no fortune sentences", FORTUNES_DIR)
        return
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or not path.is_file() or path.name in SKIPPED_FORTUNES:
            continue
        for fortune in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [line for line in fortune.splitlines() if not line.strip().startswith(("--", "-- "))]
            if any(line.startswith(("\t", "    ")) or ":" in line[:12] for line in lines):
                continue  # verse layout, dialogues ("Q:", "A:") and code: not plain sentences
            yield " ".join(lines)


def _kjv() -> Iterator[str]:
    bible = shutil.which("bible")
    if bible is None:
        log.warning("the `bible` command is missing (Debian bible-kjv); no KJV sentences")
        return
    result = subprocess.run(
        [bible, "-l100000", "gen1:1-rev22:21"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        log.warning("bible failed (%s); no KJV sentences", result.stderr.strip() or result.returncode)
        return
    for line in result.stdout.splitlines():
        verse = re.match(r"\s+\d+\s+(.*)", line)
        if verse:
            yield verse[1]


def _wordnet() -> Iterator[str]:
    paths = [WORDNET_DIR / f"data.{part}" for part in ("noun", "verb", "adj", "adv")]
    if not all(path.is_file() for path in paths):
        log.warning("%s: not found (Debian wordnet-base); no WordNet sentences", WORDNET_DIR)
        return
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  "):
                continue  # licence header
            _, _, gloss = line.partition("| ")
            yield from _wordnet_examples(gloss)


def _wordnet_examples(gloss: str) -> Iterable[str]:
    for example in re.findall(r'"([^"]+)"', gloss):
        example = example.strip()
        if example:
            yield example[0].upper() + example[1:]
