"""The model on a CUDA device computes what it computes on the CPU: loss, gradients, joint CTC/attention
decoding, bf16 autocast, the seed preset. Skipped without a GPU (CI has none); run on a GPU machine
with `pytest tests/model/test_cuda.py`."""

import pytest
import torch

from echoasr.model import EchoForConditionalGeneration, preset_config

from .conftest import make_features, make_labels, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PITCH = dict(features=["mel", "f0"], rotary_theta_mode="phase", rotary_radius="bounded", pitch_bias=True)


def to(features: dict, device: str) -> dict:
    return {name: tensor.to(device) for name, tensor in features.items()}


@pytest.fixture(autouse=True)
def exact_matmuls():
    """TF32 would make CUDA differ from the CPU by more than rounding."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.parametrize("theta_mode", ["phase", "additive"])
def test_loss_and_gradients_match_the_cpu(theta_mode):
    model = tiny_model(**{**PITCH, "rotary_theta_mode": theta_mode}).train()
    features, lengths = make_features(model.config, [30, 21, 9])
    labels = make_labels([[5, 6, 7, 8], [9, 10], [11]])
    cpu = model(features=features, feature_lengths=lengths, labels=labels)
    cpu.loss.backward()
    cpu_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.cuda()
    gpu = model(features=to(features, "cuda"), feature_lengths=lengths.cuda(), labels=labels.cuda())
    gpu.loss.backward()
    torch.testing.assert_close(gpu.loss.cpu(), cpu.loss, rtol=1e-4, atol=1e-5)
    assert cpu_grads
    for name, p in model.named_parameters():
        if name in cpu_grads:
            torch.testing.assert_close(p.grad.cpu(), cpu_grads[name], rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("beams", [1, 3])
def test_joint_decoding_matches_the_cpu(beams):
    model = tiny_model(vocab_size=24, initializer_range=0.3, **PITCH)
    features, lengths = make_features(model.config, [30, 22, 13])
    options = dict(num_beams=beams, ctc_weight=0.4, max_new_tokens=10)
    cpu = model.generate(features=features, feature_lengths=lengths, **options)
    model.cuda()
    gpu = model.generate(features=to(features, "cuda"), feature_lengths=lengths.cuda(), **options)
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)


def test_bf16_autocast_and_the_seed_preset_run_on_cuda():
    torch.manual_seed(0)
    model = EchoForConditionalGeneration(preset_config("seed", vocab_size=24, d_model=64, ffn_dim=128, n_mels=8)).cuda()
    features, lengths = make_features(model.config, [40, 25])
    labels = make_labels([[5, 6, 7], [9, 10]]).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(features=to(features, "cuda"), feature_lengths=lengths.cuda(), labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ids = model.eval().generate(features=to(features, "cuda"), feature_lengths=lengths.cuda(), num_beams=2, max_new_tokens=6)
    assert ids.device.type == "cuda" and ids.shape[0] == 2
