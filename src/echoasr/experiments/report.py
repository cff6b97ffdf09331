"""Aggregate an experiment's runs into ``results.json``, ``report.md`` and ``utterances.tsv.gz``.

Verdicts follow the plan's pre-registered analysis (:mod:`.plans`): for each family's contrasts on
the primary metric, the seed-level estimate (:func:`~.stats.crossed_effect` with per-utterance
errors, else :func:`~.stats.seed_paired_difference`), Holm within the family, a TOST against the
plan's margin and the minimum detectable effect. The utterance bootstrap is a descriptive column.

The manipulation check (:func:`manipulation_checks`) compares each f0-reading run with itself on
f0 replaced at test time, paired by run (:func:`~.stats.seed_paired_difference`)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from echoasr import atomic
from echoasr.experiments.plans import QUESTIONS, Plan
from echoasr.experiments.stats import (crossed_effect, equivalence_test, holm_adjust, mean_interval,
                                       minimum_detectable_effect, paired_bootstrap, seed_paired_difference, verdict)

log = logging.getLogger(__name__)

METRICS = {"wer": ("word_errors", "words"), "cer": ("char_errors", "chars")}
_LOG_KEYS = ("step", "loss", "eval_cer", "eval_wer")
UTTERANCES_FILE = "utterances.tsv.gz"
UTTERANCE_COLUMNS = ("configuration", "seed", "set", "id", "speaker", "words", "word_errors", "chars", "char_errors")
# utterances.tsv.gz names a manipulation check's rows SET@f0-REPLACEMENT (e.g. test_unseen@f0-shuffled)
MANIPULATED_SET = "@f0-"
REPLACEMENT_NAMES = {"shuffled": "f0 shuffled across utterances", "median": "f0 flat at the speaker's median"}


def manipulated_set(set_name: str, replacement: str) -> str:
    return f"{set_name}{MANIPULATED_SET}{replacement}"


def _interval(values) -> dict[str, Any]:
    """A t-interval as JSON (no NaN: an interval of one seed has low = high = None)."""
    interval = asdict(mean_interval(values))
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in interval.items()}


def build_results(plan: Plan, runs: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    by_configuration: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_configuration.setdefault(run["configuration"], []).append(run)
    # the planned sets: an interim report can hold runs not yet tested on a set added to the grid
    set_names = list(settings["test_sets"])
    configurations = {}
    for configuration in plan.configurations:
        group = sorted(by_configuration.get(configuration.name, []), key=lambda r: r["seed"])
        entry = {
            "question": configuration.question, "description": configuration.description,
            "baselines": configuration.baselines, "preset": configuration.preset or plan.preset,
            "model": configuration.model, "seeds": [r["seed"] for r in group],
            "parameters": sorted({r["parameters"] for r in group}), "steps": sorted({r["steps"] for r in group}),
            "train_minutes": mean_interval([r["train_seconds"] / 60 for r in group]).mean if group else None,
            "sets": {name: {metric: _interval([r["sets"][name][metric] for r in group if name in r["sets"]])
                            for metric in METRICS} for name in set_names},
        }
        dev = [r["dev"]["cer"] for r in group if r.get("dev")]
        entry["dev_cer"] = _interval(dev) if dev else None
        configurations[configuration.name] = entry
    comparisons = compare_all(plan, by_configuration, set_names)
    return {
        "settings": settings,
        "questions": {k: v for k, v in QUESTIONS.items() if any(c.question == k for c in plan.configurations)},
        "configurations": configurations,
        "analysis": {"primary_metric": plan.primary_metric, "alpha": plan.alpha,
                     "equivalence_margin": plan.equivalence_margin,
                     "families": [{"name": f.name, "contrasts": [f"{s} vs {b}" for b, s in f.contrasts],
                                   "sets": f.sets or set_names, "margin": f.margin or plan.equivalence_margin}
                                  for f in plan.analysis_families()]},
        "comparisons": comparisons,
        "steps_to_threshold": steps_to_threshold(plan, by_configuration),
        "manipulation": manipulation_checks(plan, by_configuration),
        "runs": [{**{k: v for k, v in r.items() if k not in ("sets", "log_history", "manipulation")},
                  "sets": {n: {m: s[m] for m in ("wer", "cer", "utterances")} for n, s in r["sets"].items()},
                  **({"manipulation": {n: {mode: {m: s[m] for m in ("wer", "cer", "utterances", "f0_replacement")}
                                           for mode, s in modes.items()}
                                       for n, modes in r["manipulation"].items()}} if r.get("manipulation") else {}),
                  "log_history": [{k: e[k] for k in _LOG_KEYS if k in e} for e in r.get("log_history", [])]}
                 for r in runs],
    }


def _has_utterances(run: dict[str, Any], set_name: str) -> bool:
    return "ids" in run["sets"].get(set_name, {})


def _per_utterance(runs, set_name, errors_key, lengths_key):
    """(ids, (runs, utterances) errors, (utterances,) lengths) of runs scored on the same utterances."""
    ids = runs[0]["sets"][set_name]["ids"]
    if any(r["sets"][set_name]["ids"] != ids for r in runs):
        raise ValueError(f"runs scored different utterances on {set_name}")
    lengths = np.array(runs[0]["sets"][set_name][lengths_key])
    if any(r["sets"][set_name][lengths_key] != runs[0]["sets"][set_name][lengths_key] for r in runs):
        raise ValueError(f"runs scored different references on {set_name}")
    return ids, np.array([r["sets"][set_name][errors_key] for r in runs]), lengths


def _json(record) -> dict[str, Any] | None:
    """A statistics dataclass as JSON (no NaN, no numpy scalars)."""
    if record is None:
        return None
    return json.loads(json.dumps(asdict(record), default=float).replace("NaN", "null"))


def compare(baseline_runs, system_runs, set_name: str, metric: str) -> dict[str, Any] | None:
    """Every statistic of one comparison on one set and metric; None when a side has no runs on it.

    Seeds pair the runs (the same seed: the same initial weights and batch order). The estimate
    that carries the verdict (``test``): the crossed seeds x utterances estimate when both sides
    have per-utterance errors for 2+ paired seeds, else the paired t over seeds, else none (one
    seed: only the descriptive utterance bootstrap)."""
    errors_key, lengths_key = METRICS[metric]
    baseline_runs = [r for r in baseline_runs if set_name in r["sets"]]
    system_runs = [r for r in system_runs if set_name in r["sets"]]
    if not baseline_runs or not system_runs:
        return None
    by_seed = [{r["seed"]: r for r in runs} for runs in (baseline_runs, system_runs)]
    seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
    seed_paired = seed_paired_difference(*[{s: r["sets"][set_name][metric] for s, r in side.items()}
                                           for side in by_seed])
    bootstrap = crossed = None
    if all(_has_utterances(r, set_name) for r in baseline_runs + system_runs):
        base_ids, base_errors, base_lengths = _per_utterance(baseline_runs, set_name, errors_key, lengths_key)
        sys_ids, sys_errors, sys_lengths = _per_utterance(system_runs, set_name, errors_key, lengths_key)
        if base_ids != sys_ids or not np.array_equal(base_lengths, sys_lengths):
            raise ValueError(f"the two configurations scored different utterances on {set_name}")
        bootstrap = paired_bootstrap(base_errors, np.tile(base_lengths, (len(base_errors), 1)),
                                     sys_errors, np.tile(sys_lengths, (len(sys_errors), 1)))
        if len(seeds) >= 2:
            paired = [np.array([by_seed[k][s]["sets"][set_name][errors_key] for s in seeds]) for k in (0, 1)]
            crossed = crossed_effect(paired[0], paired[1], base_lengths)
    test = crossed if crossed is not None else seed_paired
    # with one seed pair: that pair's difference (no interval)
    paired_mean = float(np.mean([by_seed[1][s]["sets"][set_name][metric] - by_seed[0][s]["sets"][set_name][metric]
                                 for s in seeds])) if seeds else None
    return {"set": set_name, "metric": metric, "seeds": seeds,
            "effect": test.effect if test is not None else paired_mean,
            "test": "crossed" if crossed is not None else "seed_paired" if seed_paired is not None else None,
            "crossed": _json(crossed), "seed_paired": _json(seed_paired), "utterance_bootstrap": _json(bootstrap)}


def compare_all(plan: Plan, by_configuration: dict[str, list[dict[str, Any]]], set_names: list[str]) -> list[dict]:
    """Every comparison of the plan and its families on every set and metric; the primary metric's
    contrasts of each family get Holm-adjusted p-values, a TOST, the MDE and a verdict."""
    families = plan.analysis_families()
    pairs = list(dict.fromkeys(plan.comparisons() + [c for f in families for c in f.contrasts]))
    comparisons = []
    for baseline, system in pairs:
        for name in set_names:
            for metric in METRICS:
                entry = compare(by_configuration.get(baseline, []), by_configuration.get(system, []), name, metric)
                if entry is not None:
                    comparisons.append({"baseline": baseline, "system": system, "family": None, **entry})
    index = {(c["baseline"], c["system"], c["set"], c["metric"]): c for c in comparisons}
    for family in families:
        margin = family.margin or plan.equivalence_margin
        planned = [(b, s, name) for b, s in family.contrasts for name in (family.sets or set_names)]
        for b, s, name in planned:  # the other metric of a family's contrast: descriptive, but in the family
            for metric in METRICS:
                if (b, s, name, metric) in index:
                    index[(b, s, name, metric)]["family"] = family.name
        entries = [index.get((b, s, name, plan.primary_metric)) for b, s, name in planned]
        # tests not available yet (interim report, one seed) count as p = 1: Holm over what was planned
        estimates = [None if e is None or e["test"] is None else e[e["test"]] for e in entries]
        p_values = [1.0 if x is None else x["p_value"] for x in estimates]
        equivalences = [None if x is None else equivalence_test(_estimate(x), margin, plan.alpha) for x in estimates]
        tost_p = [1.0 if x is None else x.p_value for x in equivalences]
        for entry, estimate, p_holm, equivalence, tost_holm in zip(entries, estimates, holm_adjust(p_values),
                                                                   equivalences, holm_adjust(tost_p), strict=True):
            if entry is None:
                continue
            entry.update(family=family.name, family_size=len(planned), margin=margin)
            if estimate is None:
                entry.update(verdict="n/a", verdict_text="n/a (needs 2+ paired seeds)")
                continue
            mde = minimum_detectable_effect(estimate["standard_error"], estimate["freedom"], plan.alpha)
            decision = verdict(estimate["effect"], float(p_holm), float(tost_holm), margin, mde, plan.alpha)
            entry.update(p_holm=float(p_holm), equivalence={**asdict(equivalence), "p_holm": float(tost_holm)},
                         mde=mde, verdict=decision.label, verdict_text=decision.text)
    return comparisons


def _estimate(record: dict[str, Any]):
    from echoasr.experiments.stats import TEstimate

    return TEstimate(**{k: record[k] for k in ("effect", "low", "high", "p_value", "standard_error", "freedom",
                                                "seeds")})


def steps_to_threshold(plan: Plan, by_configuration: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Steps at which each configuration's dev CER (mean over seeds, at each logged evaluation)
    first reaches the final mean dev CER of the first configuration (the plain baseline)."""
    curves = {}
    for name, runs in by_configuration.items():
        points: dict[int, list[float]] = {}
        for run in runs:
            for entry in run.get("log_history", []):
                if "eval_cer" in entry:
                    points.setdefault(entry["step"], []).append(entry["eval_cer"])
        curves[name] = sorted((step, float(np.mean(values))) for step, values in points.items()
                              if len(values) == len(runs))
    reference = plan.configurations[0].name
    if sum(len(c) >= 2 for c in curves.values()) == 0 or not curves.get(reference):
        return {"available": False, "reason": "dev CER was logged at fewer than two steps during training"}
    threshold = curves[reference][-1][1]
    steps = {name: next((step for step, cer in curve if cer <= threshold), None) for name, curve in curves.items()}
    return {"available": True, "reference": reference, "threshold_cer": threshold, "steps": steps,
            "evaluated_steps": sorted({s for c in curves.values() for s, _ in c})}


