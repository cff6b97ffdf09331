import csv
import json
import shutil

import numpy as np
import pytest
import soundfile

from echoasr.data.manifest import read_manifest
from echoasr.data.synth.render import Effects, Job, render_jobs
from echoasr.data.synth.voices import espeak_voice
from echoasr.data.tones import (
    PINYIN_VOICE,
    build_tones_corpus,
    make_settings,
    pinyin_voice_available,
    plan_corpus,
    speaker_name,
)
from echoasr.errors import EchoError
from echoasr.features.pitch import track_pitch
from echoasr.text import CharTokenizer
from echoasr.text.pinyin import marked
from echoasr.training import PRESETS

needs_voice = pytest.mark.skipif(
    shutil.which("sox") is None or not pinyin_voice_available(),
    reason=f"espeak-ng with its {PINYIN_VOICE} voice, or sox, missing (scripts/install-system-deps installs them)",
)


def test_plan_is_deterministic_and_the_splits_are_clean():
    settings = make_settings(2750, seed=5)
    jobs = plan_corpus(settings)
    assert [(j.id, j.text, j.speaker, j.effects) for j in jobs] == \
        [(j.id, j.text, j.speaker, j.effects) for j in plan_corpus(make_settings(2750, seed=5))]
    assert [j.text for j in jobs] != [j.text for j in plan_corpus(make_settings(2750, seed=6))]
    by_split = {split: [j for j in jobs if j.split == split] for split in ("train", "dev", "test_seen", "test_unseen")}
    assert [len(v) for v in by_split.values()] == [2000, 250, 250, 250]
    evaluation = [j.text for split in ("dev", "test_seen", "test_unseen") for j in by_split[split]]
    assert len(set(evaluation)) == len(evaluation)  # every evaluation utterance has its own phrase
    assert not set(evaluation) & {j.text for j in by_split["train"]}
    held_out = {speaker_name(*s) for s in settings.held_out_speakers}
    assert {j.speaker for j in by_split["test_unseen"]} <= held_out
    assert not held_out & {j.speaker for split in ("train", "dev", "test_seen") for j in by_split[split]}
    # held-out speakers share neither a variant nor a pitch setting with training
    train_variants = {j.voice.model for j in by_split["train"]}
    assert not train_variants & {j.voice.model for j in by_split["test_unseen"]}
    assert not {j.effects.espeak_pitch for j in by_split["train"]} & {j.effects.espeak_pitch for j in by_split["test_unseen"]}
    for job in jobs:
        syllables = job.text.split()
        assert 2 <= len(syllables) <= 4
        tones = [s[-1] for s in syllables]
        assert all(t in "1234" for t in tones)
        assert ("3", "3") not in zip(tones, tones[1:])  # no third-tone sandhi
    counts = np.bincount([int(s[-1]) for j in jobs for s in j.text.split()], minlength=5)[1:]
    assert counts.min() > 0.18 * counts.sum()  # every tone common


def test_too_small_a_corpus_is_a_one_line_error(tmp_path):
    with pytest.raises(EchoError, match="leaves no training data"):
        build_tones_corpus(tmp_path / "c", 6)


def slope(audio: np.ndarray) -> float:
    """f0 slope over the voiced frames, semitones per second."""
    f0, voiced = track_pitch(audio)
    frames = np.nonzero(voiced)[0]
    assert len(frames) >= 8
    return float(np.polyfit(frames * 0.01, 12 * np.log2(f0[frames]), 1)[0])


@needs_voice
@pytest.mark.parametrize("variant", ["m3", "f1"])
def test_tone_2_rises_and_tone_4_falls(tmp_path, variant):
    jobs = [Job(syllable, "probe", f"{syllable}.wav", syllable, espeak_voice(PINYIN_VOICE, variant),
                Effects(espeak_pitch=50, espeak_speed=175)) for syllable in ("ma2", "ma4", "li2", "li4")]
    render_jobs(jobs, tmp_path)
    slopes = {job.id: slope(soundfile.read(tmp_path / job.path, dtype="float32")[0]) for job in jobs}
    # measured: +8..+17 semitones/s for tone 2, -12..-20 for tone 4
    assert slopes["ma2"] > 4 and slopes["li2"] > 4, slopes
    assert slopes["ma4"] < -4 and slopes["li4"] < -4, slopes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    return root, build_tones_corpus(root, 16, seed=3, eval_size=3, workers=2, progress=False)


@needs_voice
def test_corpus_layout_transcripts_and_resume(built, tmp_path):
    root, summary = built
    assert summary["complete"] and json.loads((root / "corpus.json").read_text()) == summary
    records = {r["id"]: r for r in map(json.loads, (root / "render.jsonl").read_text().splitlines())}
    for split, size in (("train", 7), ("dev", 3), ("test_seen", 3), ("test_unseen", 3)):
        with open(root / f"{split}.tsv", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        assert len(rows) == size
        for row in rows:
            record = records[row["path"].rsplit("/", 1)[1].removesuffix(".wav")]
            assert row["text"] == marked(record["pinyin"]) and row["speaker"] == record["speaker"]
            info = soundfile.info(str(root / row["path"]))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16") and info.duration > 0.4
    assert build_tones_corpus(root, 16, seed=3, eval_size=3, progress=False) == summary  # resumed: nothing to do
    with pytest.raises(EchoError, match="other settings"):
        build_tones_corpus(root, 16, seed=4, eval_size=3, progress=False)


@needs_voice
def test_same_seed_same_audio(built, tmp_path):
    root, _ = built
    build_tones_corpus(tmp_path, 16, seed=3, eval_size=3, workers=1, progress=False)
    for wav in sorted(root.glob("wav/*/*.wav")):
        assert (tmp_path / wav.relative_to(root)).read_bytes() == wav.read_bytes()


@needs_voice
def test_the_tone_reaches_the_tokenizer_of_the_tiny_preset(built):
    root, _ = built
    assert PRESETS["tiny"].tokenizer == "char"
    utterances = read_manifest(root / "train.tsv")
    tokenizer = CharTokenizer.train([u.text for u in utterances])
    for utterance in utterances:
        assert tokenizer.decode(tokenizer.encode(utterance.text)) == utterance.text
        assert all(word[-1] in "\u02c9\u02ca\u02c7\u02cb" for word in utterance.text.split())
