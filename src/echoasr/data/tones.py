"""The Mandarin tones corpus (``echoasr data tones``): a positive control for the pitch pathway.

Short phrases of 2-4 pinyin syllables (``ma1 ba3 di4``), read by espeak-ng's ``cmn-latn-pinyin``
voice, where the tone is part of the label: the same syllable with another tone is another word.
Tones are f0 contours (1 high level, 2 rising, 3 low, 4 falling), so a model that uses pitch
should make fewer tone errors than one that does not.

Speakers are espeak-ng variants at fixed pitch settings (``-p``), e.g. ``m3-p40``; the speed
(``-s``) and the level vary per utterance. ``test_unseen`` uses held-out variants at held-out
pitch settings only, so none of its speakers shares a variant or a pitch setting with training;
``dev`` and ``test_seen`` use the training speakers. Every evaluation utterance has its own
phrase, and no evaluation phrase occurs in training (the same syllables with other tones may).

Transcripts write each tone as a letter after its syllable (``maˉ baˇ diˋ``,
:mod:`echoasr.text.pinyin`), which the normaliser and tokenizers keep. The layout is the synthetic
corpus's: ``DIR/wav/<split>/<id>.wav``, ``DIR/{train,dev,test_seen,test_unseen}.tsv``,
``DIR/render.jsonl`` (the pinyin read, variant, pitch and speed of every utterance) and
``DIR/corpus.json``. The plan is drawn from the seed alone, so a seed gives the same corpus.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile

from echoasr import atomic
from echoasr.data.manifest import write_manifest
from echoasr.data.records import Utterance
from echoasr.data.synth.corpus import check_split_sizes, claim_folder, cpu_count, render_all
from echoasr.data.synth.render import Effects, Job, check_tools
from echoasr.data.synth.voices import ESPEAK_LICENCE, espeak_voice
from echoasr.errors import EchoError
from echoasr.text.pinyin import marked

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test_seen", "test_unseen")
RECIPE_VERSION = 1  # bump when a change alters the audio or the text a seed gives
PINYIN_VOICE = "cmn-latn-pinyin"
# Simple initials and the vowels a, i, u: every base syllable is a real Mandarin syllable in all
# four tones, and espeak-ng reads each as one syllable (checked with `espeak-ng -x`).
SYLLABLES = ("ba", "da", "ma", "na", "la", "bi", "di", "mi", "ni", "li", "bu", "lu")
TONES = (1, 2, 3, 4)
PHRASE_LENGTHS = (2, 3, 4)
# Variants whose tone contours are clear: over the 12 syllables read alone at -p 30-70, DIO's f0
# rises 6-19 semitones/s (median) in tone 2 and falls 8-21 in tone 4 for m1, m3, m4, m6, m7 and
# f1; f5's contours are flatter (+2..+4 / -3..-4) but as clear. m2 reads nearly monotone and f2-f4
# mislead the f0 tracker (octave jumps), so they are left out.
TRAINING_VARIANTS = ("m1", "m3", "m6", "m7", "f1")
HELD_OUT_VARIANTS = ("m4", "f5")
# espeak-ng's -p (0-99, default 50) moves the whole contour: 10 steps are about 2.5 semitones.
# Below 30 the male voices' tone 3 drops under the trackers' 60 Hz floor.
TRAINING_PITCHES = (30, 40, 50, 60, 70)
HELD_OUT_PITCHES = (35, 55, 65)
SPEED_RANGE = (140, 200)  # espeak-ng -s, words (here syllables) per minute
PEAK_RANGE = (0.3, 0.95)
DEFAULT_UTTERANCES = 2750  # 2,000 training utterances and 250 in each evaluation split


@dataclass(frozen=True)
class TonesSettings:
    utterances: int
    seed: int
    eval_size: int  # utterances in each of dev, test_seen and test_unseen
    recipe: int = RECIPE_VERSION
    syllables: tuple[str, ...] = SYLLABLES
    training_variants: tuple[str, ...] = TRAINING_VARIANTS
    held_out_variants: tuple[str, ...] = HELD_OUT_VARIANTS
    training_pitches: tuple[int, ...] = TRAINING_PITCHES
    held_out_pitches: tuple[int, ...] = HELD_OUT_PITCHES

    @property
    def training_speakers(self) -> tuple[tuple[str, int], ...]:
        return tuple((v, p) for v in self.training_variants for p in self.training_pitches)

    @property
    def held_out_speakers(self) -> tuple[tuple[str, int], ...]:
        return tuple((v, p) for v in self.held_out_variants for p in self.held_out_pitches)


def speaker_name(variant: str, pitch: int) -> str:
    return f"{variant}-p{pitch}"


def default_eval_size(utterances: int) -> int:
    """One utterance in 11 per evaluation split (250 of 2,750), between 2 and 250."""
    return int(min(250, max(2, round(utterances / 11))))


def make_settings(utterances: int = DEFAULT_UTTERANCES, seed: int = 0, eval_size: int | None = None) -> TonesSettings:
    eval_size = check_split_sizes(utterances, default_eval_size(utterances) if eval_size is None else eval_size)
    return TonesSettings(utterances, seed, eval_size)


def draw_phrase(rng: np.random.Generator, syllables: tuple[str, ...]) -> str:
    """2-4 syllables with tone digits. Two tone 3s never follow each other: espeak-ng applies
    third-tone sandhi and reads the first as a tone 2, so its own contour would not tell its tone."""
    words, previous = [], None
    for _ in range(int(rng.choice(PHRASE_LENGTHS))):
        choices = [t for t in TONES if not (t == 3 and previous == 3)]
        previous = int(rng.choice(choices))
        words.append(f"{syllables[int(rng.integers(len(syllables)))]}{previous}")
    return " ".join(words)


def plan_corpus(settings: TonesSettings) -> list[Job]:
    """Every utterance's split, phrase (pinyin with tone digits, what espeak-ng reads), speaker,
    speed and level, drawn from the seed alone."""
    rng = np.random.default_rng(settings.seed)
    n_eval = 3 * settings.eval_size
    evaluation: list[str] = []
    seen: set[str] = set()
    while len(evaluation) < n_eval:
        phrase = draw_phrase(rng, settings.syllables)
        if phrase not in seen:
            seen.add(phrase)
            evaluation.append(phrase)
    training = []
    while len(training) < settings.utterances - n_eval:
        phrase = draw_phrase(rng, settings.syllables)
        if phrase not in seen:  # training phrases may repeat among themselves, never an evaluation one
            training.append(phrase)
    size = settings.eval_size
    jobs = []
    for split, phrases, speakers in (
        ("dev", evaluation[:size], settings.training_speakers),
        ("test_seen", evaluation[size: 2 * size], settings.training_speakers),
        ("test_unseen", evaluation[2 * size:], settings.held_out_speakers),
        ("train", training, settings.training_speakers),
    ):
        for index, phrase in enumerate(phrases):
            variant, pitch = speakers[int(rng.integers(len(speakers)))]
            effects = Effects(espeak_pitch=pitch, espeak_speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
                              peak=round(float(rng.uniform(*PEAK_RANGE)), 3))
            utterance_id = f"{split}-{index:05d}"
            jobs.append(Job(utterance_id, split, f"wav/{split}/{utterance_id}.wav", phrase,
                            espeak_voice(PINYIN_VOICE, variant), effects, speaker=speaker_name(variant, pitch)))
    return jobs


def pinyin_voice_available() -> bool:
    """Whether espeak-ng is installed with its ``cmn-latn-pinyin`` voice."""
    if shutil.which("espeak-ng") is None:
        return False
    listing = subprocess.run(["espeak-ng", "--voices=cmn"], capture_output=True, text=True, check=False,
                             stdin=subprocess.DEVNULL)
    return PINYIN_VOICE in listing.stdout.split()


def build_tones_corpus(out: str | os.PathLike, utterances: int = DEFAULT_UTTERANCES, seed: int = 0,
                       eval_size: int | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Build (or finish building) the corpus in ``out``; returns what ``corpus.json`` holds."""
    root = Path(out)
    settings = make_settings(utterances, seed, eval_size)
    header = json.loads(json.dumps({"corpus": "tones", "settings": asdict(settings)}))  # as corpus.json holds it
    claim_folder(root, header)
    jobs = plan_corpus(settings)
    check_tools([jobs[0].voice])
    if not pinyin_voice_available():
        raise EchoError(f"espeak-ng has no {PINYIN_VOICE} voice (`espeak-ng --voices=cmn`); install espeak-ng-data")
    atomic.write_text(root / "corpus.json", json.dumps({**header, "complete": False}, indent=1) + "\n")
    for leftover in root.glob("**/.*.tmp"):  # from a run killed mid-write
        leftover.unlink()
    pending = [job for job in jobs if not (root / job.path).is_file()]
    render_all(pending, root, workers or cpu_count(), progress, "synthesising tones")

    durations = {job.id: round(soundfile.info(str(root / job.path)).duration, 3) for job in jobs}
    for split in SPLITS:
        write_manifest(root / f"{split}.tsv", [
            Utterance(job.id, marked(job.text), job.speaker, durations[job.id], path=str(root / job.path),
                      voice=job.voice.name)
            for job in jobs if job.split == split])
    atomic.write_text(root / "render.jsonl", "".join(json.dumps(render_record(job)) + "\n" for job in jobs))
    summary = {**header, "complete": True, **describe(jobs, durations, settings)}
    atomic.write_text(root / "corpus.json", json.dumps(summary, indent=1) + "\n")
    return summary


