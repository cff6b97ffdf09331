"""Experiment plans: named configurations (a training preset + model overrides), each compared
with its plain counterpart(s), trained at one budget.

A plan file (YAML)::

    name: my-plan
    preset: tiny                 # default preset of every configuration
    train: {max_steps: 600}      # training options shared by every run (equal budgets)
    eval_beams: 4
    configurations:
      - name: plain
        question: position
        model: {features: [mel], rotary_theta_mode: none}
      - name: phase
        question: position
        baseline: plain          # or a list of names
        model: {rotary_theta_mode: phase}

Model overrides merge into the preset's model options key by key, so a configuration states only
what it changes.

The analysis is stated in the plan, before it runs (pre-registration)::

    primary_metric: cer          # the metric verdicts are given on (the other one is descriptive)
    alpha: 0.05
    equivalence_margin: 0.01     # TOST margin, error-rate fraction (0.01 = 1 point)
    families:                    # Holm within each family; default: one family per question
      - name: position
        contrasts: [phase vs plain]
        sets: [test_unseen]      # default: every test set of the run
        margin: 0.02             # default: the plan's
    manipulation_sets: [human]   # f0 replaced at test time on runs that read f0 (default: the
                                 # corpus split; [] = none), reported as the manipulation check
    order: seed                  # runs seed by seed (every configuration of seed 0 first), so an
                                 # interrupted grid is balanced; default: configuration by configuration

Every contrast of a family is tested on each of its sets on the primary metric; a comparison in no
family is reported as exploratory, without a verdict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from echoasr.errors import EchoError
from echoasr.training import PITCH_MODEL, PLAIN_MODEL

QUESTIONS = {
    "inputs": "Which input features: is f0 a better input than the spectrogram?",
    "f0": "How should f0 enter the input stem (raw Hz, per-utterance log z-score, voicing only)?",
    "position": "Can pitch enter the positional encoding or the attention scores usefully?",
    "seed": "The original (seed) configuration against the plain model.",
    "control": "Positive control: does the pitch pathway work where pitch carries the label (Mandarin tones)?",
}


@dataclass
class Configuration:
    name: str
    question: str
    model: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    preset: str | None = None  # None: the plan's preset
    train: dict[str, Any] = field(default_factory=dict)  # per-configuration training options (the seed's optimizer)
    description: str = ""


METRICS = ("wer", "cer")
DEFAULT_MARGIN = 0.01  # 1 error-rate point
ORDERS = ("configuration", "seed")


@dataclass
class Family:
    """Contrasts tested together: Holm's correction runs over every (contrast, set) of a family."""

    name: str
    contrasts: list[tuple[str, str]]  # (baseline, system)
    sets: list[str] | None = None  # None: every test set of the experiment
    margin: float | None = None  # None: the plan's equivalence margin


