import json
import logging

import numpy as np
import pytest

from echoasr.data import Utterance, read_audio, read_manifest, write_manifest
from echoasr.errors import EchoError


def test_tsv_paths_resolve_against_the_manifest_folder(tmp_path, tone, monkeypatch):
    tone(tmp_path / "corpus" / "wav" / "a.wav", seconds=0.5)
    tone(tmp_path / "corpus" / "wav" / "b.wav", seconds=0.25)
    manifest = tmp_path / "corpus" / "train.tsv"
    manifest.write_text("path\ttext\tspeaker\nwav/a.wav\tHello there.\tkal\nwav/b.wav\tGood bye\tawb\n")
    monkeypatch.chdir(tmp_path)  # somewhere else than the manifest's folder
    utterances = read_manifest("corpus/train.tsv")
    assert [u.text for u in utterances] == ["Hello there.", "Good bye"]
    assert [u.speaker for u in utterances] == ["kal", "awb"]
    assert [u.duration for u in utterances] == [0.5, 0.25]
    assert utterances[0].path == str(tmp_path / "corpus" / "wav" / "a.wav")
    assert utterances[0].id == "wav/a"
    assert read_audio(utterances[1]).shape == (4000,)


def test_jsonl_manifest_with_alternative_column_names(tmp_path, tone):
    tone(tmp_path / "x.flac", seconds=0.5, fmt="FLAC")
    rows = [{"audio_filepath": "x.flac", "sentence": "a flac file", "speaker_id": 7, "id": "u1"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (utterance,) = read_manifest(tmp_path / "m.jsonl")
    assert (utterance.id, utterance.text, utterance.duration) == ("u1", "a flac file", 0.5)


def test_bad_rows_are_skipped_with_one_summary_line(tmp_path, tone, caplog):
    tone(tmp_path / "good.wav")
    tone(tmp_path / "long.wav", seconds=2.0)
    tone(tmp_path / "empty.wav", seconds=0.0)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    manifest = tmp_path / "m.tsv"
    manifest.write_text(
        "path\ttext\n"
        "good.wav\tkeep me\n"
        "missing.wav\tno file\n"
        "broken.wav\tunreadable\n"
        "empty.wav\tno samples\n"
        "long.wav\ttoo long\n"
        "good.wav\t  ?! \n"
        "good.wav\ttoo\tmany fields\n"
    )
    with caplog.at_level(logging.WARNING):
        utterances = read_manifest(manifest, max_duration=1.0)
    assert [u.text for u in utterances] == ["keep me"]
    summary = caplog.records[-1].getMessage()
    assert "1 of 7 utterances usable" in summary
    for reason in ("1 missing file", "1 unreadable audio", "1 empty audio", "1 longer than 1 s",
                   "1 empty transcript", "1 malformed rows"):
        assert reason in summary


def test_a_manifest_without_usable_rows_is_an_error_naming_it(tmp_path):
    manifest = tmp_path / "dead.tsv"
    manifest.write_text("path\ttext\nnope.wav\thello\n")
    with pytest.raises(EchoError) as error:
        read_manifest(manifest)
    assert error.value.path == str(manifest) and "no usable utterances" in error.value.message


@pytest.mark.parametrize("content", ["", "file\tcaption\na.wav\thi\n"])
def test_a_manifest_needs_a_header_with_path_and_text(tmp_path, content):
    (tmp_path / "m.tsv").write_text(content)
    with pytest.raises(EchoError, match="header row"):
        read_manifest(tmp_path / "m.tsv")


def test_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(EchoError, match="manifest not found"):
        read_manifest(tmp_path / "none.tsv")


@pytest.mark.parametrize("name", ["out/m.tsv", "out/m.jsonl"])
def test_write_then_read_round_trip(tmp_path, tone, name):
    audio = tone(tmp_path / "audio" / "a.wav", seconds=0.5)
    utterance = Utterance("a", "tab\tand\nnewline", "spk", 0.5, path=str(audio), voice="v")
    write_manifest(tmp_path / name, [utterance])
    (loaded,) = read_manifest(tmp_path / name)
    assert loaded.path == str(audio) and loaded.text == "tab and newline"
    assert (loaded.speaker, loaded.voice, loaded.duration) == ("spk", "v", 0.5)
    if name.endswith(".tsv"):
        assert (tmp_path / name).read_text().splitlines()[0] == "path\ttext\tspeaker\tvoice\tduration"
        assert "../audio/a.wav" in (tmp_path / name).read_text()


def test_read_audio_downmixes_and_resamples(tmp_path, tone):
    stereo_8k = tone(tmp_path / "s.wav", seconds=0.5, rate=8000, channels=2)
    audio = read_audio(Utterance("s", "x", path=str(stereo_8k)))
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    in_memory = Utterance("m", "x", audio=np.zeros(160, dtype=np.float64))
    assert read_audio(in_memory).dtype == np.float32
    with pytest.raises(EchoError, match="cannot read audio"):
        read_audio(Utterance("bad", "x", path=str(tmp_path / "none.wav")))
