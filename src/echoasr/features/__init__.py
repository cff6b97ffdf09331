"""Frame-aligned speech features at 16 kHz and a 10 ms hop.

``extract(audio, features, settings)`` computes any subset of ``FEATURE_NAMES`` for one utterance
and returns numpy float32 arrays whose last axis has T = num_frames(len(audio)) frames:

=============  ========================  ===============================================
name           shape                     meaning
=============  ========================  ===============================================
``mel``        (N_MELS, T)               Whisper-style log-mel, 0-8000 Hz (mel.py)
``f0``         (T,)                      Hz, 0.0 where unvoiced (pitch.py)
``voiced``     (T,)                      1.0 / 0.0; always returned with ``f0``
``harmonic``   (N_HARMONIC_BANDS, T)     WORLD CheapTrick envelope, log, banded (world.py)
``aperiodic``  (N_APERIODIC_BANDS, T)    WORLD D4C aperiodicity, log, banded (world.py)
``phase``      (T,)                      accumulated f0 phase mod 2*pi (phase.py)
``waveform``   (HOP_LENGTH, T)           centred 160-sample frames (waveform.py)
=============  ========================  ===============================================

``extract_file`` loads a file and caches the arrays on disk (cache.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from echoasr.audio import HOP_LENGTH, PCM_CHANNELS, PCM_SAMPLE_RATE, PCM_SUFFIXES, SAMPLE_RATE, load_audio, num_frames
from echoasr.errors import EchoError
from echoasr.features.cache import FeatureCache, content_hash
from echoasr.features.mel import N_MELS, log_mel_spectrogram
from echoasr.features.phase import accumulated_phase
from echoasr.features.pitch import track_pitch
from echoasr.features.settings import F0_METHODS, FEATURE_VERSION, FeatureSettings
from echoasr.features.waveform import frame_waveform
from echoasr.features.world import N_APERIODIC_BANDS, N_HARMONIC_BANDS, world_features

FEATURE_NAMES = ("mel", "f0", "harmonic", "aperiodic", "phase", "waveform")
DEFAULT_FEATURES = FEATURE_NAMES
# Arrays each feature name produces ("f0" brings its voicing flag).
OUTPUT_KEYS = {name: (name,) for name in FEATURE_NAMES} | {"f0": ("f0", "voiced")}
_NEEDS_F0 = {"f0", "harmonic", "aperiodic", "phase"}

__all__ = [
    "DEFAULT_FEATURES", "F0_METHODS", "FEATURE_NAMES", "FEATURE_VERSION", "HOP_LENGTH",
    "N_APERIODIC_BANDS", "N_HARMONIC_BANDS", "N_MELS", "OUTPUT_KEYS", "SAMPLE_RATE",
    "FeatureCache", "FeatureSettings", "check_feature_names", "extract", "extract_file", "output_keys",
]


def check_feature_names(features: Iterable[str]) -> tuple[str, ...]:
    """Validate names, map ``voiced`` to ``f0`` and drop repeats (order kept); "mel,f0" also works."""
    if isinstance(features, str):
        features = features.split(",")
    names: list[str] = []
    for name in features:
        name = "f0" if name.strip() == "voiced" else name.strip()
        if name not in FEATURE_NAMES:
            raise EchoError(f"unknown feature {name!r}; choose from {', '.join(FEATURE_NAMES)}")
        if name not in names:
            names.append(name)
    if not names:
        raise EchoError("no features requested")
    return tuple(names)


def output_keys(features: Iterable[str]) -> tuple[str, ...]:
    """Names of the arrays ``extract`` returns for these features."""
    return tuple(key for name in check_feature_names(features) for key in OUTPUT_KEYS[name])


def extract(
    audio: np.ndarray,
    features: Iterable[str] = DEFAULT_FEATURES,
    settings: FeatureSettings | None = None,
) -> dict[str, np.ndarray]:
    """Compute ``features`` for one utterance (16 kHz mono float32 samples, any length >= 1).

    Returns a dict keyed by ``output_keys(features)``; every array's last axis has
    ``num_frames(len(audio))`` frames. f0 is computed once and shared by the WORLD features and
    the phase.
    """
    names = check_feature_names(features)
    settings = settings or FeatureSettings()
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be a non-empty 1-D array of samples, got shape {audio.shape}")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")

    out: dict[str, np.ndarray] = {}
    if "mel" in names:
        out["mel"] = log_mel_spectrogram(audio)
    if _NEEDS_F0.intersection(names):
        f0, voiced = track_pitch(audio, settings.f0_method, settings.f0_floor, settings.f0_ceil)
        if "f0" in names:
            out["f0"], out["voiced"] = f0, voiced
        if "harmonic" in names or "aperiodic" in names:
            harmonic, aperiodic = world_features(audio, f0, settings.f0_floor)
            if "harmonic" in names:
                out["harmonic"] = harmonic
            if "aperiodic" in names:
                out["aperiodic"] = aperiodic
        if "phase" in names:
            out["phase"] = accumulated_phase(f0, voiced, settings.phase_reference_hz)
    if "waveform" in names:
        out["waveform"] = frame_waveform(audio)

    assert all(array.shape[-1] == num_frames(len(audio)) for array in out.values())
    return {key: out[key] for key in output_keys(names)}


def extract_file(
    path: str | os.PathLike,
    features: Iterable[str] | None = None,
    settings: FeatureSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    pcm_sample_rate: int = PCM_SAMPLE_RATE,
    pcm_channels: int = PCM_CHANNELS,
    audio: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Load ``path`` and extract ``features`` (default: all), reusing ``cache_dir`` if given.

    ``audio``: the file's samples, if the caller has already loaded them (saves a second read).
    """
    names = check_feature_names(DEFAULT_FEATURES if features is None else features)
    settings = settings or FeatureSettings()

    def compute(which: Iterable[str]) -> dict[str, np.ndarray]:
        samples = audio if audio is not None else load_audio(path, pcm_sample_rate=pcm_sample_rate, pcm_channels=pcm_channels)
        return extract(samples, which, settings)

    if cache_dir is None:
        return compute(names)
    cache = FeatureCache(cache_dir)
    digest = content_hash(path)
    key = settings.cache_key()
    if Path(path).suffix.lower() in PCM_SUFFIXES:
        key += f"-pcm{pcm_sample_rate}x{pcm_channels}"
    arrays = cache.load(digest, key, output_keys(names))
    missing = [name for name in names if not all(k in arrays for k in output_keys([name]))]
    if missing:
        computed = compute(missing)
        cache.store(digest, key, computed)
        arrays.update(computed)
    return {k: arrays[k] for k in output_keys(names)}