@dataclass
class Plan:
    name: str
    preset: str
    configurations: list[Configuration]
    train: dict[str, Any] = field(default_factory=dict)
    eval_beams: int = 4
    seeds: int = 3
    primary_metric: str = "cer"
    alpha: float = 0.05
    equivalence_margin: float = DEFAULT_MARGIN
    families: list[Family] = field(default_factory=list)  # empty: one family per question
    # test sets of the f0 manipulation check (runs that read f0); None: the corpus split, []: none
    manipulation_sets: list[str] | None = None
    order: str = "configuration"  # run order: every seed of a configuration, or ("seed") every configuration of a seed

    def configuration(self, name: str) -> Configuration:
        for configuration in self.configurations:
            if configuration.name == name:
                return configuration
        raise KeyError(name)

    def comparisons(self) -> list[tuple[str, str]]:
        """(counterpart, configuration) pairs, in plan order."""
        return [(baseline, c.name) for c in self.configurations for baseline in c.baselines]

    def analysis_families(self) -> list[Family]:
        """The plan's families, or by default one per question holding every comparison whose
        configuration asks it."""
        if self.families:
            return self.families
        by_question: dict[str, list[tuple[str, str]]] = {}
        for baseline, system in self.comparisons():
            by_question.setdefault(self.configuration(system).question, []).append((baseline, system))
        return [Family(question, contrasts) for question, contrasts in by_question.items()]

    def train_config(self, configuration: Configuration, seed: int, threads: int | None = None):
        """The :class:`~echoasr.training.TrainConfig` of one run."""
        from echoasr.training import resolve_config

        overrides = {**self.train, **configuration.train, "model": configuration.model, "seed": seed, "threads": threads}
        return resolve_config(configuration.preset or self.preset, overrides=overrides)

    def check(self, source: str = "plan") -> None:
        names = [c.name for c in self.configurations]
        if len(set(names)) != len(names):
            raise EchoError(f"duplicate configuration names in {names}", source)
        for configuration in self.configurations:
            unknown = [b for b in configuration.baselines if b not in names]
            if unknown:
                raise EchoError(f"{configuration.name}: unknown baseline(s) {unknown}", source)
            if configuration.question not in QUESTIONS:
                raise EchoError(f"{configuration.name}: question must be one of {list(QUESTIONS)}", source)
            try:
                self.train_config(configuration, 0)
            except EchoError as error:
                raise EchoError(f"configuration {configuration.name}: {error}", source) from None
        if self.order not in ORDERS:
            raise EchoError(f"order must be one of {list(ORDERS)}", source)
        if self.primary_metric not in METRICS:
            raise EchoError(f"primary_metric must be one of {list(METRICS)}", source)
        if not 0 < self.alpha < 0.5:
            raise EchoError("alpha must lie in (0, 0.5)", source)
        family_names = [f.name for f in self.families]
        if len(set(family_names)) != len(family_names):
            raise EchoError(f"duplicate family names in {family_names}", source)
        for family in self.families:
            unknown = sorted({n for pair in family.contrasts for n in pair} - set(names))
            if unknown or not family.contrasts:
                raise EchoError(f"family {family.name}: " + (f"unknown configuration(s) {unknown}" if unknown
                                                             else "no contrasts"), source)
        for margin in [self.equivalence_margin] + [f.margin for f in self.families if f.margin is not None]:
            if not 0 < margin < 1:
                raise EchoError(f"an equivalence margin is an error-rate fraction in (0, 1), not {margin}", source)


def _configuration(name: str, question: str, model: dict[str, Any], baselines: str | list[str] | None = None,
                   description: str = "", **options: Any) -> Configuration:
    if isinstance(baselines, str):
        baselines = [baselines]
    return Configuration(name, question, model, list(baselines or []), description=description, **options)


MEL_F0 = dict(PLAIN_MODEL, features=["mel", "f0"])


def _quick() -> Plan:
    c = _configuration
    return Plan(
        name="quick", preset="tiny",
        # Sized for ~55 min on 2 cores (27 runs, 2 at a time): measured 0.15 CPU s per step of
        # `all-pitch` at one thread, ~45 s of set-up and evaluation per run (docs/experiments.md).
        train=dict(max_steps=1000, max_minutes=None, eval_steps=250, save_steps=250, logging_steps=25, dev_limit=40,
                   batch_frames=6000, learning_rate=3e-3, warmup_steps=100),
        eval_beams=1,
        configurations=[
            c("plain", "position", PLAIN_MODEL, description="mel input, plain RoPE"),
            c("mel+f0", "inputs", MEL_F0, "plain", "mel + f0 (log z) input stems, plain RoPE"),
            c("f0-only", "inputs", dict(PLAIN_MODEL, features=["f0"]), "plain", "f0 (log z) input only (the seed's claim)"),
            c("phase", "position", dict(PLAIN_MODEL, rotary_theta_mode="phase"), "plain", "+ pitch-warped rotary phase"),
            c("phase-median", "position", dict(PLAIN_MODEL, rotary_theta_mode="phase_median"), ["phase", "plain"],
              "+ phase clock normalised by the utterance's median voiced f0"),
            c("radius", "position", dict(PLAIN_MODEL, rotary_radius="bounded"), "plain", "+ bounded rotary radius"),
            c("pitch-bias", "position", dict(PLAIN_MODEL, pitch_bias=True), ["plain", "voicing-bias"],
              "+ pitch-similarity attention bias"),
            c("voicing-bias", "position", dict(PLAIN_MODEL, pitch_bias=True, pitch_bias_mode="voicing"), "plain",
              "+ voicing-only attention bias (control)"),
            c("all-pitch", "position", PITCH_MODEL, "plain", "mel + f0, phase, bounded radius, pitch bias"),
        ],
    )


