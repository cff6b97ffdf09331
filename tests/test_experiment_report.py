"""The report's analysis on synthetic runs (no training): seed pairing, the crossed estimate from
per-utterance errors, Holm within a family, TOST wording, the per-utterance file, and the plan's
pre-registered families."""

import numpy as np
import pytest

from echoasr.errors import EchoError
from echoasr.experiments.plans import Configuration, Family, Plan, load_plan
from echoasr.experiments.report import build_results, read_utterances, reanalyse, render_markdown, write_utterances
from echoasr.experiments.stats import holm_adjust, seed_paired_difference

PLAIN = {"features": ["mel"], "rotary_theta_mode": "none", "rotary_radius": "none", "pitch_bias": False}


def synthetic_plan(**options) -> Plan:
    return Plan("synthetic", "tiny", [
        Configuration("plain", "position", PLAIN),
        Configuration("same", "position", PLAIN, ["plain"]),
        Configuration("better", "position", PLAIN, ["plain"]),
    ], **options)


def synthetic_runs(rng, seeds=4, utterances=150):
    """`same` equals `plain` but for training noise; `better` has 8 points fewer errors."""
    lengths = rng.integers(20, 50, size=utterances)
    words = rng.integers(3, 9, size=utterances)
    difficulty = rng.uniform(0.3, 0.6, size=utterances)
    runs = []
    for name, shift in (("plain", 0.0), ("same", 0.0), ("better", -0.08)):
        for seed in range(seeds):
            rate = np.clip(difficulty + shift + rng.normal(0, 0.005), 0, 1)
            chars, words_wrong = rng.binomial(lengths, rate), rng.binomial(words, rate)
            scored = {"ids": [f"u{i}" for i in range(utterances)], "char_errors": chars.tolist(),
                      "chars": lengths.tolist(), "word_errors": words_wrong.tolist(), "words": words.tolist(),
                      "cer": chars.sum() / lengths.sum(), "wer": words_wrong.sum() / words.sum(),
                      "utterances": utterances}
            runs.append({"configuration": name, "seed": seed, "parameters": 1000, "steps": 10, "train_seconds": 60,
                         "threads": 1, "dev": None, "log_history": [], "sets": {"test": scored}})
    return runs


SETTINGS = {"plan": "synthetic", "data": "DATA", "split": "test", "human": None, "test_sets": {"test": "DATA::test"},
            "seeds": 4, "parallel": 1, "eval_beams": 1, "runs_planned": 12, "runs_finished": 12, "runs_missing": []}


def test_verdicts_from_the_crossed_estimate_with_holm_in_the_family():
    plan = synthetic_plan(equivalence_margin=0.04)
    results = build_results(plan, synthetic_runs(np.random.default_rng(0)), dict(SETTINGS))
    cer = {c["system"]: c for c in results["comparisons"] if c["metric"] == "cer"}
    assert {c["test"] for c in cer.values()} == {"crossed"} and cer["better"]["seeds"] == [0, 1, 2, 3]
    assert cer["better"]["verdict"] == "fewer errors" and cer["better"]["effect"] == pytest.approx(-0.08, abs=0.01)
    assert cer["same"]["verdict"] == "equivalent" and cer["same"]["verdict_text"] == "no effect larger than 4 points"
    raw = [cer[name]["crossed"]["p_value"] for name in ("same", "better")]
    assert [cer[name]["p_holm"] for name in ("same", "better")] == pytest.approx(list(holm_adjust(raw)))
    assert cer["better"]["family"] == "position" and cer["better"]["family_size"] == 2
    components = cer["better"]["crossed"]["components"]
    assert components["utterance"] >= 0 and components["residual"] > 0
    wer = next(c for c in results["comparisons"] if c["metric"] == "wer" and c["system"] == "better")
    assert "verdict" not in wer and wer["family"] == "position"  # the secondary metric is descriptive
    report = render_markdown(results, {})
    assert "**fewer errors**" in report and "no effect larger than 4 points" in report
    assert "descriptive (secondary metric)" in report and "Holm" in report


def test_a_tight_margin_gives_inconclusive_with_the_mde():
    results = build_results(synthetic_plan(equivalence_margin=0.0005), synthetic_runs(np.random.default_rng(0)),
                            dict(SETTINGS))
    same = next(c for c in results["comparisons"] if c["metric"] == "cer" and c["system"] == "same")
    assert same["verdict"] == "inconclusive" and same["verdict_text"] == f"inconclusive (MDE {100 * same['mde']:.2g} points)"


def test_per_seed_rates_alone_give_the_paired_t_and_a_missing_test_counts_in_holm(tmp_path):
    runs = synthetic_runs(np.random.default_rng(1))
    for run in runs:  # what a committed results.json keeps: the rates, no per-utterance lists
        run["sets"]["test"] = {k: run["sets"]["test"][k] for k in ("wer", "cer", "utterances")}
    runs = [r for r in runs if not (r["configuration"] == "same" and r["seed"] > 0)]  # `same`: one seed
    results = build_results(synthetic_plan(), runs, dict(SETTINGS))
    cer = {c["system"]: c for c in results["comparisons"] if c["metric"] == "cer"}
    assert cer["better"]["test"] == "seed_paired" and cer["better"]["utterance_bootstrap"] is None
    expected = seed_paired_difference({r["seed"]: r["sets"]["test"]["cer"] for r in runs if r["configuration"] == "plain"},
                                      {r["seed"]: r["sets"]["test"]["cer"] for r in runs if r["configuration"] == "better"})
    assert cer["better"]["seed_paired"]["p_value"] == pytest.approx(expected.p_value)
    assert cer["better"]["p_holm"] == pytest.approx(min(1.0, 2 * expected.p_value))  # `same` counts as p = 1
    assert cer["same"]["verdict"] == "n/a" and cer["same"]["seeds"] == [0]


