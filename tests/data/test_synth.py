import csv
import json
import shutil

import pytest
import soundfile

from echoasr.data.synth import build_corpus, corpus, plan_corpus
from echoasr.data.synth import render as render_module
from echoasr.data.synth.sentences import clean_sentence, dictionary_from_words, load_sentences, split_sentences
from echoasr.data.synth.speakers import base_speaker
from echoasr.data.synth.voices import BASE_HELD_OUT, DEFAULT_HELD_OUT, voice_licences
from echoasr.errors import EchoError
from echoasr.text import normalize

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("sox") is None,
    reason="Debian speech tools missing (scripts/install-system-deps installs them)",
)
N, SEED = 12, 7
# The built fixture exercises the whole chain: Debian voices, WORLD speakers, channels, speed copies.
OPTIONS = {"voices": ("debian",), "speakers_per_voice": 3, "transformed_share": 0.5, "channels": True,
           "speed_perturb": (0.9,)}


def read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(root, N, seed=SEED, workers=2, progress=False, **OPTIONS)
    return root, summary


def test_corpus_layout_and_audio_format(built):
    root, summary = built
    assert summary["complete"] and json.loads((root / "corpus.json").read_text()) == summary
    rows = {split: read_tsv(root / f"{split}.tsv") for split in corpus.SPLITS}
    assert [len(rows[s]) for s in corpus.SPLITS] == [12, 2, 2, 2]  # 4% per eval split, at least 2; train x2 (speed)
    assert open(root / "train.tsv").readline() == "path\ttext\tspeaker\tvoice\tduration\n"
    for row in [r for split_rows in rows.values() for r in split_rows]:
        info = soundfile.info(str(root / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - float(row["duration"])) < 1e-3 and info.duration > 0.3
        assert 4 <= len(normalize(row["text"]).split()) <= 20
    records = [json.loads(line) for line in (root / "render.jsonl").read_text().splitlines()]
    assert len(records) == N and all(record["speed_perturb"] == [0.9] for record in records if record["split"] == "train")
    assert not list(root.rglob(".*.tmp"))
    # speed-perturbed copies: 1/0.9 as long, a speaker of their own
    copies = [row for row in rows["train"] if row["speaker"].endswith("~sp0.9")]
    originals = {row["text"]: row for row in rows["train"] if row not in copies}
    assert len(copies) == 6
    for copy in copies:
        original = originals[copy["text"]]
        assert abs(float(copy["duration"]) * 0.9 - float(original["duration"])) < 0.01
    assert all(licence for licence in summary["voices"].values())


def test_speakers_and_sentences_are_disjoint(built):
    root, summary = built
    rows = {split: read_tsv(root / f"{split}.tsv") for split in corpus.SPLITS}
    unseen = {base_speaker(row["speaker"]) for row in rows["test_unseen"]}
    seen = {base_speaker(row["speaker"]) for split in ("train", "dev", "test_seen") for row in rows[split]}
    assert unseen <= set(BASE_HELD_OUT) and not unseen & seen
    assert summary["held_out_speakers"] == sorted(BASE_HELD_OUT)  # no heart: slt trains
    train_texts = {normalize(row["text"]) for row in rows["train"]}
    eval_texts = [normalize(row["text"]) for s in corpus.EVAL_SPLITS for row in rows[s]]
    assert len(set(eval_texts)) == len(eval_texts) and not train_texts & set(eval_texts)


def test_plans_are_disjoint_at_scale_and_depend_on_the_seed_only():
    sentences = load_sentences()
    settings = corpus.make_settings(2000, seed=3, speakers_per_voice=4, channels=True)
    jobs = plan_corpus(settings, sentences)
    assert jobs == plan_corpus(settings, sentences)
    assert [corpus.render_record(j) for j in jobs] == [corpus.render_record(j) for j in plan_corpus(settings, sentences)]
    assert jobs != plan_corpus(corpus.make_settings(2000, seed=4, speakers_per_voice=4, channels=True), sentences)
    by_split = {s: [j for j in jobs if j.split == s] for s in corpus.SPLITS}
    assert [len(by_split[s]) for s in corpus.SPLITS] == [1760, 80, 80, 80]
    unseen = {j.voice.speaker for j in by_split["test_unseen"]}
    assert unseen == set(DEFAULT_HELD_OUT)  # heart trains, so slt is the held-out woman
    assert {"slt", "awb", "ked"} <= unseen and "heart" in settings.training_speakers
    assert not unseen & {j.voice.speaker for s in ("train", "dev", "test_seen") for j in by_split[s]}
    # transformed speakers: of held-out voices only in test_unseen, and several per voice
    unseen_speakers = {j.speaker for j in by_split["test_unseen"]}
    seen_speakers = {j.speaker for s in ("train", "dev", "test_seen") for j in by_split[s]}
    assert any("~" in speaker for speaker in unseen_speakers) and not unseen_speakers & seen_speakers
    assert all(base_speaker(speaker) in unseen for speaker in unseen_speakers)
    assert len({j.speaker for j in by_split["train"] if j.voice.speaker == "kal"}) == 4
    transformed = [j for j in by_split["train"] if not j.transform.identity]
    assert 0.7 < len(transformed) / len(by_split["train"]) < 0.8  # (N-1)/N by default
    assert all("~" in j.speaker for j in transformed)
    # channels: recorded and in their shares
    assert all(not j.effects.noise and not j.effects.reverb for j in jobs)
    with_codec = sum(j.channel.codec is not None for j in by_split["train"]) / len(by_split["train"])
    assert 0.25 < with_codec < 0.35
    assert all(5 <= j.channel.snr_db <= 30 for j in jobs if j.channel.noise)
    train = {normalize(j.text) for j in by_split["train"]}
    assert not train & {normalize(j.text) for s in corpus.EVAL_SPLITS for j in by_split[s]}
    engines = {j.voice.engine for j in by_split["train"]}
    assert engines == {"flite", "festival", "espeak", "hibari"}
    espeak_share = sum(j.voice.engine == "espeak" for j in by_split["train"]) / len(by_split["train"])
    assert 0.1 < espeak_share < 0.2
    plain = [j for j in by_split["train"] if j.transform.identity and j.voice.engine != "espeak"]
    flipped = sum(j.effects.gender_flip for j in plain) / len(plain)
    assert 0.2 < flipped < 0.3  # a quarter of the voices' own utterances
    assert not any(j.effects.gender_flip for j in transformed)  # transforms are not flipped again
    assert max(abs(j.effects.pitch_cents) for j in jobs) <= 300


def test_same_seed_gives_the_same_bytes_and_resumes(built, tmp_path):
    root, summary = built
    again = tmp_path / "again"
    assert build_corpus(again, N, seed=SEED, workers=1, progress=False, **OPTIONS) == summary  # other worker count
    for split in corpus.SPLITS:
        assert (again / f"{split}.tsv").read_bytes() == (root / f"{split}.tsv").read_bytes()
    wavs = sorted(p.relative_to(root) for p in root.rglob("*.wav"))
    assert all((again / p).read_bytes() == (root / p).read_bytes() for p in wavs)

    # Resume: only missing files are rendered again, to the same bytes.
    removed = wavs[:2]
    for path in removed:
        (again / path).unlink()
    before = {p: (again / p).stat().st_mtime_ns for p in wavs[2:]}
    build_corpus(again, N, seed=SEED, workers=2, progress=False, **OPTIONS)
    assert all((again / p).stat().st_mtime_ns == before[p] for p in wavs[2:])
    assert all((again / p).read_bytes() == (root / p).read_bytes() for p in removed)


def test_same_bytes_with_other_workers_under_load_and_thread_counts(built, tmp_path):
    """One worker, the cores kept busy by another process, and the numeric libraries' thread
    counts changed (pyroomacoustics defaults to one thread per core): every byte as with two workers."""
    import subprocess
    import sys

    import pyroomacoustics as pra

    root, summary = built
    again = tmp_path / "loaded"
    previous = pra.constants.get("num_threads")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        pra.constants.set("num_threads", previous + 1)  # the workers fork from here and inherit it
        assert build_corpus(again, N, seed=SEED, workers=1, progress=False, **OPTIONS) == summary
    finally:
        pra.constants.set("num_threads", previous)
        busy.kill()
        busy.wait()
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "corpus.json") == files
    assert any(record.get("channel", {}).get("room") for record in map(json.loads, (root / "render.jsonl").open()))
    differing = [str(p) for p in files if (again / p).read_bytes() != (root / p).read_bytes()]
    assert not differing


