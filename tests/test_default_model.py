"""The model shipped in the package: complete, small, and it recognises speech out of the box."""

import json
import shutil
import subprocess

import pytest

from echoasr import pretrained
from echoasr.cli import main
from echoasr.evaluation import score

SHIPPED = pretrained.SHIPPED_DIR
SENTENCE = "the birch canoe slid on the smooth planks"


def test_the_shipped_folder_is_complete_and_small():
    names = {path.name for path in SHIPPED.iterdir()}
    assert {"config.json", "processor.json", "tokenizer", "lm.json", "export.json"} <= names
    assert names & {"model.safetensors", "delta.safetensors"}  # complete, or a delta on Whisper base
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size <= 25 * 2**20
    export = json.loads((SHIPPED / "export.json").read_text())
    assert export["dtype"] == "float16"
    assert json.loads((SHIPPED / "lm.json").read_text())["lm"] == "default"  # no path of the machine it was made on


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is missing (scripts/install-system-deps)")
def test_transcribe_without_model_uses_the_shipped_model(tmp_path, monkeypatch, capsys):
    """A flite voice the model trained on (kal), a sentence it did not (Harvard list 1): the shipped
    model (a delta on Whisper base, composed at first use) gets it nearly right (measured: `The
    birch can be slid on the smooth planks`, CER 0.07); an untrained, broken or wrongly composed
    one writes garbage or nothing (CER near 1)."""
    monkeypatch.delenv("ECHOASR_MODEL", raising=False)
    audio = tmp_path / "canoe.wav"
    subprocess.run(["flite", "-voice", "kal16", "-t", SENTENCE, "-o", str(audio)], check=True)
    assert main(["transcribe", str(audio), "--lm", "none", "--beam", "4", "--threads", "2"]) == 0
    path, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert path == str(audio)
    assert score([SENTENCE], [text])["cer"] < 0.15, text
