"""Tone errors of the positive control (the ``tones`` plan on the Mandarin tones corpus).

From evaluate's hypothesis TSVs (``OUT/runs/<configuration>/seed<k>/eval/<set>.tsv``), three rates
per run, each a corpus-level ratio of sums over the test set's utterances:

* syllable error rate: word errors over reference syllables, a syllable counting as right only
  with its tone (the run's WER);
* base syllable error rate: the same with every tone letter stripped from both sides;
* tone error rate: of the reference syllables whose base syllable the hypothesis got right (hits of
  jiwer's alignment of the tone-stripped texts), the share given the wrong tone (or none).

The tone error rate isolates what pitch should fix. :func:`summarize` compares configurations on it
with the plan's families, as the experiment report does on its primary metric: the paired t over
seeds of run-level rates, Holm within a family, a TOST against the family's margin, the minimum
detectable effect and the verdict wording of :mod:`.stats`. The control passes when a pitch-aware
configuration makes significantly fewer tone errors than its plain baseline; when it does not, the
pitch pathway is broken or unused (or the runs too few to show it: the MDE says how few).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.experiments.plans import Plan
from echoasr.experiments.stats import (
    equivalence_test,
    holm_adjust,
    mean_interval,
    minimum_detectable_effect,
    seed_paired_difference,
    verdict,
)
from echoasr.text.pinyin import split_tone

RATES = ("syllable_error_rate", "base_error_rate", "tone_error_rate")
_SEED_FOLDER = re.compile(r"seed(\d+)")


@dataclass
class ToneCounts:
    syllables: int = 0  # reference syllables
    errors: int = 0  # word errors: a syllable is right only with its tone
    base_errors: int = 0  # word errors with the tones stripped
    aligned: int = 0  # reference syllables whose base syllable the hypothesis got right
    tone_errors: int = 0  # of those, with the wrong (or no) tone

    def __add__(self, other: ToneCounts) -> ToneCounts:
        return ToneCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def rates(self) -> dict[str, float | None]:
        """The three rates (fractions); None where the denominator is 0."""
        def ratio(numerator: int, denominator: int) -> float | None:
            return numerator / denominator if denominator else None

        return {"syllable_error_rate": ratio(self.errors, self.syllables),
                "base_error_rate": ratio(self.base_errors, self.syllables),
                "tone_error_rate": ratio(self.tone_errors, self.aligned)}


def tone_counts(reference: str, hypothesis: str) -> ToneCounts:
    """Counts of one utterance; both texts are normalised, tone-marked syllables (``maˉ baˇ``)."""
    import jiwer

    reference_words = [split_tone(word) for word in reference.split()]
    hypothesis_words = [split_tone(word) for word in hypothesis.split()]
    if not reference_words:
        return ToneCounts(errors=len(hypothesis_words), base_errors=sum(1 for base, _ in hypothesis_words if base))
    full = jiwer.process_words(reference, hypothesis) if hypothesis_words else None
    errors = len(reference_words) if full is None else full.substitutions + full.deletions + full.insertions
    # A tone letter standing alone has no base syllable: it vanishes with the tones.
    hypothesis_bases = [(base, tone) for base, tone in hypothesis_words if base]
    if not hypothesis_bases:
        return ToneCounts(len(reference_words), errors, len(reference_words))
    base = jiwer.process_words(" ".join(b for b, _ in reference_words), " ".join(b for b, _ in hypothesis_bases))
    tone_errors = 0
    for chunk in base.alignments[0]:
        if chunk.type == "equal":
            for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                tone_errors += (reference_words[chunk.ref_start_idx + offset][1]
                                != hypothesis_bases[chunk.hyp_start_idx + offset][1])
    return ToneCounts(len(reference_words), errors, base.substitutions + base.deletions + base.insertions,
                      base.hits, tone_errors)


def read_hypotheses(tsv: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(id, reference, hypothesis) of every row of evaluate's hypothesis TSV."""
    path = Path(tsv)
    try:
        header, *lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        raise EchoError("cannot read the hypotheses", path) from None
    columns = {name: index for index, name in enumerate(header.split("\t"))}
    if not {"id", "reference", "hypothesis"} <= set(columns):
        raise EchoError("not an evaluate hypothesis TSV (columns id, reference, hypothesis)", path)
    rows = []
    for line in lines:
        cells = line.split("\t")
        rows.append((cells[columns["id"]], cells[columns["reference"]], cells[columns["hypothesis"]]))
    return rows


