import numpy as np
import pytest


def _tone():
    t = np.arange(16000) / 16000
    return (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


@pytest.fixture
def wav_bytes_16k():
    """A valid 1 s 16 kHz int16 WAV as bytes (44-byte header)."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, _tone(), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
