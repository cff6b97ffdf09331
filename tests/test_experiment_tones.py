import pytest
from scipy import stats

from echoasr.errors import EchoError
from echoasr.experiments.plans import load_plan
from echoasr.experiments.tones import ToneCounts, collect_runs, markdown, summarize, tone_counts
from echoasr.text.pinyin import marked


def test_tone_counts_by_hand():
    # ma: right syllable, wrong tone; ba: right; di: deleted
    assert tone_counts(marked("ma1 ba3 di4"), marked("ma2 ba3")) == ToneCounts(3, 2, 1, 2, 1)
    # a lone tone letter is an insertion with tones and nothing without; lu gets the wrong tone
    assert tone_counts(marked("li2 lu4"), f"{marked('li2')} \u02c7 {marked('lu1 ni1')}") == ToneCounts(2, 3, 1, 2, 1)
    assert tone_counts(marked("ma1"), "ma") == ToneCounts(1, 1, 0, 1, 1)  # no tone is a wrong tone
    assert tone_counts(marked("ma1"), "") == ToneCounts(1, 1, 1, 0, 0)
    assert tone_counts("", marked("ma1") + " \u02c7") == ToneCounts(0, 2, 1, 0, 0)
    total = sum((tone_counts(r, h) for r, h in [(marked("ma1 ba3 di4"), marked("ma2 ba3")), (marked("ma1"), "ma")]),
                ToneCounts())
    assert total.rates() == {"syllable_error_rate": 3 / 4, "base_error_rate": 1 / 4, "tone_error_rate": 2 / 3}
    assert ToneCounts().rates()["tone_error_rate"] is None


def write_eval(root, configuration, seed, name, pairs):
    folder = root / "runs" / configuration / f"seed{seed}" / "eval"
    folder.mkdir(parents=True)
    rows = ["id\treference\thypothesis\tword_errors\treference_words\tnote"]
    rows += [f"u{i}\t{marked(r)}\t{marked(h) if h else ''}\t0\t0\t" for i, (r, h) in enumerate(pairs)]
    (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_runs_are_read_from_the_eval_tsvs(tmp_path):
    with pytest.raises(EchoError, match="no evaluated runs"):
        collect_runs(tmp_path)
    write_eval(tmp_path, "plain", 0, "test_unseen", [("ma1 ba3 di4", "ma2 ba3"), ("li1", "")])
    (run,) = collect_runs(tmp_path)
    assert (run["configuration"], run["seed"], run["set"]) == ("plain", 0, "test_unseen")
    assert run["counts"] == {"syllables": 4, "errors": 3, "base_errors": 2, "aligned": 2, "tone_errors": 1}
    assert run["tone_error_rate"] == 0.5 and run["syllable_error_rate"] == 0.75


def fake_run(configuration, seed, tone_error_rate):
    counts = {"syllables": 100, "errors": 50, "base_errors": 10, "aligned": 90, "tone_errors": round(90 * tone_error_rate)}
    return {"configuration": configuration, "seed": seed, "set": "test_unseen", "counts": counts,
            "syllable_error_rate": tone_error_rate, "base_error_rate": 0.1, "tone_error_rate": tone_error_rate}


def test_summary_tests_the_tone_error_rate_with_holm_over_the_family():
    plain, pitch, mel_f0 = [0.50, 0.55, 0.60], [0.10, 0.12, 0.13], [0.49, 0.57, 0.60]
    runs = [fake_run(name, seed, rate) for name, rates in (("plain", plain), ("all-pitch", pitch), ("mel+f0", mel_f0))
            for seed, rate in enumerate(rates)]
    summary = summarize(load_plan("tones"), runs)
    found = {(c["system"], c["set"]): c for c in summary["comparisons"]}
    assert len(found) == 4  # 2 contrasts x 2 sets planned; test_seen was not evaluated
    strong = found[("all-pitch", "test_unseen")]
    assert strong["estimate"]["effect"] == pytest.approx((-0.40 - 0.43 - 0.47) / 3)
    raw = stats.ttest_rel(pitch, plain).pvalue
    assert strong["estimate"]["p_value"] == pytest.approx(raw)
    assert strong["p_holm"] == pytest.approx(4 * raw)  # smallest of 4 planned tests, the 2 missing count as p = 1
    assert strong["verdict"] == "fewer errors"
    assert found[("mel+f0", "test_unseen")]["verdict"] != "fewer errors"
    assert found[("mel+f0", "test_seen")]["verdict"] == "n/a"
    assert summary["conclusion"].startswith("The control FAILS for mel+f0 vs plain on test_unseen")
    assert "It passes for all-pitch vs plain on test_unseen" in summary["conclusion"]
    assert summary["configurations"]["all-pitch"]["test_unseen"]["tone_error_rate"]["mean"] == pytest.approx(0.35 / 3)
    text = markdown(summary)
    assert "| all-pitch | 3 |" in text and "FAILS" in text


def test_the_tones_plan_loads_and_compares_pitch_with_plain():
    plan = load_plan("tones")
    assert [c.name for c in plan.configurations] == ["plain", "mel+f0", "all-pitch"]
    assert plan.primary_metric == "wer" and plan.seeds == 3
    assert {c.question for c in plan.configurations} == {"control"}
    (family,) = plan.analysis_families()
    assert family.contrasts == [("plain", "mel+f0"), ("plain", "all-pitch")]
    assert family.sets == ["test_unseen", "test_seen"]
    configs = {c.name: plan.train_config(c, 0) for c in plan.configurations}
    assert {c.max_steps for c in configs.values()} == {2000} and {c.tokenizer for c in configs.values()} == {"char"}
    assert configs["plain"].model["features"] == ["mel"] and "f0" in configs["mel+f0"].model["features"]
    assert configs["all-pitch"].model["rotary_theta_mode"] == "phase"
