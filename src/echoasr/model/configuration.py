"""`EchoConfig`: every architectural choice of the Echo model, saved with the weights.

The defaults describe a plain model (standard RoPE, no pitch mechanism, mel input, 4x time
subsampling, hybrid CTC/attention training); presets switch the pitch mechanisms on:

* `rotary_frequencies`: `"inverse"` (standard RoPE), `"mel"` (mel-spaced, at most pi rad per
  frame at theta >= 10000), `"mel_seed_aliased"` (the seed's spacing, up to 363.6 rad per frame:
  positions scrambled; for reproducing the seed only);
* `rotary_theta_mode`: `"none"` (positions `t`), `"additive"` (`theta_t = theta * (1 + s * f0_t /
  pitch_reference_hz)`, `s` = `rotary_additive_scale`; the seed's `theta + f0_t` is
  `s = pitch_reference_hz / theta`),
  `"phase"` (pitch-warped position `p_t = sum_{s<t} f_s / pitch_reference_hz`), `"phase_median"`
  (the same clock with the utterance's median voiced f0 as the reference, so that a 100 Hz and a
  250 Hz speaker run clocks at the same mean rate);
* `rotary_positions`: False removes the encoder's rotary (no positions in encoder attention; the
  convolution stems still see local order);
* `rotary_radius`: `"none"`, `"raw"` (seed: f0 in Hz, 0 on unvoiced frames), `"bounded"`
  (`1 + rotary_radius_scale * tanh(z)`, the recommended form), `"learned"` (per-head
  `1 + a * tanh(w_h z + b_h)`, starting at 1);
* `pitch_bias`: learned per-head `s_h * exp(-|z_i - z_j|)` between voiced frames in encoder
  self-attention, and `s_h * exp(-|z_j - r_h|)` (learned per-head reference pitch `r_h`) in
  cross-attention; `pitch_bias_mode="voicing"` is its control: the same biases computed with
  z = 0, i.e. a learned per-head bias between voiced frames that ignores how similar the pitches are;
* `feature_f0_representation` (the `f0` input stem): `log_z` (voicing-aware per-utterance z-score of
  log f0, speaker-independent), `hz` (f0 / `pitch_reference_hz`, not normalised: speaker-dependent)
  or `voicing` (the voicing flag alone, the f0 channel zero); the voicing flag is always the second
  channel.

`z` is the voicing-aware per-utterance z-score of log f0 (see `echoasr.model.pitch`).

The seed's other components (docs/seed-components.md, "The original design"), all off by default:

* `residual_blend`: every attention residual becomes `x + sigmoid(beta) * update` (the seed's
  learned blend `b * (x + attn) + (1 - b) * x`); `residual_gate` scales every feed-forward
  update by a per-position gate in (0, 1) read from the block's normalised input: `mlp`
  (sigmoid of a projection), `t_gate` (softmax over `residual_gate_types` sigmoid gates),
  `m_gate` (mean of a data gate and attention over `residual_gate_memory` learned key/value
  slots); `fusion="c_gate"` gates each feature stream (sigmoid per frame) and integrates them with
  a projection;
* `decoder_layout`: `sequential` (self, cross, feed-forward) or `blended` (the seed: the state
  after cross-attention and feed-forward is interpolated with the state after self-attention by a
  learned weight); `modal_layers` joint text/audio layers after the decoder layers;
* `attention_score`: `dot`, `cosine` (learned per-head temperature) or `rbf` (`attention_rbf_ratio`
  of RBF distance scores mixed into the dot-product scores); `attention_curiosity` (decoder
  self-attention gets a second key/value set from the encoder output, mixed per head by a learned
  gate); `attention_pad_scale` (the seed's scaling of scores toward padding keys, on the real mask);
* `rotary_axial_bands`: the mel spectrogram enters as frequency-band tokens with axial 2-D rotary
  (time x band) in the mel feature layers;
* `decoder_rotary`, `decoder_absolute_positions` (`none`, `sinusoidal`, `learned`): decoder
  positions.

Options that let the configuration describe a pretrained Whisper model (`echoasr.backbones`),
all off by default: `norm="layer"` (LayerNorm with bias, `layer_norm_eps`), `attention_bias`
(biases on the q/k/v and output projections; Whisper's key bias is zero, which without rotary is
invisible to softmax), `encoder_absolute_positions` (a table of `max_source_positions` added
after the stems), `decoder_scale_embeddings=False` (no sqrt(d) on the token embedding),
`decoder_prompt_ids` (the tokens the decoder starts from, e.g. Whisper's `<|startoftranscript|>
<|en|> <|transcribe|> <|notimestamps|>`; default `[decoder_start_token_id]`),
`decode_suppress_ids` / `decode_begin_suppress_ids` (never produced / not as the first token).

Low-rank adapters (`echoasr.model.adapters`), off by default: `adapter_rank` r > 0 gives every
linear layer that `adapter_targets` names (`encoder.self_attn`, `decoder.self_attn`,
`decoder.cross_attn`: q, k, v and output projections; `encoder.ffn`, `decoder.ffn`) a trainable
update `(adapter_alpha / r) * B A x` with B = 0 at the start (so the model computes its base
weights exactly), `adapter_dropout` on the adapter's input; `adapter_alpha` None means r (scale 1).

`pitch_zero_start`: every pitch mechanism enters through a learned scale that starts at 0, so a
model built on a pretrained backbone computes exactly the backbone at initialisation and
fine-tuning decides how much pitch to use: the encoder rotary turns q and k by a per-head scale
times its angle, the bounded radius is `1 + a_h * tanh(z)` with a learned per-head `a_h`, every
stem after the first joins through a zero-initialised projection, and the pitch biases start at 0.

`pitch_f0_source`: `measured` (default) or `constant`: every voiced frame's f0 is replaced by
`pitch_reference_hz` before anything reads it (stems, rotary, radius, biases), voicing kept. A
pitch configuration with a constant f0 has the same modules and parameters but no pitch
information: the parameter-matched control of a pitch comparison.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PretrainedConfig

from .adapters import ADAPTER_TARGETS

FEATURES = ("mel", "f0", "harmonic", "aperiodic", "phase", "waveform")
ROTARY_FREQUENCIES = ("inverse", "mel", "mel_seed_aliased")
PITCH_F0_SOURCES = ("measured", "constant")
THETA_MODES = ("none", "additive", "phase", "phase_median")
F0_REPRESENTATIONS = ("log_z", "hz", "voicing")
PITCH_BIAS_MODES = ("pitch", "voicing")
RADIUS_MODES = ("none", "raw", "bounded", "learned")
FUSIONS = ("sum", "gated", "concat", "c_gate")
RESIDUAL_GATES = ("none", "mlp", "t_gate", "m_gate")
DECODER_LAYOUTS = ("sequential", "blended")
ATTENTION_SCORES = ("dot", "cosine", "rbf")
ABSOLUTE_POSITIONS = ("none", "sinusoidal", "learned")
SUBSAMPLING = (1, 2, 4)
NORMS = ("rms", "layer")

# Prefixes of Echo's own options: an unknown keyword with one of these is a typo, not a
# Hugging Face bookkeeping key, and silently ignoring it would corrupt an experiment.
_OPTION_PREFIXES = (
    "rotary_", "pitch_", "ctc_", "decode_", "fusion", "feature", "subsampling",
    "residual_", "attention_", "decoder_", "modal", "norm", "adapter_",
)  # fmt: skip


class EchoConfig(PretrainedConfig):
    """Configuration of `EchoForConditionalGeneration`.

    Sizes: `vocab_size`, `d_model`, `encoder_layers` (shared layers after fusion),
    `feature_layers` (per-feature layers before fusion), `decoder_layers`, `attention_heads`,
    `ffn_dim` (default 4 * d_model). Inputs: `features` (any of `mel`, `f0`, `harmonic`,
    `aperiodic`, `phase`, `waveform`; `f0` reads both `f0` and `voiced`) with channel counts
    `n_mels`, `harmonic_bands`, `aperiodic_bands`, `waveform_frame_length`; `subsampling` (1, 2
    or 4) is the time reduction of every feature stem; `fusion` combines several features
    (`sum`, `gated` sum, or `concat` + projection). Losses: `ctc_weight` (0 disables the CTC
    head; otherwise loss = w * CTC + (1 - w) * attention), `label_smoothing`. Decoding:
    `decode_ctc_weight` (weight of CTC prefix scores in joint decoding when the CTC head
    exists), `max_target_positions` (hard cap on generated tokens), `decode_max_length_ratio`
    (at most this many tokens per encoder frame, plus one: a model without a CTC head that loops
    on a short clip stops where the clip's length says), `decode_no_repeat_ngram_size` (n > 0:
    no n-gram of tokens twice in one output).
    """

    model_type = "echo"
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "past_key_values",
        "encoder_last_hidden_state",
        "ctc_logits",
        "encoder_lengths",
        "attention_loss",
        "ctc_loss",
    ]
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_attention_heads": "attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 256
    d_model: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int | None = None
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0

    features: list[str] | tuple[str, ...] = ("mel",)
    n_mels: int = 80
    harmonic_bands: int = 24
    aperiodic_bands: int = 4
    waveform_frame_length: int = 160
    subsampling: int = 4
    fusion: str = "sum"
    feature_layers: int = 0

    rotary_frequencies: str = "inverse"
    rotary_theta: float | int = 10000.0
    rotary_learnable_theta: bool = False
    rotary_theta_mode: str = "none"
    rotary_additive_scale: float | int = 1.0
    rotary_positions: bool = True
    rotary_radius: str = "none"
    rotary_radius_scale: float | int = 0.5
    pitch_reference_hz: float | int = 150.0
    pitch_bias: bool = False
    pitch_bias_init: float | int = 0.0
    pitch_bias_mode: str = "pitch"
    feature_f0_representation: str = "log_z"

    rotary_axial_bands: int = 0

    residual_blend: bool = False
    residual_gate: str = "none"
    residual_gate_types: int = 8
    residual_gate_memory: int = 64
    decoder_layout: str = "sequential"
    modal_layers: int = 0
    attention_score: str = "dot"
    attention_cosine_temperature: float | int = 10.0
    attention_rbf_ratio: float | int = 0.3
    attention_rbf_sigma: float | int = 1.0
    attention_curiosity: bool = False
    attention_pad_scale: bool = False
    decoder_rotary: bool = True
    decoder_absolute_positions: str = "none"
    decoder_scale_embeddings: bool = True
    decoder_prompt_ids: list[int] | None = None
    decode_suppress_ids: list[int] | tuple[int, ...] = ()
    decode_begin_suppress_ids: list[int] | tuple[int, ...] = ()

    norm: str = "rms"
    layer_norm_eps: float = 1e-5
    attention_bias: bool = False
    encoder_absolute_positions: str = "none"
    max_source_positions: int = 1500
    pitch_zero_start: bool = False
    pitch_f0_source: str = "measured"

    adapter_rank: int = 0
    adapter_alpha: float | int | None = None
    adapter_targets: list[str] | tuple[str, ...] = tuple(ADAPTER_TARGETS)
    adapter_dropout: float | int = 0.0

    ctc_weight: float | int = 0.3
    decode_ctc_weight: float | int = 0.3
    decode_max_length_ratio: float | int = 1.0
    decode_no_repeat_ngram_size: int = 0
    label_smoothing: float | int = 0.0
    max_target_positions: int = 512

    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    debug_pitch_stats: bool = False

    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        typos = sorted(k for k in kwargs if k.startswith(_OPTION_PREFIXES))
        if typos:
            raise ValueError(f"EchoConfig: unknown option(s) {', '.join(typos)}")
        self.features = list(self.features)
        self.adapter_targets = list(self.adapter_targets)
        self.decode_suppress_ids = [int(i) for i in self.decode_suppress_ids]
        self.decode_begin_suppress_ids = [int(i) for i in self.decode_begin_suppress_ids]
        if self.decoder_prompt_ids is not None:
            self.decoder_prompt_ids = [int(i) for i in self.decoder_prompt_ids]
        if self.ffn_dim is None:
            self.ffn_dim = 4 * self.d_model
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"EchoConfig: {message}")

        check(len(self.features) > 0, "features must name at least one input feature")
        unknown = [f for f in self.features if f not in FEATURES]
        check(not unknown, f"unknown feature(s) {unknown}; choose from {list(FEATURES)}")
        check(len(set(self.features)) == len(self.features), f"duplicate features {self.features}")
        check(self.d_model % self.attention_heads == 0, "d_model must be divisible by attention_heads")
        check((self.d_model // self.attention_heads) % 2 == 0, "the head size must be even for rotary")
        check(self.subsampling in SUBSAMPLING, f"subsampling must be one of {SUBSAMPLING}")
        check(self.fusion in FUSIONS, f"fusion must be one of {FUSIONS}")
        check(self.rotary_frequencies in ROTARY_FREQUENCIES, f"rotary_frequencies must be one of {ROTARY_FREQUENCIES}")
        check(self.rotary_theta_mode in THETA_MODES, f"rotary_theta_mode must be one of {THETA_MODES}")
        check(self.pitch_bias_mode in PITCH_BIAS_MODES, f"pitch_bias_mode must be one of {PITCH_BIAS_MODES}")
        check(self.feature_f0_representation in F0_REPRESENTATIONS,
              f"feature_f0_representation must be one of {F0_REPRESENTATIONS}")
        check(self.rotary_positions or (self.rotary_theta_mode == "none" and self.rotary_radius == "none"
                                        and not self.rotary_axial_bands),
              "rotary_positions=False needs rotary_theta_mode none, rotary_radius none and no axial bands")
        check(self.rotary_radius in RADIUS_MODES, f"rotary_radius must be one of {RADIUS_MODES}")
        check(self.rotary_theta > 0, "rotary_theta must be positive")
        check(self.rotary_frequencies != "mel" or self.rotary_theta >= 10000,
              "mel rotary frequencies need rotary_theta >= 10000 (faster rotations alias)")
        check(self.rotary_additive_scale >= 0, "rotary_additive_scale must be >= 0")
        check(0 < self.rotary_radius_scale < 1, "rotary_radius_scale must be in (0, 1) so the radius stays positive")
        check(self.pitch_reference_hz > 0, "pitch_reference_hz must be positive")
        check(self.pitch_f0_source in PITCH_F0_SOURCES, f"pitch_f0_source must be one of {PITCH_F0_SOURCES}")
        check(self.residual_gate in RESIDUAL_GATES, f"residual_gate must be one of {RESIDUAL_GATES}")
        check(self.residual_gate_types >= 1, "residual_gate_types must be >= 1")
        check(self.residual_gate_memory >= 1, "residual_gate_memory must be >= 1")
        check(self.decoder_layout in DECODER_LAYOUTS, f"decoder_layout must be one of {DECODER_LAYOUTS}")
        check(self.modal_layers >= 0, "modal_layers must be >= 0")
        check(self.attention_score in ATTENTION_SCORES, f"attention_score must be one of {ATTENTION_SCORES}")
        check(self.attention_cosine_temperature > 0, "attention_cosine_temperature must be positive")
        check(0.0 <= self.attention_rbf_ratio <= 1.0, "attention_rbf_ratio must be in [0, 1]")
        check(self.attention_rbf_sigma > 0, "attention_rbf_sigma must be positive")
        check(
            self.decoder_absolute_positions in ABSOLUTE_POSITIONS,
            f"decoder_absolute_positions must be one of {ABSOLUTE_POSITIONS}",
        )
        check(self.norm in NORMS, f"norm must be one of {NORMS}")
        check(
            self.encoder_absolute_positions in ABSOLUTE_POSITIONS,
            f"encoder_absolute_positions must be one of {ABSOLUTE_POSITIONS}",
        )
        check(self.decoder_prompt_ids is None or len(self.decoder_prompt_ids) >= 1,
              "decoder_prompt_ids must hold at least one token")
        if self.pitch_zero_start:
            check(self.rotary_radius in ("none", "bounded", "learned"),
                  "pitch_zero_start needs rotary_radius none, bounded or learned (raw cannot start at 1)")
            check(self.pitch_bias_init == 0, "pitch_zero_start needs pitch_bias_init 0")
            check(not self.rotary_axial_bands and self.fusion == "sum",
                  "pitch_zero_start supports the summed fusion without axial bands")
        check(self.adapter_rank >= 0, "adapter_rank must be >= 0 (0: no adapters)")
        if self.adapter_rank:
            unknown_targets = [t for t in self.adapter_targets if t not in ADAPTER_TARGETS]
            check(not unknown_targets, f"unknown adapter target(s) {unknown_targets}; choose from {list(ADAPTER_TARGETS)}")
            check(len(self.adapter_targets) > 0 and len(set(self.adapter_targets)) == len(self.adapter_targets),
                  f"adapter_targets must name distinct targets, not {self.adapter_targets}")
            check(self.adapter_alpha is None or self.adapter_alpha > 0, "adapter_alpha must be positive")
            check(0.0 <= self.adapter_dropout < 1.0, "adapter_dropout must be in [0, 1)")
        check(self.rotary_axial_bands >= 0, "rotary_axial_bands must be >= 0")
        if self.rotary_axial_bands:
            bands = self.rotary_axial_bands
            check("mel" in self.features, "rotary_axial_bands needs the mel feature")
            check(self.feature_layers >= 1, "rotary_axial_bands needs feature_layers >= 1 (the layers that see band tokens)")
            check(self.n_mels % bands == 0, f"n_mels ({self.n_mels}) must be divisible by rotary_axial_bands ({bands})")
            check(self.head_dim % 4 == 0, "axial rotary needs a head size divisible by 4 (time and band halves)")
        check(0.0 <= self.ctc_weight <= 1.0, "ctc_weight must be in [0, 1]")
        check(0.0 <= self.decode_ctc_weight <= 1.0, "decode_ctc_weight must be in [0, 1]")
        check(self.decode_max_length_ratio > 0, "decode_max_length_ratio must be positive")
        check(self.decode_no_repeat_ngram_size >= 0, "decode_no_repeat_ngram_size must be >= 0")
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)")
        check(self.encoder_layers >= 0 and self.feature_layers >= 0, "layer counts must be >= 0")
        check(self.decoder_layers >= 1, "decoder_layers must be >= 1")
        specials = {self.pad_token_id, self.bos_token_id, self.eos_token_id}
        check(len(specials) == 3, "pad, bos and eos token ids must be distinct")
        check(all(0 <= t < self.vocab_size for t in [*specials, *self.decoder_prompt]),
              "special and prompt token ids must be < vocab_size")

    @property
    def decoder_prompt(self) -> list[int]:
        """The tokens every decoder input starts with (the last one is followed by the text)."""
        return list(self.decoder_prompt_ids) if self.decoder_prompt_ids else [self.decoder_start_token_id]

    @property
    def adapter_scale_alpha(self) -> float:
        """The adapters' alpha: `adapter_alpha`, or the rank (scale 1) when unset."""
        return float(self.adapter_rank if self.adapter_alpha is None else self.adapter_alpha)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.attention_heads

    @property
    def uses_pitch(self) -> bool:
        """Whether any pitch mechanism reads f0/voicing (then both are required inputs)."""
        return (
            self.rotary_theta_mode != "none"
            or self.rotary_radius != "none"
            or self.pitch_bias
            or "f0" in self.features
        )

    @property
    def has_ctc_head(self) -> bool:
        return self.ctc_weight > 0.0

    def feature_channels(self, name: str) -> int:
        """Channels of one feature as the encoder stem receives it (f0 and phase are expanded)."""
        return {
            "mel": self.n_mels,
            "f0": 2,  # normalised log f0 (0 on unvoiced frames), voicing flag
            "harmonic": self.harmonic_bands,
            "aperiodic": self.aperiodic_bands,
            "phase": 2,  # sin, cos
            "waveform": self.waveform_frame_length,
        }[name]
