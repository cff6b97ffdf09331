"""The model learns: a tiny model overfits a handful of utterances and decodes them exactly, and
it trains and predicts (with real decoding) through Hugging Face's Seq2SeqTrainer."""

import copy

import pytest
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

SEQUENCES = [[5, 9, 3, 12], [7, 7, 4], [14, 6, 11, 10, 8], [13, 3]]
LENGTHS = [26, 20, 30, 14]


@pytest.fixture(scope="module")
def overfitted():
    """(model, features, lengths, final loss) after 120 full-batch AdamW steps."""
    from echoasr.model import EchoConfig, EchoForConditionalGeneration

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = EchoConfig(
        vocab_size=16, d_model=32, encoder_layers=2, decoder_layers=1, attention_heads=4, ffn_dim=64,
        dropout=0.0, n_mels=8, subsampling=2, features=["mel", "f0"], rotary_theta_mode="phase",
        rotary_radius="bounded", pitch_bias=True, ctc_weight=0.3,
    )  # fmt: skip
    model = EchoForConditionalGeneration(config).train()
    generator = torch.Generator().manual_seed(1)
    frames = max(LENGTHS)
    valid = torch.arange(frames)[None] < torch.tensor(LENGTHS)[:, None]
    f0 = (120 + 80 * torch.rand(4, frames, generator=generator)) * valid
    features = {"mel": torch.randn(4, 8, frames, generator=generator) * valid[:, None], "f0": f0, "voiced": (f0 > 0).float()}
    lengths = torch.tensor(LENGTHS)
    labels = torch.full((4, 6), -100)
    for row, sequence in enumerate(SEQUENCES):
        labels[row, : len(sequence) + 1] = torch.tensor(sequence + [2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        loss = model(features=features, feature_lengths=lengths, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(previous)
    return model.eval(), features, lengths, loss.item()


def strip(ids: torch.Tensor) -> list[list[int]]:
    return [[t for t in row if t not in (0, 2)] for row in ids.tolist()]


def test_tiny_model_overfits_to_near_zero_loss(overfitted):
    *_, loss = overfitted
    assert loss < 0.02


@pytest.mark.parametrize(
    "options", [dict(), dict(num_beams=3), dict(ctc_weight=0.0), dict(num_beams=4, ctc_weight=0.7), dict(use_cache=False)]
)
def test_overfitted_model_decodes_exactly(overfitted, options):
    model, features, lengths, _ = overfitted
    ids = model.generate(features=features, feature_lengths=lengths, **options)
    assert strip(ids) == SEQUENCES
    assert all(2 in row for row in ids.tolist())  # every hypothesis ended with EOS


def test_overfitted_ctc_head_decodes_exactly(overfitted):
    model, features, lengths, _ = overfitted
    assert strip(model.ctc_greedy_decode(features, lengths)) == SEQUENCES


class _Utterances(torch.utils.data.Dataset):
    def __init__(self, features, lengths):
        self.features, self.lengths = features, lengths

    def __len__(self):
        return len(SEQUENCES)

    def __getitem__(self, i):
        n = int(self.lengths[i])
        return {"features": {k: v[i, ..., :n] for k, v in self.features.items()}, "labels": SEQUENCES[i] + [2]}


def _collate(items):
    frames = max(item["features"]["mel"].shape[-1] for item in items)
    features = {
        name: torch.stack([torch.nn.functional.pad(item["features"][name], (0, frames - item["features"][name].shape[-1])) for item in items])
        for name in items[0]["features"]
    }
    width = max(len(item["labels"]) for item in items)
    labels = torch.tensor([item["labels"] + [-100] * (width - len(item["labels"])) for item in items])
    lengths = torch.tensor([item["features"]["mel"].shape[-1] for item in items])
    return {"features": features, "feature_lengths": lengths, "labels": labels}


def test_seq2seq_trainer_trains_and_predicts_with_generate(overfitted, tmp_path):
    model, features, lengths, _ = overfitted
    model = copy.deepcopy(model)
    dataset = _Utterances(features, lengths)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        max_steps=2,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=True,
        remove_unused_columns=False,
        predict_with_generate=True,
        generation_num_beams=2,
        generation_max_length=8,
        disable_tqdm=True,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=_collate)
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss < 1.0
    prediction = trainer.predict(dataset)
    assert prediction.predictions.shape[0] == 4
    assert strip(torch.as_tensor(prediction.predictions).clamp_min(0)) == SEQUENCES
    assert prediction.metrics["test_loss"] < 1.0
