"""A handful of real TTS utterances (flite) in a corpus layout, and one tiny trained run shared by
the training, evaluation and transcription tests."""

import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran to the park",
    "she sells sea shells",
    "the sun is warm today",
    "open the door please",
    "we like green apples",
    "the bird can sing",
    "rain falls on the hill",
    "turn left at the light",
    "the book is on the desk",
]

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is missing (scripts/install-system-deps)")


def speak(text: str, path: Path, voice: str = "kal16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["path\ttext\tspeaker"] + [f"{audio}\t{text}\tkal" for audio, text in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tts_corpus(tmp_path_factory):
    """DIR with train.tsv (8 utterances), dev.tsv (2) and test.tsv (3), relative paths."""
    if shutil.which("flite") is None:
        pytest.skip("flite is missing (scripts/install-system-deps)")
    root = tmp_path_factory.mktemp("tts")
    rows = []
    for index, text in enumerate(SENTENCES):
        speak(text, root / "wav" / f"u{index}.wav")
        rows.append((f"wav/u{index}.wav", text))
    write_manifest(root / "train.tsv", rows[:8])
    write_manifest(root / "dev.tsv", rows[8:])
    write_manifest(root / "test.tsv", rows[7:])
    return root


def tiny_config(**overrides):
    from echoasr.training import resolve_config

    values = dict(max_steps=30, save_steps=15, eval_steps=15, logging_steps=1, batch_frames=1200, threads=1,
                  learning_rate=3e-3, warmup_steps=3)
    values.update(overrides)
    return resolve_config("tiny", overrides=values)


@pytest.fixture(scope="session")
def trained_run(tts_corpus, tmp_path_factory):
    """A tiny model trained 30 steps on the TTS corpus: (run folder, summary)."""
    from echoasr.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    summary = train(tts_corpus, run, tiny_config(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return run, summary


def audio_seconds(path: Path) -> float:
    return soundfile.info(str(path)).duration
