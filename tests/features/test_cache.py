import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

import echoasr.features as features_module
from echoasr.features import FeatureSettings, extract_file
from echoasr.features.cache import FeatureCache, content_hash


@pytest.fixture
def wav(tmp_path, signals):
    audio, _ = signals.make("glide")
    path = tmp_path / "glide.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


@pytest.fixture
def count_extract(monkeypatch):
    calls = []
    real = features_module.extract

    def counting(audio, features=features_module.DEFAULT_FEATURES, settings=None):
        calls.append(tuple(features))
        return real(audio, features, settings)

    monkeypatch.setattr(features_module, "extract", counting)
    return calls


def test_cache_hit_returns_identical_arrays_without_recomputing(wav, tmp_path, count_extract):
    first = extract_file(wav, ["mel", "f0"], cache_dir=tmp_path / "cache")
    second = extract_file(wav, ["mel", "f0"], cache_dir=tmp_path / "cache")
    assert len(count_extract) == 1
    assert list(second) == ["mel", "f0", "voiced"]
    for key in first:
        np.testing.assert_array_equal(second[key], first[key])
        assert second[key].dtype == first[key].dtype


def test_only_missing_features_are_computed(wav, tmp_path, count_extract):
    extract_file(wav, ["mel"], cache_dir=tmp_path / "cache")
    out = extract_file(wav, ["mel", "phase"], cache_dir=tmp_path / "cache")
    assert count_extract == [("mel",), ("phase",)]
    assert set(out) == {"mel", "phase"}


def test_key_follows_content_and_settings(wav, tmp_path, count_extract):
    cache = tmp_path / "cache"
    extract_file(wav, ["f0"], cache_dir=cache)
    extract_file(wav, ["f0"], FeatureSettings(f0_method="praat"), cache_dir=cache)
    copy = tmp_path / "renamed.wav"
    copy.write_bytes(wav.read_bytes())
    extract_file(copy, ["f0"], cache_dir=cache)  # same content, other name: a hit
    assert len(count_extract) == 2
    wav.write_bytes(wav.read_bytes()[:-320])  # content changed: a miss
    extract_file(wav, ["f0"], cache_dir=cache)
    assert len(count_extract) == 3


def test_interrupted_write_leaves_no_entry(wav, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_save = np.save

    def dying_save(file, array, allow_pickle=False):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        extract_file(wav, ["mel"], cache_dir=cache)
    monkeypatch.setattr(np, "save", real_save)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no entry, no temporary file
    digest, key = content_hash(wav), FeatureSettings().cache_key()
    assert FeatureCache(cache).load(digest, key, ["mel"]) == {}


def test_killed_process_leaves_no_entry(tmp_path):
    """SIGKILL in the middle of writing an array: only a hidden temporary file remains."""
    entry = tmp_path / "cache" / "ab" / "abcd-key"
    script = textwrap.dedent(f"""
        import sys, time
        from echoasr.atomic import atomic_write
        with atomic_write({str(entry / "mel.npy")!r}) as file:
            file.write(b"\\x93NUMPY" + b"0" * 4096)
            file.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (entry / "mel.npy").exists()
    assert [p.name.startswith(".mel.npy.") for p in entry.iterdir()] == [True]
    assert FeatureCache(tmp_path / "cache").load("abcd", "key", ["mel"]) == {}


def test_unreadable_entry_is_recomputed(wav, tmp_path, count_extract):
    cache = tmp_path / "cache"
    extract_file(wav, ["mel"], cache_dir=cache)
    (entry,) = cache.rglob("mel.npy")
    entry.write_bytes(b"garbage")
    out = extract_file(wav, ["mel"], cache_dir=cache)
    assert len(count_extract) == 2 and out["mel"].shape[0] == 80
    assert np.load(entry).shape == out["mel"].shape  # and the entry is repaired


def test_raw_pcm_format_is_part_of_the_key(tmp_path, count_extract):
    pcm = tmp_path / "a.pcm"
    pcm.write_bytes((np.random.default_rng(0).normal(0, 3000, 3200)).astype("<i2").tobytes())
    first = extract_file(pcm, ["mel"], cache_dir=tmp_path / "cache")
    second = extract_file(pcm, ["mel"], cache_dir=tmp_path / "cache", pcm_sample_rate=8000)
    assert len(count_extract) == 2 and second["mel"].shape[1] == 2 * first["mel"].shape[1] - 1
