"""Plan and build the synthetic corpus: ``echoasr data synth --out DIR --utterances N --seed S``.

Layout: ``DIR/wav/<split>/<id>.wav`` (16 kHz mono 16-bit), ``DIR/{train,dev,test_seen,test_unseen}.tsv``
(columns ``path text speaker voice duration``, paths relative to DIR), ``DIR/render.jsonl`` (the
voice, speaker transform, effects and channel of every utterance) and ``DIR/corpus.json``
(settings, voices and their licences, speakers, held-out speakers, counts and hours). With
channels, ``DIR/babble/`` holds the babble pool (training voices reading training sentences);
with speed perturbation, ``DIR/wav/train-sp0.9/`` etc. hold the copies (in ``train.tsv``).

Splits: ``train`` and ``dev``/``test_seen`` use the training speakers; ``test_unseen`` uses only
held-out speakers, which never occur in the other splits. Speakers made from a voice by a WORLD
transform (``kal~3``) belong to their base speaker, so a held-out voice's transforms stay in
``test_unseen``. Every dev/test utterance has its own sentence and no dev/test sentence
(compared normalised) occurs in training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile

from echoasr import atomic
from echoasr.data.manifest import write_manifest
from echoasr.data.records import Utterance
from echoasr.data.synth import voices as voice_catalogue
from echoasr.data.synth.channels import Channel, draw_channel
from echoasr.data.synth.render import Effects, Job, babble_path, check_tools, perturbed_path, render_jobs
from echoasr.data.synth.speakers import speaker_id, speaker_transforms
from echoasr.data.synth.sentences import Sentence, load_sentences
from echoasr.data.synth.voices import Voice
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test_seen", "test_unseen")
EVAL_SPLITS = SPLITS[1:]
# Bump when a change alters the audio a seed gives. 3: rooms built on one thread (machine-independent).
RECIPE_VERSION = 3
FESTIVAL_BATCH = 24
OTHER_BATCH = 4
BABBLE_POOL = 60  # babble clips rendered first, from which every babble draw picks 3-6
# Mean utterance length measured on built corpora (3.26 and 3.36 s on 300 and 600 utterances);
# --hours turns into utterances with it.
SECONDS_PER_UTTERANCE = 3.3


@dataclass(frozen=True)
class SynthSettings:
    utterances: int
    seed: int
    eval_size: int            # utterances in each of dev, test_seen and test_unseen
    held_out: tuple[str, ...]  # speakers that only test_unseen uses
    recipe: int = RECIPE_VERSION
    voices: tuple[str, ...] = ()        # base speakers used (all splits)
    speakers_per_voice: int = 1         # 1: the voices only; N: the voice and N-1 WORLD transforms of it
    transformed_share: float = 0.0      # share of a voice's utterances spoken by its transformed speakers
    channels: bool = False              # rooms, babble, noise, band limits, codecs
    speed_perturb: tuple[float, ...] = ()  # extra training copies at these speeds

    @property
    def training_speakers(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.voices) - set(self.held_out)))


def check_split_sizes(utterances: int, eval_size: int) -> int:
    """``eval_size`` when three evaluation splits of it leave training data, else a one-line error."""
    if eval_size < 1:
        raise EchoError(f"--eval-size must be at least 1, got {eval_size}")
    if utterances < 3 * eval_size + 1:
        raise EchoError(f"--utterances {utterances} leaves no training data after 3 x {eval_size} "
                        "evaluation utterances")
    return eval_size


def default_eval_size(utterances: int) -> int:
    """4% of the corpus per evaluation split (200 for 5,000 utterances), between 2 and 200."""
    return int(min(200, max(2, round(0.04 * utterances))))


def utterances_for_hours(hours: float) -> int:
    if hours <= 0:
        raise EchoError(f"--hours must be positive, got {hours}")
    return int(np.ceil(hours * 3600 / SECONDS_PER_UTTERANCE))


def make_settings(utterances: int, seed: int, eval_size: int | None = None,
                  held_out: Sequence[str] | None = None, *,
                  voices: Sequence[str] = voice_catalogue.DEFAULT_VOICES, speakers_per_voice: int = 1,
                  transformed_share: float | None = None, channels: bool = False,
                  speed_perturb: Sequence[float] = ()) -> SynthSettings:
    """``voices``: groups or speakers (:func:`voices.resolve_voices`); ``held_out`` defaults to
    :func:`voices.default_held_out`; ``transformed_share`` defaults to (N-1)/N for N speakers per voice."""
    speakers = set(voice_catalogue.resolve_voices(voices))
    held_out = voice_catalogue.default_held_out(sorted(speakers)) if held_out is None else held_out
    if speakers_per_voice < 1:
        raise EchoError(f"--speakers-per-voice must be at least 1, got {speakers_per_voice}")
    if transformed_share is None:
        transformed_share = (speakers_per_voice - 1) / speakers_per_voice
    if not 0 <= transformed_share <= 1 or (speakers_per_voice == 1 and transformed_share > 0):
        raise EchoError("--transformed-share must be in [0, 1], and 0 with one speaker per voice")
    if any(not 0.5 <= factor <= 2 or factor == 1 for factor in speed_perturb):
        raise EchoError(f"--speed-perturb factors must lie in [0.5, 2] and differ from 1, got {list(speed_perturb)}")
    eval_size = check_split_sizes(utterances, default_eval_size(utterances) if eval_size is None else eval_size)
    unknown = sorted(set(held_out) - speakers)
    if unknown:
        raise EchoError(f"unknown speaker(s) to hold out: {', '.join(unknown)} (voices: {', '.join(sorted(speakers))})")
    if not held_out or set(held_out) == speakers:
        raise EchoError("hold out at least one speaker and keep at least one for training")
    return SynthSettings(utterances, seed, eval_size, tuple(sorted(set(held_out))), voices=tuple(sorted(speakers)),
                         speakers_per_voice=speakers_per_voice, transformed_share=round(float(transformed_share), 4),
                         channels=channels, speed_perturb=tuple(sorted(float(f) for f in speed_perturb)))


def plan_corpus(settings: SynthSettings, sentences: Sequence[Sentence]) -> list[Job]:
    """Every utterance's split, sentence, voice and effects, drawn from the seed alone."""
    rng = np.random.default_rng(settings.seed)
    n_eval = 3 * settings.eval_size
    n_train = settings.utterances - n_eval
    if len(sentences) <= n_eval:
        raise EchoError(f"only {len(sentences)} sentences available, fewer than the {n_eval} evaluation utterances")
    order = rng.permutation(len(sentences))
    eval_sentences = [sentences[i] for i in order[:n_eval]]
    train_pool = [sentences[i] for i in order[n_eval:]]
    if n_train > len(train_pool):
        log.warning("%d training utterances but %d sentences: sentences repeat with other voices",
                    n_train, len(train_pool))
    held_out = set(settings.held_out)
    train_speakers = set(settings.training_speakers)
    transforms = {base: speaker_transforms(base, voice_catalogue.speaker_sex(base), settings.speakers_per_voice,
                                           settings.seed) for base in settings.voices}
    jobs: list[Job] = []
    babble_pool: list[str] = []
    if settings.channels:
        # Babble: training voices reading training sentences (from the end of the pool), plain.
        voices, weights = voice_catalogue.voices_for(train_speakers)
        picks = rng.choice(len(voices), size=min(BABBLE_POOL, max(3, n_train)), p=weights)
        for index, pick in enumerate(picks):
            clip_id = f"babble-{index:03d}"
            babble_pool.append(clip_id)
            jobs.append(Job(clip_id, "babble", babble_path(clip_id), train_pool[-1 - index % len(train_pool)].text,
                            voices[pick], Effects(), speaker=voices[pick].speaker))
    for split, count, speakers, texts in (
        ("dev", settings.eval_size, train_speakers, eval_sentences[: settings.eval_size]),
        ("test_seen", settings.eval_size, train_speakers, eval_sentences[settings.eval_size: 2 * settings.eval_size]),
        ("test_unseen", settings.eval_size, held_out, eval_sentences[2 * settings.eval_size:]),
        ("train", n_train, train_speakers, [train_pool[i % len(train_pool)] for i in range(n_train)]),
    ):
        voices, weights = voice_catalogue.voices_for(speakers)
        picks = rng.choice(len(voices), size=count, p=weights)
        for index, (sentence, pick) in enumerate(zip(texts, picks, strict=True)):
            voice = voices[pick]
            utterance_id = f"{split}-{index:05d}"
            number = _draw_speaker(rng, settings)
            effects = draw_effects(voice, rng, allow_flip=number == 0)
            channel = Channel()
            if settings.channels:
                channel = draw_channel(rng, babble_pool)
                # The channel replaces the sox reverb, low-pass and noise of recipe 1.
                effects = dataclasses.replace(effects, reverb=None, lowpass_hz=None, noise=None, snr_db=None,
                                              noise_seed=None)
            jobs.append(Job(utterance_id, split, f"wav/{split}/{utterance_id}.wav", sentence.text, voice, effects,
                            speaker=speaker_id(voice.speaker, number), transform=transforms[voice.speaker][number],
                            channel=channel, speed_perturb=settings.speed_perturb if split == "train" else ()))
    return jobs