def test_folder_with_another_corpus_or_other_files_is_refused(built, tmp_path):
    root, _ = built
    with pytest.raises(EchoError, match="other settings"):
        build_corpus(root, N, seed=SEED + 1, progress=False, **OPTIONS)
    with pytest.raises(EchoError, match="other settings"):
        build_corpus(root, N, seed=SEED, progress=False, **{**OPTIONS, "speakers_per_voice": 5})
    (tmp_path / "mine.txt").write_text("not a corpus")
    with pytest.raises(EchoError, match="not an empty folder or a corpus folder"):
        build_corpus(tmp_path, N, seed=SEED, progress=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"utterances": 6}, "leaves no training data"),
    ({"utterances": 100, "held_out": ["nobody"]}, "unknown speaker"),
    ({"utterances": 100, "held_out": []}, "hold out at least one"),
    ({"utterances": 100, "eval_size": 0}, "at least 1"),
    ({"utterances": 100, "voices": ["debian", "nobody"]}, "unknown voice"),
    ({"utterances": 100, "speakers_per_voice": 0}, "speakers-per-voice"),
    ({"utterances": 100, "speed_perturb": [1.0]}, "speed-perturb"),
])
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(EchoError, match=message):
        build_corpus(tmp_path / "c", seed=0, progress=False, **kwargs)


