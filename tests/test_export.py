"""``echoasr export``: a self-contained float16 model folder that loads back as float32, and the
default model that ``transcribe`` / ``evaluate`` use without ``--model``."""

import hashlib
import json
import logging

import numpy as np
import pytest
import soundfile
import torch
from safetensors import safe_open

import echoasr.decoding
import echoasr.export
import echoasr.pretrained
from echoasr.audio import SAMPLE_RATE
from echoasr.cli import main
from echoasr.decoding import resolve_options
from echoasr.errors import EchoError
from echoasr.export import export_model
from echoasr.model import EchoConfig, EchoForConditionalGeneration
from echoasr.loading import load_pretrained
from echoasr.processor import SpeechProcessor
from echoasr.text.tokenizers import BASE_ALPHABET, CharTokenizer

# Largest |logit| difference between the float32 model and its float16 export (loaded as float32),
# measured 3e-4 on this tiny model (1.7e-3 on a trained 2.3 M-parameter one with logits up to 12).
LOGIT_TOLERANCE = 2e-3

ARPA = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-0.6\t<s>\t-0.3
-0.6\t</s>
-0.6\t<unk>
-0.3\thello\t-0.3

\\2-grams:
-0.1\t<s> hello
-0.1\thello </s>

\\end\\
"""


@pytest.fixture
def run(tmp_path):
    """A run-like folder: a tiny untrained model, its processor, a training summary and tuned LM settings."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(sorted(BASE_ALPHABET))
    config = EchoConfig(vocab_size=tokenizer.vocab_size, d_model=64, encoder_layers=2, decoder_layers=1,
                        attention_heads=4, ffn_dim=128, features=["mel", "f0"], rotary_theta_mode="phase",
                        max_target_positions=16)
    model = EchoForConditionalGeneration(config).eval()
    folder = tmp_path / "runs" / "tiny"
    model.save_pretrained(folder)
    SpeechProcessor(tokenizer, ("mel", "f0"), max_duration=4.0).save_pretrained(folder)
    (folder / "train_summary.json").write_text(json.dumps({"steps": 7, "log_history": [{"loss": 1.0}]}))
    (folder / "train_config.yaml").write_text("preset: tiny\n")
    return folder, model


