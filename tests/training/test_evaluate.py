import json

import pytest

from echoasr.cli import main
from echoasr.evaluation import score


def test_score_counts_substitutions_deletions_insertions_on_normalised_text():
    result = score(["The cat sat on the mat.", "Hello world"], ["the bat sat on mat", "hello, World! again"])
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 1, 1)
    assert result["words"] == 8 and result["wer"] == pytest.approx(3 / 8)
    assert 0 < result["cer"] < result["wer"]
    assert score(["Twenty one"], ["21"])["wer"] == 0.0  # numbers are normalised on both sides


def test_score_handles_empty_hypotheses():
    result = score(["one two"], [""])
    assert result["wer"] == 1.0 and result["deletions"] == 2 and result["cer"] == 1.0


def test_evaluate_cli_json_last_line(trained_run, tts_corpus, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "hyp.tsv"
    assert main(["evaluate", "--model", str(run), "--data", str(tts_corpus / "test.tsv"), "--beam", "2",
                 "--out", str(out), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert {"wer", "cer", "utterances", "rtf", "substitutions", "deletions", "insertions"} <= set(result)
    assert result["utterances"] == 3 and result["rtf"] > 0 and result["beams"] == 2
    assert 0 <= result["cer"] and isinstance(result["wer"], float)
    rows = out.read_text().splitlines()
    assert rows[0].split("\t")[:3] == ["id", "reference", "hypothesis"] and len(rows) == 4
    assert any("WER" in line for line in lines[:-1])


def test_evaluate_loads_a_checkpoint_and_ctc_greedy(trained_run, tts_corpus, capsys):
    run, _ = trained_run
    assert main(["evaluate", "--model", str(run / "checkpoint-15"), "--data", str(tts_corpus), "--split", "dev",
                 "--ctc-greedy", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["decoding"] == "ctc-greedy" and result["utterances"] == 2
    assert (run / "checkpoint-15" / "eval").is_dir()


def test_evaluate_errors_are_one_line(trained_run, tmp_path, capsys):
    run, _ = trained_run
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "x.tsv")]) == 2
    assert "no model here" in capsys.readouterr().err
    (tmp_path / "empty.tsv").write_text("path\ttext\n")
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "empty.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("echoasr: error: ") and "empty.tsv" in err[-1]
