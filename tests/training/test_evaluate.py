import csv
import json
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile

from echoasr.cli import main
from echoasr.evaluation import score

from .conftest import SENTENCES


def test_score_counts_substitutions_deletions_insertions_on_normalised_text():
    result = score(["The cat sat on the mat.", "Hello world"], ["the bat sat on mat", "hello, World! again"])
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 1, 1)
    assert result["words"] == 8 and result["wer"] == pytest.approx(3 / 8)
    # characters: c->b, "the " deleted (4), " again" inserted (6) over 22 + 11 reference characters
    assert result["characters"] == 33 and result["cer"] == pytest.approx(11 / 33)
    assert score(["Twenty one"], ["21"])["wer"] == 0.0  # numbers are normalised on both sides


def test_score_handles_empty_hypotheses():
    result = score(["one two"], [""])
    assert result["wer"] == 1.0 and result["deletions"] == 2 and result["cer"] == 1.0


def test_score_counts_insertions_on_empty_references():
    result = score(["", "a b"], ["x y z", "a b"])
    assert result["insertions"] == 3 and result["words"] == 2 and result["wer"] == pytest.approx(3 / 2)
    # "x y z" is 5 characters (spaces count, as in jiwer's CER) inserted against "a b" (3 characters)
    assert result["characters"] == 3 and result["cer"] == pytest.approx(5 / 3)
    mixed = score(["", "the cat"], ["hello", "the bat"])  # 1 substitution + 1 insertion of 2 words
    assert (mixed["substitutions"], mixed["insertions"], mixed["wer"]) == (1, 1, pytest.approx(1.0))
    assert mixed["cer"] == pytest.approx((1 + 5) / 7)
    assert score([""], [""])["wer"] == 0.0 and score([""], ["x"])["wer"] == float("inf")


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def independent_wer(rows) -> float:
    scored = [row for row in rows if row["reference"]]
    return jiwer.wer([row["reference"] for row in scored], [row["hypothesis"] for row in scored])