def tone(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def logits(model, processor) -> torch.Tensor:
    batch = processor.collator()([{"features": processor.extract(tone())}])
    with torch.inference_mode():
        return model(features=batch["features"], feature_lengths=batch["feature_lengths"],
                     decoder_input_ids=torch.tensor([[1, 5, 6, 7]])).logits


def test_export_halves_the_weights_and_loads_back_as_float32(run, tmp_path):
    source, model = run
    out = tmp_path / "shipped" / "echo-default"
    record = export_model(source, out)
    weights = out / "model.safetensors"
    for name in ("config.json", "generation_config.json", "processor.json", "tokenizer", "train_config.yaml"):
        assert (out / name).exists(), name
    with safe_open(str(weights), "pt") as stored:
        assert {stored.get_tensor(key).dtype for key in stored.keys()} == {torch.float16}
    ratio = weights.stat().st_size / (source / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    written = json.loads((out / "export.json").read_text())
    assert written == record
    assert written["dtype"] == "float16" and written["source"] == str(source.resolve())  # tmp_path: outside the cwd
    assert written["parameters"] == sum(p.numel() for p in model.parameters())
    assert written["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert written["train_summary"] == {"steps": 7}  # the loss history is left out
    assert written["lm"] is None and not (out / "lm.json").exists()

    loaded, processor = load_pretrained(out, device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    expected, actual = logits(model, processor), logits(loaded, processor)
    difference = (expected - actual).abs().max().item()
    assert 0 < difference < LOGIT_TOLERANCE  # rounded to float16, not bit-identical, yet close


def test_export_names_a_source_under_the_working_directory_relatively(run, tmp_path, monkeypatch):
    source, _ = run
    monkeypatch.chdir(source.parent)  # as in a repository: runs/NAME exported from the repository's root
    record = export_model(source.name, tmp_path / "shipped")
    assert record["source"] == source.name


def test_the_general_english_lm_is_exported_by_name(run, tmp_path):
    source, _ = run
    cached = tmp_path / "cache" / "en-us-pocketsphinx.arpa"  # what `lm tune --lm $(echoasr lm default)` saves
    (source / "lm.json").write_text(json.dumps({"lm": str(cached), "lm_weight": 1.5, "word_bonus": 2.0}))
    export_model(source, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "lm.json").read_text())
    assert saved == {"lm": "default", "lm_weight": 1.5, "word_bonus": 2.0}


def test_a_small_lm_is_copied_beside_the_weights_and_found_there(run, tmp_path):
    source, _ = run
    lm = tmp_path / "words.arpa"
    lm.write_text(ARPA)
    (source / "lm.json").write_text(json.dumps({"lm": str(lm), "lm_weight": 1.5, "word_bonus": 2.0}))
    out = tmp_path / "out"
    record = export_model(source, out)
    assert record["lm"] == "lm.arpa" and (out / "lm.arpa").read_text() == ARPA
    lm.unlink()  # the export does not need the original any more
    options = resolve_options(out, None)
    assert options.lm == str(out / "lm.arpa") and (options.lm_weight, options.word_bonus) == (1.5, 2.0)


def test_a_large_lm_is_refused_and_nothing_is_written(run, tmp_path, monkeypatch, capsys):
    source, _ = run
    lm = tmp_path / "words.arpa"
    lm.write_text(ARPA)
    (source / "lm.json").write_text(json.dumps({"lm": str(lm)}))
    monkeypatch.setattr(echoasr.export, "MAX_LM_BYTES", 10)
    target = tmp_path / "shipped"
    assert main(["export", str(source), "--out", str(target / "echo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too large to ship" in err[0]
    assert not target.exists() or not any(target.iterdir())


def test_export_refuses_a_folder_without_a_model_and_a_foreign_target(run, tmp_path, capsys):
    source, _ = run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model here" in err[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(EchoError, match="not an earlier export"):
        export_model(source, empty)  # a folder that is not an export is never replaced


def test_a_failed_export_leaves_the_earlier_one_whole(run, tmp_path, monkeypatch):
    source, _ = run
    out = tmp_path / "shipped" / "echo"
    export_model(source, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(run_dir):
        raise OSError("disk full")

    monkeypatch.setattr(echoasr.export, "_train_summary", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(source, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in out.parent.iterdir()] == ["echo"]  # no half-written folder beside it


def test_transcribe_and_evaluate_without_model_use_the_default(run, tmp_path, monkeypatch, capsys):
    source, _ = run
    exported = tmp_path / "echo-default"
    export_model(source, exported)
    audio = tmp_path / "tone.wav"
    soundfile.write(audio, tone(), SAMPLE_RATE)
    arguments = ["transcribe", "--beam", "1", "--no-guard", str(audio)]
    assert main(arguments[:1] + ["--model", str(exported)] + arguments[1:]) == 0
    explicit = capsys.readouterr().out
    assert explicit.startswith(f"{audio}\t") and explicit.strip().split("\t")[1]  # some (random) text

    monkeypatch.delenv(echoasr.pretrained.MODEL_ENV, raising=False)
    monkeypatch.setattr(echoasr.pretrained, "SHIPPED_DIR", exported)
    assert main(arguments) == 0
    assert capsys.readouterr().out == explicit

    monkeypatch.setattr(echoasr.pretrained, "SHIPPED_DIR", tmp_path / "missing")
    monkeypatch.setenv(echoasr.pretrained.MODEL_ENV, str(exported))
    assert main(arguments) == 0
    assert capsys.readouterr().out == explicit
    manifest = tmp_path / "test.tsv"
    manifest.write_text(f"path\ttext\n{audio}\thello\n")
    assert main(["evaluate", "--beam", "1", "--data", str(manifest), "--out", str(tmp_path / "h.tsv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == str(exported)

    monkeypatch.delenv(echoasr.pretrained.MODEL_ENV)
    monkeypatch.setattr(echoasr.pretrained, "SHIPPED_DIR", exported)
    monkeypatch.chdir(tmp_path / "runs")
    assert main(["evaluate", "--beam", "1", "--data", str(manifest)]) == 0
    assert (tmp_path / "runs" / "eval" / "test.tsv").is_file()  # not inside the package
    assert not (exported / "eval").exists()


def test_no_default_model_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    audio = tmp_path / "tone.wav"
    soundfile.write(audio, tone(), SAMPLE_RATE)
    monkeypatch.delenv(echoasr.pretrained.MODEL_ENV, raising=False)
    monkeypatch.setattr(echoasr.pretrained, "SHIPPED_DIR", tmp_path / "missing")
    assert main(["transcribe", str(audio)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no default model is shipped" in err[0] and "--model" in err[0]
    monkeypatch.setenv(echoasr.pretrained.MODEL_ENV, str(tmp_path / "nowhere"))
    assert main(["transcribe", str(audio)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "ECHOASR_MODEL" in err[0]


def test_a_saved_default_lm_is_built_on_first_use_or_skipped(run, tmp_path, monkeypatch, caplog):
    import echoasr.lm.arpa as arpa

    source, _ = run
    (source / "lm.json").write_text(json.dumps({"lm": "default", "lm_weight": 1.5, "word_bonus": 2.0}))
    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "cache"))
    built = []

    def convert(out=None, source=None):
        built.append(arpa.default_lm_cache())
        arpa.default_lm_cache().parent.mkdir(parents=True, exist_ok=True)
        arpa.default_lm_cache().write_text(ARPA)
        return arpa.default_lm_cache()

    monkeypatch.setattr(arpa, "pocketsphinx_lm_path", lambda: tmp_path / "en-us.lm.bin")
    monkeypatch.setattr(arpa, "convert_pocketsphinx", convert)
    caplog.set_level(logging.WARNING)
    first = resolve_options(source, None)
    assert first.lm == str(arpa.default_lm_cache()) and (first.lm_weight, first.word_bonus) == (1.5, 2.0)
    assert sum("building the general English LM" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    resolve_options(source, None)
    assert not any("building" in r.getMessage() for r in caplog.records)  # converted once, then cached

    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "empty-cache"))

    def no_pocketsphinx():
        raise EchoError("pocketsphinx is not installed (pip install 'echoasr[reference]')")

    monkeypatch.setattr(arpa, "pocketsphinx_lm_path", no_pocketsphinx)
    without = resolve_options(source, None)
    assert without.lm is None
    assert any("pocketsphinx is not installed" in r.getMessage() and "decoding without an LM" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(EchoError, match="pocketsphinx is not installed"):
        resolve_options(source, "default")  # asked for explicitly: an error, not a silent fallback
    caplog.clear()
    monkeypatch.setenv("ECHOASR_CACHE", str(tmp_path / "cache"))  # the LM is there, flashlight-text is not
    monkeypatch.setattr(echoasr.decoding, "lm_decoding_installed", lambda: False)
    assert resolve_options(source, None).lm is None
    assert any("flashlight-text" in r.getMessage() for r in caplog.records)


def test_tuning_with_the_general_english_lm_saves_it_by_name(run, tmp_path, monkeypatch):
    pytest.importorskip("flashlight.lib.text")
    import echoasr.lm.arpa as arpa
    from echoasr.tuning import tune

    source, _ = run
    english = tmp_path / "english.arpa"
    english.write_text(ARPA)
    monkeypatch.setattr(arpa, "default_lm", lambda: english)
    monkeypatch.setattr(arpa, "default_lm_cache", lambda: english)
    audio = tmp_path / "tone.wav"
    soundfile.write(audio, tone(), SAMPLE_RATE)
    manifest = tmp_path / "dev.tsv"
    manifest.write_text(f"path\ttext\n{audio}\thello\n")
    tune(source, manifest, "default", lm_weights=(0.5,), word_bonuses=(1.0,), rescore_weights=(1.0,), progress=False)
    saved = json.loads((source / "lm.json").read_text())
    assert (saved["lm"], saved["lm_weight"], saved["word_bonus"]) == ("default", 0.5, 1.0)
    options = resolve_options(source, None)
    assert options.lm == str(english) and (options.lm_weight, options.word_bonus) == (0.5, 1.0)
