"""The experiment runner on a 2-configuration, 1-seed, few-step plan: results, report, resume."""

import json
import shutil
from pathlib import Path

import pytest

from echoasr import training
from echoasr.errors import EchoError
from echoasr.experiments.plans import load_plan
from echoasr.experiments.runner import RESULT_FILE, plan_tasks, run_experiment, run_folder, named_test_sets

PLAN = """
name: tiny-test
preset: tiny
seeds: 1
eval_beams: 1
train: {max_steps: 6, save_steps: 3, eval_steps: 3, logging_steps: 1, batch_frames: 1200, warmup_steps: 2}
configurations:
  - name: plain
    question: position
    model: {features: [mel], rotary_theta_mode: none, rotary_radius: none, pitch_bias: false}
  - name: phase
    question: position
    baseline: plain
    description: + phase
    model: {features: [mel], rotary_theta_mode: phase, rotary_radius: none, pitch_bias: false}
"""


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return load_plan(path)


def test_experiment_writes_results_and_report_and_resumes(tts_corpus, plan, tmp_path, monkeypatch):
    out, cache = tmp_path / "exp", tmp_path / "cache"
    options = dict(seeds=1, parallel=1, threads=1, split="test", human=tts_corpus / "dev.tsv", cache_dir=cache,
                   progress=False)
    results = run_experiment(plan, tts_corpus, out, **options)

    saved = json.loads((out / "results.json").read_text())
    assert saved["configurations"].keys() == {"plain", "phase"}
    for entry in saved["configurations"].values():
        assert entry["steps"] == [6] and entry["seeds"] == [0] and entry["parameters"][0] > 0
        for set_name in ("test", "human"):
            cer = entry["sets"][set_name]["cer"]
            assert 0.0 <= cer["mean"] and cer["n"] == 1 and cer["low"] is None
    run = json.loads((run_folder(out, "plain", 0) / RESULT_FILE).read_text())
    per_utterance = run["sets"]["test"]
    # per-utterance errors reproduce evaluate's corpus-level figures
    assert sum(per_utterance["char_errors"]) / sum(per_utterance["chars"]) == pytest.approx(per_utterance["cer"])
    assert sum(per_utterance["word_errors"]) / sum(per_utterance["words"]) == pytest.approx(per_utterance["wer"])
    comparisons = {(c["system"], c["baseline"], c["set"], c["metric"]) for c in saved["comparisons"]}
    assert ("phase", "plain", "test", "cer") in comparisons and len(comparisons) == 4
    assert results["steps_to_threshold"]["available"]  # dev CER logged at steps 3 and 6
    comparison = next(c for c in saved["comparisons"] if c["set"] == "test" and c["metric"] == "cer")
    # one seed: no seed-level test, no verdict; the utterance bootstrap is there, descriptive
    assert comparison["test"] is None and comparison["verdict"] == "n/a" and comparison["family"] == "position"
    assert comparison["utterance_bootstrap"]["utterances"] == 3
    assert saved["analysis"]["families"] == [{"name": "position", "contrasts": ["phase vs plain"],
                                              "sets": ["test", "human"], "margin": 0.01}]
    report = (out / "report.md").read_text()
    assert "`phase` vs `plain`" in report and "n/a (needs 2+ paired seeds)" in report and "Holm" in report
    assert "plots/error_rates.png" in report
    # every run's per-utterance errors and speakers, for a reader to re-run the analysis
    from echoasr.experiments.report import UTTERANCES_FILE, read_utterances

    utterances = read_utterances(out / UTTERANCES_FILE)
    assert set(utterances) == {("plain", 0), ("phase", 0)}
    assert utterances[("plain", 0)]["test"]["char_errors"] == per_utterance["char_errors"]
    assert utterances[("plain", 0)]["test"]["speakers"] == ["kal"] * 3
    assert (out / "plots" / "error_rates.png").stat().st_size > 1000
    assert (out / "plots" / "training_curves.png").is_file()
    assert (out / "plots" / "utterance.png").stat().st_size > 1000 and "plots/utterance.png" in report

    # Resume: a killed run (a checkpoint at step 3, no final summary, no result) continues from its
    # checkpoint; the finished run is not touched.
    killed = run_folder(out, "phase", 0)
    shutil.rmtree(killed)
    config = plan.train_config(plan.configuration("phase"), 0, threads=1)
    training.train(tts_corpus, killed, config.merged({"max_steps": 3}), cache_dir=cache, progress=False)
    (killed / training.SUMMARY_FILE).unlink()
    (killed / "model.safetensors").unlink()
    assert (killed / "checkpoint-3").is_dir() and not (killed / RESULT_FILE).exists()
    finished_result = (run_folder(out, "plain", 0) / RESULT_FILE).stat().st_mtime_ns

    calls = []
    real_train = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(k) or real_train(*a, **k))
    results = run_experiment(plan, tts_corpus, out, **options)
    assert len(calls) == 1 and calls[0]["resume"] is True  # only the killed run trained, resumed
    assert (run_folder(out, "plain", 0) / RESULT_FILE).stat().st_mtime_ns == finished_result
    resumed = json.loads((killed / RESULT_FILE).read_text())
    assert resumed["steps"] == 6
    # the resumed history starts with the killed run's steps 1-3 (restored from the checkpoint)
    assert [e["step"] for e in resumed["log_history"] if "loss" in e][:3] == [1, 2, 3]
    assert results["configurations"]["phase"]["steps"] == [6]

    # A test set added to the finished grid is evaluated on every run; nothing is trained.
    calls.clear()
    results = run_experiment(plan, tts_corpus, out, tests={"again": str(tts_corpus / "dev.tsv")}, **options)
    assert calls == []
    for name in ("plain", "phase"):
        sets = json.loads((run_folder(out, name, 0) / RESULT_FILE).read_text())["sets"]
        assert sets["again"]["cer"] == sets["human"]["cer"]  # the same manifest as --human
        assert sets["again"]["char_errors"] == sets["human"]["char_errors"]
    assert ("phase", "plain", "again", "cer") in {(c["system"], c["baseline"], c["set"], c["metric"])
                                                 for c in results["comparisons"]}
    report = (out / "report.md").read_text()
    assert "again CER" in report and f"--test again={tts_corpus / 'dev.tsv'}" in report
    with pytest.raises(EchoError, match="taken"):
        run_experiment(plan, tts_corpus, out, tests={"human": str(tts_corpus / "dev.tsv")}, **options)