def test_evaluate_cli_json_last_line(trained_run, tts_corpus, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "hyp.tsv"
    assert main(["evaluate", "--model", str(run), "--data", str(tts_corpus / "test.tsv"), "--beam", "2",
                 "--out", str(out), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert {"wer", "cer", "utterances", "rtf", "substitutions", "deletions", "insertions"} <= set(result)
    assert result["utterances"] == 3 and result["rtf"] > 0 and result["beams"] == 2
    assert result["chunked"] == 0 and result["failed"] == []
    rows = read_rows(out)
    assert len(rows) == 3
    assert result["wer"] == pytest.approx(independent_wer(rows))
    assert result["cer"] == pytest.approx(jiwer.cer([r["reference"] for r in rows], [r["hypothesis"] for r in rows]))
    assert any("WER" in line for line in lines[:-1])


def test_evaluate_scores_every_utterance(trained_run, tts_corpus, tmp_path, capsys):
    """A recording longer than the model takes is chunked and scored, an unreadable and a missing
    one count as all-deleted: nothing leaves the test set."""
    run, _ = trained_run
    pieces = []
    for index in range(10):
        audio, rate = soundfile.read(tts_corpus / "wav" / f"u{index}.wav", dtype="float32")
        pieces += [audio, np.zeros(int(0.6 * rate), dtype=np.float32)]
    long_audio = np.concatenate(pieces)
    soundfile.write(tmp_path / "long.wav", long_audio, rate)
    assert len(long_audio) / rate > 15.0  # the tiny preset's max_duration
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    manifest = tmp_path / "test.tsv"
    for index in (7, 8):
        shutil.copy(tts_corpus / "wav" / f"u{index}.wav", tmp_path)
    manifest.write_text("path\ttext\n" + "".join(f"u{i}.wav\t{SENTENCES[i]}\n" for i in (7, 8))
                        + f"long.wav\t{' '.join(SENTENCES)}\nbroken.wav\tthe broken one\nmissing.wav\tnot here at all\n")
    out = tmp_path / "hyp.tsv"
    assert main(["evaluate", "--model", str(run), "--data", str(manifest), "--beam", "2", "--out", str(out),
                 "--json"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert result["utterances"] == 5 and result["chunked"] == 1
    assert sorted(f["id"] for f in result["failed"]) == ["broken", "missing"]
    assert all(f["reason"] for f in result["failed"])
    assert "1 chunked, 2 failed" in "\n".join(printed[:-1])
    rows = {row["id"]: row for row in read_rows(out)}
    assert list(rows) == ["u7", "u8", "long", "broken", "missing"]
    for name in ("broken", "missing"):
        assert rows[name]["hypothesis"] == "" and rows[name]["note"].startswith("failed: ")
        assert rows[name]["word_errors"] == rows[name]["reference_words"]
    assert rows["long"]["note"].endswith(" chunks") and int(rows["long"]["note"].split()[0]) >= 2
    assert result["words"] == sum(int(row["reference_words"]) for row in rows.values())
    assert result["deletions"] >= 3 + 4  # at least the failed ones' words
    assert result["wer"] == pytest.approx(independent_wer(list(rows.values())))
    seconds = sum(soundfile.info(tmp_path / f"{name}.wav").duration for name in ("u7", "u8", "long"))
    assert result["audio_seconds"] == pytest.approx(seconds, abs=0.05)


def test_evaluate_counts_truncated_files(trained_run, tts_corpus, tmp_path, capsys, caplog):
    """A WAV (and an MP3, with ffmpeg) cut to a third of its bytes is scored on what it holds and
    counted in the summary and the JSON, naming the frames read."""
    import logging
    import subprocess

    run, _ = trained_run
    rows = []
    for index in (7, 8):
        shutil.copy(tts_corpus / "wav" / f"u{index}.wav", tmp_path)
    data = (tmp_path / "u8.wav").read_bytes()
    (tmp_path / "u8.wav").write_bytes(data[: len(data) // 3])
    rows += [f"u7.wav\t{SENTENCES[7]}\n", f"u8.wav\t{SENTENCES[8]}\n"]
    expected = ["u8"]
    if shutil.which("ffmpeg") is not None:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tts_corpus / "wav" / "u9.wav"),
                        "-c:a", "libmp3lame", "-b:a", "64k", str(tmp_path / "u9.mp3")], check=True)
        mp3 = (tmp_path / "u9.mp3").read_bytes()
        (tmp_path / "u9.mp3").write_bytes(mp3[: len(mp3) // 3])
        rows.append(f"u9.mp3\t{SENTENCES[9]}\n")
        expected.append("u9")
    manifest = tmp_path / "test.tsv"
    manifest.write_text("path\ttext\n" + "".join(rows))
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", "--model", str(run), "--data", str(manifest), "--beam", "2",
                     "--out", str(tmp_path / "hyp.tsv"), "--json"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert [entry["id"] for entry in result["truncated"]] == expected
    assert all(0 < entry["frames_read"] < 0.4 * entry["frames_declared"] for entry in result["truncated"])
    assert f"{len(expected)} truncated" in printed[0]
    assert result["utterances"] == len(rows) and not result["failed"]
    assert "u8.wav" in caplog.text and "truncated" in caplog.text


def test_evaluate_loads_a_checkpoint_and_ctc_greedy(trained_run, tts_corpus, capsys):
    run, _ = trained_run
    assert main(["evaluate", "--model", str(run / "checkpoint-15"), "--data", str(tts_corpus), "--split", "dev",
                 "--ctc-greedy", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["decoding"] == "ctc-greedy" and result["utterances"] == 2
    # each hypothesis is the model's CTC best path on that utterance alone
    import torch

    from echoasr.audio import load_audio
    from echoasr.data import load_dataset_any
    from echoasr.loading import load_pretrained
    from echoasr.text import normalize

    model, processor = load_pretrained(run / "checkpoint-15")
    rows = {r.split("\t")[0]: r.split("\t")[2] for r in Path(result["hypotheses"]).read_text().splitlines()[1:]}
    for utterance in load_dataset_any(tts_corpus, split="dev"):
        batch = processor.collator()([{"features": processor.extract(load_audio(utterance.path))}])
        with torch.inference_mode():
            ids = model.ctc_greedy_decode(batch["features"], batch["feature_lengths"])
        assert rows[utterance.id] == normalize(processor.decode(ids[0].tolist()))


def test_evaluate_errors_are_one_line(trained_run, tmp_path, capsys):
    run, _ = trained_run
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "x.tsv")]) == 2
    assert "no model here" in capsys.readouterr().err
    (tmp_path / "empty.tsv").write_text("path\ttext\n")
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "empty.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("echoasr: error: ") and "empty.tsv" in err[-1]
