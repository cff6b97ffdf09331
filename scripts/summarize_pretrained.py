"""Reports of issue 22's plan (scripts/pretrained-plan) into reports/pretrained/.

    summarize_pretrained.py mixing OUT   # the game's share chosen on dev -> OUT/mixing/choice.json, mixing.md
    summarize_pretrained.py report OUT   # the plan's report + the zero-shot floor + the plan's size from the pilot
    summarize_pretrained.py choose OUT   # the default model's configuration, chosen on the game's dev set -> OUT/default/
    summarize_pretrained.py steps OUT    # the default model's training length, chosen on the game's dev set
    summarize_pretrained.py card OUT     # the default model's card (scripts/train-default-model) -> reports/default-model/

Every number is read from the run folders under OUT; nothing is typed in.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from echoasr import atomic
from echoasr.experiments.plans import load_plan
from echoasr.experiments.stats import seeds_needed

REPORTS = Path("reports/pretrained")
PLAN = "conf/plans/pretrained.yaml"
SET_LABELS = {"fotaq_test": "game test characters", "human": "Asterisk prompts", "test_unseen": "held-out voices"}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def mixing(out: Path) -> None:
    rows, choice = [], None
    for run in sorted((out / "mixing").glob("share*")):
        share = float(run.name.removeprefix("share"))
        game, synth = _read(run / "eval" / "fotaq_dev.json"), _read(run / "eval" / "synth_dev.json")
        summary = _read(run / "train_summary.json") or {}
        if game is None:
            continue
        rows.append((share, game, synth, summary))
        if choice is None or game["wer"] < choice[1]["wer"]:
            choice = (share, game)
    if choice is None:
        sys.exit(f"{out / 'mixing'}: no finished mixing run yet")
    lines = ["# The game's share of the training hours, chosen on dev", "",
             "ft-all (every pitch mechanism, adapters on the frozen backbone), seed 0, 300 steps each; greedy "
             "decoding of every utterance of the game's dev characters (the choice) and of the synthetic dev "
             "set (shown, not used). `scripts/pretrained-plan mixing`.", "",
             "| game share | game dev WER / CER | synthetic dev WER / CER | train min |", "|---|---|---|---|"]
    for share, game, synth, summary in rows:
        synth_cell = f"{100 * synth['wer']:.1f}% / {100 * synth['cer']:.1f}%" if synth else "-"
        minutes = f"{summary['train_seconds'] / 60:.1f}" if summary.get("train_seconds") else "-"
        lines.append(f"| {share:g} | {100 * game['wer']:.1f}% / {100 * game['cer']:.1f}% ({game['utterances']} utt.) "
                     f"| {synth_cell} | {minutes} |")
    floor = _read(out / "references" / "fotaq_dev.json")
    if floor is not None:
        whisper = floor["references"]["whisper-base"]
        lines.append(f"| Whisper base, zero-shot | {100 * whisper['wer']:.1f}% / {100 * whisper['cer']:.1f}% "
                     f"({floor['utterances']} utt.) | - | - |")
    lines += ["", f"Chosen: **{choice[0]:g}** (lowest game dev WER). One seed per share: a choice, not a "
              "comparison; train minutes are wall clock on 2 cores that other jobs may have shared."]
    atomic.write_text(out / "mixing" / "choice.json", json.dumps({"share": choice[0], "fotaq_dev_wer": choice[1]["wer"]}) + "\n")
    REPORTS.mkdir(parents=True, exist_ok=True)
    atomic.write_text(REPORTS / "mixing.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _references(out: Path) -> list[str]:
    lines = ["## The floor: the backbone as it ships", "",
             "Whisper base zero-shot (faster-whisper, padded to 30 s as Whisper runs, beam 5) and pocketsphinx on "
             "every utterance of the same sets (`scripts/pretrained-plan references`).", "",
             "| test set | Whisper base WER / CER | pocketsphinx WER / CER |", "|---|---|---|"]
    for name, label in SET_LABELS.items():
        result = _read(out / "references" / f"{name}.json")
        if result is None:
            lines.append(f"| {label} | not run | not run |")
            continue
        cells = []
        for recogniser in ("whisper-base", "pocketsphinx"):
            r = result["references"][recogniser]
            cells.append(f"{100 * r['wer']:.1f}% / {100 * r['cer']:.1f}%")
        lines.append(f"| {label} ({result['utterances']}) | {' | '.join(cells)} |")
    return lines


def _sizing(results: dict) -> list[str]:
    """Seeds the plan needs for an MDE <= its margin on the primary set, from the observed spread of
    per-seed differences (Holm's first step: alpha / contrasts of the family)."""
    plan = load_plan(PLAN)
    metric = plan.primary_metric
    by_run = {(r["configuration"], r["seed"]): r for r in results["runs"]}
    lines = ["## How many seeds the plan needs", "",
             f"From the spread of the per-seed differences seen so far (seed-paired {metric.upper()}), the seeds "
             f"for a minimum detectable effect of {100 * plan.equivalence_margin:.2g} points at 80% power, "
             f"at alpha / contrasts (Holm's strictest step).", "",
             "| family | contrast | set | seed pairs | SD of differences (points) | seeds needed |", "|---|---|---|---|---|---|"]
    for family in plan.analysis_families():
        sets = family.sets or list(SET_LABELS)
        alpha = plan.alpha / (len(family.contrasts) * len(sets))
        for baseline, system in family.contrasts:
            for set_name in sets:
                seeds = sorted(s for (c, s) in by_run if c == system and (baseline, s) in by_run)
                differences = [by_run[(system, s)]["sets"][set_name][metric] - by_run[(baseline, s)]["sets"][set_name][metric]
                               for s in seeds if set_name in by_run[(system, s)]["sets"]]
                if len(differences) < 2:
                    lines.append(f"| {family.name} | {system} vs {baseline} | {set_name} | {len(differences)} | - | - |")
                    continue
                sd = float(np.std(differences, ddof=1))
                needed = seeds_needed(sd, family.margin or plan.equivalence_margin, alpha, maximum=50)
                lines.append(f"| {family.name} | {system} vs {baseline} | {set_name} | {len(differences)} | {100 * sd:.2f} "
                             f"| {needed if needed else '> 50'} |")
    return lines


def report(out: Path) -> None:
    plan_out = out / "plan"
    results = _read(plan_out / "results.json")
    REPORTS.mkdir(parents=True, exist_ok=True)
    lines = ["# Issue 22's plan: Echo on Whisper base, pitch or not", "",
             f"The plan: [`{PLAN}`](../../{PLAN}), written before its runs. The runner's report: [report.md](report.md) "
             "(verdicts, families, manipulation checks); per-utterance errors of every run: `utterances.tsv.gz`.", ""]
    if results is not None:
        settings = results["settings"]
        lines += [f"Runs finished: {settings['runs_finished']} of {settings['runs_planned']}; "
                  f"missing: {', '.join(settings['runs_missing']) or 'none'}.", ""]
        for name in ("report.md", "results.json", "utterances.tsv.gz"):
            if (plan_out / name).is_file():
                shutil.copyfile(plan_out / name, REPORTS / name)
        for plot in (plan_out / "plots").glob("*.png") if (plan_out / "plots").is_dir() else []:
            (REPORTS / "plots").mkdir(exist_ok=True)
            shutil.copyfile(plot, REPORTS / "plots" / plot.name)
    lines += _references(out) + [""]
    if results is not None:
        lines += _sizing(results) + [""]
    if (REPORTS / "mixing.md").is_file():
        lines += ["The training data's mix was chosen on dev first: [mixing.md](mixing.md).", ""]
    atomic.write_text(REPORTS / "README.md", "\n".join(lines))
    print("\n".join(lines))


DEV_RESULT = "choice/fotaq_dev.json"  # in every run or checkpoint folder: its greedy game dev WER (scripts/train-default-model)


def _mean_sd(values: list[float]) -> str:
    sd = f" ± {100 * np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.2f}{sd}"


def choose(out: Path) -> None:
    """The plan's configuration with the lowest mean greedy WER on the game's dev characters over
    the seeds every configuration has (never a test set) -> OUT/default/choice.json and its
    training recipe OUT/default/train.yaml (the plan's run of that configuration, checkpoints
    every 300 steps), and the table into reports/pretrained/choice.md."""
    import yaml

    plan = load_plan(PLAN)
    dev: dict[str, dict[int, float]] = {}
    utterances = set()
    for result in (out / "plan" / "runs").glob(f"*/seed*/{DEV_RESULT}"):
        run, decoded = result.parent.parent, _read(result)
        dev.setdefault(run.parent.name, {})[int(run.name.removeprefix("seed"))] = decoded["wer"]
        utterances.add(decoded["utterances"])
    # a run restored from the committed report has no model to decode: its committed dev WER stands
    committed = _read(CARD / "choice.json") or {}
    recorded = []
    for name, per_seed in committed.get("per_seed", {}).items():
        for seed, wer in per_seed.items():
            if int(seed) not in dev.setdefault(name, {}):
                dev[name][int(seed)] = wer
                recorded.append(f"{name}/seed{seed}")
    if recorded:
        utterances.add(committed["utterances"])
    names = [c.name for c in plan.configurations if c.name in dev]
    if not names:
        sys.exit(f"{out / 'plan' / 'runs'}: no run has {DEV_RESULT} yet")
    if len(utterances) != 1:
        sys.exit(f"{out / 'plan' / 'runs'}: the dev decodes cover different numbers of clips ({sorted(utterances)})")
    clips = utterances.pop()
    seeds = sorted(set.intersection(*(set(dev[name]) for name in names)))
    means = {name: float(np.mean([dev[name][s] for s in seeds])) for name in names}
    chosen = min(names, key=means.get)
    lines = ["# The default model's configuration, chosen on dev", "",
             f"Every finished run of the plan, greedy, every utterance of the game's dev characters "
             f"({clips} clips); mean ± SD over seeds {', '.join(map(str, seeds))} "
             "(the seeds every configuration has). `scripts/train-default-model`.", "",
             "| configuration | game dev WER (points) | per seed |", "|---|---|---|"]
    for name in names:
        per_seed = ", ".join(f"{100 * dev[name][s]:.2f}" for s in seeds)
        lines.append(f"| {name}{' (chosen)' if name == chosen else ''} | {_mean_sd([dev[name][s] for s in seeds])} "
                     f"| {per_seed} |")
    lines += ["", f"Chosen: **{chosen}** (lowest mean). A choice for the shipped model, not a verdict: the plan's "
              "report says whether any difference between configurations is real."]
    if recorded:
        lines += ["", f"Decoded in an earlier sitting, their models no longer at hand: {', '.join(sorted(recorded))} "
                  "(their WERs from the committed `reports/default-model/choice.json`)."]
    # the run's recipe as the plan resolves it, keeping every checkpoint (the length is chosen on dev too)
    recipe = plan.train_config(plan.configuration(chosen), seed=0).to_dict()
    recipe.update(save_steps=300, eval_steps=300, save_total_limit=8, threads=None)
    default = out / "default"
    default.mkdir(parents=True, exist_ok=True)
    atomic.write_text(default / "train.yaml", yaml.safe_dump(recipe, sort_keys=False))
    atomic.write_text(default / "choice.json", json.dumps({
        "configuration": chosen, "seeds": seeds, "fotaq_dev_wer": means, "utterances": clips,
        "per_seed": {name: {str(s): dev[name][s] for s in sorted(dev[name])} for name in names}}, indent=1) + "\n")
    REPORTS.mkdir(parents=True, exist_ok=True)
    atomic.write_text(REPORTS / "choice.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def steps(out: Path) -> None:
    """The default run's checkpoint (or final model) with the lowest greedy game dev WER ->
    OUT/default/steps.json, the table appended to reports/pretrained/choice.md."""
    run = out / "default" / "run"
    summary = _read(run / "train_summary.json") or {}
    final = summary.get("steps") if (run / "model.safetensors").is_file() else None
    # the last checkpoint is the final model again: the run folder stands for it
    candidates = [(int(c.name.removeprefix("checkpoint-")), c) for c in run.glob("checkpoint-*")
                  if int(c.name.removeprefix("checkpoint-")) != final]
    if final is not None:
        candidates.append((final, run))
    rows = sorted((step, folder, _read(folder / DEV_RESULT)) for step, folder in candidates)
    rows = [row for row in rows if row[2] is not None]
    if not rows:
        sys.exit(f"{run}: no checkpoint has {DEV_RESULT} yet")
    step, folder, best = min(rows, key=lambda row: (row[2]["wer"], -row[0]))
    lines = ["", "## How long to train it, chosen on dev", "",
             f"The chosen configuration trained once more (seed 0, {summary.get('steps', '?')} steps, "
             f"{summary.get('train_seconds', 0) / 60:.1f} min on 2 cores), every checkpoint decoded greedily on "
             "the game's dev characters:", "", "| steps | game dev WER / CER |", "|---|---|"]
    for s, f, r in rows:
        lines.append(f"| {s}{' (chosen)' if f == folder else ''} | {100 * r['wer']:.2f}% / {100 * r['cer']:.2f}% |")
    atomic.write_text(out / "default" / "steps.json", json.dumps({"steps": step, "model": str(folder),
                                                                 "fotaq_dev_wer": best["wer"]}, indent=1) + "\n")
    choice = REPORTS / "choice.md"
    text = choice.read_text().split("\n## How long to train it")[0].rstrip("\n") + "\n" if choice.is_file() else ""
    atomic.write_text(choice, text + "\n".join(lines) + "\n")
    print("\n".join(lines))


CARD = Path("reports/default-model")


def card(out: Path) -> None:
    """Every test set with and without the LM (and int8 on the game) beside the references, the
    run's training summary, the LM tuning and the inference benchmark, into reports/default-model/."""
    run = Path(json.loads((out / "default" / "steps.json").read_text())["model"])
    results = run / "card"
    for stale in CARD.glob("*.json"):
        if stale.name != "inference.json":  # the benchmark's, written by benchmarks/inference.py
            stale.unlink()  # the previous default model's files
    CARD.mkdir(parents=True, exist_ok=True)
    for source in results.glob("*.json"):
        shutil.copyfile(source, CARD / source.name)
    (CARD / "utterances").mkdir(exist_ok=True)
    for hypotheses in [*results.glob("*.tsv"), *(out / "references").glob("*.*.tsv")]:
        # every utterance's reference, hypothesis and errors, so the card can be re-scored
        atomic.write_bytes(CARD / "utterances" / f"{hypotheses.name}.gz", gzip.compress(hypotheses.read_bytes(), mtime=0))
    for source, name in ((out / "default" / "run" / "train_summary.json", "train_summary.json"),
                         (run / "lm.json", "lm_tuning.json"), (out / "default" / "choice.json", "choice.json"),
                         (out / "default" / "steps.json", "steps.json")):
        shutil.copyfile(source, CARD / name)
    for name in SET_LABELS:
        if (out / "references" / f"{name}.json").is_file():
            shutil.copyfile(out / "references" / f"{name}.json", CARD / f"{name}.references.json")
    chosen = json.loads((out / "default" / "choice.json").read_text())["configuration"]
    lines = ["# The default model's card: measured", "",
             f"Configuration {chosen} of the pretrained plan, chosen on the game's dev set, and its training length "
             f"chosen there too ([choice.md](../pretrained/choice.md)): `{run}` (`scripts/train-default-model`), "
             "exported as a delta on Whisper base into "
             "`src/echoasr/pretrained/echo-default/`. Every utterance of each set, beam 5; the word LM is the "
             "general English LM rescoring the 5 best (weights tuned on 100 game dev clips). References: "
             "`scripts/pretrained-plan references`.", "",
             "| test set | Echo, no LM | Echo + LM | Echo int8, no LM | Whisper base | pocketsphinx |",
             "|---|---|---|---|---|---|"]

    def cell(result):
        return f"{100 * result['wer']:.1f}% / {100 * result['cer']:.1f}%" if result else "-"

    for name, label in SET_LABELS.items():
        references = (_read(out / "references" / f"{name}.json") or {}).get("references", {})
        row = [cell(_read(results / f"{name}.{mode}.json")) for mode in ("none", "default", "int8")]
        row += [cell(references.get(r)) for r in ("whisper-base", "pocketsphinx")]
        utterances = (_read(results / f"{name}.none.json") or {}).get("utterances", "?")
        lines.append(f"| {label} ({utterances}) | " + " | ".join(row) + " |")
    lines += ["", "WER / CER. Speed and memory: `inference.json` (benchmarks/inference.py)."]
    atomic.write_text(CARD / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    modes = {"mixing": mixing, "report": report, "choose": choose, "steps": steps, "card": card}
    if len(sys.argv) != 3 or sys.argv[1] not in modes:
        sys.exit(__doc__)
    modes[sys.argv[1]](Path(sys.argv[2]))
