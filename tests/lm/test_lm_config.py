"""lm.json names its LM so that a model folder copied to another machine keeps working: the
general English LM by name, any other relative to the folder; older folders' absolute paths
still read."""

import json
import shutil

import pytest

import echoasr.lm.arpa as arpa
from echoasr.decoding import DEFAULT_LM, lm_reference, read_lm_config, resolve_options, write_lm_config
from echoasr.errors import EchoError
from echoasr.processor import WEIGHTS_FILE

ARPA = "\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t<s>\n-0.5\t</s>\n-0.5\thello\n\n\\end\\\n"
TUNED = {"lm_weight": 1.25, "word_bonus": -0.5, "rescore_weight": 2.0}


def model_folder(path):
    path.mkdir(parents=True)
    (path / WEIGHTS_FILE).write_bytes(b"")  # resolve_options reads the folder, never the weights
    return path


@pytest.fixture
def english(tmp_path, monkeypatch):
    """The general English LM in this user's cache (ECHOASR_CACHE), already converted."""
    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "my-cache"))
    arpa.default_lm_cache().parent.mkdir(parents=True)
    arpa.default_lm_cache().write_text(ARPA)
    monkeypatch.setattr(arpa, "convert_pocketsphinx", lambda out=None, source=None: arpa.default_lm_cache())
    return arpa.default_lm_cache()


def tuned_options(folder):
    options = resolve_options(folder, None)
    return options.lm, {name: getattr(options, name) for name in TUNED}


def test_the_general_lm_in_a_cache_is_recorded_by_name_and_found_after_a_copy(tmp_path, english, monkeypatch):
    model = model_folder(tmp_path / "home" / "run")
    assert lm_reference(english, model) == DEFAULT_LM  # the cache's absolute path, as the demo passes it
    assert lm_reference("default", model) == DEFAULT_LM
    write_lm_config(model, {"lm": lm_reference(english, model), **TUNED})
    copy = shutil.copytree(model, tmp_path / "other-machine" / "run")
    shutil.rmtree(tmp_path / "home")
    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "their-cache"))  # another user's cache
    arpa.default_lm_cache().parent.mkdir(parents=True)
    arpa.default_lm_cache().write_text(ARPA)
    assert tuned_options(copy) == (str(arpa.default_lm_cache()), TUNED)


def test_an_lm_in_or_beside_the_folder_is_recorded_relative_to_it(tmp_path):
    project = tmp_path / "project"
    model = model_folder(project / "runs" / "small")
    (model / "lm.arpa").write_text(ARPA)
    (project / "lms").mkdir()
    (project / "lms" / "domain.arpa").write_text(ARPA)
    assert lm_reference(model / "lm.arpa", model) == "lm.arpa"
    assert lm_reference(project / "lms" / "domain.arpa", model) == "../../lms/domain.arpa"

    write_lm_config(model, {"lm": lm_reference(model / "lm.arpa", model), **TUNED})
    assert not any(str(tmp_path) in str(value) for value in read_lm_config(model).values())
    moved = shutil.copytree(model, tmp_path / "elsewhere" / "small")
    shutil.rmtree(project)
    assert tuned_options(moved) == (str(moved / "lm.arpa"), TUNED)

    # the project folder (model and the LM beside it) moved as a whole
    model = model_folder(tmp_path / "project2" / "runs" / "small")
    (tmp_path / "project2" / "lms").mkdir()
    (tmp_path / "project2" / "lms" / "domain.arpa").write_text(ARPA)
    write_lm_config(model, {"lm": lm_reference(tmp_path / "project2" / "lms" / "domain.arpa", model), **TUNED})
    moved = shutil.move(tmp_path / "project2", tmp_path / "copied-project")
    lm, weights = tuned_options(moved / "runs" / "small")
    assert lm == str(moved / "runs" / "small" / "../../lms/domain.arpa") and weights == TUNED


def test_old_folders_with_absolute_paths_still_read(tmp_path, english):
    model = model_folder(tmp_path / "run")
    # the general LM in another user's cache, on another machine
    (model / "lm.json").write_text(json.dumps({"lm": "/home/someone/.cache/echoasr/" + arpa.DEFAULT_NAME, **TUNED}))
    assert tuned_options(model) == (str(english), TUNED)
    # any other LM: where it was written, when it is still there
    other = tmp_path / "lms" / "domain.arpa"
    other.parent.mkdir()
    other.write_text(ARPA)
    (model / "lm.json").write_text(json.dumps({"lm": str(other), **TUNED}))
    assert tuned_options(model) == (str(other), TUNED)
    other.unlink()
    with pytest.raises(EchoError, match="lm.json names is missing") as caught:
        resolve_options(model, None)
    assert "\n" not in str(caught.value) and str(other) in str(caught.value)
