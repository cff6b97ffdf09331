import gzip
import shutil

import pytest
import soundfile

from echoasr.data import human, read_manifest
from echoasr.errors import EchoError


def installed() -> bool:
    try:
        human.find_sources()
    except EchoError:
        return False
    return shutil.which("ffmpeg") is not None


@pytest.mark.parametrize(("text", "clean"), [
    ("Please enter your password followed by the pound key.", True),
    ("...to leave the conference.", True),
    ("the person you are calling is not at their desk; I will try to locate them for you", True),
    ('Dial 4 to send this caller to a polite "don\'t call" menu.', False),  # digit
    ("[this is a simple beep tone]", False),
    ("(10 seconds of silence)", False),
    ("A.M.", False),
    ("Asterisk is an Open Source PBX.", False),  # acronym
    ("b", False),                                # a spelled letter
    ("letters at [@]", False),
])
def test_is_clean(text, clean):
    assert human.is_clean(text) is clean


def test_read_prompts_keeps_clean_prompts_that_have_audio(tmp_path):
    sounds = tmp_path / "sounds"
    (sounds / "vm").mkdir(parents=True)
    for key in ("hello", "vm/goodbye", "digits/1"):
        (sounds / f"{key}.g722").parent.mkdir(parents=True, exist_ok=True)
        (sounds / f"{key}.g722").write_bytes(b"\0" * 10)
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(transcripts, "wt") as handle:
        handle.write("; Core Asterisk Sounds in English\n\nhello: Hello  there.\nvm/goodbye: Goodbye!\n"
                     "digits/1: 1\nno-audio: Not recorded.\nbeep: [beep]\n")
    prompts, listed = human.read_prompts(sounds, transcripts)
    assert [(p.key, p.text) for p in prompts] == [("hello", "Hello there."), ("vm/goodbye", "Goodbye!")]
    assert listed == 5


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(human, "_from_dpkg", lambda package, suffix: [])
    monkeypatch.setattr(human, "DEFAULT_SOUNDS_DIR", tmp_path / "none")
    with pytest.raises(EchoError, match="asterisk-core-sounds-en-g722 and asterisk-core-sounds-en"):
        human.build_human_set(tmp_path / "out")


@pytest.mark.skipif(not installed(), reason="Asterisk prompt packages or ffmpeg missing")
def test_human_set_on_a_few_prompts(tmp_path):
    summary = human.build_human_set(tmp_path, limit=3, progress=False)
    assert summary["prompts"] == 3 and summary["listed"] > 500
    utterances = read_manifest(tmp_path / "human.tsv")
    assert len(utterances) == 3 and {u.speaker for u in utterances} == {"asterisk-female"}
    for utterance in utterances:
        info = soundfile.info(utterance.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert human.is_clean(utterance.text) and utterance.duration > 0.3
    first = (tmp_path / "wav").iterdir().__next__()
    data = first.read_bytes()
    human.build_human_set(tmp_path, limit=3, progress=False)  # resumes: nothing decoded again
    assert first.read_bytes() == data
