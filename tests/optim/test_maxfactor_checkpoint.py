"""Saving and resuming MaxFactor the way the HF Trainer does (torch.save / torch.load(weights_only))."""

import pytest
import torch
from torch import nn

from echoasr.optim import MaxFactor


def make_optimizer(model: nn.Module) -> MaxFactor:
    # two groups, as trainers use (no decay on vectors), with different options
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return MaxFactor(
        [dict(params=matrices, weight_decay=1e-2, relative_step=True), dict(params=others, lr=1e-2)],
        lr=3e-2,
        max_update_ratio=0.5,
    )


def resume_matches_uninterrupted(kit, tmp_path, dtype=torch.float32, step_as_int=False):
    batches = kit.reversal_batches(seed=1)

    def fresh():
        torch.manual_seed(0)
        model = kit.TinySequenceTagger().to(dtype)
        return model, make_optimizer(model)

    model, optimizer = fresh()
    kit.train(model, optimizer, batches, kit.cross_entropy, 10)
    expected = [p.detach().clone() for p in model.parameters()]

    model, optimizer = fresh()
    kit.train(model, optimizer, batches, kit.cross_entropy, 4)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    del model, optimizer

    model, optimizer = fresh()
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    saved = torch.load(tmp_path / "optimizer.pt", map_location="cpu", weights_only=True)
    if step_as_int:
        for state in saved["state"].values():
            state["step"] = int(state["step"])
    optimizer.load_state_dict(saved)
    for state in optimizer.state.values():
        assert state["step"].item() == 4
        assert all(v.dtype == torch.float32 for v in state.values())
    assert optimizer.param_groups[0]["weight_decay"] == 1e-2
    assert optimizer.param_groups[0]["relative_step"] is True
    kit.train(model, optimizer, batches, kit.cross_entropy, 6, start=4)
    for resumed, reference in zip(model.parameters(), expected):
        assert torch.equal(resumed.detach(), reference)


def test_resume_is_bitwise_identical(kit, tmp_path):
    resume_matches_uninterrupted(kit, tmp_path)


def test_resume_accepts_integer_step_counters(kit, tmp_path):
    resume_matches_uninterrupted(kit, tmp_path, step_as_int=True)


def test_resume_keeps_float32_state_for_bf16_parameters(kit, tmp_path):
    # torch.optim.Optimizer.load_state_dict would round the state to bf16 here
    resume_matches_uninterrupted(kit, tmp_path, dtype=torch.bfloat16)


def test_loaded_state_is_not_shared_with_the_source():
    param = nn.Parameter(torch.randn(3, 3))
    source = MaxFactor([param])
    param.grad = torch.randn(3, 3)
    source.step()
    snapshot = {k: v.clone() for k, v in source.state[param].items()}
    target = MaxFactor([param])
    target.load_state_dict(source.state_dict())
    target.step()
    assert all(torch.equal(source.state[param][k], v) for k, v in snapshot.items())


def test_hf_trainer_checkpoint_resume(tmp_path):
    transformers = pytest.importorskip("transformers")

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

        def forward(self, x, labels=None):
            prediction = self.net(x).squeeze(-1)
            return {"loss": nn.functional.mse_loss(prediction, labels), "logits": prediction}

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=generator)
    y = x.sum(-1)
    dataset = [{"x": x[i], "labels": y[i]} for i in range(32)]

    def run(output_dir, resume=None):
        torch.manual_seed(0)
        model = Regressor()
        args = transformers.TrainingArguments(
            output_dir=str(output_dir),
            max_steps=8,
            per_device_train_batch_size=8,
            save_steps=4,
            save_strategy="steps",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
        )
        optimizer = MaxFactor(model.parameters(), lr=3e-2, weight_decay=1e-2)
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=dataset, optimizers=(optimizer, None)
        )
        trainer.train(resume_from_checkpoint=resume)
        return [p.detach().clone() for p in model.parameters()]

    uninterrupted = run(tmp_path / "a")
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-4"))
    assert (tmp_path / "a" / "checkpoint-4" / "optimizer.pt").exists()
    for p, q in zip(resumed, uninterrupted):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
