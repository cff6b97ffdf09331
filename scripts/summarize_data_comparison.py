"""The table of issue 10's equal-budget data comparison (scripts/compare-training-data): one row
per training set and per reference recogniser, WER / CER on every test set, written to
reports/data-comparison/results.{json,md} and printed.

    .venv/bin/python scripts/summarize_data_comparison.py [--runs runs/data-comparison]

Reference recognisers' results are read from the JSON that `echoasr evaluate --reference ... --json`
wrote for the same utterances: reports/default-model/NAME.references.json, else
reports/data-comparison/NAME.references.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from echoasr import atomic
from echoasr.experiments.runner import per_utterance_errors
from echoasr.experiments.stats import paired_bootstrap

TRAINING_SETS = {
    "a": "the demo corpus: 13 training voices, one speaker each, clean",
    "b": "same voices, 6 apparent speakers each (30% WORLD-transformed), rooms, codecs, noise",
    "c": "b + the game's real speech (train speakers) at 30% of the hours",
}
COMPARISONS = [("a", "b"), ("b", "c"), ("a", "c")]  # (baseline, system)
# result file stem: legend; the reference JSON has the same stem + ".references.json"
TEST_SETS = {
    "test_unseen": "held-out voices, with channels (data/synth10h test_unseen, 200)",
    "test_unseen_clean": "held-out voices, clean (demo corpus test_unseen, 200)",
    "fotaq_test": "game test speakers (data/fotaq test, 700)",
    "human": "Asterisk human set (442)",
}


def read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/data-comparison", type=Path)
    parser.add_argument("--references", default="reports/default-model", type=Path)
    parser.add_argument("--out", default="reports/data-comparison", type=Path)
    args = parser.parse_args(argv)

    rows = []
    for name, description in TRAINING_SETS.items():
        run = args.runs / name
        summary = read(run / "train_summary.json")
        if summary is None:
            print(f"{run}: not trained yet", file=sys.stderr)
            continue
        results = {test: read(run / "eval" / f"{test}.json") for test in TEST_SETS}
        rows.append({
            "name": name, "training_set": description, "steps": summary["steps"],
            "train_minutes": round(summary["train_seconds"] / 60, 1), "train_hours": summary["train_hours"],
            "train_utterances": summary["train_utterances"], "parameters": summary["parameters"],
            "averaged_checkpoints": summary.get("averaged_checkpoints"),
            "results": {test: None if r is None else {"wer": r["wer"], "cer": r["cer"], "utterances": r["utterances"]}
                        for test, r in results.items()},
        })
    references: dict[str, dict] = {}
    for test in TEST_SETS:
        document = read(args.references / f"{test}.references.json") or read(args.out / f"{test}.references.json")
        for recogniser, r in (document or {}).get("references", {}).items():
            references.setdefault(recogniser, {})[test] = {"wer": r["wer"], "cer": r["cer"], "utterances": r["utterances"]}

    def cell(result: dict | None) -> str:
        return "–" if result is None else f"{100 * result['wer']:.1f} / {100 * result['cer']:.1f}"

    header = "| training set | hours (utterances) | steps (min) | " + " | ".join(TEST_SETS) + " |"
    lines = [header, "|" + "---|" * (3 + len(TEST_SETS))]
    for row in rows:
        lines.append(f"| ({row['name']}) {row['training_set']} | {row['train_hours']:.1f} ({row['train_utterances']:,}) | "
                     f"{row['steps']:,} ({row['train_minutes']:.0f}) | "
                     + " | ".join(cell(row["results"][test]) for test in TEST_SETS) + " |")
    for recogniser, results in references.items():
        lines.append(f"| {recogniser} (reference) | – | – | " + " | ".join(cell(results.get(test)) for test in TEST_SETS) + " |")
    legend = "\n".join(f"- `{test}`: {text}" for test, text in TEST_SETS.items())
    table = "\n".join(lines) + "\n\nWER / CER in %, no language model.\n" + legend + "\n"

    effects = paired_effects(args.runs, [row["name"] for row in rows])
    if effects:
        lines = ["| change | " + " | ".join(TEST_SETS) + " |", "|" + "---|" * (1 + len(TEST_SETS))]
        for change, by_test in effects.items():
            cells = []
            for test in TEST_SETS:
                e = by_test.get(test)
                cells.append("–" if e is None else f"{e['cer']['effect']:+.1f} [{e['cer']['low']:+.1f}, "
                             f"{e['cer']['high']:+.1f}] p={e['cer']['p_value']:.3g}")
            lines.append(f"| {change} | " + " | ".join(cells) + " |")
        table += ("\nPaired bootstrap over utterances (10,000 resamples): CER difference in points, "
                  "95% interval, two-sided p (negative: the second set is better).\n\n" + "\n".join(lines) + "\n")

    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "results.json", json.dumps(
        {"runs": rows, "references": references, "test_sets": TEST_SETS, "paired_effects": effects}, indent=1) + "\n")
    atomic.write_text(args.out / "results.md", table)
    print(table)
    return 0


def paired_effects(runs: Path, trained: list[str]) -> dict[str, dict]:
    """WER and CER differences (points) of each comparison on each test set, by the paired bootstrap."""
    effects: dict[str, dict] = {}
    for baseline, system in COMPARISONS:
        if baseline not in trained or system not in trained:
            continue
        for test in TEST_SETS:
            files = [runs / name / "eval" / f"{test}.tsv" for name in (baseline, system)]
            if not all(f.is_file() for f in files):
                continue
            base, other = (per_utterance_errors(f) for f in files)
            if base["ids"] != other["ids"]:
                raise SystemExit(f"{files[0]} and {files[1]} score different utterances")
            result = {}
            for unit, errors, lengths in (("wer", "word_errors", "words"), ("cer", "char_errors", "chars")):
                e = paired_bootstrap(np.array(base[errors]), np.array(base[lengths]),
                                     np.array(other[errors]), np.array(other[lengths]))
                result[unit] = {"effect": 100 * e.effect, "low": 100 * e.low, "high": 100 * e.high,
                                "p_value": e.p_value, "utterances": e.utterances}
            effects.setdefault(f"{baseline} -> {system}", {})[test] = result
    return effects


if __name__ == "__main__":
    sys.exit(main())
