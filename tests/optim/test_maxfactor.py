import math

import pytest
import torch
from torch import nn

from echoasr.errors import EchoError
from echoasr.optim import MaxFactor, build_optimizer, one_minus_beta2, state_bytes


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))


# --- it learns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_model, options",
    [
        (lambda: nn.Linear(16, 4), dict(lr=3e-2, relative_step=True)),
        (lambda: nn.Linear(16, 4), dict(lr=1e-2, relative_step=False)),
        (mlp, dict(lr=1e-2, relative_step=True)),
        (mlp, dict(lr=1e-2, relative_step=False, weight_decay=1e-2)),
    ],
)
def test_reduces_regression_loss(kit, make_model, options):
    torch.manual_seed(0)
    model = make_model()
    losses = kit.train(model, MaxFactor(model.parameters(), **options), kit.regression_batches(), kit.mse, 300)
    assert losses[-1] < 0.02 * losses[0]
    assert all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize(
    "options, steps",
    [(dict(lr=1e-2), 200), (dict(lr=3e-2, relative_step=True, weight_decay=1e-2), 300)],
)
def test_learns_a_sequence_task(kit, options, steps):
    torch.manual_seed(0)
    model = kit.TinySequenceTagger()
    optimizer = MaxFactor(model.parameters(), **options)
    losses = kit.train(model, optimizer, kit.reversal_batches(), kit.cross_entropy, steps)
    # chance level is log(8) ~ 2.08; without attention and positions a model stays above ~1.6
    assert losses[0] > 1.9
    assert sum(losses[-10:]) / 10 < 0.5


# --- the update rule ------------------------------------------------------------------------


def test_one_minus_beta2_schedule():
    assert one_minus_beta2(1) == pytest.approx(0.999)
    assert one_minus_beta2(10) == pytest.approx(10**-0.8)
    assert one_minus_beta2(10**6) == pytest.approx(1e-3)  # floor: beta2 <= beta2_max
    assert one_minus_beta2(10**6, beta2_max=1.0) == pytest.approx(10**-4.8)


def test_factored_moments_follow_the_row_and_column_means():
    param = nn.Parameter(torch.zeros(3, 5))
    grad = torch.randn(3, 5)
    param.grad = grad.clone()
    optimizer = MaxFactor([param])
    optimizer.step()
    state = optimizer.state[param]
    assert set(state) == {"step", "row_var", "col_var"}
    torch.testing.assert_close(state["row_var"], 0.999 * grad.square().mean(1, keepdim=True))
    torch.testing.assert_close(state["col_var"], 0.999 * grad.square().mean(0, keepdim=True))
    torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)  # the caller's gradient is untouched


def test_matrix_update_is_a_sign_update_scaled_per_row():
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(6, 10))
    before = param.detach().clone()
    grad = torch.randn(6, 10)
    grad[2, :5] = 0.0
    param.grad = grad
    MaxFactor([param], lr=0.1, relative_step=False).step()
    change = param.detach() - before
    assert torch.equal(torch.sign(change), -torch.sign(grad))
    magnitude = change.abs()
    nonzero = grad != 0
    for row in range(6):  # one magnitude per row
        values = magnitude[row][nonzero[row]]
        torch.testing.assert_close(values, values.max().expand_as(values))
    # the normalised update has infinity norm 1, so the largest row moves by exactly lr
    assert magnitude.max().item() == pytest.approx(0.1)


def test_vector_update_is_normalised_by_its_infinity_norm():
    param = nn.Parameter(torch.zeros(4))
    param.grad = torch.tensor([1.0, -2.0, 0.5, 0.0])
    MaxFactor([param], lr=0.1, relative_step=False).step()
    # first step: v = (1 - gamma) g^2, so every nonzero entry moves by -lr * sign(g)
    torch.testing.assert_close(param.detach(), torch.tensor([-0.1, 0.1, -0.1, 0.0]))


def test_relative_step_scales_by_parameter_rms():
    param = nn.Parameter(torch.full((4,), 3.0))
    param.grad = torch.ones(4)
    MaxFactor([param], lr=0.01, relative_step=True).step()
    torch.testing.assert_close(param.detach(), torch.full((4,), 3.0 - 0.01 * 3.0))
    zero = nn.Parameter(torch.zeros(4))  # eps2 keeps a zero parameter moving
    zero.grad = torch.ones(4)
    MaxFactor([zero], lr=0.01, relative_step=True, eps=(1e-10, 1e-3)).step()
    torch.testing.assert_close(zero.detach(), torch.full((4,), -1e-5))


def test_max_update_ratio_caps_the_change():
    param = nn.Parameter(torch.full((8, 8), 0.5))
    param.grad = torch.randn(8, 8)
    before = param.detach().clone()
    MaxFactor([param], lr=1.0, relative_step=False, max_update_ratio=0.01).step()
    change_rms = (param.detach() - before).norm() / 8
    assert change_rms.item() == pytest.approx(0.01 * 0.5, rel=1e-4)


def test_clip_threshold_below_one_limits_update_rms():
    param = nn.Parameter(torch.zeros(16))
    param.grad = torch.ones(16)  # normalised update is all ones: RMS 1
    MaxFactor([param], lr=1.0, relative_step=False, clip_threshold=0.25).step()
    torch.testing.assert_close(param.detach(), torch.full((16,), -0.25))


