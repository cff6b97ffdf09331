from echoasr.cli import main
from echoasr.text import load_tokenizer


def test_data_info_and_tokenizer(tmp_path, tone, capsys):
    tone(tmp_path / "a.wav", seconds=0.5)
    tone(tmp_path / "b.wav", seconds=1.0)
    manifest = tmp_path / "train.tsv"
    manifest.write_text("path\ttext\tspeaker\na.wav\tHello there\tx\nb.wav\tGeneral Kenobi\ty\n")
    assert main(["data", "info", str(manifest)]) == 0
    assert "2 utterances, 0.0 min, 2 speakers" in capsys.readouterr().out
    assert main(["data", "tokenizer", str(manifest), "--out", str(tmp_path / "tok"), "--kind", "char"]) == 0
    assert load_tokenizer(tmp_path / "tok").decode(load_tokenizer(tmp_path / "tok").encode("Hello")) == "hello"


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--utterances", "20", "--hold-out", "zed"]) == 2
    assert capsys.readouterr().err.startswith("echoasr: error: unknown speaker(s) to hold out: zed")
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--voices", "debian,nobody"]) == 2
    assert capsys.readouterr().err.startswith("echoasr: error: unknown voice 'nobody'")
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--speed-perturb", "0.9,fast"]) == 2
    assert "--speed-perturb takes comma-separated numbers" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--mix", "a:0.8,b:0.5"]) == 2
    assert "mix shares" in capsys.readouterr().err
    (tmp_path / "m.tsv").write_text("path\ttext\nnone.wav\thi\n")
    assert main(["data", "info", str(tmp_path / "m.tsv")]) == 2
    assert "no usable utterances" in capsys.readouterr().err


def test_data_tones_size_mistake_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "tones", "--out", str(tmp_path / "t"), "--utterances", "6"]) == 2
    assert capsys.readouterr().err.startswith("echoasr: error: --utterances 6 leaves no training data")
