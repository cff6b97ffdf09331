"""``echoasr demo --regime scratch`` (``make demo REGIME=scratch``): the from-scratch regime, the
whole toolkit end to end, in about 30 minutes on 2 CPU cores (31 min measured). The default regime
(fine-tuning Whisper base) is :mod:`echoasr.backbone_demo`; it reuses this module's steps
(:class:`Steps`, :func:`build_human_once`, :func:`train_models`, :func:`evaluate_once`,
:func:`references_once`).

1. a synthetic multi-speaker corpus (``echoasr data synth``: training voices kal, rms, heart
   (neural) and espeak variants; held-out voices awb, ked, slt, espeak-m5, espeak-f3 only in
   ``test_unseen``) and the human test set (Asterisk prompts);
2. features for the training and dev sets, once, into the corpus's feature cache;
3. two models trained for the same fixed budget: the pitch-aware ``small`` preset (mel + f0
   input, pitch-warped rotary phase, bounded radius, pitch bias) and the plain-RoPE mel baseline
   ``small-plain``; by default as two concurrent one-thread processes, which on two cores trains
   both faster than one after the other (``benchmarks/training_speed.py``);
4. the general English word LM (pocketsphinx's, converted once) with its weight, word bonus and
   rescoring weight tuned per model on 100 ``dev`` utterances (``echoasr lm tune``; never on a
   test set);
5. both models evaluated on every utterance of ``test_seen``, ``test_unseen`` and the human set,
   with the LM (CTC prefix search with the word LM, n-best rescored by the attention decoder) and
   without it (joint CTC/attention beam search); the reference recognisers pocketsphinx and
   Whisper base on the same human-set utterances (Whisper base takes ~5-7 min on 2 cores);
6. a side-by-side table, printed and written to ``OUT/results.md`` and ``OUT/results.json``.

Everything already built is reused (and said so): the corpus, the human set, cached features,
finished runs (a run with checkpoints but no final model is resumed) and evaluation results.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from echoasr import atomic
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

TEST_SETS = ("test_seen", "test_unseen", "human")
REFERENCES = ("pocketsphinx", "whisper-base")  # scored on the human set


@dataclass
class DemoSettings:
    out: Path
    utterances: int = 5000
    seed: int = 0
    preset: str = "small"
    max_steps: int | None = None
    max_minutes: float | None = 14.0
    beams: int = 8
    parallel: bool = True
    human_limit: int | None = None
    lm: bool = True
    lm_tune_utterances: int = 100

    @property
    def models(self) -> dict[str, str]:
        """label -> preset."""
        return {"pitch": self.preset, "plain": f"{self.preset}-plain"}


class Steps:
    """Numbered step headers with the wall time of each step."""

    def __init__(self, total: int):
        self.total, self.index, self.start = total, 0, time.monotonic()
        self.times: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def next(self, name: str, title: str) -> None:
        self.close()
        self.index += 1
        print(f"\n[{self.index}/{self.total}] {title}", flush=True)
        self._current = (name, time.monotonic())

    def close(self) -> None:
        if self._current:
            title, started = self._current
            self.times[title] = round(time.monotonic() - started, 1)
            self._current = None


def run(out_dir: str = "demo", **options: Any) -> int:
    settings = DemoSettings(Path(out_dir), **options)
    show_results(run_demo(settings), settings.out)
    return 0


def show_results(results: dict[str, Any], out: Path) -> None:
    """The table and where it was written (either regime)."""
    print("\n" + results["markdown"])
    print(f"\nwhole demo: {results['wall_seconds'] / 60:.1f} min wall; tables in {out / 'results.md'} "
          f"and {out / 'results.json'}")


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    from echoasr.references import require
    from echoasr.training import resolve_config

    for preset in settings.models.values():
        resolve_config(preset)  # an unknown preset fails before any work
    for name in REFERENCES:
        require(name)  # so does a missing reference recogniser
    steps = Steps(7 if settings.lm else 6)
    root = settings.out
    corpus, human = root / "data" / "synth", root / "data" / "human"

    steps.next("corpus", f"corpus: {settings.utterances} synthetic utterances -> {corpus}")
    build_corpus_once(corpus, settings)
    steps.next("human set", f"human test set -> {human}")
    build_human_once(human, settings)

    steps.next("features", "features (mel, f0) for train and dev -> feature cache")
    prepare_features(corpus, settings)

    runs = {label: root / "runs" / label for label in settings.models}
    steps.next("training", "training " + " and ".join(f"{label} ({preset})" for label, preset in settings.models.items())
               + (" as two concurrent 1-thread processes" if settings.parallel else " one after the other"))
    threads = 1 if settings.parallel else None
    train_models(corpus, runs, {label: _demo_config(preset, settings, threads) for label, preset in settings.models.items()},
                 settings.parallel)

    if settings.lm:
        steps.next("language model", f"word LM: tuning its weight per model on {settings.lm_tune_utterances} dev utterances")
        tune_lm_once(corpus, runs, settings)

    manifests = {"test_seen": corpus / "test_seen.tsv", "test_unseen": corpus / "test_unseen.tsv",
                 "human": human / "human.tsv"}
    searches = ("lm", "no-lm") if settings.lm else ("no-lm",)
    steps.next("evaluation", "evaluation: " + ", ".join(TEST_SETS) + (" with and without the LM; " if settings.lm else "; ")
               + f"joint CTC/attention search with {settings.beams} beams")
    scores = {f"{label} {search}" if settings.lm else label:
              {name: evaluate_once(run, manifests[name], name, settings.beams, search) for name in TEST_SETS}
              for label, run in runs.items() for search in searches}

    steps.next("references", "reference recognisers on the human set: " + ", ".join(REFERENCES))
    references = references_once(manifests["human"], root / "results" / "references.json", root / "results" / "human.tsv")
    steps.close()

    results = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
        "models": {label: _run_facts(run) for label, run in runs.items()},
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


def build_corpus_once(folder: Path, settings) -> None:
    """The synthetic corpus of ``settings.utterances`` (and ``settings.seed``) in ``folder``, unless
    it is already built with them (either regime's settings)."""
    from echoasr.data.synth import build_corpus

    info = folder / "corpus.json"
    if info.is_file():
        previous = json.loads(info.read_text())
        same = previous.get("settings", {}).get("utterances") == settings.utterances and \
            previous.get("settings", {}).get("seed") == settings.seed
        if previous.get("complete") and same:
            print(f"reusing the corpus already built in {folder}")
            return
    summary = build_corpus(folder, settings.utterances, seed=settings.seed)
    print(f"{summary['hours']:.2f} h of audio; held-out speakers (test_unseen only): "
          f"{', '.join(summary.get('held_out_speakers', []))}")


def build_human_once(folder: Path, settings: DemoSettings) -> None:
    from echoasr.data.human import build_human_set

    if (folder / "human.tsv").is_file():
        print(f"reusing the human set in {folder}")
        return
    summary = build_human_set(folder, limit=settings.human_limit)
    print(f"{summary['prompts']} prompts, {summary['minutes']:.1f} min")


def prepare_features(corpus: Path, settings: DemoSettings) -> None:
    """Fill the feature cache for both models at once (the pitch model's features include the
    plain model's mel), so the training processes only read it."""
    from echoasr.data import load_dataset_any
    from echoasr.data.featurize import default_cache_dir, extract_features
    from echoasr.features import FeatureSettings
    from echoasr.training import resolve_config

    config = resolve_config(settings.models["pitch"])
    cache = default_cache_dir(corpus)
    for split in ("train", "dev"):
        utterances = load_dataset_any(corpus, split=split, max_duration=config.max_duration)
        extract_features(utterances, ["mel", "f0"], FeatureSettings(f0_method=config.f0_method), cache_dir=cache,
                         description=f"{split} features")


# -------------------------------------------------------------------------------- training


def _demo_config(preset: str, settings: DemoSettings, threads: int | None):
    from echoasr.training import resolve_config

    return resolve_config(preset, overrides={"max_steps": settings.max_steps, "max_minutes": settings.max_minutes,
                                             "seed": settings.seed, "threads": threads})


def _same_config(run: Path, config) -> bool:
    """Whether ``run`` was started with ``config`` (thread counts aside: they change no result)."""
    saved = run / "train_config.yaml"
    if not saved.is_file():
        return False
    ignore = {"threads"}
    previous = {k: v for k, v in (yaml.safe_load(saved.read_text()) or {}).items() if k not in ignore}
    return previous == {k: v for k, v in config.to_dict().items() if k not in ignore}


def train_models(corpus: Path, runs: dict[str, Path], configs: dict[str, Any], parallel: bool = False) -> None:
    """Train each run (label -> folder) with its config (label -> TrainConfig), reusing a finished
    run with the same config and resuming an unfinished one; ``parallel``: as concurrent
    processes, else one after the other."""
    from echoasr.training import train

    pending = {}
    for label, run in runs.items():
        config = configs[label]
        resume = _same_config(run, config)
        if resume and (run / "model.safetensors").is_file():
            print(f"reusing the trained {label} model in {run}")
            continue
        if run.exists() and any(run.iterdir()) and not resume:
            raise EchoError("holds a run with other settings; delete it or choose another --out", run)
        pending[label] = (run, config, resume)
    if not pending:
        return
    if not parallel or len(pending) == 1:
        for label, (run, config, resume) in pending.items():
            print(f"{'resuming' if resume else 'training'} {label} -> {run}")
            train(corpus, run, None if resume else config, resume=resume, resume_overrides={"threads": config.threads})
        return
    _train_concurrently(corpus, pending)


def _train_concurrently(corpus: Path, pending: dict[str, tuple[Path, Any, bool]]) -> None:
    """One ``echoasr train`` process per model, one thread each; progress bars from their
    ``progress.json``; logs in ``RUN.log``."""
    from tqdm import tqdm

    processes, bars, logs = {}, {}, {}
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for position, (label, (run, config, resume)) in enumerate(pending.items()):
        run.parent.mkdir(parents=True, exist_ok=True)
        config_file = run.parent / f"{label}.yaml"
        atomic.write_text(config_file, yaml.safe_dump(config.to_dict(), sort_keys=False))
        command = [sys.executable, "-m", "echoasr", "train", "--data", str(corpus), "--out", str(run), "--workers", "1"]
        command += ["--resume", "--threads", "1"] if resume else ["--config", str(config_file)]
        logs[label] = run.parent / f"{label}.log"
        print(f"{'resuming' if resume else 'training'} {label} -> {run} (log: {logs[label]})")
        processes[label] = subprocess.Popen(command, stdout=open(logs[label], "w"), stderr=subprocess.STDOUT,
                                            env=environment)
        bars[label] = tqdm(total=config.max_steps, desc=f"train {label}", unit="step", position=position,
                           dynamic_ncols=True)
    try:
        while any(process.poll() is None for process in processes.values()):
            time.sleep(2)
            for label, (run, _, _) in pending.items():
                progress = _read_progress(run)
                if progress:
                    bars[label].total = progress["max_steps"]
                    bars[label].n = progress["step"]
                    if progress.get("loss") is not None:
                        bars[label].set_postfix(loss=f"{progress['loss']:.3f}", refresh=False)
                    bars[label].refresh()
    except KeyboardInterrupt:
        for process in processes.values():
            process.terminate()
        raise
    finally:
        for bar in bars.values():
            bar.close()
    for label, process in processes.items():
        if process.wait() != 0:
            tail = logs[label].read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise EchoError(f"training {label} failed: {tail[0]}", logs[label])


def _read_progress(run: Path) -> dict | None:
    from echoasr.training import PROGRESS_FILE

    try:
        return json.loads((run / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _run_facts(run: Path) -> dict[str, Any]:
    summary = json.loads((run / "train_summary.json").read_text())
    config = yaml.safe_load((run / "train_config.yaml").read_text())
    return {key: summary.get(key) for key in ("steps", "train_seconds", "parameters", "train_utterances", "train_hours",
                                              "threads", "dev")} | {"features": config["model"].get("features")}


# ------------------------------------------------------------------------------ evaluation


def tune_lm_once(corpus: Path, runs: dict[str, Path], settings: DemoSettings) -> None:
    """The LM weight, word bonus and rescoring weight of each model, tuned on ``dev`` and saved
    beside its weights (``lm.json``), where ``evaluate`` finds them."""
    from echoasr.lm.arpa import default_lm
    from echoasr.tuning import tune

    lm = default_lm()
    for label, run in runs.items():
        saved = run / "lm.json"
        if saved.is_file() and saved.stat().st_mtime > (run / "model.safetensors").stat().st_mtime:
            print(f"reusing the LM settings in {saved}")
            continue
        best = tune(run, corpus, lm, split="dev", limit=settings.lm_tune_utterances)
        print(f"{label}: LM weight {best['lm_weight']:g}, word bonus {best['word_bonus']:g}, rescoring weight "
              f"{best['rescore_weight']:g} (dev WER {100 * best['dev_wer']:.1f}% on {best['utterances']} utterances)")


def evaluate_once(run: Path, manifest: Path, name: str, beams: int, search: str = "no-lm") -> dict[str, Any]:
    """``search``: ``lm`` (the tuned LM saved with the model) or ``no-lm`` (joint CTC/attention)."""
    from echoasr.evaluation import evaluate, format_result

    stem = name if search == "lm" else f"{name}.no-lm"
    target = run / "eval" / f"{stem}.json"
    newest_input = max(path.stat().st_mtime for path in (run / "model.safetensors", manifest, run / "lm.json")
                       if path.is_file())
    if target.is_file() and target.stat().st_mtime > newest_input:
        result = json.loads(target.read_text())
        # results without "failed" come from an evaluator that skipped long utterances: redo them
        if result.get("beams") == beams and result.get("data") == str(manifest) and "failed" in result:
            print(f"reusing {target}")
            return result
    result = evaluate(run, manifest, beams=beams, out=run / "eval" / f"{stem}.tsv",
                      lm=None if search == "lm" else "none")
    atomic.write_text(target, json.dumps(result, indent=1) + "\n")
    print(f"{run.name} ({search}): " + format_result(result).replace("\n", "\n  "))
    return result


def references_once(manifest: Path, target: Path, out: Path) -> dict[str, dict[str, Any]]:
    """:data:`REFERENCES` on every utterance of ``manifest`` (the same as the models'), scored
    like them, the result saved as ``target``; hypotheses in ``OUT_STEM.<recogniser>.tsv`` beside
    ``out``."""
    from echoasr.evaluation import evaluate, format_result

    if target.is_file() and target.stat().st_mtime > manifest.stat().st_mtime:
        previous = json.loads(target.read_text())
        if list(previous.get("references", {})) == list(REFERENCES) and previous.get("data") == str(manifest):
            print(f"reusing {target}")
            return previous["references"]
    result = evaluate(None, manifest, references=REFERENCES, out=out)
    atomic.write_text(target, json.dumps(result, indent=1) + "\n")
    print(format_result(result))
    return result["references"]


def results_table(results: dict[str, Any]) -> str:
    from echoasr.references import RECOGNISERS

    models, scores, references = results["models"], results["scores"], results["references"]
    columns = list(scores)  # "pitch lm", "pitch no-lm", ... (or just the model labels without the LM)
    header = (["test set"] + [f"{column} WER / CER" for column in columns]
              + [f"{RECOGNISERS[name].label} WER / CER" for name in references])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(result: dict | None) -> str:
        return "–" if result is None else f"{100 * result['wer']:.1f}% / {100 * result['cer']:.1f}%"

    def insertions(result: dict) -> str:
        return f"{100 * result['insertions'] / max(1, result['words']):.1f}%"

    for name in TEST_SETS:
        count = scores[columns[0]][name]["utterances"]
        row = [f"{name} ({count})"] + [cell(scores[column][name]) for column in columns]
        row += [cell(reference) if name == "human" else "–" for reference in references.values()]
        lines.append("| " + " | ".join(row) + " |")
    for name in TEST_SETS:
        row = [f"insertions / words, {name}"] + [insertions(scores[column][name]) for column in columns]
        row += [insertions(reference) if name == "human" else "–" for reference in references.values()]
        lines.append("| " + " | ".join(row) + " |")
    rtf = (["RTF (human)"] + [f"{scores[column]['human']['rtf']:.3f}" for column in columns]
           + [f"{reference['rtf']:.3f}" for reference in references.values()])
    lines.append("| " + " | ".join(rtf) + " |")
    notes = []
    for label, facts in models.items():
        notes.append(f"- {label}: features {'+'.join(facts['features'])}, {facts['parameters'] / 1e6:.1f} M parameters, "
                     f"{facts['steps']} steps in {facts['train_seconds'] / 60:.1f} min ({facts['threads']} thread(s)), "
                     f"{facts['train_utterances']} utterances ({facts['train_hours']:.2f} h)")
    for column in columns:
        human = scores[column]["human"]
        if human.get("lm"):
            options = human.get("lm_options") or {}
            tuned = ", ".join(f"{key} {options[key]:g}" for key in ("lm_weight", "word_bonus", "rescore_weight")
                              if key in options)
            notes.append(f"- {column}: CTC prefix search with the word LM {Path(human['lm']).name} ({tuned}, "
                         "tuned on dev), n-best rescored by the attention decoder")
        else:
            notes.append(f"- {column}: joint CTC/attention beam search, {human['beams']} beams")
    notes.append("- every utterance scored (longer than the model takes: cut at silences; unreadable: all-deleted); "
                 "RTF = wall time for features + decoding / audio duration")
    for name, reference in references.items():
        notes.append(f"- {RECOGNISERS[name].label}: the same {reference['utterances']} human utterances; RTF = time "
                     f"recognising / audio duration with {reference['threads']} thread(s)"
                     + (f" in each of {reference['processes']} processes" if reference["processes"] > 1 else ""))
    failed = {f"{column} {name}": len(scores[column][name]["failed"]) for column in columns for name in TEST_SETS}
    failed |= {name: len(reference["failed"]) for name, reference in references.items()}
    if any(failed.values()):
        notes.append("- unreadable utterances (scored as all-deleted): "
                     + ", ".join(f"{key} {count}" for key, count in failed.items() if count))
    steps = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in results["step_seconds"].items())
    notes.append(f"- wall time {results['wall_seconds'] / 60:.1f} min ({steps} min)")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
