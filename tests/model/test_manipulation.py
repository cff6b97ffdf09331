"""The manipulation check's f0 replacement: consistent features, and a model reads it only if it
reads f0 (tiny models from the `echo` fixture)."""

import numpy as np
import pytest
import torch

from echoasr.experiments.manipulation import replace_f0, replace_f0_batch
from echoasr.features.phase import accumulated_phase


def utterance(f0_values, voiced):
    voiced = np.asarray(voiced, dtype=np.float32)
    f0 = np.asarray(f0_values, dtype=np.float32) * voiced
    return {"f0": f0, "voiced": voiced, "phase": accumulated_phase(f0, voiced), "mel": np.ones((2, len(voiced)))}


def test_shuffled_f0_comes_from_another_utterance_on_the_own_voicing():
    items = [utterance(np.full(6, 100.0), [0, 1, 1, 1, 0, 0]), utterance(np.full(4, 200.0), [1, 1, 0, 1]),
             utterance(np.full(5, 300.0), [1, 1, 1, 1, 1])]
    replaced = replace_f0(items, "shuffled", seed=3)
    for original, new in zip(items, replaced):
        voiced = original["voiced"] > 0
        assert np.array_equal(new["voiced"], original["voiced"]) and np.all(new["f0"][~voiced] == 0)
        assert np.all(new["f0"][voiced] > 0) and not np.allclose(new["f0"][voiced], original["f0"][voiced])
        assert np.allclose(new["phase"], accumulated_phase(new["f0"], new["voiced"]))
        assert new["mel"] is original["mel"]  # other streams untouched
    donated = sorted(float(new["f0"][new["voiced"] > 0][0]) for new in replaced)
    assert donated == [100.0, 200.0, 300.0]  # a derangement: every contour used once, none kept


def test_median_f0_is_flat_per_utterance_or_per_speaker():
    items = [utterance([100, 120, 140, 0], [1, 1, 1, 0]), utterance([200, 260, 0], [1, 1, 0]),
             utterance([0, 0], [0, 0])]
    flat = replace_f0(items, "median")
    assert np.allclose(flat[0]["f0"], [120, 120, 120, 0]) and np.allclose(flat[1]["f0"], [230, 230, 0])
    assert np.array_equal(flat[2]["f0"], items[2]["f0"])  # nothing voiced: left as it is
    by_speaker = replace_f0(items, "median", groups=["a", "a", "b"])
    assert np.allclose(by_speaker[0]["f0"][:3], 140) and np.allclose(by_speaker[1]["f0"][:2], 140)
    with pytest.raises(ValueError):
        replace_f0(items, "reversed")


def test_shuffled_f0_changes_only_a_model_that_reads_f0(echo):
    lengths = [21, 17, 13, 9]
    outputs = {}
    for name, overrides in {"mel only": dict(features=["mel"]),
                            "mel + f0": dict(features=["mel", "f0"]),
                            "pitch rotary": dict(features=["mel"], rotary_theta_mode="phase")}.items():
        model = echo.tiny_model(seed=1, **overrides)
        features, lengths_t = echo.make_features(model.config, lengths)
        shuffled = replace_f0_batch(features, lengths_t, "shuffled", seed=0)
        assert not torch.equal(shuffled["f0"], features["f0"]) and torch.equal(shuffled["voiced"], features["voiced"])
        labels = echo.make_labels([[5, 6, 7], [8, 9], [10], [11, 12]])
        with torch.no_grad():
            before = model(features=features, feature_lengths=lengths_t, labels=labels)
            after = model(features=shuffled, feature_lengths=lengths_t, labels=labels)
        outputs[name] = float((before.logits - after.logits).abs().max())
    assert outputs["mel only"] == 0.0
    assert outputs["mel + f0"] > 1e-4 and outputs["pitch rotary"] > 1e-4
