import shutil

import numpy as np
import pytest

from echoasr.cli import main


@pytest.mark.skipif(not (shutil.which("flite") or shutil.which("espeak-ng")), reason="no TTS engine installed")
def test_demo_synthesises_extracts_and_plots(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "synthesised with" in out and "f0 (dio): voiced" in out
    assert (tmp_path / "demo" / "pitch.png").read_bytes().startswith(b"\x89PNG")
    with np.load(tmp_path / "demo" / "speech.npz") as arrays:
        assert {"mel", "f0", "voiced", "harmonic", "aperiodic", "phase", "waveform"} == set(arrays)
        assert arrays["voiced"].mean() > 0.3
