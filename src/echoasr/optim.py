"""MaxFactor: the seed's optimizer, an Adafactor relative with max-based normalisation.

Reimplemented from the description and code at github.com/sine2pi/Maxfactor (``MaxFactor2`` in
``opimizer.py`` and ``MaxFactor/MaxFactor.py``, the versions the seed model used). Per parameter
``p`` with gradient ``g`` at step ``t`` (all arithmetic in float32, or float64 for float64 params):

* ``c_t = 1 - beta2_t = min(0.999, max(1 - beta2_max, t ** beta2_decay))``: Adafactor's
  ``t^-0.8`` schedule, capped at 0.999 (at ``t = 1`` it is 1) and, as in the original, floored
  at ``1 - beta2_max = 0.001`` so the averaging horizon stops growing at ~1000 steps.
  ``beta2_max=1`` removes the floor (Adafactor's form).
* matrices (``p.dim() >= 2``, factored over the last two dims): row and column EMAs of ``g**2``,
  ``r <- lerp(r, mean_cols(g**2), c_t)``, ``k <- lerp(k, mean_rows(g**2), c_t)``, and
  ``v = r k^T / max(r)``. Adafactor divides by ``mean(r)``; the original divides by the row
  maximum. The two differ by one scalar per matrix, which the infinity-norm step below cancels,
  so the choice only moves where ``eps1`` bites.
* vectors and scalars: ``v <- gamma v + (1 - gamma) g**2`` (no bias correction: it is one scalar
  per tensor, cancelled by the infinity norm too).
* ``u = g / sqrt(max(v, eps1**2))``, then ``u <- u / max(||u||_inf, eps1)`` (zero-safe).
* direction: for matrices ``sign(u) * max_j |u_ij|`` (a sign update scaled per row by the row's
  largest normalised gradient); for vectors and scalars ``u`` itself.
* optional update clipping (``clip_threshold``, Adafactor's ``d``): direction divided by
  ``max(1, RMS(direction) / d)``. Every entry is already at most 1, so only ``d < 1`` can act.
* step size: ``lr``, or with ``relative_step`` Adafactor's relative step
  ``min(lr, t**-0.5) * max(eps2, RMS(p))``.
* optional trust cap (``max_update_ratio``): the RMS of the change is kept at most
  ``max_update_ratio * max(eps2, RMS(p))``.
* decoupled weight decay ``p <- p * (1 - lr * weight_decay)`` before the update, with the group's
  ``lr`` (not the relative step), as AdamW does.

Defects of the original fixed here: a full-size ``v`` was allocated for every parameter,
matrices included, so the factored state saved no memory; ``grad.square_()`` squared ``p.grad``
in place, so vector updates used ``g**2`` (always positive: vectors only ever moved down) and
the caller's gradient was overwritten; the trust cap used ``RMS(p)`` without ``eps2`` (a zero
parameter could never move); ``.item()`` calls synchronised the device several times per tensor;
``d = 1`` clipping was a silent no-op; and ``torch.optim.Optimizer.load_state_dict`` cast the
float32 state of bf16 parameters to bf16 (handled here by :meth:`MaxFactor.load_state_dict`).
Dropped: the scalar-only ``scalar_boost`` path (scalars follow the vector rule) and the
``max_norm=False`` switch (the row-max rule is what defines MaxFactor). Changed default: the
original always took relative steps; here ``relative_step`` is off unless asked for, so ``lr``
has AdamW's scale (no entry moves by more than ``lr`` per step), and on the benchmark task
(``benchmarks/optimizers.py``) the absolute step learned much faster than the relative one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from echoasr.errors import EchoError

__all__ = ["OPTIMIZER_NAMES", "MaxFactor", "build_optimizer", "one_minus_beta2", "state_bytes"]

OPTIMIZER_NAMES = ("adamw", "maxfactor")

# Upper clamp of 1 - beta2_t: at t = 1 the schedule gives 1, i.e. no averaging at all.
_MAX_ONE_MINUS_BETA2 = 0.999


def one_minus_beta2(step: int | float, beta2_decay: float = -0.8, beta2_max: float = 0.999) -> float:
    """The second-moment EMA coefficient ``1 - beta2_t`` at a (1-based) step."""
    return min(_MAX_ONE_MINUS_BETA2, max(1.0 - beta2_max, float(step) ** beta2_decay))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by an optimizer's per-parameter state tensors (step counters included)."""
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, Tensor)
    )