def test_utterances_file_round_trip_and_reanalysis(tmp_path):
    import json

    runs = synthetic_runs(np.random.default_rng(2), seeds=2, utterances=20)
    speakers = {"test": {f"u{i}": f"spk{i % 3}" for i in range(20)}}
    assert write_utterances(tmp_path / "utterances.tsv.gz", runs, speakers) == 6 * 20
    back = read_utterances(tmp_path / "utterances.tsv.gz")
    assert back[("better", 1)]["test"]["char_errors"] == runs[5]["sets"]["test"]["char_errors"]
    assert back[("plain", 0)]["test"]["speakers"][:4] == ["spk0", "spk1", "spk2", "spk0"]
    # a committed folder (results.json without per-utterance lists) + the file: the crossed test again
    plan = synthetic_plan()
    results = build_results(plan, runs, dict(SETTINGS))
    (tmp_path / "results.json").write_text(json.dumps(results))
    again = reanalyse(tmp_path, plan, note="a test")
    assert {c["test"] for c in again["comparisons"]} == {"crossed"}
    assert "**Re-analysis.** a test" in (tmp_path / "report.md").read_text()


def test_plan_families_from_yaml_and_their_checks(tmp_path):
    text = """
name: p
preset: tiny
primary_metric: wer
equivalence_margin: 0.02
families:
  - name: main
    contrasts: [phase vs plain]
    sets: [test]
configurations:
  - {name: plain, model: {features: [mel]}}
  - {name: phase, baseline: plain, model: {rotary_theta_mode: phase}}
"""
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    plan = load_plan(path)
    assert plan.primary_metric == "wer" and plan.equivalence_margin == 0.02
    assert plan.analysis_families() == [Family("main", [("plain", "phase")], ["test"], None)]
    for broken, message in (("contrasts: [phase vs nobody]", "unknown configuration"),
                            ("contrasts: [phase minus plain]", "SYSTEM vs BASELINE")):
        path.write_text(text.replace("contrasts: [phase vs plain]", broken))
        with pytest.raises(EchoError, match=message):
            load_plan(path)
    path.write_text(text.replace("primary_metric: wer", "primary_metric: bleu"))
    with pytest.raises(EchoError, match="primary_metric"):
        load_plan(path)
    # default: one family per question
    assert [f.name for f in load_plan("quick").analysis_families()] == ["inputs", "position"]


def with_manipulation(runs, rng):
    """`better` reads f0: shuffled, its errors rise ~5 points; flat at the median, only noise."""
    for run in runs:
        if run["configuration"] != "better":
            continue
        intact = run["sets"]["test"]
        run["manipulation"] = {"test": {}}
        for replacement, shift in (("shuffled", 0.05), ("median", 0.0)):
            lengths = np.array(intact["chars"])
            chars = rng.binomial(lengths, np.clip(np.array(intact["char_errors"]) / lengths + shift, 0, 1))
            run["manipulation"]["test"][replacement] = {
                **intact, "char_errors": chars.tolist(), "cer": chars.sum() / lengths.sum(),
                "f0_replacement": replacement}
    return runs


def test_manipulation_check_wording_and_its_per_utterance_rows(tmp_path):
    import json

    rng = np.random.default_rng(3)
    runs = with_manipulation(synthetic_runs(rng, seeds=4, utterances=150), rng)
    plan = synthetic_plan()
    results = build_results(plan, runs, dict(SETTINGS))
    checks = {c["replacement"]: c for c in results["manipulation"]}
    assert {c["configuration"] for c in results["manipulation"]} == {"better"} and checks.keys() == {"shuffled", "median"}
    shuffled, median = checks["shuffled"], checks["median"]
    assert shuffled["change"]["cer"]["low"] > 0 and shuffled["uses_f0"] is True and shuffled["seeds"] == [0, 1, 2, 3]
    expected = seed_paired_difference({r["seed"]: r["sets"]["test"]["cer"] for r in runs if "manipulation" in r},
                                      {r["seed"]: r["manipulation"]["test"]["shuffled"]["cer"] for r in runs
                                       if "manipulation" in r})
    assert shuffled["change"]["cer"]["effect"] == pytest.approx(expected.effect)
    assert median["change"]["cer"]["low"] < 0 < median["change"]["cer"]["high"] and median["uses_f0"] is False
    assert median["reading"] == f"no evidence the model uses its f0 input (MDE {100 * median['mde']:.2g} points)"
    assert 0 < shuffled["changed_scorings"] <= shuffled["scorings"] == 4 * 150
    report = render_markdown(results, {})
    section = report[report.index("## Manipulation check"):]
    assert "| `better` | test | intact | 4 |" in section and "**uses f0**" in section and "no evidence" in section
    assert "`plain` | test | intact" not in section
    # the rows go into utterances.tsv.gz as test@f0-...; re-analysis rebuilds the check from them
    write_utterances(tmp_path / "utterances.tsv.gz", runs, {"test": {}})
    assert read_utterances(tmp_path / "utterances.tsv.gz")[("better", 0)]["test@f0-shuffled"]["char_errors"] == \
        runs[8]["manipulation"]["test"]["shuffled"]["char_errors"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert "ids" not in results["runs"][8]["manipulation"]["test"]["shuffled"]  # results.json keeps the rates
    again = reanalyse(tmp_path, plan)
    assert [c["changed_scorings"] for c in again["manipulation"]] == [c["changed_scorings"] for c in results["manipulation"]]
    assert again["manipulation"][0]["change"] == results["manipulation"][0]["change"]
