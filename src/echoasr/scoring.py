"""Word and character error rates: what ``evaluate``, the reference recognisers, training's
evaluation and LM tuning all score with.

References and hypotheses are both passed through :func:`echoasr.text.normalize` (jiwer,
corpus-level: total errors over total reference words or characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from echoasr.text import normalize


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus-level WER and CER (fractions) with word-level substitutions, deletions, insertions.

    A pair with an empty reference adds its hypothesis' words (characters) as insertions: jiwer
    refuses empty references, so that part is counted here. With no reference words at all, any
    insertion makes the rate infinite.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    scored = [(r, h) for r, h in pairs if r]
    unanchored = [h for r, h in pairs if not r and h]  # hypotheses of empty references
    substitutions = deletions = hits = char_hits = char_substitutions = char_deletions = 0
    insertions = sum(len(h.split()) for h in unanchored)
    char_errors = sum(len(h) for h in unanchored)
    if scored:
        words = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
        chars = jiwer.process_characters([r for r, _ in scored], [h for _, h in scored])
        substitutions, deletions, hits = words.substitutions, words.deletions, words.hits
        insertions += words.insertions
        char_hits, char_substitutions, char_deletions = chars.hits, chars.substitutions, chars.deletions
        char_errors += chars.substitutions + chars.deletions + chars.insertions
    reference_words = hits + substitutions + deletions
    reference_characters = char_hits + char_substitutions + char_deletions
    return {
        "wer": _rate(substitutions + deletions + insertions, reference_words),
        "cer": _rate(char_errors, reference_characters),
        "substitutions": int(substitutions), "deletions": int(deletions), "insertions": int(insertions),
        "words": int(reference_words), "characters": int(reference_characters),
    }


def _rate(errors: int, total: int) -> float:
    if total:
        return errors / total
    return float("inf") if errors else 0.0
