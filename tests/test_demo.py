"""`echoasr demo` end to end at toy scale: a 12-utterance corpus, 3 human prompts, two tiny models
trained 3 steps each; then a second run reuses everything."""

import json
import shutil

import pytest

from echoasr.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("flite") is None or shutil.which("ffmpeg") is None,
                       reason="Debian speech tools missing (scripts/install-system-deps)"),
]


def test_demo_builds_trains_evaluates_and_reuses(tmp_path, capsys):
    pytest.importorskip("pocketsphinx")
    from echoasr.data.human import find_sources

    try:
        find_sources()
    except Exception:
        pytest.skip("Asterisk prompts not installed")
    out = tmp_path / "demo"
    options = ["demo", "--out", str(out), "--utterances", "12", "--preset", "tiny", "--max-steps", "3",
               "--human-limit", "3", "--no-parallel", "--beam", "2"]
    assert main(options) == 0
    first = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"pitch", "plain"}
    for label in ("pitch", "plain"):
        assert set(results["scores"][label]) == {"test_seen", "test_unseen", "human"}
        assert results["scores"][label]["human"]["utterances"] == 3
    assert results["models"]["pitch"]["features"] == ["mel", "f0"] and results["models"]["plain"]["features"] == ["mel"]
    assert 0 <= results["pocketsphinx"]["wer"] and results["pocketsphinx"]["utterances"] == 3
    table = (out / "results.md").read_text()
    assert "| human (3) |" in table and "pocketsphinx" in table and table.strip() in first

    assert main(options) == 0
    second = capsys.readouterr().out
    assert "reusing the corpus" in second and "reusing the trained pitch model" in second
    assert "reusing the trained plain model" in second and "reusing the human set" in second and second.count("reusing") == 11