def _draw_speaker(rng: np.random.Generator, settings: SynthSettings) -> int:
    """0 (the voice itself) or one of its transformed speakers 1..N-1. With one speaker per voice
    nothing is drawn, so such a plan is recipe 1's draw for draw."""
    if settings.speakers_per_voice == 1:
        return 0
    transformed = rng.uniform() < settings.transformed_share
    number = int(rng.integers(1, settings.speakers_per_voice)) if settings.speakers_per_voice > 1 else 0
    return number if transformed else 0


def draw_effects(voice: Voice, rng: np.random.Generator, allow_flip: bool = True) -> Effects:
    """Voice diversity: engine f0 and rate, VTLP-like speed, pitch shift, tempo, channel, noise.

    One non-espeak utterance in four is "gender-flipped": formants move 8-20% towards the other
    sex (sox speed, a resampling) and f0 goes to the other sex's range (170-250 Hz or 90-130 Hz).
    Large f0 moves are made by the engine where it can (flite kal/kal16/awb/slt, festival diphone
    voices): sox's pitch shifter is kept within +-3 semitones, beyond which pocketsphinx, a
    stand-in for a listener, stops understanding the result.
    """
    draw = rng.uniform
    # A transformed speaker (allow_flip False) already has its own f0 and formants: no flip on top.
    flip = voice.engine != "espeak" and draw() < 0.25 and allow_flip
    if flip:
        male = voice.sex == "male"
        speed = float(draw(1.08, 1.2) if male else draw(0.83, 0.93))
        target_f0 = float(draw(170, 250) if male else draw(90, 130))
    else:
        speed = float(draw(0.92, 1.08)) if draw() < 0.5 else 1.0
        target_f0 = voice.f0 * speed * 2 ** (draw(-3, 3) / 12)
    pitch_cents = 0 if voice.f0_control else int(np.clip(1200 * np.log2(target_f0 / (voice.f0 * speed)), -300, 300))
    if not voice.f0_control and not flip and draw() < 0.4:
        pitch_cents = 0
    # Speed also shortens or lengthens; most of that is undone so durations stay natural.
    tempo = float(draw(0.9, 1.12)) if draw() < 0.5 else 1.0
    tempo = round(tempo / speed ** 0.7, 4)
    reverb = (int(draw(10, 50)), int(draw(20, 80)), int(draw(10, 60))) if draw() < 0.2 else None
    lowpass_hz = int(draw(3500, 7000)) if draw() < 0.1 else None
    noise = ("white", "pink")[int(draw() < 0.5)] if draw() < 0.5 else None
    engine_stretch = round(float(draw(0.85, 1.2)), 3)
    espeak_pitch, espeak_speed = int(draw(20, 80)), int(draw(140, 200))
    espeak = voice.engine == "espeak"
    return Effects(
        engine_f0=round(target_f0 / speed, 1) if voice.f0_control else None,
        gender_flip=flip,
        engine_stretch=1.0 if espeak or voice.model.endswith("_hts") or voice.engine in ("hibari", "piper")
        else engine_stretch,
        espeak_pitch=espeak_pitch if espeak else None,
        espeak_speed=espeak_speed if espeak else None,
        speed=round(speed, 4),
        pitch_cents=pitch_cents,
        tempo=1.0 if abs(tempo - 1) < 0.005 else tempo,
        lowpass_hz=lowpass_hz,
        reverb=reverb,
        noise=noise,
        snr_db=round(float(draw(12, 35)), 1) if noise else None,
        peak=round(float(draw(0.25, 0.95)), 3),
        noise_seed=int(rng.integers(2**31)) if noise else None,
    )


