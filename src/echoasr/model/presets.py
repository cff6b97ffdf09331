"""Model configurations that stand for a design as a whole.

`seed`: the original Echo design (`shared/seed/echo-seed.md`) with its defects fixed, sized for
CPU training. What it takes from the seed, and what it fixes:

* pitch-aware rotary with mel-spaced frequencies, theta 10000, learnable theta, pitch-modulated
  theta (`additive`) and the pitch similarity bias, per utterance and with correct shapes for
  batches and cross-attention. Fixed: the seed's mel spacing turned 23 of 24 channel pairs by more
  than pi per frame (up to 363.6 rad: positions scrambled); here the top pair turns by pi
  (`mel`; the seed's is `mel_seed_aliased`). The seed's `theta + f0_t` moved angles by noise
  there and by < 0.001 rad per frame with any unaliased spacing; here `theta * (1 + f0_t / 150)`
  (`rotary_additive_scale` 1) moves them measurably. The variable radius is `bounded` (the seed's
  raw f0 radius zeroed q and k on unvoiced frames and saturated softmax on voiced ones);
* spectrogram and pitch inputs, one stem and `feature_layers` per feature (the seed's `blockA`),
  combined by the cross-feature gate `c_gate` (the seed looped over features and kept only the
  last one's logits);
* every block with the learned blend of the attention residual and the `t_gate` (8 gate types)
  on the feed-forward update (the seed added the gate value to the residual instead);
* the decoder's `blended` layout and as many `modal` joint text/audio layers as decoder layers
  (the seed's `blockB` and `modal`), masked for causality and padding (the seed's causal mask was
  added as ones, and its modal layers had none); learned absolute positions initialised to
  sinusoids (the seed's were `torch.empty`) beside RoPE;
* dropout 0.01 as in the seed.

Not in the preset, because the seed's model did not use them (they are options): cosine and RBF
scores (`rbf = False` in its attention; `cos_sim` unused), the curiosity attention (built, never
called), the axial rotary (`axial=False` everywhere), and the pad-score scaling, whose purpose the
real padding mask serves (`attention_variants.py`). Training objective and decoding are the
project's (hybrid CTC/attention loss; the seed's WER came from teacher-forced argmax).
"""

from __future__ import annotations

from typing import Any

from .configuration import EchoConfig

SEED_OPTIONS: dict[str, Any] = dict(
    d_model=192,
    attention_heads=4,
    feature_layers=2,
    encoder_layers=0,
    decoder_layers=2,
    modal_layers=2,
    dropout=0.01,
    features=["mel", "f0"],
    subsampling=4,
    fusion="c_gate",
    rotary_frequencies="mel",
    rotary_theta=10000.0,
    rotary_learnable_theta=True,
    rotary_theta_mode="additive",
    rotary_radius="bounded",
    pitch_bias=True,
    residual_blend=True,
    residual_gate="t_gate",
    residual_gate_types=8,
    decoder_layout="blended",
    decoder_rotary=True,
    decoder_absolute_positions="learned",
)

PRESETS: dict[str, dict[str, Any]] = {"seed": SEED_OPTIONS}


def preset_config(name: str, **overrides: Any) -> EchoConfig:
    """The `EchoConfig` of a named preset, with `overrides` (e.g. `vocab_size`) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return EchoConfig(**{**PRESETS[name], **overrides})
