"""Extraction settings: one frozen dataclass whose fields (plus the feature version) key the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from echoasr.errors import EchoError

# Bump whenever any extractor's output changes for the same input and settings: it is part of every
# cache key, so old cache entries stop matching instead of being served stale.
FEATURE_VERSION = 1

F0_METHODS = ("dio", "harvest", "praat", "pyin")


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """How features are computed. Defaults suit adult speech at 16 kHz.

    f0_method: pitch tracker, one of ``F0_METHODS`` (DIO + StoneMask by default).
    f0_floor, f0_ceil: search range of every tracker in Hz; f0_floor also sets WORLD's
        CheapTrick window (an FFT of 1024 points at 16 kHz for floors >= 47 Hz).
    phase_reference_hz: rate at which the accumulated f0 phase advances on unvoiced frames.
    """

    f0_method: str = "dio"
    f0_floor: float = 60.0
    f0_ceil: float = 600.0
    phase_reference_hz: float = 100.0

    def __post_init__(self) -> None:
        if self.f0_method not in F0_METHODS:
            raise EchoError(f"unknown f0 method {self.f0_method!r}; choose from {', '.join(F0_METHODS)}")
        if not 20.0 <= self.f0_floor < self.f0_ceil <= 2000.0:
            raise EchoError(
                f"f0 range {self.f0_floor:g}-{self.f0_ceil:g} Hz is invalid; need 20 <= floor < ceiling <= 2000"
            )
        if not self.phase_reference_hz >= 0.0:
            raise EchoError(f"phase reference rate must be >= 0 Hz, got {self.phase_reference_hz:g}")

    def cache_key(self) -> str:
        """A short hex digest that changes whenever a setting or ``FEATURE_VERSION`` changes."""
        fields = dataclasses.asdict(self) | {"feature_version": FEATURE_VERSION}
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