def score_hypotheses(tsv: str | os.PathLike) -> ToneCounts:
    """The corpus-level counts of one hypothesis TSV."""
    total = ToneCounts()
    for _, reference, hypothesis in read_hypotheses(tsv):
        total += tone_counts(reference, hypothesis)
    return total


def collect_runs(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every run's counts and rates on every test set it was evaluated on, from
    ``OUT/runs/<configuration>/seed<k>/eval/<set>.tsv``."""
    runs = []
    for tsv in sorted(Path(out).glob("runs/*/seed*/eval/*.tsv")):
        seed = _SEED_FOLDER.fullmatch(tsv.parent.parent.name)
        if seed is None:
            continue
        counts = score_hypotheses(tsv)
        runs.append({"configuration": tsv.parent.parent.parent.name, "seed": int(seed[1]), "set": tsv.stem,
                     "counts": asdict(counts), **counts.rates()})
    if not runs:
        raise EchoError("no evaluated runs (runs/<configuration>/seed<k>/eval/<set>.tsv)", out)
    return runs


def summarize(plan: Plan, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-configuration rates (mean and 95% interval over seeds) and the plan's families tested
    on the tone error rate."""
    sets = sorted({run["set"] for run in runs})
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_key.setdefault((run["configuration"], run["set"]), {})[run["seed"]] = run
    configurations = {}
    for name in [c.name for c in plan.configurations] + sorted({r["configuration"] for r in runs}
                                                               - {c.name for c in plan.configurations}):
        per_set = {}
        for test_set in sets:
            seeds = by_key.get((name, test_set), {})
            if seeds:
                per_set[test_set] = {rate: _interval([r[rate] for r in seeds.values() if r[rate] is not None])
                                     for rate in RATES}
        if per_set:
            configurations[name] = per_set
    comparisons = []
    for family in plan.analysis_families():
        margin = family.margin or plan.equivalence_margin
        planned = [(b, s, t) for b, s in family.contrasts for t in (family.sets or sets)]
        estimates = []
        for baseline, system, test_set in planned:
            rates = [{seed: run["tone_error_rate"] for seed, run in by_key.get((name, test_set), {}).items()
                      if run["tone_error_rate"] is not None} for name in (baseline, system)]
            estimates.append(seed_paired_difference(*rates))
        # a test not available (a set not evaluated, fewer than two paired seeds) counts as p = 1
        p_holm = holm_adjust([1.0 if e is None else e.p_value for e in estimates])
        equivalences = [None if e is None else equivalence_test(e, margin, plan.alpha) for e in estimates]
        tost_holm = holm_adjust([1.0 if e is None else e.p_value for e in equivalences])
        for (baseline, system, test_set), estimate, p, equivalence, tost in zip(
                planned, estimates, p_holm, equivalences, tost_holm, strict=True):
            entry = {"family": family.name, "baseline": baseline, "system": system, "set": test_set,
                     "family_size": len(planned), "margin": margin}
            if estimate is None:
                comparisons.append({**entry, "verdict": "n/a", "verdict_text": "n/a (needs 2+ paired seeds)"})
                continue
            mde = minimum_detectable_effect(estimate.standard_error, estimate.freedom, plan.alpha)
            decision = verdict(estimate.effect, float(p), float(tost), margin, mde, plan.alpha)
            comparisons.append({**entry, "estimate": asdict(estimate), "p_holm": float(p),
                                "equivalence": {**asdict(equivalence), "p_holm": float(tost)}, "mde": mde,
                                "verdict": decision.label, "verdict_text": decision.text})
    return {"plan": plan.name, "alpha": plan.alpha, "sets": sets, "configurations": configurations,
            "comparisons": comparisons, "conclusion": conclusion(comparisons), "runs": runs}


def _interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds; None (JSON null) for what one seed cannot give."""
    interval = asdict(mean_interval(values))
    return {key: None if isinstance(value, float) and value != value else value for key, value in interval.items()}


def conclusion(comparisons: list[dict[str, Any]]) -> str:
    """One paragraph: does the pitch pathway cut tone errors where pitch carries the label?"""
    tested = [c for c in comparisons if c["verdict"] != "n/a"]
    if not tested:
        return "No conclusion yet: no contrast has two or more paired seeds."
    passed = [c for c in tested if c["verdict"] == "fewer errors"]
    failed = [c for c in tested if c["verdict"] != "fewer errors"]

    def named(items: list[dict[str, Any]]) -> str:
        return ", ".join(f"{c['system']} vs {c['baseline']} on {c['set']} ({c['verdict_text']})" for c in items)

    if failed:
        text = (f"The control FAILS for {named(failed)}: no fewer tone errors where pitch carries the label, so "
                "there the pitch pathway is broken or unused (unless the runs are too few to show it: see the MDE).")
        text += f" It passes for {named(passed)}." if passed else ""
    else:
        text = ("The control passes: the pitch-aware configurations make fewer tone errors than their plain "
                f"baseline, so the pitch pathway works: {named(passed)}.")
    untested = [c for c in comparisons if c["verdict"] == "n/a"]
    if untested:
        text += " Not tested (fewer than two paired seeds): " + ", ".join(
            f"{c['system']} vs {c['baseline']} on {c['set']}" for c in untested) + "."
    return text


def write_summary(summary: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """``OUT/tones.json`` and ``OUT/tones.md``."""
    out = Path(out)
    atomic.write_text(out / "tones.json", json.dumps(summary, indent=1) + "\n")
    atomic.write_text(out / "tones.md", markdown(summary))
    return out / "tones.json", out / "tones.md"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Positive control: Mandarin tones (plan `{summary['plan']}`)", "", summary["conclusion"], "",
             "Rates in percent, mean over seeds [95% interval]. Syllable: a syllable is right only with its tone "
             "(the WER); base: tones stripped; tone: of the syllables whose base is right, the share with the "
             "wrong tone.", ""]
    for test_set in summary["sets"]:
        lines += [f"## {test_set}", "", "| configuration | seeds | syllable | base | tone |", "|---|---|---|---|---|"]
        for name, per_set in summary["configurations"].items():
            if test_set not in per_set:
                continue
            cells = [f"{_percent(i['mean'])} [{_percent(i['low'])}, {_percent(i['high'])}]"
                     for i in (per_set[test_set][rate] for rate in RATES)]
            lines.append(f"| {name} | {per_set[test_set]['tone_error_rate']['n']} | {' | '.join(cells)} |")
        lines.append("")
    lines += ["## Tone error rate: system minus baseline", "",
              f"Paired t over seeds, Holm within each family at alpha {summary['alpha']:g}, TOST against the "
              "family's margin, MDE at 80% power.", "",
              "| family | contrast | set | effect (points) | 95% CI | p | Holm p | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        estimate = c.get("estimate")
        if estimate is None:
            lines.append(f"| {c['family']} | {c['system']} vs {c['baseline']} | {c['set']} | | | | | {c['verdict_text']} |")
            continue
        lines.append(f"| {c['family']} | {c['system']} vs {c['baseline']} | {c['set']} | {100 * estimate['effect']:+.2f} | "
                     f"[{100 * estimate['low']:+.2f}, {100 * estimate['high']:+.2f}] | {estimate['p_value']:.3g} | "
                     f"{c['p_holm']:.3g} | {c['verdict_text']} |")
    lines += ["", "## Runs", "", "| configuration | seed | set | syllables | syllable | base | tone (of aligned) |",
              "|---|---|---|---|---|---|---|"]
    for run in summary["runs"]:
        counts = run["counts"]
        lines.append(f"| {run['configuration']} | {run['seed']} | {run['set']} | {counts['syllables']} | "
                     f"{_percent(run['syllable_error_rate'])} | {_percent(run['base_error_rate'])} | "
                     f"{_percent(run['tone_error_rate'])} ({counts['tone_errors']} of {counts['aligned']}) |")
    return "\n".join(lines) + "\n"