def _full() -> Plan:
    c = _configuration
    plain = PLAIN_MODEL
    return Plan(
        name="full", preset="small",
        train=dict(max_minutes=None),  # the small preset's 2,800 steps
        eval_beams=8,
        # Runs go in this order (every seed of one configuration, then the next), so an interrupted
        # grid has answered the headline comparisons first: f0 beside the mel, every pitch mechanism
        # together, then each mechanism, then the other inputs.
        configurations=[
            c("plain", "position", plain, description="mel input, plain RoPE"),
            c("mel+f0", "inputs", MEL_F0, "plain", "mel + f0 (log z)"),
            c("all-pitch", "position", PITCH_MODEL, "plain", "mel + f0, phase, bounded radius, pitch bias"),
            # position mechanisms
            c("phase-median", "position", dict(plain, rotary_theta_mode="phase_median"), ["phase", "plain"],
              "+ phase clock normalised by median voiced f0"),
            c("phase", "position", dict(plain, rotary_theta_mode="phase"), "plain", "+ pitch-warped rotary phase"),
            c("pitch-bias", "position", dict(plain, pitch_bias=True), ["plain", "voicing-bias"], "+ pitch bias"),
            c("voicing-bias", "position", dict(plain, pitch_bias=True, pitch_bias_mode="voicing"), "plain",
              "+ voicing-only bias (control)"),
            c("radius", "position", dict(plain, rotary_radius="bounded"), "plain", "+ bounded radius"),
            c("radius-raw", "position", dict(plain, rotary_radius="raw"), "plain", "+ raw radius (seed-faithful)"),
            c("additive", "position", dict(plain, rotary_theta_mode="additive"), "plain", "+ additive theta (seed)"),
            c("no-positions", "position", dict(plain, rotary_positions=False), "plain", "no encoder positions"),
            # inputs
            c("f0-only", "inputs", dict(plain, features=["f0"]), "plain", "f0 (log z) input only (the seed's claim)"),
            c("world", "inputs", dict(plain, features=["harmonic", "aperiodic"]), "plain", "WORLD harmonic + aperiodic"),
            c("world+f0", "inputs", dict(plain, features=["harmonic", "aperiodic", "f0"]), "world",
              "WORLD harmonic + aperiodic + f0"),
            c("waveform", "inputs", dict(plain, features=["waveform"]), "plain", "waveform frames"),
            # f0 representation (mel + f0, the f0 channel changes)
            c("mel+f0-hz", "f0", dict(MEL_F0, feature_f0_representation="hz"), "mel+f0", "f0 as Hz / 150, not normalised"),
            c("mel+f0-voicing", "f0", dict(MEL_F0, feature_f0_representation="voicing"), "mel+f0", "voicing flag only"),
            # the seed configuration, with its own optimizer and options
            c("seed", "seed", {}, "plain", "the seed preset (MaxFactor, the original components)", preset="seed"),
        ],
    )


def _tones() -> Plan:
    """The positive control on the Mandarin tones corpus (``echoasr data tones``, docs/experiments.md)."""
    c = _configuration
    return Plan(
        name="tones", preset="tiny",
        # Sized for ~3-4 min per run at one thread: 0.065 s per step of the tiny preset on this
        # corpus (0.09-0.11 on a loaded machine), ~6 s of set-up, ~12 s of greedy decoding per test
        # set. At 700 steps all-pitch was already at 1% dev WER and plain at 44%.
        train=dict(max_steps=2000, max_minutes=None, eval_steps=1000, save_steps=500, logging_steps=50, dev_limit=40,
                   batch_frames=6000, learning_rate=3e-3, warmup_steps=100),
        eval_beams=1,
        primary_metric="wer",  # a word is a syllable with its tone: WER counts syllable and tone errors
        configurations=[
            c("plain", "control", PLAIN_MODEL, description="mel input, plain RoPE"),
            c("mel+f0", "control", MEL_F0, "plain", "mel + f0 (log z) input stems, plain RoPE"),
            c("all-pitch", "control", PITCH_MODEL, "plain", "mel + f0, phase, bounded radius, pitch bias"),
        ],
        families=[Family("tones", [("plain", "mel+f0"), ("plain", "all-pitch")], sets=["test_unseen", "test_seen"])],
    )


