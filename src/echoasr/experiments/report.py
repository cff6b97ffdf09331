"""Aggregate an experiment's runs into ``results.json`` and ``report.md``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from echoasr import atomic
from echoasr.experiments.plans import QUESTIONS, Plan
from echoasr.experiments.stats import mean_interval, paired_bootstrap, welch_difference

METRICS = {"wer": ("word_errors", "words"), "cer": ("char_errors", "chars")}
_LOG_KEYS = ("step", "loss", "eval_cer", "eval_wer")


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
    comparisons = []
    for baseline, system in plan.comparisons():
        for name in set_names:
            tested = [[r for r in by_configuration.get(c, []) if name in r["sets"]] for c in (baseline, system)]
            for metric, (errors_key, lengths_key) in METRICS.items():
                effect = _compare(*tested, name, errors_key, lengths_key)
                if effect is not None:
                    seeds = welch_difference(*[[r["sets"][name][metric] for r in side] for side in tested])
                    comparisons.append({"baseline": baseline, "system": system, "set": name, "metric": metric,
                                        **asdict(effect), "significant": effect.significant,
                                        "seed_level": None if seeds is None else asdict(seeds)})
    return {
        "settings": settings,
        "questions": {k: v for k, v in QUESTIONS.items() if any(c.question == k for c in plan.configurations)},
        "configurations": configurations,
        "comparisons": comparisons,
        "steps_to_threshold": steps_to_threshold(plan, by_configuration),
        "runs": [{**{k: v for k, v in r.items() if k not in ("sets", "log_history")},
                  "sets": {n: {m: s[m] for m in ("wer", "cer", "utterances")} for n, s in r["sets"].items()},
                  "log_history": [{k: e[k] for k in _LOG_KEYS if k in e} for e in r.get("log_history", [])]}
                 for r in runs],
    }


def _compare(baseline_runs, system_runs, set_name, errors_key, lengths_key):
    """Paired bootstrap pooled over seeds; None when a side has no runs."""
    if not baseline_runs or not system_runs:
        return None

    def stacked(runs):
        ids = runs[0]["sets"][set_name]["ids"]
        if any(r["sets"][set_name]["ids"] != ids for r in runs):
            raise ValueError(f"runs scored different utterances on {set_name}")
        return ids, np.array([r["sets"][set_name][errors_key] for r in runs]), \
            np.array([r["sets"][set_name][lengths_key] for r in runs])

    base_ids, base_errors, base_lengths = stacked(baseline_runs)
    sys_ids, sys_errors, sys_lengths = stacked(system_runs)
    if base_ids != sys_ids:
        raise ValueError(f"the two configurations scored different utterances on {set_name}")
    return paired_bootstrap(base_errors, base_lengths, sys_errors, sys_lengths)


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
        f"tokenizer; evaluation with {settings['eval_beams']} beam(s) (joint CTC/attention). Error rates are "
        "percentages: mean over seeds ± the half-width of the 95% t-interval. Effects are in absolute "
        "percentage points (configuration minus counterpart; negative = fewer errors), from a paired "
        "bootstrap over utterances pooled over seeds (10,000 resamples), with a two-sided p-value. The "
        "bootstrap measures how the effect depends on the test utterances; training randomness is in the "
        "seed-level column (difference of seed means, Welch 95% interval and p), which needs 2+ seeds per side.", "",
        "Reproduce: `echoasr experiment --plan " + settings["plan"] + f" --data {settings['data']} --out OUT"
        + (f" --human {settings['human']}" if settings.get("human") else "")
        + "".join(f" --test {name}={source}" for name, source in sources.items()
                  if name not in (settings["split"], "human"))
        + f" --seeds {settings['seeds']} --parallel {settings['parallel']}`", "",
    ]
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
        if comparisons:
            lines += ["", "| comparison | set | metric | effect (points) | 95% CI | p | verdict | seed-level effect, 95% CI, p |",
                      "|---|---|---|---|---|---|---|---|"]
            for x in comparisons:
                verdict = "**significant**" if x["significant"] else "not significant at 0.05"
                seed = x["seed_level"]
                seed_text = "n/a (1 seed)" if seed is None else (
                    f"{100 * seed['effect']:+.2f} [{100 * seed['low']:+.2f}, {100 * seed['high']:+.2f}], p {seed['p_value']:.3f}")
                lines.append(f"| `{x['system']}` vs `{x['baseline']}` | {x['set']} | {x['metric'].upper()} | "
                             f"{100 * x['effect']:+.2f} | [{100 * x['low']:+.2f}, {100 * x['high']:+.2f}] | "
                             f"{x['p_value']:.4f} | {verdict} | {seed_text} |")
        lines.append("")
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
