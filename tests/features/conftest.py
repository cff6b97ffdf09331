import shutil
import subprocess
import types

import numpy as np
import pytest

SAMPLE_RATE = 16000


def _harmonic(f0_per_sample: np.ndarray, n_harmonics: int = 5) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0_per_sample) / SAMPLE_RATE
    return sum(0.3 / k * np.sin(k * phase) for k in range(1, n_harmonics + 1)).astype(np.float32)


def make_signal(kind: str, seconds: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """(audio, true f0 per sample) for a synthetic signal with known pitch."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    if kind == "tone":
        f0 = np.full_like(t, 150.0)
        return (0.5 * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32), f0
    if kind == "glide":  # 120 -> 240 Hz over the clip, five harmonics
        f0 = 120.0 * 2 ** (t / seconds)
        return _harmonic(f0), f0
    if kind == "vibrato":  # 200 Hz +-5 % at 5 Hz
        f0 = 200.0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
        return _harmonic(f0), f0
    raise ValueError(kind)


@pytest.fixture
def signals():
    return types.SimpleNamespace(make=make_signal, sample_rate=SAMPLE_RATE)


@pytest.fixture(scope="session")
def tts_wav(tmp_path_factory):
    """A real TTS recording (flite slt, else espeak-ng), made offline."""
    folder = tmp_path_factory.mktemp("tts")
    wav = folder / "speech.wav"
    text = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
    if shutil.which("flite"):
        command = ["flite", "-voice", "slt", "-t", text, "-o", str(wav)]
    elif shutil.which("espeak-ng"):
        command = ["espeak-ng", "-w", str(wav), text]
    else:
        pytest.skip("no TTS engine (flite or espeak-ng) installed")
    subprocess.run(command, check=True, capture_output=True)
    return wav
