from pathlib import Path

import numpy as np
import pytest
import soundfile


def write_tone(path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, fmt: str | None = None) -> Path:
    """A short 220 Hz tone (any rate, channels, format) for loader fixtures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    audio = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    soundfile.write(path, audio, rate, format=fmt)
    return path


@pytest.fixture
def tone():
    return write_tone
