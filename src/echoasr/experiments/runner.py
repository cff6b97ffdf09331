"""Run an experiment plan: every (configuration, seed) trained at the plan's budget and evaluated,
resumably, through :func:`echoasr.training.train` and :func:`echoasr.evaluation.evaluate` only.

``OUT/runs/<configuration>/seed<k>/`` is one training run; ``OUT/utterances.tsv.gz`` holds every
run's per-utterance errors with the speaker ids (:func:`~.report.write_utterances`). Its ``result.json`` (written last,
atomically) is the done-marker: a run that has one is skipped. A run with checkpoints but no
finished training is resumed from its latest checkpoint (training's ``resume``); a finished
training without a result is only evaluated, and a finished run is evaluated only on the test sets
its result lacks (a set added to the grid later). Runs go in parallel as separate processes (one
torch thread each by default), like the demo's two trainings on two cores.

Every run whose model reads f0 (an f0 input or a pitch mechanism: :func:`model_reads_f0`) is also
scored on the plan's manipulation sets (``Plan.manipulation_sets``, default the corpus split) with
its f0 replaced at test time (:func:`echoasr.experiments.manipulation.evaluate_replaced_f0`:
shuffled across utterances, and flat at the speaker's median), under ``result["manipulation"]
[set][replacement]``. The result is written before these checks and again after each, so a run
stopped during them (or finished before they existed) gets only the missing ones.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.experiments.plans import Plan
from echoasr.training import PROGRESS_FILE

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# Training options that may differ between a run's saved configuration and the plan without
# changing the experiment: threads change no result; max_steps is checked on the finished run.
_IGNORED_OPTIONS = {"threads", "max_steps"}


@dataclass
class RunTask:
    configuration: str
    seed: int
    folder: str
    data: str
    config: dict[str, Any]  # the TrainConfig as a dict
    test_sets: dict[str, str]  # name -> "DIR::split" or a manifest path
    beams: int
    threads: int | None
    cache_dir: str | None
    manipulation_sets: list[str] = field(default_factory=list)  # names in test_sets; empty: no checks


# f0 replacements of the manipulation check, each with its options of evaluate_replaced_f0
MANIPULATIONS = {"shuffled": {}, "median": {"by_speaker": True}}


def run_folder(out: Path, configuration: str, seed: int) -> Path:
    return out / "runs" / configuration / f"seed{seed}"


def named_test_sets(data: str | os.PathLike, split: str, human: str | os.PathLike | None,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """Test-set name -> ``DIR::split`` (a split of the corpus) or a manifest path."""
    sets = {split: f"{data}::{split}"}
    if human is not None:
        sets["human"] = str(human)
    for name, manifest in (extra or {}).items():
        if name in sets:
            raise EchoError(f"test set name {name!r} is taken (the corpus split or --human)")
        if not Path(manifest).is_file():
            raise EchoError(f"test set {name}: no such manifest", manifest)
        sets[name] = str(manifest)
    return sets


def checked_sets(plan: Plan, sets: dict[str, str], split: str) -> list[str]:
    """The test sets the manipulation check runs on: the plan's ``manipulation_sets``, by default
    the corpus ``split``."""
    names = [split] if plan.manipulation_sets is None else list(plan.manipulation_sets)
    unknown = [name for name in names if name not in sets]
    if unknown:
        raise EchoError(f"plan {plan.name}: manipulation_sets names no test set of the run: {unknown} "
                        f"(test sets: {list(sets)})")
    return names


def model_reads_f0(model: dict[str, Any]) -> bool:
    """Whether a model (its options, as in a TrainConfig) reads f0: as an input stem or through a
    pitch mechanism (rotary phase or radius, pitch bias), with its f0 as measured; a plain model's
    output, or one fed a constant f0 (``pitch_f0_source``), cannot change when f0 is replaced, so
    it gets no manipulation check."""
    from echoasr.model import EchoConfig
    from echoasr.processor import model_features

    config = EchoConfig(vocab_size=64, **model)
    return "f0" in model_features(config) and config.pitch_f0_source == "measured"


def plan_tasks(plan: Plan, data, out: Path, seeds: int, threads: int | None, sets: dict[str, str],
               cache_dir, manipulation_sets: list[str] = ()) -> list[RunTask]:
    """``manipulation_sets``: the sets (names in ``sets``) every f0-reading run is checked on."""
    tasks = []
    pairs = [(c, seed) for c in plan.configurations for seed in range(seeds)]
    if plan.order == "seed":
        pairs.sort(key=lambda pair: pair[1])  # stable: configurations in plan order within a seed
    for configuration, seed in pairs:
        config = plan.train_config(configuration, seed, threads)
        folder = run_folder(out, configuration.name, seed)
        _check_same_config(folder, config.to_dict())
        checks = list(manipulation_sets) if model_reads_f0(config.model) else []
        tasks.append(RunTask(configuration.name, seed, str(folder), str(data), config.to_dict(), sets,
                             plan.eval_beams, threads, None if cache_dir is None else str(cache_dir), checks))
    return tasks


def _check_same_config(folder: Path, expected: dict[str, Any]) -> None:
    saved = folder / "train_config.yaml"
    if not saved.is_file():
        return
    from echoasr.training import TrainConfig

    # options added to TrainConfig since the run started take their defaults, as when it resumes
    previous = TrainConfig.from_dict(yaml.safe_load(saved.read_text()) or {}, str(saved)).to_dict()
    differing = sorted(k for k in set(previous) | set(expected)
                       if k not in _IGNORED_OPTIONS and previous.get(k) != expected.get(k))
    if differing:
        raise EchoError(f"was started with another configuration ({', '.join(differing)} differ); "
                        "use another --out for a changed plan", folder)


def prepare_features(tasks: list[RunTask], progress: bool = True) -> None:
    """Fill the feature cache once for every split and feature the runs need, before the runs
    start in parallel (so no two processes extract the same features)."""
    from echoasr.data import load_dataset_any
    from echoasr.data.featurize import extract_features
    from echoasr.features import FeatureSettings
    from echoasr.model import EchoConfig
    from echoasr.processor import model_features
    from echoasr.training import TrainConfig

    needs: dict[tuple[str, float, int | None], set[str]] = {}
    for task in tasks:
        config = TrainConfig.from_dict(task.config)
        features = model_features(EchoConfig(vocab_size=64, **config.model))
        needs.setdefault((config.f0_method, config.max_duration, config.train_limit), set()).update(features)
    cache = tasks[0].cache_dir
    if cache is None:
        return
    for (f0_method, max_duration, train_limit), features in needs.items():
        sources = [(tasks[0].data, "train"), (tasks[0].data, "dev")] + [_source(s) for s in tasks[0].test_sets.values()]
        for source, split in sources:
            if split is not None and not _has_split(Path(source), split):
                continue
            utterances = load_dataset_any(source, split=split, max_duration=max_duration)
            if split == "train" and train_limit:
                utterances = utterances[:train_limit]  # what training reads
            extract_features(utterances, sorted(features), FeatureSettings(f0_method=f0_method), cache_dir=cache,
                             progress=progress, description=f"{split or Path(source).stem} features")


def _has_split(folder: Path, split: str) -> bool:
    return any((folder / f"{split}{suffix}").is_file() for suffix in (".tsv", ".jsonl"))


def _source(test_set: str) -> tuple[str, str | None]:
    source, _, split = test_set.partition("::")
    return source, split or None


def execute_run(task: RunTask) -> dict[str, Any]:
    """Train (or resume) and evaluate one run, then its manipulation checks; returns and writes its
    result."""
    folder = Path(task.folder)
    if (folder / RESULT_FILE).is_file():
        result = json.loads((folder / RESULT_FILE).read_text())
        missing = {n: s for n, s in task.test_sets.items() if n not in result["sets"]}
        if missing:  # a test set added to the grid after this run finished: evaluate only that
            result["sets"].update(_evaluate_sets(task, missing))
            atomic.write_text(folder / RESULT_FILE, json.dumps(result) + "\n")
    else:
        result = _train_and_evaluate(task)
    for name in task.manipulation_sets:
        checks = result.setdefault("manipulation", {}).setdefault(name, {})
        for replacement in MANIPULATIONS:
            if replacement not in checks:
                checks[replacement] = _evaluate_replaced_f0(task, name, replacement)
                atomic.write_text(folder / RESULT_FILE, json.dumps(result) + "\n")
    return result


def _train_and_evaluate(task: RunTask) -> dict[str, Any]:
    from echoasr import training
    from echoasr.training import CONFIG_FILE, SUMMARY_FILE, TrainConfig

    folder = Path(task.folder)
    config = TrainConfig.from_dict(task.config)
    summary = json.loads((folder / SUMMARY_FILE).read_text()) if (folder / SUMMARY_FILE).is_file() else None
    if summary is None or summary["steps"] < config.max_steps:
        if (folder / CONFIG_FILE).is_file():
            log.info("%s: resuming from its latest checkpoint", folder)
            summary = training.train(task.data, folder, resume=True, cache_dir=task.cache_dir, progress=False,
                                     resume_overrides={"max_steps": config.max_steps, "threads": task.threads})
        else:
            summary = training.train(task.data, folder, config, cache_dir=task.cache_dir, progress=False)
    sets = _evaluate_sets(task, task.test_sets)
    result = {
        "configuration": task.configuration, "seed": task.seed,
        "parameters": summary["parameters"], "steps": summary["steps"], "train_seconds": summary["train_seconds"],
        "threads": summary["threads"], "dev": summary.get("dev"),
        "log_history": summary.get("log_history", []), "sets": sets,
    }
    atomic.write_text(folder / RESULT_FILE, json.dumps(result) + "\n")
    return result


def _evaluate_sets(task: RunTask, test_sets: dict[str, str]) -> dict[str, dict[str, Any]]:
    from echoasr.evaluation import evaluate

    folder = Path(task.folder)
    sets = {}
    for name, test_set in test_sets.items():
        source, split = _source(test_set)
        metrics = evaluate(folder, source, split=split, beams=task.beams, threads=task.threads,
                           cache_dir=task.cache_dir, out=folder / "eval" / f"{name}.tsv", progress=False)
        sets[name] = {"wer": metrics["wer"], "cer": metrics["cer"], "utterances": metrics["utterances"],
                      **per_utterance_errors(Path(metrics["hypotheses"]))}
    return sets


def _evaluate_replaced_f0(task: RunTask, name: str, replacement: str) -> dict[str, Any]:
    """One manipulation check of a run on the test set ``name``, scored like its intact evaluation."""
    from echoasr.experiments import manipulation

    folder = Path(task.folder)
    source, split = _source(task.test_sets[name])
    # the run's seed draws the shuffle, so the interval over runs covers the choice of donors too
    metrics = manipulation.evaluate_replaced_f0(folder, source, replacement, split=split, beams=task.beams,
                                                threads=task.threads, cache_dir=task.cache_dir, seed=task.seed,
                                                out=folder / "eval" / f"{name}.f0-{replacement}.tsv",
                                                **MANIPULATIONS[replacement])
    return {"wer": metrics["wer"], "cer": metrics["cer"], "utterances": metrics["utterances"],
            "f0_replacement": metrics["f0_replacement"], **per_utterance_errors(Path(metrics["hypotheses"]))}


def per_utterance_errors(tsv: Path) -> dict[str, list]:
    """Per-utterance word and character errors (and reference lengths) from evaluate's TSV; the
    sums reproduce jiwer's corpus-level WER and CER."""
    import jiwer

    ids, word_errors, words, char_errors, chars = [], [], [], [], []
    header, *lines = tsv.read_text(encoding="utf-8").splitlines()
    columns = {name: index for index, name in enumerate(header.split("\t"))}
    for line in lines:
        cells = line.split("\t")
        reference, hypothesis = cells[columns["reference"]], cells[columns["hypothesis"]]
        ids.append(cells[columns["id"]])
        word_errors.append(int(cells[columns["word_errors"]]))
        words.append(int(cells[columns["reference_words"]]))
        if reference:
            measure = jiwer.process_characters(reference, hypothesis)
            char_errors.append(measure.substitutions + measure.deletions + measure.insertions)
            chars.append(measure.hits + measure.substitutions + measure.deletions)
        else:
            char_errors.append(0)
            chars.append(0)
    return {"ids": ids, "word_errors": word_errors, "words": words, "char_errors": char_errors, "chars": chars}