def test_report_only_reports_finished_runs_and_trains_nothing(tts_corpus, plan, tmp_path, monkeypatch):
    from echoasr import evaluation
    from echoasr.experiments.plans import Plan

    out, cache = tmp_path / "exp", tmp_path / "cache"
    options = dict(seeds=1, threads=1, split="test", cache_dir=cache, progress=False)
    with pytest.raises(EchoError, match="no finished runs"):
        run_experiment(plan, tts_corpus, out, report_only=True, **options)
    # only `plain` has run (a plan of its first configuration): the grid is half done
    first_only = Plan(plan.name, plan.preset, plan.configurations[:1], plan.train, plan.eval_beams, plan.seeds)
    run_experiment(first_only, tts_corpus, out, plots=False, **options)

    def refuse(*args, **kwargs):
        raise AssertionError("report_only must not train or evaluate")

    monkeypatch.setattr(training, "train", refuse)
    monkeypatch.setattr(evaluation, "evaluate", refuse)
    results = run_experiment(plan, tts_corpus, out, report_only=True, **options)

    settings = results["settings"]
    assert (settings["runs_planned"], settings["runs_finished"], settings["runs_missing"]) == (2, 1, ["phase/seed0"])
    assert results["configurations"]["plain"]["seeds"] == [0]
    assert results["configurations"]["phase"]["seeds"] == [] and results["comparisons"] == []
    assert not run_folder(out, "phase", 0).exists()
    report = (out / "report.md").read_text()
    assert "Interim report: 1 of 2 runs finished" in report and "Not yet finished: every seed of `phase`." in report
    assert "| `phase` | + phase |" in report and "n/a" in report
    assert (out / "plots" / "error_rates.png").stat().st_size > 1000
    assert "plots/utterance.png" not in report  # its pitch model (`phase` seed 0) has not run


def test_missing_runs_are_listed_by_configuration():
    from echoasr.experiments.report import _missing_runs

    missing = ["plain/seed2", "mel+f0/seed0", "mel+f0/seed1", "mel+f0/seed2", "phase/seed0", "phase/seed2"]
    assert _missing_runs(missing, 3) == "`plain` seed 2; `phase` seeds 0, 2; every seed of `mel+f0`"


def test_changed_plan_refuses_an_existing_run(tts_corpus, plan, tmp_path):
    out = tmp_path / "exp"
    folder = run_folder(out, "plain", 0)
    config = plan.train_config(plan.configuration("plain"), 0).merged({"learning_rate": 1e-4})
    folder.mkdir(parents=True)
    (folder / "train_config.yaml").write_text(__import__("yaml").safe_dump(config.to_dict()))
    with pytest.raises(EchoError, match="learning_rate"):
        run_experiment(plan, tts_corpus, out, seeds=1, split="test", progress=False)


