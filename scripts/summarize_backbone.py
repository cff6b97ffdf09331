"""The table of issue 19's backbone comparison (scripts/compare-backbone): Whisper base fine-tuned
plain and with every pitch mechanism, Whisper base as it ships (padded) and pocketsphinx, WER / CER
/ insertions on every test set; written to reports/backbone/results.{json,md} with the
per-utterance hypotheses (gzipped) so that anyone can re-analyse them, and printed.

    .venv/bin/python scripts/summarize_backbone.py [runs/backbone]

One training run per configuration: the pitch-vs-plain difference is a paired bootstrap over
utterances of these two trained models, a description of them, not a test of the configurations
(that needs several seeds per configuration: issue 22)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from echoasr import atomic
from echoasr.experiments.runner import per_utterance_errors
from echoasr.experiments.stats import paired_bootstrap

MODELS = {
    "whisper-base-pitch": "fine-tuned, every pitch mechanism (zero start)",
    "whisper-base": "fine-tuned, plain",
}
REFERENCES = {"whisper-base": "Whisper base as shipped (padded to 30 s, beam 5, int8)", "pocketsphinx": "pocketsphinx"}
TEST_SETS = {
    "fotaq_test": "game test characters (data/fotaq test, shared lines removed)",
    "human": "Asterisk prompts (real human speech)",
    "test_unseen": "held-out synthetic voices, channels (data/synth3k test_unseen)",
    "test_seen": "training voices, new sentences (data/synth3k test_seen)",
}
REPORT = Path("reports/backbone")


def read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def cell(result: dict | None) -> str:
    if result is None:
        return "not run"
    return f"{100 * result['wer']:.1f} / {100 * result['cer']:.1f} / {result['insertions']}"


def main(argv: list[str]) -> int:
    runs = Path(argv[0]) if argv else Path("runs/backbone")
    rows: dict[str, dict] = {}
    for name, legend in MODELS.items():
        summary = read(runs / name / "train_summary.json") or {}
        results = {s: read(runs / name / "eval" / f"{s}.json") for s in TEST_SETS}
        rows[name] = {"legend": legend, "results": results,
                      "training": {k: summary.get(k) for k in ("steps", "train_seconds", "train_loss", "parameters",
                                                               "trainable_parameters", "train_hours", "threads", "dev")}}
    for name, legend in REFERENCES.items():
        results = {}
        for s in TEST_SETS:
            found = read(runs / "references" / f"{s}.json")
            results[s] = None if found is None else found["references"].get(name)
        rows[f"reference:{name}"] = {"legend": legend, "results": results}

    effects = {}
    for s in TEST_SETS:
        tsvs = [runs / name / "eval" / f"{s}.tsv" for name in MODELS]
        if all(t.is_file() for t in tsvs):
            pitch, plain = (per_utterance_errors(t) for t in tsvs)
            assert pitch["ids"] == plain["ids"], f"{s}: the two models scored different utterances"
            effect = paired_bootstrap(plain["word_errors"], plain["words"], pitch["word_errors"], pitch["words"])
            effects[s] = {"wer_difference": effect.effect, "interval": [effect.low, effect.high],
                          "p_value_descriptive": effect.p_value}

    # Manipulation check: the pitch model with its f0 shuffled across utterances at test time.
    check = read(runs / "whisper-base-pitch" / "eval" / "human.f0-shuffled.json")
    manipulation = None
    if check is not None:
        own = per_utterance_errors(runs / "whisper-base-pitch" / "eval" / "human.tsv")
        shuffled = per_utterance_errors(Path(check["hypotheses"]))
        assert own["ids"] == shuffled["ids"]
        effect = paired_bootstrap(own["word_errors"], own["words"], shuffled["word_errors"], shuffled["words"])
        changed = sum(a != b for a, b in zip(own["word_errors"], shuffled["word_errors"], strict=True))
        manipulation = {"set": "human", "f0": "shuffled", "wer": check["wer"], "cer": check["cer"],
                        "wer_change": effect.effect, "interval": [effect.low, effect.high],
                        "utterances_with_other_word_errors": changed, "utterances": len(own["ids"])}

    REPORT.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        for s in [*TEST_SETS, "human.f0-shuffled"]:
            tsv = runs / name / "eval" / f"{s}.tsv"
            if tsv.is_file():
                atomic.write_bytes(REPORT / "utterances" / f"{name}.{s}.tsv.gz", gzip.compress(tsv.read_bytes(), mtime=0))
    document = {"models": rows, "pitch_minus_plain_wer": effects, "manipulation_check": manipulation, "test_sets": TEST_SETS}
    atomic.write_text(REPORT / "results.json", json.dumps(document, indent=1) + "\n")

    lines = ["| model | " + " | ".join(TEST_SETS) + " |", "|---" * (len(TEST_SETS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {row['legend']} | " + " | ".join(cell(row["results"][s]) for s in TEST_SETS) + " |")
    lines += ["", "WER % / CER % / inserted words; every utterance, beam 5, no LM.", ""]
    for s, effect in effects.items():
        low, high = effect["interval"]
        lines.append(f"- {s}: pitch - plain WER {100 * effect['wer_difference']:+.2f} points "
                     f"[{100 * low:+.2f}, {100 * high:+.2f}] (utterance bootstrap of one run each: descriptive)")
    if manipulation is not None:
        low, high = manipulation["interval"]
        lines.append(f"- manipulation check (pitch model, human set, f0 shuffled across utterances at test time): WER "
                     f"{100 * manipulation['wer']:.1f}%, change {100 * manipulation['wer_change']:+.2f} points "
                     f"[{100 * low:+.2f}, {100 * high:+.2f}]; {manipulation['utterances_with_other_word_errors']} of "
                     f"{manipulation['utterances']} utterances changed their word errors")
    text = "\n".join(lines) + "\n"
    atomic.write_text(REPORT / "results.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
