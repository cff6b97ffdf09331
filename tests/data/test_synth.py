import csv
import json
import shutil

import pytest
import soundfile

from echoasr.data.synth import build_corpus, corpus, plan_corpus
from echoasr.data.synth import render as render_module
from echoasr.data.synth.sentences import clean_sentence, dictionary_from_words, load_sentences, split_sentences
from echoasr.data.synth.voices import DEFAULT_HELD_OUT
from echoasr.errors import EchoError
from echoasr.text import normalize

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("sox") is None,
    reason="Debian speech tools missing (scripts/install-system-deps installs them)",
)
N, SEED = 12, 7


def read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(root, N, seed=SEED, workers=2, progress=False)
    return root, summary


def test_corpus_layout_and_audio_format(built):
    root, summary = built
    assert summary["complete"] and json.loads((root / "corpus.json").read_text()) == summary
    rows = {split: read_tsv(root / f"{split}.tsv") for split in corpus.SPLITS}
    assert [len(rows[s]) for s in corpus.SPLITS] == [6, 2, 2, 2]  # 4% per eval split, at least 2
    assert open(root / "train.tsv").readline() == "path\ttext\tspeaker\tvoice\tduration\n"
    for row in [r for split_rows in rows.values() for r in split_rows]:
        info = soundfile.info(str(root / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - float(row["duration"])) < 1e-3 and info.duration > 0.3
        assert 4 <= len(normalize(row["text"]).split()) <= 20
    assert len((root / "render.jsonl").read_text().splitlines()) == N
    assert not list(root.rglob(".*.tmp"))


def test_speakers_and_sentences_are_disjoint(built):
    root, summary = built
    rows = {split: read_tsv(root / f"{split}.tsv") for split in corpus.SPLITS}
    unseen = {row["speaker"] for row in rows["test_unseen"]}
    seen = {row["speaker"] for split in ("train", "dev", "test_seen") for row in rows[split]}
    assert unseen <= set(DEFAULT_HELD_OUT) and not unseen & seen
    assert summary["held_out_speakers"] == sorted(DEFAULT_HELD_OUT)
    train_texts = {normalize(row["text"]) for row in rows["train"]}
    eval_texts = [normalize(row["text"]) for s in corpus.EVAL_SPLITS for row in rows[s]]
    assert len(set(eval_texts)) == len(eval_texts) and not train_texts & set(eval_texts)


def test_plans_are_disjoint_at_scale_and_depend_on_the_seed_only():
    sentences = load_sentences()
    settings = corpus.make_settings(2000, seed=3)
    jobs = plan_corpus(settings, sentences)
    assert jobs == plan_corpus(settings, sentences)
    assert jobs != plan_corpus(corpus.make_settings(2000, seed=4), sentences)
    by_split = {s: [j for j in jobs if j.split == s] for s in corpus.SPLITS}
    assert [len(by_split[s]) for s in corpus.SPLITS] == [1760, 80, 80, 80]
    unseen = {j.voice.speaker for j in by_split["test_unseen"]}
    assert unseen == set(DEFAULT_HELD_OUT)
    assert not unseen & {j.voice.speaker for s in ("train", "dev", "test_seen") for j in by_split[s]}
    train = {normalize(j.text) for j in by_split["train"]}
    assert not train & {normalize(j.text) for s in corpus.EVAL_SPLITS for j in by_split[s]}
    engines = {j.voice.engine for j in by_split["train"]}
    assert engines == {"flite", "festival", "espeak"}
    espeak_share = sum(j.voice.engine == "espeak" for j in by_split["train"]) / len(by_split["train"])
    assert 0.1 < espeak_share < 0.2
    flipped = sum(j.effects.gender_flip for j in by_split["train"]) / len(by_split["train"])
    assert 0.18 < flipped < 0.25  # a quarter of the non-espeak utterances
    assert max(abs(j.effects.pitch_cents) for j in jobs) <= 300


def test_same_seed_gives_the_same_bytes_and_resumes(built, tmp_path):
    root, summary = built
    again = tmp_path / "again"
    assert build_corpus(again, N, seed=SEED, workers=1, progress=False) == summary  # other worker count
    for split in corpus.SPLITS:
        assert (again / f"{split}.tsv").read_bytes() == (root / f"{split}.tsv").read_bytes()
    wavs = sorted(p.relative_to(root) for p in root.rglob("*.wav"))
    assert all((again / p).read_bytes() == (root / p).read_bytes() for p in wavs)

    # Resume: only missing files are rendered again, to the same bytes.
    removed = wavs[:2]
    for path in removed:
        (again / path).unlink()
    before = {p: (again / p).stat().st_mtime_ns for p in wavs[2:]}
    build_corpus(again, N, seed=SEED, workers=2, progress=False)
    assert all((again / p).stat().st_mtime_ns == before[p] for p in wavs[2:])
    assert all((again / p).read_bytes() == (root / p).read_bytes() for p in removed)


def test_folder_with_another_corpus_or_other_files_is_refused(built, tmp_path):
    root, _ = built
    with pytest.raises(EchoError, match="other settings"):
        build_corpus(root, N, seed=SEED + 1, progress=False)
    (tmp_path / "mine.txt").write_text("not a corpus")
    with pytest.raises(EchoError, match="not an empty folder or a corpus folder"):
        build_corpus(tmp_path, N, seed=SEED, progress=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"utterances": 6}, "leaves no training data"),
    ({"utterances": 100, "held_out": ["nobody"]}, "unknown speaker"),
    ({"utterances": 100, "held_out": []}, "hold out at least one"),
    ({"utterances": 100, "eval_size": 0}, "at least 1"),
])
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(EchoError, match=message):
        build_corpus(tmp_path / "c", seed=0, progress=False, **kwargs)


def test_missing_engine_names_the_debian_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(render_module.shutil, "which", lambda name: None)
    with pytest.raises(EchoError, match="install the Debian packages .*flite"):
        build_corpus(tmp_path / "c", N, seed=0, progress=False)


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