def manipulation_checks(plan: Plan, by_configuration: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per (configuration, set, replacement) with manipulation results: the intact and
    replaced error rates over seeds, the run-level change (replaced - intact, paired by run: a
    positive change is a degradation) on each metric, the MDE and the wording on the plan's
    primary metric, and how many (run, utterance) scorings changed their errors."""
    checks = []
    for configuration in plan.configurations:
        runs = sorted(by_configuration.get(configuration.name, []), key=lambda r: r["seed"])
        set_names = list(dict.fromkeys(n for r in runs for n in r.get("manipulation", {})))
        for set_name in set_names:
            replacements = list(dict.fromkeys(m for r in runs for m in r["manipulation"].get(set_name, {})))
            for replacement in replacements:
                paired = [r for r in runs if set_name in r["sets"] and replacement in r["manipulation"].get(set_name, {})]
                entry = {"configuration": configuration.name, "set": set_name, "replacement": replacement,
                         "seeds": [r["seed"] for r in paired], "intact": {}, "replaced": {}, "change": {}}
                for metric in METRICS:
                    intact = {r["seed"]: r["sets"][set_name][metric] for r in paired}
                    replaced = {r["seed"]: r["manipulation"][set_name][replacement][metric] for r in paired}
                    entry["intact"][metric] = _interval(list(intact.values()))
                    entry["replaced"][metric] = _interval(list(replaced.values()))
                    change = seed_paired_difference(intact, replaced, confidence=1 - plan.alpha)
                    entry["change"][metric] = _json(change) if change is not None else (
                        {"effect": replaced[paired[0]["seed"]] - intact[paired[0]["seed"]]} if paired else None)
                entry.update(_changed_utterances(paired, set_name, replacement))
                entry.update(_manipulation_reading(entry["change"][plan.primary_metric], plan.alpha,
                                                   entry["changed_scorings"]))
                checks.append(entry)
    return checks


def _changed_utterances(runs: list[dict[str, Any]], set_name: str, replacement: str) -> dict[str, int | None]:
    """(run, utterance) scorings whose word or character errors differ with f0 replaced; None
    without per-utterance errors on both sides."""
    pairs = [(r["sets"][set_name], r["manipulation"][set_name][replacement]) for r in runs]
    if not pairs or not all("ids" in intact and "ids" in replaced for intact, replaced in pairs):
        return {"changed_scorings": None, "scorings": None}
    changed = scorings = 0
    for intact, replaced in pairs:
        if intact["ids"] != replaced["ids"]:
            raise ValueError(f"a run scored different utterances on {set_name} with f0 {replacement}")
        changed += sum(a != b or c != d for a, b, c, d in zip(intact["word_errors"], replaced["word_errors"],
                                                            intact["char_errors"], replaced["char_errors"], strict=True))
        scorings += len(intact["ids"])
    return {"changed_scorings": changed, "scorings": scorings}


def _manipulation_reading(change: dict[str, Any] | None, alpha: float, changed_scorings: int | None) -> dict[str, Any]:
    """The wording: "uses f0" only when the (1 - alpha) interval of the degradation excludes 0."""
    if changed_scorings == 0:
        return {"uses_f0": False, "mde": None,
                "reading": "no evidence the model uses its f0 input (no utterance's errors changed)"}
    if change is None or "p_value" not in change:
        return {"uses_f0": None, "mde": None, "reading": "n/a (needs 2+ runs)"}
    mde = minimum_detectable_effect(change["standard_error"], change["freedom"], alpha)
    low, high = change["low"], change["high"]
    if low > 0:
        return {"uses_f0": True, "mde": mde, "reading": "**uses f0**: errors rise when it is replaced"}
    if high < 0:
        return {"uses_f0": True, "mde": mde,
                "reading": "**reads f0**, but errors fall when it is replaced (its f0 use hurts)"}
    return {"uses_f0": False, "mde": mde,
            "reading": f"no evidence the model uses its f0 input (MDE {100 * mde:.2g} points)"}


# ------------------------------------------------------------------------------------ markdown


def _percent(interval: dict[str, Any]) -> str:
    if interval is None or interval["n"] == 0:
        return "n/a"
    if interval["low"] is None:
        return f"{100 * interval['mean']:.1f} (1 seed)"
    return f"{100 * interval['mean']:.1f} ± {100 * (interval['high'] - interval['mean']):.1f}"


def _parameters(values: list[int]) -> str:
    return ", ".join(f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v / 1e3:.0f} k" for v in values)


def _missing_runs(missing: list[str], seeds: int) -> str:
    """``["plain/seed2", "phase/seed0", "phase/seed1", ...]`` -> "`plain` seed 2; every seed of `phase`"."""
    by_configuration: dict[str, list[str]] = {}
    for run in missing:
        name, _, seed = run.rpartition("/seed")
        by_configuration.setdefault(name, []).append(seed)
    partial = [f"`{n}` seed{'s' if len(s) > 1 else ''} {', '.join(s)}" for n, s in by_configuration.items()
               if len(s) < seeds]
    whole = [f"`{n}`" for n, s in by_configuration.items() if len(s) >= seeds]
    return "; ".join(partial + (["every seed of " + ", ".join(whole)] if whole else []))


def statistics_paragraph(results: dict[str, Any]) -> str:
    analysis = results.get("analysis") or {}
    metric = analysis.get("primary_metric", "cer").upper()
    alpha = analysis.get("alpha", 0.05)
    families = analysis.get("families", [])
    family_text = "; ".join(
        f"`{f['name']}` ({len(f['contrasts'])} contrast(s) x {len(f['sets'])} set(s) = "
        f"{len(f['contrasts']) * len(f['sets'])} tests, margin {100 * f['margin']:.2g} points)" for f in families)
    return (
        "**Statistics.** The unit is the training run. Runs of two configurations with the same seed share "
        "their initial weights and batch order, so comparisons pair them by seed. Effects are in absolute "
        "percentage points (configuration minus counterpart; negative = fewer errors). The estimate that "
        "carries the verdict (column *test*): `crossed`, the mean per-seed difference with both variance "
        "components (seeds and test utterances, crossed random factors: two-way ANOVA moments on the "
        "per-utterance errors, Satterthwaite t), where every run's per-utterance errors are available; "
        "`paired t`, the paired t over seeds on the runs' error rates, where only those are. "
        f"Verdicts are given on the primary metric ({metric}) of the plan's families only, with Holm's "
        f"correction within each family at alpha {alpha:g} (a test not available yet counts as p = 1): "
        f"{family_text}. A difference is stated only when the Holm-adjusted p is below alpha; \"no effect "
        "larger than X\" only when the two one-sided tests (TOST) against the margin X reject (Holm-adjusted); "
        "otherwise the result is inconclusive, with the minimum detectable effect (MDE: the true effect the "
        "test would detect with 80% power, from the observed spread). The other metric and comparisons in no "
        "family are descriptive. The paired bootstrap over utterances pooled over seeds (10,000 resamples) is "
        "descriptive too: it holds the trained models fixed and so cannot say whether a configuration "
        "helps.")


def _points(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:+.{digits}f}"


def comparison_table(comparisons: list[dict[str, Any]], primary_metric: str) -> list[str]:
    """Rows: the family's primary-metric tests first (with verdicts), then the descriptive ones."""
    if not comparisons:
        return []
    ordered = sorted(comparisons, key=lambda x: (x.get("verdict") is None, x["metric"] != primary_metric))
    lines = ["", "| comparison | set | metric | effect (points) [95% CI] | test | p (Holm) | TOST p (Holm), margin "
             "| MDE | verdict | sd of the seed differences; variance (points²): seed / utterance / residual | utterance bootstrap "
             "(descriptive) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in ordered:
        estimate = x.get(x["test"]) if x["test"] else None
        if estimate is None:
            effect_text = f"{_points(x['effect'])} ({len(x['seeds'])} seed pair)" if x["seeds"] else "n/a (no seed pair)"
            test_text, p_text = "-", "-"
        else:
            effect_text = f"{_points(estimate['effect'])} [{_points(estimate['low'])}, {_points(estimate['high'])}]"
            test_text = "crossed" if x["test"] == "crossed" else "paired t"
            p_text = f"{estimate['p_value']:.3g}" + (f" ({x['p_holm']:.3g})" if "p_holm" in x else "")
        equivalence = x.get("equivalence")
        tost_text = "-" if not equivalence else (f"{equivalence['p_value']:.3g} ({equivalence['p_holm']:.3g}), "
                                                 f"±{100 * equivalence['margin']:.2g}")
        mde_text = f"{100 * x['mde']:.2g}" if x.get("mde") is not None else "-"
        if x.get("verdict") is None:
            verdict_text = "descriptive" + (" (secondary metric)" if x["metric"] != primary_metric and x.get("family")
                                            else " (in no family)" if not x.get("family") else "")
        else:
            verdict_text = x["verdict_text"]
        spread = "-"
        if x["seed_paired"]:
            spread = f"{100 * x['seed_paired']['standard_error'] * np.sqrt(x['seed_paired']['seeds']):.2f}"
        if x["crossed"] and x["crossed"]["components"]:
            parts = x["crossed"]["components"]
            spread += "; " + " / ".join(f"{1e4 * parts[k]:.3g}" for k in ("seed", "utterance", "residual"))
        boot = x["utterance_bootstrap"]
        boot_text = "-" if not boot else (f"{_points(boot['effect'])} [{_points(boot['low'])}, {_points(boot['high'])}],"
                                          f" p {boot['p_value']:.3g}")
        lines.append(f"| `{x['system']}` vs `{x['baseline']}` | {x['set']} | {x['metric'].upper()} | {effect_text} | "
                     f"{test_text} | {p_text} | {tost_text} | {mde_text} | {verdict_text} | {spread} | {boot_text} |")
    return lines


def manipulation_section(results: dict[str, Any]) -> list[str]:
    """The "Manipulation check" section: per f0-reading configuration and set, the intact error
    rates beside those with f0 replaced, and the run-level change with its interval."""
    checks = results.get("manipulation") or []
    if not checks:
        return []
    analysis = results.get("analysis") or {}
    metric = analysis.get("primary_metric", "cer")
    confidence = 100 * (1 - analysis.get("alpha", 0.05))
    lines = ["## Manipulation check", "",
             "Does a configuration use the f0 it reads? Each of its runs is scored again with f0 replaced at test "
             "time: " + "; ".join(f"*{k}* = {v}" for k, v in REPLACEMENT_NAMES.items()) + " (voicing kept, phase "
             "recomputed; the spectral inputs still carry the original pitch). The change is replaced minus intact, "
             f"paired by run (paired t over seeds, {confidence:g}% interval, uncorrected; positive = more errors with "
             f"f0 replaced), on {metric.upper()}. \"Uses f0\" is said only when the interval excludes 0. "
             "*Changed*: (run, utterance) scorings whose errors differ.", "",
             f"| configuration | set | f0 | seeds | WER | CER | {metric.upper()} change (points) [interval] | changed "
             "| reading |", "|---|---|---|---|---|---|---|---|---|"]
    shown: set[tuple[str, str]] = set()
    for check in checks:
        key = (check["configuration"], check["set"])
        if key not in shown:  # the intact row once per configuration and set
            shown.add(key)
            lines.append(f"| `{key[0]}` | {key[1]} | intact | {len(check['seeds'])} | "
                         f"{_percent(check['intact']['wer'])} | {_percent(check['intact']['cer'])} | - | - | - |")
        change = check["change"][metric]
        if change is None:
            change_text = "n/a"
        elif "low" in change:
            change_text = f"{_points(change['effect'])} [{_points(change['low'])}, {_points(change['high'])}]"
        else:
            change_text = f"{_points(change['effect'])} (1 run)"
        changed = "-" if check["changed_scorings"] is None else f"{check['changed_scorings']} of {check['scorings']}"
        lines.append(f"| `{key[0]}` | {key[1]} | {check['replacement']} | {len(check['seeds'])} | "
                     f"{_percent(check['replaced']['wer'])} | {_percent(check['replaced']['cer'])} | {change_text} | "
                     f"{changed} | {check['reading']} |")
    return lines + [""]


def render_markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    settings = results["settings"]
    configurations = results["configurations"]
    sources = settings["test_sets"]
    set_names = list(sources)
    lines = [
        f"# Experiment report: plan `{settings['plan']}`", "",
        f"Data: `{settings['data']}` (test sets: "
        + ", ".join(f"`{name}` = `{source}`" for name, source in sources.items()) + "). "
        f"{settings['seeds']} seed(s) per configuration, every run at the same step budget on the same data and "
        f"tokenizer; evaluation with {settings['eval_beams']} beam(s) (joint CTC/attention where the model has a "
        "CTC head, else attention alone). Error rates are percentages: mean over seeds ± the half-width of the "
        "95% t-interval over seeds.", "",
        statistics_paragraph(results), "",
        "Reproduce: `echoasr experiment --plan " + settings.get("plan_source", settings["plan"]) + f" --data {settings['data']} --out OUT"
        + (f" --human {settings['human']}" if settings.get("human") else "")
        + "".join(f" --test {name}={source}" for name, source in sources.items()
                  if name not in (settings["split"], "human"))
        + f" --seeds {settings['seeds']} --parallel {settings['parallel']}`", "",
    ]
    if settings.get("reanalysis"):
        lines += [f"**Re-analysis.** {settings['reanalysis']}", ""]
    missing = settings.get("runs_missing") or []
    if missing:
        lines += [
            f"**Interim report: {settings['runs_finished']} of {settings['runs_planned']} runs finished.** "
            "A configuration without finished runs shows n/a, one with fewer seeds than planned has a wider "
            "interval, and a comparison appears only where both sides have finished runs. Rerun the command "
            "above to continue the grid. Not yet finished: " + _missing_runs(missing, settings["seeds"]) + ".", "",
        ]
    for question, text in results["questions"].items():
        members = [n for n, c in configurations.items() if c["question"] == question]
        baselines = [b for n in members for b in configurations[n]["baselines"] if b not in members]
        rows = list(dict.fromkeys(baselines + members))
        lines += [f"## {question}: {text}", ""]
        header = "| configuration | change | parameters | steps | seeds | " + " | ".join(
            f"{s} WER | {s} CER" for s in set_names) + " | dev CER |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for name in rows:
            c = configurations[name]
            cells = [f"`{name}`", c["description"] or "-", _parameters(c["parameters"]),
                     ", ".join(map(str, c["steps"])), str(len(c["seeds"]))]
            for s in set_names:
                cells += [_percent(c["sets"][s]["wer"]), _percent(c["sets"][s]["cer"])]
            cells.append(_percent(c["dev_cer"]))
            lines.append("| " + " | ".join(cells) + " |")
        comparisons = [x for x in results["comparisons"] if x["system"] in members]
        lines += comparison_table(comparisons, results.get("analysis", {}).get("primary_metric", "cer"))
        lines.append("")
    lines += manipulation_section(results)
    threshold = results["steps_to_threshold"]
    lines += ["## Steps to reach a dev CER threshold", ""]
    if threshold["available"]:
        lines += [f"Threshold: the final mean dev CER of `{threshold['reference']}`, "
                  f"{100 * threshold['threshold_cer']:.1f}%; dev CER was evaluated at steps "
                  f"{', '.join(map(str, threshold['evaluated_steps']))} (mean over seeds).", "",
                  "| configuration | first evaluated step at or below the threshold |", "|---|---|"]
        lines += [f"| `{n}` | {s if s is not None else 'not reached'} |" for n, s in threshold["steps"].items()]
    else:
        lines.append(f"Not available: {threshold['reason']}.")
    lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{title}]({path})" for title, path in figures.items()] + [""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path, plots: bool = True,
                 extra_figures: dict[str, str] | None = None) -> None:
    """``extra_figures``: title -> path relative to ``out``, drawn by the caller."""
    figures: dict[str, str] = {}
    if plots:
        from echoasr.experiments.plots import draw_figures

        figures = draw_figures(results, out)
    figures.update(extra_figures or {})
    atomic.write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic.write_text(out / "report.md", render_markdown(results, figures) + "\n")


