import json

import numpy as np
import pytest

from echoasr.data import load_audiofolder, load_dataset_any, load_hf_dataset, load_librispeech, read_audio
from echoasr.errors import EchoError

datasets = pytest.importorskip("datasets")


@pytest.fixture
def audiofolder(tmp_path, tone):
    """HF audiofolder layout with train/test splits, as `datasets` documents it."""
    root = tmp_path / "af"
    for split, names in {"train": ["a", "b"], "test": ["c"]}.items():
        for name in names:
            tone(root / split / "clips" / f"{name}.wav", seconds=0.25)
        rows = "".join(f"clips/{name}.wav,Sentence {name}.\n" for name in names)
        (root / split / "metadata.csv").write_text("file_name,transcription\n" + rows)
    return root


@pytest.fixture
def librispeech(tmp_path, tone):
    """LibriSpeech layout: <speaker>/<chapter>/<speaker>-<chapter>-<n>.flac + .trans.txt."""
    root = tmp_path / "LibriSpeech" / "dev-clean"
    for speaker, chapter in (("84", "121123"), ("174", "50561")):
        folder = root / speaker / chapter
        lines = []
        for n in range(2):
            utterance_id = f"{speaker}-{chapter}-{n:04d}"
            tone(folder / f"{utterance_id}.flac", seconds=0.5, fmt="FLAC")
            lines.append(f"{utterance_id} GO DO YOU HEAR NUMBER {n}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root.parent


def test_audiofolder_with_splits(audiofolder):
    train = load_audiofolder(audiofolder, split="train")
    assert [u.text for u in train] == ["Sentence a.", "Sentence b."]
    assert train[0].path.endswith("train/clips/a.wav") and train[0].duration == 0.25
    assert len(load_dataset_any(audiofolder, split="test")) == 1
    with pytest.raises(EchoError, match="splits test, train"):
        load_audiofolder(audiofolder)


def test_audiofolder_jsonl_metadata_via_the_metadata_file(tmp_path, tone):
    tone(tmp_path / "one.wav")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "one.wav", "text": "one"}) + "\n")
    (utterance,) = load_dataset_any(tmp_path / "metadata.jsonl")
    assert utterance.text == "one"


def test_librispeech_layout(librispeech):
    utterances = load_librispeech(librispeech)
    assert len(utterances) == 4
    assert {u.speaker for u in utterances} == {"84", "174"}
    first = next(u for u in utterances if u.id == "84-121123-0001")
    assert first.text == "GO DO YOU HEAR NUMBER 1" and first.path.endswith("84-121123-0001.flac")
    assert len(load_dataset_any(librispeech, split="dev-clean")) == 4  # the split subfolder


def test_hf_dataset_with_paths_bytes_and_arrays(tmp_path, tone):
    paths = [str(tone(tmp_path / f"{i}.wav", seconds=0.5)) for i in range(2)]
    by_path = datasets.Dataset.from_dict({"audio": paths, "sentence": ["first", "second"]})
    by_path = by_path.cast_column("audio", datasets.Audio())  # decoding would need torchcodec
    utterances = load_dataset_any(by_path)
    assert [u.text for u in utterances] == ["first", "second"] and utterances[0].path == paths[0]

    encoded = datasets.Dataset.from_dict({
        "audio": [{"bytes": open(paths[0], "rb").read(), "path": None}], "text": ["bytes"], "speaker_id": ["s1"],
    }).cast_column("audio", datasets.Audio())
    (utterance,) = load_hf_dataset(datasets.DatasetDict({"test": encoded}))
    assert utterance.speaker == "s1" and utterance.duration == 0.5
    assert read_audio(utterance).shape == (8000,)

    arrays = datasets.Dataset.from_dict({
        "audio": [{"array": np.zeros((2, 800)), "sampling_rate": 8000}], "text": ["array"],
    })
    (utterance,) = load_hf_dataset(arrays)
    assert read_audio(utterance).shape == (1600,) and utterance.duration == 0.1


def test_saved_hf_dataset_folder(tmp_path, tone):
    path = str(tone(tmp_path / "a.wav"))
    dataset = datasets.Dataset.from_dict({"audio": [path], "transcription": ["saved"]})
    dataset.cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "saved"))
    (utterance,) = load_dataset_any(tmp_path / "saved")
    assert utterance.text == "saved"


def test_hf_dataset_without_usable_columns_is_an_error():
    with pytest.raises(EchoError, match="need an audio and a text column"):
        load_hf_dataset(datasets.Dataset.from_dict({"x": [1], "y": ["a"]}))
    with pytest.raises(EchoError, match="choose one"):
        load_hf_dataset(datasets.DatasetDict({
            "a": datasets.Dataset.from_dict({"x": [1]}), "b": datasets.Dataset.from_dict({"x": [1]}),
        }))


def test_corpus_folder_with_split_manifests(tmp_path, tone):
    tone(tmp_path / "wav" / "a.wav")
    (tmp_path / "dev.tsv").write_text("path\ttext\nwav/a.wav\thello\n")
    assert load_dataset_any(tmp_path, split="dev")[0].text == "hello"
    with pytest.raises(EchoError, match=r"pass a split \(dev.tsv\)"):
        load_dataset_any(tmp_path)


def test_unknown_sources_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(EchoError, match="no dataset layout recognised"):
        load_dataset_any(tmp_path)
    with pytest.raises(EchoError, match="no such file or folder"):
        load_dataset_any(tmp_path / "absent.tsv")