def build_corpus(out: str | os.PathLike, utterances: int, seed: int = 0, workers: int | None = None,
                 eval_size: int | None = None, held_out: Sequence[str] | None = None, progress: bool = True,
                 **options) -> dict:
    """Build (or finish building) the corpus in ``out``; returns what ``corpus.json`` holds.
    ``options``: the keyword options of :func:`make_settings` (voices, speakers_per_voice, ...)."""
    root = Path(out)
    settings = make_settings(utterances, seed, eval_size, held_out, **options)
    sentences = load_sentences()
    sentence_digest = hashlib.sha256("\n".join(s.text for s in sentences).encode()).hexdigest()[:16]
    header = {"settings": asdict(settings), "sentences": {"count": len(sentences), "sha256": sentence_digest}}
    header = json.loads(json.dumps(header))  # tuples as lists, as corpus.json will hold them
    claim_folder(root, header)
    jobs = plan_corpus(settings, sentences)
    check_tools(list({job.voice.name: job.voice for job in jobs}.values()), channels=settings.channels)
    atomic.write_text(root / "corpus.json", json.dumps({**header, "complete": False}, indent=1) + "\n")

    for leftover in root.glob("**/.*.tmp"):  # from a run killed mid-write
        leftover.unlink()
    pending = [job for job in jobs if not (root / job.path).is_file()]
    if len(pending) < len(jobs):
        log.info("%d of %d utterances already rendered", len(jobs) - len(pending), len(jobs))
    workers = workers or cpu_count()
    # The babble pool first: the other utterances mix it in.
    render_all([job for job in pending if job.split == "babble"], root, workers, progress, "babble pool")
    render_all([job for job in pending if job.split != "babble"], root, workers, progress, "synthesising")

    jobs = [job for job in jobs if job.split != "babble"]
    durations = {job.id: soundfile.info(str(root / job.path)).duration for job in jobs}
    for split in SPLITS:
        rows = []
        for job in (job for job in jobs if job.split == split):
            rows.append(Utterance(job.id, job.text, job.speaker, round(durations[job.id], 3),
                                  path=str(root / job.path), voice=job.voice.name))
            for factor in job.speed_perturb:
                path = root / perturbed_path(job.path, factor)
                rows.append(Utterance(f"{job.id}-sp{factor:g}", job.text, f"{job.speaker}~sp{factor:g}",
                                      round(soundfile.info(str(path)).duration, 3), path=str(path), voice=job.voice.name))
        write_manifest(root / f"{split}.tsv", rows)
    atomic.write_text(root / "render.jsonl", "".join(json.dumps(render_record(job)) + "\n" for job in jobs))
    summary = {**header, "complete": True, **_describe(jobs, durations, settings)}
    atomic.write_text(root / "corpus.json", json.dumps(summary, indent=1) + "\n")
    return summary