def test_invalid_options_are_rejected():
    params = [nn.Parameter(torch.zeros(2))]
    bad_options = [
        dict(lr=-1.0), dict(beta2_decay=0.5), dict(beta2_max=0.0), dict(eps=(0.0, 1e-3)),
        dict(gamma=1.0), dict(weight_decay=-0.1), dict(clip_threshold=0.0), dict(max_update_ratio=0.0),
    ]
    for bad in bad_options:
        with pytest.raises(ValueError):
            MaxFactor(params, **bad)


def test_sparse_gradients_are_rejected():
    embedding = nn.Embedding(10, 4, sparse=True)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        MaxFactor(embedding.parameters()).step()


# --- robustness -----------------------------------------------------------------------------


def test_zero_gradients_leave_parameters_unchanged_and_finite(kit):
    torch.manual_seed(0)
    model = kit.TinySequenceTagger()
    optimizer = MaxFactor(model.parameters(), lr=3e-2)
    kit.train(model, optimizer, kit.reversal_batches(), kit.cross_entropy, 3)  # nonzero history
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    for state in optimizer.state.values():
        assert all(torch.isfinite(v).all() for v in state.values())


def test_zero_gradients_from_the_first_step_are_safe():
    params = [nn.Parameter(torch.randn(5, 7)), nn.Parameter(torch.randn(7)), nn.Parameter(torch.tensor(2.0))]
    before = [p.detach().clone() for p in params]
    optimizer = MaxFactor(params)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_sparse_like_gradients_stay_finite_and_touch_only_their_rows():
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 8)
    optimizer = MaxFactor(embedding.parameters(), lr=3e-2)
    before = embedding.weight.detach().clone()
    used = torch.tensor([3, 7, 7, 11])
    for _ in range(5):
        optimizer.zero_grad()
        embedding(used).square().sum().backward()
        optimizer.step()
    weight = embedding.weight.detach()
    assert torch.isfinite(weight).all()
    unused = torch.ones(50, dtype=torch.bool)
    unused[used] = False
    assert torch.equal(weight[unused], before[unused])
    assert not torch.equal(weight[used], before[used])

    # a single nonzero entry in a large matrix
    param = nn.Parameter(torch.randn(64, 64))
    param.grad = torch.zeros(64, 64)
    param.grad[5, 9] = 1e-6
    MaxFactor([param]).step()
    assert torch.isfinite(param).all()


def test_weight_decay_is_decoupled():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 6)), nn.Parameter(torch.randn(6))]
    before = [p.detach().clone() for p in params]
    lr, weight_decay, steps = 0.05, 0.1, 4
    optimizer = MaxFactor(params, lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    for p, b in zip(params, before):
        torch.testing.assert_close(p.detach(), b * (1 - lr * weight_decay) ** steps)
    # decay never enters the moments: with zero gradients they stay zero
    for state in optimizer.state.values():
        assert all(not v.any() for k, v in state.items() if k != "step")


# --- memory ---------------------------------------------------------------------------------


def test_state_is_much_smaller_than_adamw_for_a_matrix_heavy_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))
    sizes = {}
    for name, make in [("adamw", torch.optim.AdamW), ("maxfactor", MaxFactor)]:
        optimizer = make(model.parameters())
        model(torch.randn(8, 256)).sum().backward()
        optimizer.step()
        sizes[name] = state_bytes(optimizer)
        model.zero_grad()
    weights = 2 * 256 * 512
    biases = 512 + 256
    assert sizes["adamw"] == 4 * 2 * (weights + biases) + 4 * 4  # exp_avg, exp_avg_sq, 4 steps
    # rows + columns per matrix, a full vector per bias, a float32 step per tensor
    assert sizes["maxfactor"] == 4 * (2 * (256 + 512) + biases) + 4 * 4
    assert sizes["maxfactor"] < 0.01 * sizes["adamw"]


# --- precision ------------------------------------------------------------------------------


def test_bf16_parameters_train_with_float32_state(kit):
    torch.manual_seed(0)
    model = mlp().to(torch.bfloat16)
    batches = kit.regression_batches()

    def loss_fn(model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x.bfloat16()).float(), y)

    optimizer = MaxFactor(model.parameters(), lr=1e-2)
    losses = kit.train(model, optimizer, batches, loss_fn, 300)
    assert losses[-1] < 0.05 * losses[0]
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    for state in optimizer.state.values():
        assert all(v.dtype == torch.float32 for v in state.values())


def test_autocast_training(kit):
    torch.manual_seed(0)
    model = mlp()
    batches = kit.regression_batches()

    def loss_fn(model, batch):
        x, y = batch
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = model(x)
        return nn.functional.mse_loss(prediction.float(), y)

    losses = kit.train(model, MaxFactor(model.parameters(), lr=1e-2), batches, loss_fn, 300)
    assert losses[-1] < 0.05 * losses[0]


# --- selection by name ----------------------------------------------------------------------


def test_build_optimizer_decays_matrices_only(kit):
    model = kit.TinySequenceTagger()
    optimizer = build_optimizer("maxfactor", model, lr=1e-3, weight_decay=0.1, relative_step=True)
    assert isinstance(optimizer, MaxFactor)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    assert decayed["relative_step"] is True
    assert isinstance(build_optimizer("adamw", model, lr=1e-3), torch.optim.AdamW)


def test_build_optimizer_reports_user_mistakes(kit):
    model = kit.TinySequenceTagger()
    with pytest.raises(EchoError, match="unknown optimizer 'adam'"):
        build_optimizer("adam", model, lr=1e-3)
    with pytest.raises(EchoError, match="learning rate"):
        build_optimizer("maxfactor", model, lr=-1.0)