def test_a_run_saved_before_an_option_existed_is_the_same_configuration(tts_corpus, plan, tmp_path):
    import yaml

    out = tmp_path / "exp"
    folder = run_folder(out, "plain", 0)
    folder.mkdir(parents=True)
    saved = plan.train_config(plan.configuration("plain"), 0).to_dict()
    del saved["average_last"], saved["mix"]  # options added later; their defaults are the old behaviour
    (folder / "train_config.yaml").write_text(yaml.safe_dump(saved))
    tasks = plan_tasks(plan, tts_corpus, out, 1, None, named_test_sets(tts_corpus, "test", None), None)
    assert [t.configuration for t in tasks] == ["plain", "phase"]
    saved["average_last"] = 2
    (folder / "train_config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(EchoError, match="average_last"):
        plan_tasks(plan, tts_corpus, out, 1, None, named_test_sets(tts_corpus, "test", None), None)


def test_builtin_plans_are_valid_and_compare_one_change():
    quick, full = load_plan("quick"), load_plan("full")
    assert len(quick.configurations) >= 8 and quick.seeds == 3
    assert {"no-positions", "additive", "radius-raw", "world", "waveform", "mel+f0-hz", "seed"} <= \
        {c.name for c in full.configurations}
    for plan in (quick, full):
        assert all(c.baselines for c in plan.configurations[1:])
        steps = {plan.train_config(c, 0).max_steps for c in plan.configurations}
        assert len(steps) == 1  # equal budgets


F0_PLAN = """
name: f0-test
preset: tiny
seeds: 1
eval_beams: 1
train: {max_steps: 3, save_steps: 3, eval_steps: 3, logging_steps: 1, batch_frames: 1200, warmup_steps: 1}
configurations:
  - name: plain
    question: inputs
    model: {features: [mel], rotary_theta_mode: none, rotary_radius: none, pitch_bias: false}
  - name: mel+f0
    question: inputs
    baseline: plain
    model: {features: [mel, f0], rotary_theta_mode: none, rotary_radius: none, pitch_bias: false}
"""


def test_the_manipulation_check_scores_only_f0_reading_runs_and_resumes(tts_corpus, tmp_path, monkeypatch):
    from echoasr import evaluation
    from echoasr.experiments import manipulation
    from echoasr.experiments.report import UTTERANCES_FILE, read_utterances

    path = tmp_path / "plan.yaml"
    path.write_text(F0_PLAN)
    out = tmp_path / "exp"
    options = dict(seeds=1, threads=1, split="test", human=tts_corpus / "dev.tsv", cache_dir=tmp_path / "cache",
                   progress=False, plots=False)
    calls = []
    real = manipulation.evaluate_replaced_f0
    monkeypatch.setattr(manipulation, "evaluate_replaced_f0", lambda model, data, mode, **kwargs: calls.append(
        (Path(model).parent.name, mode, kwargs.get("by_speaker", False))) or real(model, data, mode, **kwargs))
    results = run_experiment(load_plan(path), tts_corpus, out, **options)

    # the plain model reads no f0: no check; mel+f0 on the corpus split only (the default), median by speaker
    assert sorted(calls) == [("mel+f0", "median", True), ("mel+f0", "shuffled", False)]
    assert "manipulation" not in json.loads((run_folder(out, "plain", 0) / RESULT_FILE).read_text())
    run = json.loads((run_folder(out, "mel+f0", 0) / RESULT_FILE).read_text())
    checks = run["manipulation"]["test"]
    assert checks.keys() == {"shuffled", "median"} and checks["median"]["f0_replacement"] == "median (by speaker)"
    assert checks["shuffled"]["ids"] == run["sets"]["test"]["ids"] and checks["shuffled"]["utterances"] == 3
    assert [(c["configuration"], c["set"], c["replacement"]) for c in results["manipulation"]] == [
        ("mel+f0", "test", "shuffled"), ("mel+f0", "test", "median")]
    report = (out / "report.md").read_text()
    assert "## Manipulation check" in report and "| `mel+f0` | test | shuffled | 1 |" in report
    assert "`plain` | test | intact" not in report
    utterances = read_utterances(out / UTTERANCES_FILE)
    assert utterances[("mel+f0", 0)]["test@f0-median"]["char_errors"] == checks["median"]["char_errors"]
    assert "test@f0-median" not in utterances[("plain", 0)]

    # a finished run lacking a check gets only that one; nothing is trained or evaluated intact
    del run["manipulation"]["test"]["median"]
    (run_folder(out, "mel+f0", 0) / RESULT_FILE).write_text(json.dumps(run))

    def refuse(*args, **kwargs):
        raise AssertionError("only the missing check may run")

    monkeypatch.setattr(training, "train", refuse)
    monkeypatch.setattr(evaluation, "evaluate", refuse)
    calls.clear()
    run_experiment(load_plan(path), tts_corpus, out, **options)
    assert calls == [("mel+f0", "median", True)]
    assert json.loads((run_folder(out, "mel+f0", 0) / RESULT_FILE).read_text())["manipulation"]["test"].keys() == {
        "shuffled", "median"}

    # the plan chooses the sets: another set is checked on the finished runs; [] checks nothing more
    calls.clear()
    path.write_text(F0_PLAN + "manipulation_sets: [human]\n")
    run_experiment(load_plan(path), tts_corpus, out, **options)
    assert sorted(calls) == [("mel+f0", "median", True), ("mel+f0", "shuffled", False)]
    calls.clear()
    path.write_text(F0_PLAN + "manipulation_sets: []\n")
    assert run_experiment(load_plan(path), tts_corpus, out, **options)["settings"]["manipulation_sets"] == []
    assert calls == []
    path.write_text(F0_PLAN + "manipulation_sets: [nowhere]\n")
    with pytest.raises(EchoError, match="manipulation_sets names no test set"):
        run_experiment(load_plan(path), tts_corpus, out, **options)


def test_seed_order_runs_every_configuration_of_a_seed_first(tts_corpus, plan, tmp_path):
    import dataclasses

    sets = named_test_sets(tts_corpus, "test", None)
    by_configuration = plan_tasks(plan, tts_corpus, tmp_path / "a", 2, None, sets, None)
    by_seed = plan_tasks(dataclasses.replace(plan, order="seed"), tts_corpus, tmp_path / "b", 2, None, sets, None)
    assert [(t.configuration, t.seed) for t in by_configuration] == [("plain", 0), ("plain", 1), ("phase", 0), ("phase", 1)]
    assert [(t.configuration, t.seed) for t in by_seed] == [("plain", 0), ("phase", 0), ("plain", 1), ("phase", 1)]
    with pytest.raises(EchoError, match="order"):
        dataclasses.replace(plan, order="random").check()


def test_a_model_fed_a_constant_f0_gets_no_manipulation_check():
    from echoasr.experiments.runner import model_reads_f0

    pitch = {"features": ["mel", "f0"], "rotary_theta_mode": "phase"}
    assert model_reads_f0(pitch)
    assert not model_reads_f0({**pitch, "pitch_f0_source": "constant"})
    assert not model_reads_f0({"features": ["mel"]})


def test_a_fresh_clone_resumes_a_plan_from_its_committed_report(tts_corpus, tmp_path, monkeypatch):
    from echoasr import evaluation
    from echoasr.experiments import manipulation
    from echoasr.experiments.report import UTTERANCES_FILE

    path = tmp_path / "plan.yaml"
    path.write_text(F0_PLAN)
    options = dict(seeds=1, threads=1, split="test", cache_dir=tmp_path / "cache", progress=False, plots=False)
    first = run_experiment(load_plan(path), tts_corpus, tmp_path / "first", **options)
    report = tmp_path / "committed"  # what a session commits: results.json and the per-utterance errors
    report.mkdir()
    for name in ("results.json", UTTERANCES_FILE):
        shutil.copyfile(tmp_path / "first" / name, report / name)

    def refuse(*args, **kwargs):
        raise AssertionError("restored runs are neither trained nor evaluated")

    for module, name in ((training, "train"), (evaluation, "evaluate"), (manipulation, "evaluate_replaced_f0")):
        monkeypatch.setattr(module, name, refuse)
    out = tmp_path / "clone"
    again = run_experiment(load_plan(path), tts_corpus, out, restore=report, plan_source=str(path), **options)

    # the same verdicts from the same per-utterance errors, the manipulation checks included
    assert again["comparisons"] == first["comparisons"] and again["manipulation"] == first["manipulation"]
    assert again["configurations"] == first["configurations"] and again["settings"]["runs_missing"] == []
    restored = json.loads((run_folder(out, "mel+f0", 0) / RESULT_FILE).read_text())
    original = json.loads((run_folder(tmp_path / "first", "mel+f0", 0) / RESULT_FILE).read_text())
    assert restored["restored_from"] == str(report)
    assert restored["manipulation"]["test"]["median"]["char_errors"] == original["manipulation"]["test"]["median"]["char_errors"]
    assert not (run_folder(out, "mel+f0", 0) / "model.safetensors").exists()
    assert f"Reproduce: `echoasr experiment --plan {path} --data" in (out / "report.md").read_text()

    # another definition of the plan, or a set the report never scored, is refused in one line
    path.write_text(F0_PLAN.replace("max_steps: 3", "max_steps: 4"))
    with pytest.raises(EchoError, match="another definition of plan 'f0-test' \\(train differ\\)"):
        run_experiment(load_plan(path), tts_corpus, tmp_path / "other", restore=report, **options)
    path.write_text(F0_PLAN)
    with pytest.raises(EchoError, match="plain/seed0 has no per-utterance errors on human"):
        run_experiment(load_plan(path), tts_corpus, tmp_path / "more", restore=report,
                       human=tts_corpus / "dev.tsv", **options)
