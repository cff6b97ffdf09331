import numpy as np
import pytest
import torch

from echoasr.data.collate import LABEL_PAD, FrameBatchSampler, SpecAugment, SpeechCollator


def item(frames: int, labels: list[int] | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f0 = np.where(rng.random(frames) > 0.5, 150.0, 0.0).astype(np.float32)
    out = {"features": {"mel": (rng.standard_normal((80, frames)) + 1).astype(np.float16), "f0": f0,
                        "voiced": (f0 > 0).astype(np.float32)}}
    if labels is not None:
        out["labels"] = labels
    return out


def test_padding_lengths_and_labels():
    items = [item(30, [5, 6, 2], 0), item(50, [7, 2], 1), item(10, [4, 4, 4, 4, 2], 2)]
    batch = SpeechCollator()(items)
    assert batch["feature_lengths"].tolist() == [30, 50, 10]
    assert batch["features"]["mel"].shape == (3, 80, 50) and batch["features"]["mel"].dtype == torch.float32
    assert batch["features"]["f0"].shape == (3, 50)
    for row, source in enumerate(items):
        n = source["features"]["mel"].shape[1]
        assert torch.equal(batch["features"]["mel"][row, :, :n], torch.from_numpy(source["features"]["mel"].astype(np.float32)))
        assert not batch["features"]["mel"][row, :, n:].any() and not batch["features"]["voiced"][row, n:].any()
    assert batch["labels"].tolist() == [[5, 6, 2, LABEL_PAD, LABEL_PAD], [7, 2] + [LABEL_PAD] * 3, [4, 4, 4, 4, 2]]


def test_items_without_labels_give_no_labels():
    assert "labels" not in SpeechCollator()([item(12), item(20)])


def test_spec_augment_masks_inside_lengths():
    torch.manual_seed(0)
    items = [item(200, [5, 2], 0), item(120, [6, 2], 1)]
    plain = SpeechCollator()(items)
    augmented = SpeechCollator(SpecAugment(time_masks=2, time_width=30, time_ratio=0.2, freq_masks=2, freq_width=10))(items)
    changed = augmented["features"]["mel"] != plain["features"]["mel"]
    assert changed.any()
    assert not changed[1, :, 120:].any()  # padding untouched
    # f0 and voiced are masked (set unvoiced) in exactly mel's whole-frame (time) masks
    for row, length in enumerate((200, 120)):
        time_masked = changed[row].all(0)
        for name in ("f0", "voiced"):
            stream, original = augmented["features"][name][row], plain["features"][name][row]
            assert not stream[time_masked].any()
            assert torch.equal(stream[~time_masked], original[~time_masked])
    # masked cells hold the utterance's mean log-mel
    mean = plain["features"]["mel"][0, :, :200].mean()
    assert torch.allclose(augmented["features"]["mel"][0][changed[0]], mean.expand(int(changed[0].sum())), atol=1e-5)
    # time masks are bounded by the widths: at most 2 x 30 whole frames masked
    whole_frames = changed[0].all(0).sum()
    assert whole_frames <= 60


def test_time_masks_cover_every_stream_in_the_same_frames():
    """A mel time mask hides the pitch of the same frames: f0 and voiced become 0 there and only there."""
    generator = torch.Generator().manual_seed(3)
    frames = 300
    f0 = torch.full((1, frames), 140.0)
    features = {"mel": torch.randn(1, 80, frames) + 5, "f0": f0.clone(), "voiced": torch.ones(1, frames),
                "harmonic": torch.randn(1, 20, frames) + 2}
    original = {name: tensor.clone() for name, tensor in features.items()}
    SpecAugment(time_masks=3, time_width=40, time_ratio=0.2, freq_masks=0).mask_streams(
        features, torch.tensor([frames]), generator)
    time_masked = (features["mel"] != original["mel"]).all(1)[0]  # (T,)
    assert 0 < int(time_masked.sum()) <= 120
    assert torch.equal(features["voiced"][0] == 0, time_masked) and torch.equal(features["f0"][0] == 0, time_masked)
    assert torch.equal((features["harmonic"] != original["harmonic"]).all(1)[0], time_masked)


def test_evaluation_collator_is_deterministic():
    items = [item(80, [5, 2]), item(60, [6, 2])]
    first, second = SpeechCollator()(items), SpeechCollator()(items)
    assert torch.equal(first["features"]["mel"], second["features"]["mel"])


def test_frame_batches_respect_budget_and_cover_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 400, 300).tolist()
    sampler = FrameBatchSampler(lengths, max_frames=2000, seed=3)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(300))
    for batch in batches:
        assert max(lengths[i] for i in batch) * len(batch) <= 2000 or len(batch) == 1
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.1 * sum(lengths)  # length grouping keeps padding small


def test_frame_batches_shuffle_per_epoch_deterministically():
    lengths = list(range(10, 410, 4))
    sampler = FrameBatchSampler(lengths, max_frames=1000, seed=1)
    epoch0 = list(sampler)
    assert list(FrameBatchSampler(lengths, max_frames=1000, seed=1)) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and len(epoch1) == len(epoch0) == len(sampler)
    assert sorted(map(sorted, epoch1)) == sorted(map(sorted, epoch0))


def test_unshuffled_batches_run_longest_first_and_cap_items():
    lengths = [5, 50, 20, 40, 10]
    batches = list(FrameBatchSampler(lengths, max_frames=10_000, shuffle=False, max_items=2))
    assert batches == [[1, 3], [2, 4], [0]]


def test_rejects_empty_batch_and_bad_budget():
    with pytest.raises(ValueError):
        SpeechCollator()([])
    with pytest.raises(ValueError):
        FrameBatchSampler([10], max_frames=0)