BUILTIN_PLANS = {"quick": _quick, "full": _full, "tones": _tones}


def parse_contrast(text: str, source: str | os.PathLike = "plan") -> tuple[str, str]:
    """``"SYSTEM vs BASELINE"`` -> (baseline, system)."""
    system, separator, baseline = str(text).partition(" vs ")
    if not separator or not system.strip() or not baseline.strip():
        raise EchoError(f"a contrast is written 'SYSTEM vs BASELINE', not {text!r}", source)
    return baseline.strip(), system.strip()


def _family(entry: Any, path: Path) -> Family:
    if not isinstance(entry, dict) or "name" not in entry or not isinstance(entry.get("contrasts"), list):
        raise EchoError("every family needs a name and a list of contrasts", path)
    extra = set(entry) - {"name", "contrasts", "sets", "margin"}
    if extra:
        raise EchoError(f"family {entry['name']}: unknown key(s) {sorted(extra)}", path)
    sets = entry.get("sets")
    return Family(str(entry["name"]), [parse_contrast(c, path) for c in entry["contrasts"]],
                  None if sets is None else [str(s) for s in sets],
                  None if entry.get("margin") is None else float(entry["margin"]))


def load_plan(name_or_file: str | os.PathLike) -> Plan:
    """A built-in plan by name, or a YAML plan file."""
    if str(name_or_file) in BUILTIN_PLANS:
        plan = BUILTIN_PLANS[str(name_or_file)]()
        plan.check(str(name_or_file))
        return plan
    path = Path(name_or_file)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise EchoError(f"not a built-in plan ({', '.join(BUILTIN_PLANS)}) and cannot be read: {error.strerror}",
                        path) from None
    except yaml.YAMLError as error:
        raise EchoError(f"not valid YAML: {error}", path) from None
    if not isinstance(document, dict) or not isinstance(document.get("configurations"), list):
        raise EchoError("a plan file needs a list under configurations:", path)
    unknown = set(document) - {"name", "preset", "train", "eval_beams", "seeds", "configurations", "primary_metric",
                               "alpha", "equivalence_margin", "families", "manipulation_sets", "order"}
    if unknown:
        raise EchoError(f"unknown plan key(s) {sorted(unknown)}", path)
    configurations = []
    for entry in document["configurations"]:
        if not isinstance(entry, dict) or "name" not in entry:
            raise EchoError("every configuration needs a name", path)
        extra = set(entry) - {"name", "question", "model", "baseline", "preset", "train", "description"}
        if extra:
            raise EchoError(f"configuration {entry['name']}: unknown key(s) {sorted(extra)}", path)
        configurations.append(_configuration(
            str(entry["name"]), entry.get("question", "position"), dict(entry.get("model") or {}), entry.get("baseline"),
            entry.get("description", ""), preset=entry.get("preset"), train=dict(entry.get("train") or {})))
    checks = document.get("manipulation_sets")
    if checks is not None and not isinstance(checks, list):
        raise EchoError("manipulation_sets is a list of test-set names", path)
    plan = Plan(name=str(document.get("name", path.stem)), preset=str(document.get("preset", "small")),
                configurations=configurations, train=dict(document.get("train") or {}),
                eval_beams=int(document.get("eval_beams", 4)), seeds=int(document.get("seeds", 3)),
                primary_metric=str(document.get("primary_metric", "cer")), alpha=float(document.get("alpha", 0.05)),
                equivalence_margin=float(document.get("equivalence_margin", DEFAULT_MARGIN)),
                families=[_family(entry, path) for entry in document.get("families") or []],
                manipulation_sets=None if checks is None else [str(name) for name in checks],
                order=str(document.get("order", "configuration")))
    plan.check(str(path))
    return plan
