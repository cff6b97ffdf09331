import numpy as np
import pytest

from echoasr.errors import EchoError
from echoasr.features import extract
from echoasr.plots import plot_pitch


def test_silence_plots_with_a_no_voicing_note(tmp_path):
    audio = np.zeros(8000, np.float32)
    out = plot_pitch(audio, extract(audio, ["mel", "f0"]), tmp_path / "quiet.png", title="quiet")
    assert out.read_bytes().startswith(b"\x89PNG")


def test_long_audio_is_drawn_as_an_envelope(tmp_path):
    t = np.arange(16000 * 20) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(np.float32)
    out = plot_pitch(audio, extract(audio, ["mel", "f0"]), tmp_path / "long.svg")
    assert b"<svg" in out.read_bytes()[:500]
    assert [p.name for p in tmp_path.iterdir()] == ["long.svg"]  # no temporary file left


def test_unknown_image_type_is_a_user_error(tmp_path):
    audio = np.zeros(1600, np.float32)
    with pytest.raises(EchoError, match="cannot write images"):
        plot_pitch(audio, extract(audio, ["mel", "f0"]), tmp_path / "x.doc")