# ------------------------------------------------------------------------------- per-utterance data


def write_utterances(path: Path, runs: list[dict[str, Any]], speakers: dict[str, dict[str, str]]) -> int:
    """Every run's per-utterance errors and reference lengths, with the speaker of each utterance
    (``speakers``: set name -> utterance id -> speaker), as gzip TSV (``UTTERANCE_COLUMNS``): what a
    reader needs to re-run the analysis. A manipulation check's rows have the set
    ``SET@f0-REPLACEMENT`` (:func:`manipulated_set`). Returns the number of rows; runs without
    per-utterance data are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(UTTERANCE_COLUMNS)
    rows = 0
    for run in sorted(runs, key=lambda r: (r["configuration"], r["seed"])):
        scorings = [(set_name, set_name, scored) for set_name, scored in run["sets"].items()]
        scorings += [(manipulated_set(set_name, replacement), set_name, scored)
                     for set_name, replacements in run.get("manipulation", {}).items()
                     for replacement, scored in replacements.items()]
        for row_set, set_name, scored in scorings:
            if "ids" not in scored:
                continue
            names = speakers.get(set_name, {})
            for values in zip(scored["ids"], scored["words"], scored["word_errors"], scored["chars"],
                              scored["char_errors"], strict=True):
                writer.writerow([run["configuration"], run["seed"], row_set, values[0], names.get(values[0], ""),
                                 *values[1:]])
                rows += 1
    # mtime 0: the same runs give the same bytes (a committed file changes only when the data do)
    data = gzip.compress(buffer.getvalue().encode("utf-8"), mtime=0)
    with atomic.atomic_path(path) as temporary:
        Path(temporary).write_bytes(data)
    return rows


def read_utterances(path: Path) -> dict[tuple[str, int], dict[str, dict[str, list]]]:
    """:func:`write_utterances`'s file -> (configuration, seed) -> set -> per-utterance lists, in
    the runs' ``sets`` layout (``ids``, ``speakers``, ``words``, ``word_errors``, ``chars``, ``char_errors``)."""
    runs: dict[tuple[str, int], dict[str, dict[str, list]]] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream, delimiter="\t"):
            scored = runs.setdefault((row["configuration"], int(row["seed"])), {}).setdefault(
                row["set"], {k: [] for k in ("ids", "speakers", "words", "word_errors", "chars", "char_errors")})
            scored["ids"].append(row["id"])
            scored["speakers"].append(row["speaker"])
            for key in ("words", "word_errors", "chars", "char_errors"):
                scored[key].append(int(row[key]))
    return runs