def test_missing_engine_names_the_debian_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(render_module.shutil, "which", lambda name: None)
    with pytest.raises(EchoError, match="install the Debian packages .*flite"):
        build_corpus(tmp_path / "c", N, seed=0, progress=False, voices=("debian",))


@pytest.mark.parametrize(("raw", "cleaned"), [
    ("And the LORD said unto Moses, Go.", "And the Lord said unto Moses, Go."),
    ('"Hello there," she said -- quietly (very).', "Hello there, she said, quietly very."),
    ("They had 3 dogs and 21 cats in 1984.", "They had three dogs and twenty one cats in nineteen eighty four."),
    ("Too short.", None),
    ("The NASA budget grew again this year.", None),          # acronym
    ("Send mail to root@localhost right now please.", None),  # symbols
    ("The xyzzyplugh was seen in the garden today.", None),   # not a dictionary word
    (" ".join(["word"] * 21), None),
])
def test_clean_sentence(raw, cleaned):
    dictionary = frozenset(
        "and the lord said unto moses go hello there she quietly very they had three dogs twenty one "
        "cats in nineteen eighty four budget grew again this year send mail to root localhost right "
        "now please was seen garden today word".split()
    )
    assert clean_sentence(raw, dictionary) == cleaned


def test_paragraphs_with_abbreviations_are_not_split():
    assert split_sentences("Mr. Smith went home. He slept.") == []
    assert split_sentences("He went home.  She  stayed? Yes!") == ["He went home.", "She stayed?", "Yes!"]


def test_acronyms_are_not_dictionary_words():
    assert dictionary_from_words(["NASA", "Lord", "dog's", "I", "USA"]) == {"lord", "dog's", "i"}


def test_every_voice_has_a_licence_and_joe_is_opt_in():
    default = corpus.make_settings(100, seed=0)
    assert "joe" not in default.voices and "heart" in default.voices
    with_joe = corpus.make_settings(100, seed=0, voices=("debian", "heart", "joe"))
    licences = voice_licences(with_joe.voices)
    assert all(licences.values()) and "unclear" in licences["piper-joe"]
    assert licences["hibari-heart"].startswith("Apache-2.0")
    jobs = plan_corpus(with_joe, load_sentences())
    assert "joe" in {job.voice.speaker for job in jobs}
