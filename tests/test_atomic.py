"""Folders written whole or not at all (echoasr.atomic.atomic_dir)."""

import os
import stat

import pytest

from echoasr.atomic import atomic_dir


def test_a_failed_block_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_replace_swaps_the_folder_with_ordinary_permissions(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    umask = os.umask(0o022)
    try:
        with atomic_dir(target) as staging:
            (staging / "new.txt").write_text("new")
    finally:
        os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert stat.S_IMODE((target / "new.txt").stat().st_mode) == 0o644


def test_without_replace_the_first_finished_folder_wins(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target, replace=False) as staging:
        target.mkdir()  # another process finished first
        (target / "theirs.txt").write_text("first")
        (staging / "mine.txt").write_text("second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