def render_record(job: Job) -> dict:
    """What ``render.jsonl`` holds for an utterance: every drawn parameter."""
    record = {"id": job.id, "split": job.split, "voice": job.voice.name, "speaker": job.speaker,
              "base_speaker": job.voice.speaker, "effects": job.effects.to_json()}
    if not job.transform.identity:
        record["transform"] = asdict(job.transform)
    if not job.channel.empty:
        record["channel"] = job.channel.to_json()
    if job.speed_perturb:
        record["speed_perturb"] = list(job.speed_perturb)
    return record


def claim_folder(root: Path, header: dict) -> None:
    """Refuse to mix two corpora in one folder; a folder with the same settings is resumed."""
    corpus_json = root / "corpus.json"
    if corpus_json.is_file():
        try:
            previous = json.loads(corpus_json.read_text(encoding="utf-8"))
        except ValueError:
            raise EchoError("unreadable corpus.json; delete the folder or choose another --out", corpus_json) from None
        if {key: previous.get(key) for key in header} != header:
            raise EchoError("this folder holds a corpus built with other settings, seed or sentences; "
                            "choose another --out or delete it", root)
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise EchoError("exists and is not an empty folder or a corpus folder; choose another --out", root)
    root.mkdir(parents=True, exist_ok=True)


def render_all(jobs: list[Job], root: Path, workers: int, progress: bool, description: str) -> None:
    if not jobs:
        return
    from tqdm import tqdm

    batches = _batches(jobs)
    # Processes: WORLD, the room simulation and the neural voices run in Python and hold the GIL.
    with tqdm(total=len(jobs), unit="utt", desc=description, disable=not progress) as bar, \
            ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(render_jobs, batch, root): len(batch) for batch in batches}
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(futures[future])
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _batches(jobs: list[Job]) -> list[list[Job]]:
    """Festival sentences batched per voice (one process each), the rest in small groups;
    festival batches first as they are the longest."""
    festival: dict[str, list[Job]] = {}
    others: list[Job] = []
    for job in jobs:
        if job.voice.engine == "festival":
            festival.setdefault(job.voice.model, []).append(job)
        else:
            others.append(job)
    batches = [group[i: i + FESTIVAL_BATCH]
               for group in festival.values() for i in range(0, len(group), FESTIVAL_BATCH)]
    return batches + [others[i: i + OTHER_BATCH] for i in range(0, len(others), OTHER_BATCH)]


def _describe(jobs: list[Job], durations: dict[str, float], settings: SynthSettings) -> dict:
    splits = {}
    for split in SPLITS:
        chosen = [job for job in jobs if job.split == split]
        splits[split] = {
            "utterances": len(chosen),
            "hours": round(sum(durations[job.id] for job in chosen) / 3600, 3),
            "speakers": dict(sorted(Counter(job.speaker for job in chosen).items())),
            "voices": dict(sorted(Counter(job.voice.name for job in chosen).items())),
        }
    if settings.speed_perturb:
        splits["train"]["speed_perturbed_copies"] = len(settings.speed_perturb) * splits["train"]["utterances"]
    speakers = {job.speaker: {"base": job.voice.speaker, **asdict(job.transform)} for job in jobs}
    return {
        "held_out_speakers": list(settings.held_out),
        "training_speakers": list(settings.training_speakers),
        "voices": voice_catalogue.voice_licences(settings.voices),
        "speakers": dict(sorted(speakers.items())),
        "hours": round(sum(durations.values()) / 3600, 3),
        "splits": splits,
    }


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