def committed_runs(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A report folder's ``results.json`` and its runs as the runner wrote them: the per-seed
    summaries of ``results.json`` with the per-utterance errors of ``utterances.tsv.gz`` (when the
    folder has one) put back under each set and manipulation check."""
    previous = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
    runs = previous["runs"]
    utterances_file = Path(folder) / UTTERANCES_FILE
    if utterances_file.is_file():
        per_utterance = read_utterances(utterances_file)
        for run in runs:
            for set_name, scored in per_utterance.get((run["configuration"], run["seed"]), {}).items():
                base, separator, replacement = set_name.partition(MANIPULATED_SET)
                target = run.setdefault("manipulation", {}).setdefault(base, {}) if separator else run["sets"]
                target.setdefault(replacement if separator else set_name, {}).update(scored)
    return previous, runs


def reanalyse(folder: Path, plan: Plan, note: str = "", plots: bool = False) -> dict[str, Any]:
    """Rebuild ``folder``'s ``results.json`` and ``report.md`` from its committed results with the
    current statistics and ``plan``'s analysis (families, margin), training and evaluating nothing.
    Per-utterance errors come from ``utterances.tsv.gz`` when the folder has one; without it only
    the per-seed error rates are there, and the verdicts use the paired t over seeds. ``note`` is
    printed at the top of the report (say there what was decided after the runs). The figures of
    the existing report are kept (``plots``: redraw those drawn from results.json)."""
    folder = Path(folder)
    previous, runs = committed_runs(folder)
    settings = {**previous["settings"], "reanalysis": note or "re-analysed from the committed results"}
    results = build_results(plan, runs, settings)
    figures = existing_figures(folder / "report.md")
    if plots:
        from echoasr.experiments.plots import draw_figures

        figures.update(draw_figures(results, folder))
    atomic.write_text(folder / "results.json", json.dumps(results, indent=1) + "\n")
    atomic.write_text(folder / "report.md", render_markdown(results, figures) + "\n")
    log.info("%s: re-analysed %d runs, %d comparisons", folder, len(runs), len(results["comparisons"]))
    return results


def existing_figures(report: Path) -> dict[str, str]:
    """title -> path of the ``![title](path)`` figures of a report (none when it does not exist)."""
    import re

    if not report.is_file():
        return {}
    return dict(re.findall(r"^!\[(.*)\]\((.*)\)$", report.read_text(encoding="utf-8"), flags=re.MULTILINE))
