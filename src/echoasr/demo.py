"""``echoasr demo`` for now: synthesise a sentence offline, run the front end on it, plot its pitch.

A stand-in until the training pipeline exists (a later issue replaces it with data -> train ->
evaluate). Uses flite (voice slt) when installed, else espeak-ng.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from echoasr.errors import EchoError

log = logging.getLogger(__name__)

DEMO_TEXT = (
    "Does pitch help a machine recognise speech? "
    "Listen to the melody of this sentence as it rises and falls."
)


def synthesize(text: str, out: Path) -> str:
    """Speak ``text`` into the WAV file ``out`` with an offline TTS engine; return the engine used."""
    if shutil.which("flite"):
        command, engine = ["flite", "-voice", "slt", "-t", text, "-o", str(out)], "flite (slt)"
    elif shutil.which("espeak-ng"):
        command, engine = ["espeak-ng", "-v", "en-us", "-w", str(out), text], "espeak-ng (en-us)"
    else:
        raise EchoError("the demo needs flite or espeak-ng (sudo apt-get install flite)")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        raise EchoError(f"{command[0]} failed: {result.stderr.strip() or result.returncode}", out)
    return engine


def run(out_dir: str = "demo") -> int:
    from echoasr.audio import load_audio
    from echoasr.features import FeatureSettings, extract
    from echoasr.features.command import format_summary, save_npz, summarize
    from echoasr.plots import plot_pitch

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "speech.wav"
    engine = synthesize(DEMO_TEXT, wav)
    print(f"synthesised with {engine}: {wav}\n  \"{DEMO_TEXT}\"")
    settings = FeatureSettings()
    audio = load_audio(wav)
    arrays = extract(audio, settings=settings)
    print(format_summary(summarize(wav, len(audio), arrays, settings)))
    save_npz(folder / "speech.npz", arrays)
    picture = plot_pitch(audio, arrays, folder / "pitch.png", title=wav.name, f0_method=settings.f0_method)
    print(f"features: {folder / 'speech.npz'}\npitch plot: {picture}")
    return 0
