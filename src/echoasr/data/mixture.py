"""Training sets mixed from several dataset folders by share of hours.

``mix_training_sets(primary, extra, shares, seed)``: the primary set (``--data``) and each extra
folder's training utterances are resampled so that folder *i* makes up ``shares[i]`` of the
training hours and the primary the rest. The total stays the sum of the sets' own hours; a set
drawn above its size repeats (all of it as often as it fits, then a random part), one drawn below
it is a random subset. Deterministic in ``seed``. Works with any folder of manifests (a synthetic
corpus, the real-speech corpus, a LibriSpeech folder...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from echoasr.data.records import Utterance
from echoasr.errors import EchoError

log = logging.getLogger(__name__)


def check_shares(shares: Mapping[str, float]) -> None:
    if any(not 0 < share < 1 for share in shares.values()) or sum(shares.values()) >= 1:
        raise EchoError(f"mix shares must each lie in (0, 1) and sum below 1 (the rest is --data's), got {dict(shares)}")


def parse_mix(text: str) -> dict[str, float]:
    """``DIR:SHARE,DIR:SHARE`` (command line) -> {DIR: SHARE}."""
    mix = {}
    for entry in filter(None, text.split(",")):
        folder, _, share = entry.rpartition(":")
        try:
            mix[folder] = float(share)
        except ValueError:
            raise EchoError(f"--mix takes DIR:SHARE entries, not {entry!r}") from None
        if not folder:
            raise EchoError(f"--mix takes DIR:SHARE entries, not {entry!r}")
    check_shares(mix)
    return mix


def _seconds(utterances: Sequence[Utterance]) -> np.ndarray:
    return np.array([u.duration or 0.0 for u in utterances], dtype=np.float64)


def resample_to_hours(utterances: Sequence[Utterance], seconds: float, rng: np.random.Generator) -> list[Utterance]:
    """Whole copies of ``utterances`` while they fit in ``seconds``, then a random part of it."""
    durations = _seconds(utterances)
    total = float(durations.sum())
    if total <= 0:
        return []
    copies = int(seconds // total)
    chosen = list(utterances) * copies
    order = rng.permutation(len(utterances))
    cumulative = np.cumsum(durations[order])
    take = int(np.searchsorted(cumulative, seconds - copies * total))
    return chosen + [utterances[i] for i in order[:take]]


def mix_training_sets(primary: Sequence[Utterance], extra: Mapping[str, Sequence[Utterance]],
                      shares: Mapping[str, float], seed: int = 0) -> list[Utterance]:
    check_shares(shares)
    for folder, utterances in extra.items():
        if not utterances:
            raise EchoError("no training utterances to mix in", folder)
    rng = np.random.default_rng(seed)
    total = float(_seconds(primary).sum()) + sum(float(_seconds(u).sum()) for u in extra.values())
    mixed = resample_to_hours(primary, total * (1 - sum(shares.values())), rng)
    for folder in sorted(extra):
        part = resample_to_hours(extra[folder], total * shares[folder], rng)
        log.info("mix: %s gives %d utterances (%.1f h, %.0f%%)", folder, len(part),
                 float(_seconds(part).sum()) / 3600, 100 * shares[folder])
        mixed += part
    return mixed