def build_optimizer(
    name: str, model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
    other_lr: tuple[set[str], float] | None = None, **options: Any,
) -> torch.optim.Optimizer:
    """``adamw`` or ``maxfactor`` over a model's trainable parameters, decaying matrices only.

    Biases, norm weights and scalars (``dim < 2``) get no weight decay, as in the HF Trainer's
    default grouping; ``other_lr`` = (parameter names, rate) gives those parameters their own
    learning rate (the schedule scales it like the others); ``options`` go to the optimizer's
    constructor.
    """
    names, special_lr = other_lr if other_lr is not None else (set(), lr)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        dict(params=[p for n, p in trainable if (p.dim() >= 2) == matrix and (n in names) == special],
             weight_decay=weight_decay if matrix else 0.0, lr=special_lr if special else lr)
        for special in (False, True) for matrix in (True, False)
    ]
    groups = [group for group in groups if group["params"]]
    classes = {"adamw": torch.optim.AdamW, "maxfactor": MaxFactor}
    if name not in classes:
        raise EchoError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZER_NAMES)}")
    try:
        return classes[name](groups, lr=lr, **options)
    except ValueError as error:  # a bad learning rate or option from the user's configuration
        raise EchoError(f"{name}: {error}") from None


def _state_dtype(param: Tensor) -> torch.dtype:
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def _rms(tensor: Tensor) -> Tensor:
    return tensor.norm() / math.sqrt(tensor.numel())


