"""LM decoding end to end on the tiny trained run: an IRSTLM model of the training text, tuning on
the dev split, evaluate and transcribe with the LM and the output formats."""

import json
import shutil
from pathlib import Path

import pytest

from echoasr.cli import main

from .conftest import SENTENCES

pytest.importorskip("flashlight.lib.text.decoder")
pytestmark = pytest.mark.skipif(shutil.which("tlm") is None and not Path("/usr/lib/irstlm/bin/tlm").exists(),
                                reason="IRSTLM is missing (scripts/install-system-deps)")


@pytest.fixture(scope="module")
def text_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    (folder / "train.txt").write_text("\n".join(SENTENCES[:8]) + "\n")
    assert main(["lm", "build", str(folder / "train.txt"), "--order", "2", "--out", str(folder / "lm.arpa")]) == 0
    return folder / "lm.arpa"


def test_tune_saves_settings_that_evaluate_uses(trained_run, tts_corpus, text_lm, tmp_path, capsys):
    run, _ = trained_run
    model = tmp_path / "model"
    shutil.copytree(run, model)  # the shared run stays without an LM config
    assert main(["lm", "tune", "--model", str(model), "--data", str(tts_corpus / "dev.tsv"), "--lm", str(text_lm)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["grid"]) == 16 + 3
    saved = json.loads((Path(result["saved"])).read_text())
    # recorded relative to the model folder, so that a copied folder keeps its LM (tests/lm/test_lm_config.py)
    assert not Path(saved["lm"]).is_absolute() and (model / saved["lm"]).resolve() == text_lm.resolve()
    assert saved["lm_weight"] == result["lm_weight"]
    assert main(["evaluate", "--model", str(model), "--data", str(tts_corpus / "test.tsv"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["decoding"].startswith("ctc+lm") and metrics["lm_options"]["lm_weight"] == saved["lm_weight"]
    assert main(["evaluate", "--model", str(model), "--data", str(tts_corpus / "test.tsv"), "--lm", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lm"] is None


def test_transcribe_cli_with_lm_and_formats(trained_run, tts_corpus, text_lm, tmp_path, capsys):
    """The CLI path; the 30-step model's CTC head hears nothing yet, so the texts are mostly empty
    (lexicon words, times and n-best on real output: tests/test_decoding.py)."""
    from echoasr.lm.arpa import vocabulary

    run, _ = trained_run
    audio = [str(tts_corpus / "wav" / f"u{i}.wav") for i in range(3)]
    assert main(["transcribe", "--model", str(run), *audio, "--lm", str(text_lm), "--format", "json"]) == 0
    documents = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [d["path"] for d in documents] == audio
    words = set(vocabulary(text_lm))
    for document in documents:
        assert set(document["text"].split()) <= words
        assert [w["word"] for w in document["words"]] == document["text"].split()
        assert all(0 <= w["start"] < w["end"] <= document["duration"] + 0.05 and 0 < w["confidence"] <= 1
                   for w in document["words"])
        scores = [n["score"] for n in document["nbest"]]
        assert scores == sorted(scores, reverse=True)
    assert main(["transcribe", "--model", str(run), *audio[:2], "--lm", str(text_lm), "--format", "srt",
                 "--out-dir", str(tmp_path / "subs")]) == 0
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["u0.srt", "u1.srt"]
    assert main(["transcribe", "--model", str(run), *audio[:2], "--format", "vtt"]) == 2  # several files need --out-dir