def _steps_done(task: RunTask) -> int:
    folder = Path(task.folder)
    if (folder / RESULT_FILE).is_file():
        return task.config["max_steps"]
    try:
        return int(json.loads((folder / PROGRESS_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def restore_runs(plan: Plan, tasks: list[RunTask], report: str | os.PathLike) -> list[str]:
    """Write the ``result.json`` of every task that has none but whose run the committed report
    folder ``report`` holds (``results.json`` with ``utterances.tsv.gz``: :func:`~.report.committed_runs`),
    so that a fresh clone resumes a long plan where the report stopped instead of running it again.
    The report must come from the same plan definition (its seed count aside) and score the same
    utterances; a restored run has no model, so it is only ever reported. Returns the restored
    runs as ``configuration/seed<k>``."""
    from echoasr.experiments.report import committed_runs

    report = Path(report)
    if not (report / "results.json").is_file():
        raise EchoError("no results.json to restore runs from", report)
    previous, runs = committed_runs(report)
    definition = previous["settings"].get("plan_definition") or {}
    expected = json.loads(json.dumps(asdict(plan)))
    differing = sorted(k for k in set(definition) | set(expected) if k != "seeds" and definition.get(k) != expected.get(k))
    if differing:
        raise EchoError(f"was run under another definition of plan {plan.name!r} ({', '.join(differing)} differ)", report)
    by_run = {(run["configuration"], run["seed"]): run for run in runs}
    test_ids = {name: set(ids) for name, ids in test_set_speakers(tasks[0].test_sets).items()} if tasks else {}
    restored = []
    for task in tasks:
        run = by_run.get((task.configuration, task.seed))
        result_file = Path(task.folder) / RESULT_FILE
        if run is None or result_file.is_file():
            continue
        name = f"{task.configuration}/seed{task.seed}"
        checks = run.get("manipulation", {})
        scorings = [(set_name, set_name, run["sets"].get(set_name, {})) for set_name in task.test_sets]
        scorings += [(set_name, f"{set_name} ({replacement} f0)", checks.get(set_name, {}).get(replacement, {}))
                     for set_name in task.manipulation_sets for replacement in MANIPULATIONS]
        for set_name, label, scored in scorings:
            if "ids" not in scored:
                raise EchoError(f"{name} has no per-utterance errors on {label}; without its model it cannot be "
                                "scored there, so it cannot be restored", report)
            if set(scored["ids"]) != test_ids[set_name]:
                raise EchoError(f"{name} was scored on other utterances of {set_name} than {task.test_sets[set_name]} "
                                "holds", report)
        Path(task.folder).mkdir(parents=True, exist_ok=True)
        atomic.write_text(result_file, json.dumps({**run, "restored_from": str(report)}) + "\n")
        restored.append(name)
    return restored


def run_tasks(tasks: list[RunTask], parallel: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Execute every task (finished ones are read back), ``parallel`` processes at a time; one
    progress bar counts training steps over the whole grid."""
    from tqdm import tqdm

    done = sum((Path(t.folder) / RESULT_FILE).is_file() for t in tasks)
    if done:
        log.info("%d of %d runs already finished: skipped", done, len(tasks))
    total = sum(t.config["max_steps"] for t in tasks)
    results: dict[int, dict[str, Any]] = {}
    with tqdm(total=total, desc=f"experiment ({len(tasks)} runs)", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        def refresh() -> None:
            bar.n = sum(_steps_done(t) for t in tasks)
            bar.set_postfix(runs=f"{len(results)}/{len(tasks)}")
            bar.refresh()

        if parallel <= 1:
            for index, task in enumerate(tasks):
                results[index] = execute_run(task)
                refresh()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(parallel, mp_context=context) as pool:
                pending = {pool.submit(execute_run, task): index for index, task in enumerate(tasks)}
                while pending:
                    finished, _ = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        index = pending.pop(future)
                        try:
                            results[index] = future.result()
                        except EchoError as error:
                            raise EchoError(f"run {tasks[index].configuration} seed {tasks[index].seed}: {error}") from None
                    refresh()
    return [results[i] for i in range(len(tasks))]


def run_experiment(plan: Plan, data: str | os.PathLike, out: str | os.PathLike, *, seeds: int | None = None,
                   parallel: int = 1, threads: int | None = None, human: str | os.PathLike | None = None,
                   split: str = "test_unseen", tests: dict[str, str] | None = None,
                   cache_dir: str | os.PathLike | None = None, progress: bool = True, plots: bool = True,
                   report_only: bool = False, restore: str | os.PathLike | None = None,
                   plan_source: str | None = None) -> dict[str, Any]:
    """Run (or resume) ``plan`` on the corpus ``data`` into ``out``; writes ``results.json``,
    ``report.md`` and plots, and returns the results. Every run is tested on the corpus's ``split``,
    on ``human`` (a manifest) and on ``tests`` (name -> manifest); a set added later is evaluated
    on the runs that finished without it.

    ``report_only``: train and evaluate nothing; report the runs finished so far (an interim look at
    a long grid, safe while another invocation runs it: every result file is written atomically).
    ``restore``: a committed report folder of this plan whose runs count as finished
    (:func:`restore_runs`). ``plan_source``: how the plan was named (a built-in name or its file),
    for the report's command line (default the plan's name)."""
    from echoasr.data.featurize import default_cache_dir
    from echoasr.experiments.report import UTTERANCES_FILE, build_results, write_report, write_utterances

    out = Path(out)
    if not Path(data).is_dir() or not _has_split(Path(data), "train"):
        raise EchoError("not a corpus folder with a train manifest", data)
    if not _has_split(Path(data), split):
        raise EchoError(f"has no {split} split (--split)", data)
    if human is not None and not Path(human).is_file():
        raise EchoError("no such human-set manifest", human)
    seeds = seeds or plan.seeds
    if threads is None and parallel > 1:
        threads = 1
    cache = cache_dir if cache_dir is not None else default_cache_dir(data)
    sets = named_test_sets(data, split, human, tests)
    tasks = plan_tasks(plan, data, out, seeds, threads, sets, cache, checked_sets(plan, sets, split))
    start = time.monotonic()
    if restore is not None:
        log.info("%s: %d finished runs restored into %s", restore, len(restore_runs(plan, tasks, restore)), out)
    if report_only:
        finished = [t for t in tasks if (Path(t.folder) / RESULT_FILE).is_file()]
        if not finished:
            raise EchoError(f"no finished runs to report yet (0 of {len(tasks)})", out)
        runs = [json.loads((Path(t.folder) / RESULT_FILE).read_text()) for t in finished]
    else:
        out.mkdir(parents=True, exist_ok=True)
        prepare_features(tasks, progress)
        runs = run_tasks(tasks, parallel, progress)
    done = {(r["configuration"], r["seed"]) for r in runs}
    results = build_results(plan, runs, settings={
        "plan": plan.name, "plan_source": plan_source or plan.name, "data": str(data), "split": split,
        "human": None if human is None else str(human),
        "test_sets": sets,
        "manipulation_sets": checked_sets(plan, sets, split),
        "seeds": seeds, "parallel": parallel, "threads": threads, "eval_beams": plan.eval_beams,
        "wall_seconds_this_invocation": round(time.monotonic() - start, 1),
        "runs_planned": len(tasks), "runs_finished": len(runs),
        "runs_missing": [f"{t.configuration}/seed{t.seed}" for t in tasks if (t.configuration, t.seed) not in done],
        "plan_definition": asdict(plan),
    })
    figures = _utterance_figure(plan, data, split, out, seeds, done) if plots else {}
    write_report(results, out, plots=plots, extra_figures=figures)
    rows = write_utterances(out / UTTERANCES_FILE, runs, test_set_speakers(sets))
    log.info("%s: %d per-utterance rows (every run, every test set)", out / UTTERANCES_FILE, rows)
    return results


def test_set_speakers(sets: dict[str, str]) -> dict[str, dict[str, str]]:
    """Test-set name -> utterance id -> speaker, from the sets' manifests."""
    from echoasr.evaluation import load_test_set

    return {name: {u.id: u.speaker for u in load_test_set(*_source(test_set))} for name, test_set in sets.items()}


def _utterance_figure(plan: Plan, data, split: str, out: Path, seeds: int,
                      done: set[tuple[str, int]]) -> dict[str, str]:
    """f0, rotary angle/radius and attention maps for the first test utterance: the configuration
    with every pitch mechanism (`all-pitch`, else the last one using pitch) against the first
    (plain) configuration, seed 0; none until both runs (in ``done``) have finished."""
    from echoasr.data import load_dataset_any
    from echoasr.experiments.plots import draw_utterance
    from echoasr.model import EchoConfig

    plain = plan.configurations[0]
    pitched = [c for c in plan.configurations[1:] if c.model.get("rotary_theta_mode", "none") != "none"
               and EchoConfig(vocab_size=64, **plan.train_config(c, 0).model).attention_score == "dot"]
    if not pitched:
        return {}
    chosen = next((c for c in pitched if c.name == "all-pitch"), pitched[-1])
    folders = [run_folder(out, chosen.name, 0), run_folder(out, plain.name, 0)]
    if not {(chosen.name, 0), (plain.name, 0)} <= done or not all((f / "model.safetensors").is_file() for f in folders):
        return {}  # not finished, or restored from a report (no model)
    utterance = load_dataset_any(data, split=split)[0]
    path = out / "plots" / "utterance.png"
    draw_utterance(*folders, utterance, path)
    return {f"One {split} utterance: f0, rotary angle and radius, layer-1 attention ({chosen.name} vs {plain.name}, "
            "seed 0)": str(path.relative_to(out))}
