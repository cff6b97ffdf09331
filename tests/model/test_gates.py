"""The seed's residual variants (learned blend, mlp/t/m gates) and the cross-feature gate fusion."""

import math

import pytest
import torch

from echoasr.model.gates import (
    BlendResidual,
    CrossFeatureGate,
    GatedResidual,
    MemoryGate,
    MLPGate,
    TypeGate,
    make_gate,
)


def test_gates_are_per_position_scalars_in_unit_interval():
    torch.manual_seed(0)
    h = torch.randn(3, 7, 16)
    for gate in (MLPGate(16), TypeGate(16, 5), MemoryGate(16, 9)):
        g = gate(h)
        assert g.shape == (3, 7, 1)
        assert torch.all((g > 0) & (g < 1))
        # Per position: a frame's gate does not depend on the other frames.
        torch.testing.assert_close(gate(h[:, 2:3]), g[:, 2:3])


def test_type_gate_is_softmax_over_types_of_sigmoid_gates():
    """The fused projection computes the seed's t_gate: sum_k softmax(W h)_k * sigmoid(w_k.h + c_k)."""
    torch.manual_seed(1)
    gate = TypeGate(8, 4)
    h = torch.randn(2, 5, 8)
    weight, bias = gate.project.weight, gate.project.bias
    classifier = torch.softmax(h @ weight[:4].t() + bias[:4], dim=-1)
    per_type = torch.stack([torch.sigmoid(h @ weight[4 + k] + bias[4 + k]) for k in range(4)], dim=-1)
    torch.testing.assert_close(gate(h), (classifier * per_type).sum(-1, keepdim=True))


def test_memory_gate_formula():
    torch.manual_seed(2)
    gate = MemoryGate(8, 6)
    h = torch.randn(2, 5, 8)
    attention = torch.softmax(h @ gate.keys.t() / math.sqrt(8), dim=-1)
    expected = 0.5 * (torch.sigmoid(gate.data(h)) + torch.sigmoid(attention @ gate.values))
    torch.testing.assert_close(gate(h), expected)


def test_gated_residual_scales_the_update_not_the_stream():
    torch.manual_seed(3)
    x, update, h = torch.randn(3, 2, 4, 8).unbind(0)
    residual = GatedResidual(make_gate("mlp", 8), dropout=0.0)
    g = residual.gate(h)
    torch.testing.assert_close(residual(x, update, h), x + g * update)
    with torch.no_grad():  # a closed gate leaves the stream untouched (the seed's `x + gate` could not)
        residual.gate.project.bias.fill_(-50.0)
    torch.testing.assert_close(residual(x, update, h), x)
    with pytest.raises(ValueError, match="input"):
        residual(x, update)


def test_blend_residual_equals_seed_blend():
    torch.manual_seed(4)
    x, update = torch.randn(2, 3, 5, 8).unbind(0)
    blend = BlendResidual(dropout=0.0)
    b = torch.sigmoid(torch.tensor(0.5))
    seed_form = b * (x + update) + (1 - b) * x
    torch.testing.assert_close(blend(x, update), seed_form)


def test_cross_feature_gate_formula_and_shapes():
    torch.manual_seed(5)
    gate = CrossFeatureGate(["mel", "f0", "phase"], 8)
    streams = {name: torch.randn(2, 6, 8) for name in ("mel", "f0", "phase")}
    out = gate(streams)
    assert out.shape == (2, 6, 8)
    stacked = torch.stack([streams[n] for n in ("mel", "f0", "phase")], dim=-2)
    gates = torch.sigmoid(gate.gates(stacked.mean(-2)))
    expected = gate.integrate(torch.cat([gates[..., i, None] * stacked[..., i, :] for i in range(3)], dim=-1))
    torch.testing.assert_close(out, expected)


SETUPS = {
    "blend": dict(residual_blend=True),
    "mlp": dict(residual_gate="mlp"),
    "t_gate": dict(residual_gate="t_gate", residual_gate_types=3),
    "m_gate": dict(residual_gate="m_gate", residual_gate_memory=5),
    "c_gate": dict(features=["mel", "f0", "phase"], fusion="c_gate"),
}


def gate_parameters(model, name):
    encoder_layer, decoder_layer = model.encoder.layers[0], model.decoder.layers[0]
    if name == "blend":
        return {
            "encoder attention blend": encoder_layer.attn_residual.beta,
            "decoder self blend": decoder_layer.self_residual.beta,
            "decoder cross blend": decoder_layer.cross_residual.beta,
        }
    if name == "c_gate":
        return {"gates": model.encoder.fusion.cross_gate.gates.weight, "integrate": model.encoder.fusion.cross_gate.integrate.weight}
    gates = {"encoder": encoder_layer.ffn_residual.gate, "decoder": decoder_layer.ffn_residual.gate}
    parameters = {}
    for where, gate in gates.items():
        for parameter_name, parameter in gate.named_parameters():
            parameters[f"{where} {parameter_name}"] = parameter
    return parameters


@pytest.mark.parametrize("name", list(SETUPS))
def test_component_padding_invariance(echo, name):
    # Large initial weights: with the 0.02 default, gates sit at 0.5 and a leak would hide in the tolerance.
    model = echo.tiny_model(initializer_range=0.3, **SETUPS[name])
    echo.assert_batch_equals_examples(model)


@pytest.mark.parametrize("name", list(SETUPS))
def test_component_keeps_decoder_causal(echo, name):
    echo.assert_decoder_causal(echo.tiny_model(**SETUPS[name]), with_mask=name == "t_gate")


@pytest.mark.parametrize("name", list(SETUPS))
def test_gradients_reach_component_parameters(echo, name):
    model = echo.tiny_model(**SETUPS[name])
    echo.assert_gradients_reach(model, gate_parameters(model, name))


@pytest.mark.parametrize("name", ["blend", "t_gate", "m_gate"])
def test_component_changes_the_model(echo, name):
    """The option is wired in: same weights otherwise, different outputs."""
    plain = echo.tiny_model()
    variant = echo.tiny_model(**SETUPS[name])
    variant.load_state_dict(plain.state_dict(), strict=False)
    features, lengths = echo.make_features(plain.config, [12])
    labels = echo.make_labels([[5, 6]])
    with torch.no_grad():
        a = plain(features=features, feature_lengths=lengths, labels=labels).logits
        b = variant(features=features, feature_lengths=lengths, labels=labels).logits
    assert not torch.allclose(a, b)


def test_initial_values_survive_post_init(echo):
    model = echo.tiny_model(residual_blend=True, residual_gate="m_gate", residual_gate_memory=50)
    assert model.encoder.layers[0].attn_residual.beta.item() == 0.5
    keys = model.decoder.layers[0].ffn_residual.gate.keys
    assert 0.7 < keys.std().item() < 1.3  # unit-variance slots, not the 0.02 Linear init