class MaxFactor(torch.optim.Optimizer):
    """Factored, max-normalised adaptive optimizer (see the module docstring for the rule).

    Args:
        params: parameters or parameter groups (dicts may override any option below).
        lr: learning rate. Without ``relative_step`` it bounds each entry's change per step, as
            Adam's does, so AdamW's learning rates are the right scale; with ``relative_step`` it
            is a change relative to ``RMS(p)`` (``1e-2`` ~ 1% per step).
            The seed's setting was ``lr=0.025, relative_step=True``.
        beta2_decay: exponent of the ``1 - beta2_t`` schedule (negative).
        beta2_max: largest ``beta2_t`` the schedule reaches (``1`` for no floor).
        eps: ``(eps1, eps2)``: floor of the second moment's root and of ``RMS(p)``.
        gamma: EMA factor of the second moment of vectors and scalars.
        weight_decay: decoupled weight decay.
        relative_step: scale steps by ``max(eps2, RMS(p))`` and cap them at ``t**-0.5``.
        clip_threshold: Adafactor update clipping ``d`` (``None``: off).
        max_update_ratio: cap on ``RMS(change) / max(eps2, RMS(p))`` (``None``: off).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        *,
        beta2_decay: float = -0.8,
        beta2_max: float = 0.999,
        eps: tuple[float, float] = (1e-10, 1e-3),
        gamma: float = 0.99,
        weight_decay: float = 0.0,
        relative_step: bool = False,
        clip_threshold: float | None = None,
        max_update_ratio: float | None = None,
    ):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not beta2_decay < 0.0:
            raise ValueError(f"invalid beta2_decay {beta2_decay}: must be < 0")
        if not 0.0 < beta2_max <= 1.0:
            raise ValueError(f"invalid beta2_max {beta2_max}: must be in (0, 1]")
        if len(eps) != 2 or not all(e > 0.0 for e in eps):
            raise ValueError(f"invalid eps {eps}: must be two positive numbers")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"invalid gamma {gamma}: must be in [0, 1)")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}: must be >= 0")
        if clip_threshold is not None and not clip_threshold > 0.0:
            raise ValueError(f"invalid clip_threshold {clip_threshold}: must be > 0 or None")
        if max_update_ratio is not None and not max_update_ratio > 0.0:
            raise ValueError(f"invalid max_update_ratio {max_update_ratio}: must be > 0 or None")
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            beta2_max=beta2_max,
            eps=tuple(eps),
            gamma=gamma,
            weight_decay=weight_decay,
            relative_step=relative_step,
            clip_threshold=clip_threshold,
            max_update_ratio=max_update_ratio,
        )
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor) -> dict[str, Tensor]:
        dtype = _state_dtype(param)
        # Step lives on the CPU as a float32 tensor, like torch's own optimizers: reading it
        # never synchronises the accelerator.
        state: dict[str, Tensor] = {"step": torch.tensor(0.0, dtype=torch.float32)}
        if param.dim() >= 2:
            shape = param.shape
            state["row_var"] = torch.zeros(*shape[:-1], 1, dtype=dtype, device=param.device)
            state["col_var"] = torch.zeros(*shape[:-2], 1, shape[-1], dtype=dtype, device=param.device)
        else:
            state["exp_avg_sq"] = torch.zeros(param.shape, dtype=dtype, device=param.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None or param.numel() == 0:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("MaxFactor does not support sparse gradients")
                if param.is_complex():
                    raise RuntimeError("MaxFactor does not support complex parameters")
                state = self.state[param]
                if not state:
                    state.update(self._init_state(param))
                self._update(param, state, group)
        return loss

    def _update(self, param: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
        eps1, eps2 = group["eps"]
        dtype = _state_dtype(param)
        # A copy for low-precision grads, an alias otherwise: never modified in place below.
        grad = param.grad.to(dtype)
        state["step"] += 1
        step = state["step"].item()
        coefficient = one_minus_beta2(step, group["beta2_decay"], group["beta2_max"])

        # ``update`` is the working tensor of the parameter's size; built in place from here on.
        if "row_var" in state:
            row_var, col_var = state["row_var"], state["col_var"]
            row_mean = torch.linalg.vector_norm(grad, dim=-1, keepdim=True).square_().div_(grad.shape[-1])
            col_mean = torch.linalg.vector_norm(grad, dim=-2, keepdim=True).square_().div_(grad.shape[-2])
            row_var.lerp_(row_mean, coefficient)
            col_var.lerp_(col_mean, coefficient)
            row_max = row_var.amax(dim=-2, keepdim=True).clamp_min(eps1)
            update = row_var.mul(col_var).div_(row_max).clamp_min_(eps1 * eps1)
        else:
            exp_avg_sq = state["exp_avg_sq"]
            exp_avg_sq.mul_(group["gamma"]).addcmul_(grad, grad, value=1.0 - group["gamma"])
            update = exp_avg_sq.clamp_min(eps1 * eps1)
        update.rsqrt_().mul_(grad)
        update.div_(update.abs().amax().clamp_min(eps1))
        if param.dim() >= 2:
            row_scale = update.abs().amax(dim=-1, keepdim=True)
            update.sign_().mul_(row_scale)
        if group["clip_threshold"] is not None:
            update.div_((_rms(update) / group["clip_threshold"]).clamp_min(1.0))

        target = param if param.dtype == dtype else param.to(dtype)
        lr = group["lr"]
        if group["relative_step"]:
            step_size = _rms(target).clamp_min(eps2) * min(lr, step**-0.5)
        else:
            step_size = lr
        if group["max_update_ratio"] is not None:
            allowed = _rms(target).clamp_min(eps2) * group["max_update_ratio"]
            change = step_size * _rms(update)
            step_size = step_size * (allowed / change.clamp_min(torch.finfo(dtype).tiny)).clamp_max(1.0)
        if group["weight_decay"] != 0.0:
            target.mul_(1.0 - lr * group["weight_decay"])
        target.sub_(update.mul_(step_size))
        if target is not param:
            param.copy_(target)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state saved by :meth:`state_dict` (e.g. the HF Trainer's ``optimizer.pt``).

        ``torch.optim.Optimizer`` casts floating state to each parameter's dtype, which would
        round the float32 moments of bf16 parameters to bf16; the saved tensors are restored in
        their own precision instead. Step counters may be tensors or plain numbers.
        """
        saved_ids = [index for group in state_dict["param_groups"] for index in group["params"]]
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [param for group in self.param_groups for param in group["params"]]
        for index, param in zip(saved_ids, params, strict=True):
            if index in saved_state:
                self.state[param] = _restore_state(saved_state[index], param)


def _restore_state(saved: dict[str, Any], param: Tensor) -> dict[str, Any]:
    restored: dict[str, Any] = {}
    for key, value in saved.items():
        if key == "step":
            restored[key] = torch.tensor(float(value), dtype=torch.float32)
        elif isinstance(value, Tensor):
            restored[key] = value.to(device=param.device, dtype=_state_dtype(param), copy=True)
        else:
            restored[key] = value
    return restored