def render_record(job: Job) -> dict:
    return {"id": job.id, "split": job.split, "pinyin": job.text, "voice": job.voice.name, "speaker": job.speaker,
            "espeak_pitch": job.effects.espeak_pitch, "espeak_speed": job.effects.espeak_speed,
            "peak": job.effects.peak}


def describe(jobs: list[Job], durations: dict[str, float], settings: TonesSettings) -> dict:
    splits = {}
    for split in SPLITS:
        chosen = [job for job in jobs if job.split == split]
        syllables = [syllable for job in chosen for syllable in job.text.split()]
        splits[split] = {
            "utterances": len(chosen),
            "hours": round(sum(durations[job.id] for job in chosen) / 3600, 3),
            "syllables": len(syllables),
            "tones": {str(tone): count for tone, count in sorted(Counter(int(s[-1]) for s in syllables).items())},
            "speakers": dict(sorted(Counter(job.speaker for job in chosen).items())),
        }
    return {
        "held_out_speakers": [speaker_name(*s) for s in settings.held_out_speakers],
        "training_speakers": [speaker_name(*s) for s in settings.training_speakers],
        "voices": {f"espeak-{PINYIN_VOICE}": ESPEAK_LICENCE},
        "hours": round(sum(durations.values()) / 3600, 3),
        "splits": splits,
    }
