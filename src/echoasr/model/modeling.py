"""`EchoForConditionalGeneration`: the Hugging Face model (save/load, `Seq2SeqTrainer`), losses,
parameter report and the pitch debug hook.

Inputs (tensors only): `features` dict of right-padded tensors (`mel` (B, 80, T), `f0` (B, T),
`voiced` (B, T), `harmonic` (B, H, T), `aperiodic` (B, A, T), `phase` (B, T), `waveform`
(B, 160, T); extra keys are ignored), `feature_lengths` (B,) true frame counts,
`decoder_input_ids` (B, L) (default: `labels` shifted right behind BOS), optional
`decoder_attention_mask`, `labels` (B, L) padded with -100 and ending with EOS.

Loss: `ctc_weight * CTC + (1 - ctc_weight) * attention` (ESPnet's hybrid). The attention loss
is the token-mean cross-entropy (with `label_smoothing`); the CTC loss is PyTorch's `mean`
reduction (each utterance's loss divided by its target length, then averaged), so both are
per-token quantities. The CTC blank is the pad id (0): pad never occurs inside a transcript,
so no extra output unit is needed; CTC targets are the labels without EOS and -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import Seq2SeqLMOutput

from .adapters import LoRALinear, add_adapters, merge_adapters
from .attention import CrossPitchBias, PitchBiasScale
from .attention_variants import Curiosity, ScoreFunction
from .configuration import EchoConfig
from .decoder import EchoDecoder
from .encoder import EchoEncoder, EncoderOutput
from .gates import BlendResidual, LearnedBlend, MemoryGate
from .generation import ctc_greedy_decode, generate
from .layers import RMSNorm, ZeroProjection
from .positions import AbsolutePositions
from .rotary import PitchRotary

# Modules that know their own initial values (beyond the Linear/Embedding/norm defaults).
_SELF_INITIALISED = (PitchRotary, BlendResidual, LearnedBlend, MemoryGate, ScoreFunction, Curiosity, AbsolutePositions)


@dataclass
class EchoSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus the CTC branch and the two loss terms (detached, for logging)."""

    ctc_logits: torch.FloatTensor | None = None
    encoder_lengths: torch.LongTensor | None = None
    attention_loss: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None


def shift_right(labels: Tensor, prompt: list[int], pad_id: int) -> Tensor:
    """Decoder inputs from labels: the prompt + labels[:-1], -100 replaced by pad. The result has
    len(prompt) - 1 more positions than the labels; the last len(labels) predict the labels."""
    shifted = labels.new_full((labels.shape[0], labels.shape[1] + len(prompt) - 1), pad_id)
    shifted[:, len(prompt) :] = labels[:, :-1]
    shifted[:, : len(prompt)] = torch.tensor(prompt, dtype=labels.dtype, device=labels.device)
    return shifted.masked_fill(shifted == -100, pad_id)


def ctc_targets(labels: Tensor, eos_id: int, blank_id: int) -> tuple[Tensor, Tensor]:
    """Left-aligned CTC targets (B, L) and lengths from labels (drops -100, EOS and blank)."""
    keep = (labels != -100) & (labels != eos_id) & (labels != blank_id)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    targets = labels.gather(1, order).masked_fill(~keep.gather(1, order), blank_id)
    return targets, keep.sum(1)


class EchoPreTrainedModel(PreTrainedModel):
    config_class = EchoConfig
    base_model_prefix = "echo"
    # Hugging Face's Trainer sizes `inputs[main_input_name]` with `.numel()` for its FLOP count;
    # the features arrive as a dict, so the (B,) lengths tensor stands in.
    main_input_name = "feature_lengths"
    input_modalities = "audio"
    accepts_loss_kwargs = False  # the loss is normalised here (token mean), not by the Trainer
    _no_split_modules = ["EncoderLayer", "DecoderLayer", "ModalLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, LoRALinear):
            module.reset_adapter()  # and its base weight as any Linear's, below
        if isinstance(module, ZeroProjection):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, PitchBiasScale):
            init.constant_(module.scale, module.init)
        elif isinstance(module, CrossPitchBias):
            init.constant_(module.scale, module.init)
            init.copy_(module.reference, module._initial_reference(module.reference.numel()))
        elif isinstance(module, _SELF_INITIALISED):
            module.reset_parameters()


class EchoForConditionalGeneration(EchoPreTrainedModel, GenerationMixin):
    """Encoder-decoder ASR model with pitch-aware rotary attention (see docs/model.md)."""

    def __init__(self, config: EchoConfig):
        super().__init__(config)
        self.encoder = EchoEncoder(config)
        self.decoder = EchoDecoder(config)
        self.ctc_head = nn.Linear(config.d_model, config.vocab_size) if config.has_ctc_head else None
        if config.adapter_rank:
            add_adapters(self, config.adapter_rank, config.adapter_scale_alpha, config.adapter_targets,
                         config.adapter_dropout)
        self.post_init()
        # Seq2SeqTrainer fills unset generation options with HF's defaults (max_length=20) after
        # its first prediction; an explicit bound keeps later evaluations from truncating.
        self.generation_config.max_length = config.max_target_positions + 1
        self.set_pitch_debug(config.debug_pitch_stats)

    def get_encoder(self) -> EchoEncoder:
        return self.encoder

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.decoder.embed_tokens = value

    def merge_adapters(self) -> int:
        """Fold the low-rank adapters into the weights they adapt (the same function, no adapter
        products; plain Linear layers again, as int8 quantisation needs) and record it in the
        config (`adapter_rank` 0), so that a saved merged model loads as what it is. Returns how
        many layers were merged."""
        merged = merge_adapters(self)
        self.config.adapter_rank = 0
        return merged

    # ------------------------------------------------------------------ forward

    def _check_inputs(self, features: dict[str, Tensor], lengths: Tensor | None) -> Tensor:
        config = self.config
        required = [n for n in config.features if n != "f0"]
        if config.uses_pitch:
            required += ["f0", "voiced"]
        missing = [n for n in required if n not in features]
        if missing:
            raise ValueError(f"features is missing {missing} (model features: {config.features}, pitch: {config.uses_pitch})")
        reference = features[required[0]]
        batch, frames = reference.shape[0], reference.shape[-1]
        for name in required:
            tensor = features[name]
            expected_dims = 2 if name in ("f0", "voiced", "phase") else 3
            if tensor.dim() != expected_dims or tensor.shape[0] != batch or tensor.shape[-1] != frames:
                raise ValueError(f"features[{name!r}] has shape {tuple(tensor.shape)}; expected batch {batch} and {frames} frames")
            if expected_dims == 3 and tensor.shape[1] != config.feature_channels(name):
                raise ValueError(
                    f"features[{name!r}] has {tensor.shape[1]} channels; the config expects {config.feature_channels(name)}"
                )
        if lengths is None:
            return torch.full((batch,), frames, dtype=torch.long, device=reference.device)
        lengths = lengths.to(device=reference.device, dtype=torch.long)
        if lengths.shape != (batch,) or bool((lengths < 1).any()) or bool((lengths > frames).any()):
            raise ValueError(f"feature_lengths must be (B,) = ({batch},) with values in [1, {frames}]")
        return lengths

    def encode(self, features: dict[str, Tensor], feature_lengths: Tensor | None = None) -> EncoderOutput:
        """Encoder pass; `feature_lengths=None` means no padding."""
        lengths = self._check_inputs(features, feature_lengths)
        return self.encoder(features, lengths)

    def ctc_log_probs(self, encoder: EncoderOutput) -> Tensor:
        """(B, S, V) float32 CTC log-probabilities (requires the CTC head)."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head (ctc_weight = 0)")
        return F.log_softmax(self.ctc_head(encoder.hidden).float(), dim=-1)

    def forward(
        self,
        features: dict[str, Tensor] | None = None,
        feature_lengths: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        encoder_outputs: EncoderOutput | None = None,
        return_dict: bool | None = None,
    ) -> EchoSeq2SeqLMOutput | tuple:
        config = self.config
        if encoder_outputs is None:
            if features is None:
                raise ValueError("forward needs features (or encoder_outputs)")
            encoder_outputs = self.encode(features, feature_lengths)
        prompt_positions = 0  # decoder positions before the first one that predicts a label
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs decoder_input_ids or labels")
            decoder_input_ids = shift_right(labels, config.decoder_prompt, config.pad_token_id)
            prompt_positions = len(config.decoder_prompt) - 1
            if decoder_attention_mask is not None:
                decoder_attention_mask = F.pad(decoder_attention_mask, (prompt_positions, 0), value=1)

        hidden = self.decoder(decoder_input_ids, encoder_outputs, decoder_attention_mask)
        logits = self.decoder.logits(hidden[:, prompt_positions:])
        ctc_logits = None if self.ctc_head is None else self.ctc_head(encoder_outputs.hidden)

        loss = attention_loss = ctc_loss = None
        if labels is not None:
            attention_loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                label_smoothing=config.label_smoothing,
            )
            loss = attention_loss
            if ctc_logits is not None:
                ctc_loss = self._ctc_loss(ctc_logits, encoder_outputs.lengths, labels)
                loss = config.ctc_weight * ctc_loss + (1.0 - config.ctc_weight) * attention_loss

        output = EchoSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            encoder_last_hidden_state=encoder_outputs.hidden,
            ctc_logits=ctc_logits,
            encoder_lengths=encoder_outputs.lengths,
            attention_loss=None if attention_loss is None else attention_loss.detach(),
            ctc_loss=None if ctc_loss is None else ctc_loss.detach(),
        )
        return output if (return_dict is None or return_dict) else output.to_tuple()

    def _ctc_loss(self, ctc_logits: Tensor, lengths: Tensor, labels: Tensor) -> Tensor:
        targets, target_lengths = ctc_targets(labels, self.config.eos_token_id, self.config.pad_token_id)
        log_probs = F.log_softmax(ctc_logits.float(), dim=-1).transpose(0, 1)
        return F.ctc_loss(
            log_probs,
            targets,
            lengths,
            target_lengths,
            blank=self.config.pad_token_id,
            reduction="mean",
            zero_infinity=True,
        )

    # --------------------------------------------------------------- decoding

    @torch.no_grad()
    def generate(self, features: dict[str, Tensor] | None = None, feature_lengths: Tensor | None = None, **kwargs) -> Tensor:
        """Autoregressive decoding; see `echoasr.model.generation.generate` for the options.

        Returns (B, L) token ids without the start token, ending with EOS where one was produced,
        padded with the pad id. Tolerates the extra keyword arguments that
        `Seq2SeqTrainer.prediction_step` passes (labels, synced_gpus, max_length, ...).
        """
        return generate(self, features, feature_lengths, **kwargs)

    @torch.no_grad()
    def ctc_greedy_decode(self, features: dict[str, Tensor], feature_lengths: Tensor | None = None) -> Tensor:
        """Best-path CTC decoding: (B, L) ids padded with the pad id (no EOS)."""
        encoder = self.encode(features, feature_lengths)
        return ctc_greedy_decode(self.ctc_log_probs(encoder), encoder.lengths, self.config.pad_token_id)

    # ------------------------------------------------------------- reporting

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameter counts per part of the model (pitch parameters and adapters listed apart)."""
        pitch_types = (PitchBiasScale, CrossPitchBias, PitchRotary)
        pitch_ids = {id(p) for m in self.modules() if isinstance(m, pitch_types) for p in m.parameters()}
        adapter_ids = {id(p) for m in self.modules() if isinstance(m, LoRALinear) for p in (m.lora_down, m.lora_up)}
        counted_apart = pitch_ids | adapter_ids

        def count(module: nn.Module | None) -> int:
            if module is None:
                return 0
            return sum(p.numel() for p in module.parameters() if id(p) not in counted_apart)

        encoder = self.encoder
        counts = {f"encoder.stem.{name}": count(stem) for name, stem in encoder.stems.items()}
        counts.update({f"encoder.feature_layers.{name}": count(layers) for name, layers in encoder.feature_layers.items()})
        counts["encoder.band_pool"] = count(encoder.band_pool)
        counts["encoder.joins (zero start)"] = count(encoder.joins)
        counts["encoder.fusion"] = count(encoder.fusion)
        counts["encoder.positions"] = count(encoder.positions)
        counts["encoder.layers"] = count(encoder.layers)
        counts["encoder.norm"] = count(encoder.norm)
        counts["decoder.embed_tokens (tied output)"] = count(self.decoder.embed_tokens)
        counts["decoder.positions"] = count(self.decoder.positions)
        counts["decoder.layers"] = count(self.decoder.layers)
        counts["decoder.modal_layers"] = count(self.decoder.modal_layers)
        counts["decoder.norm"] = count(self.decoder.norm)
        counts["ctc_head"] = count(self.ctc_head)
        counts["pitch (theta, radius, bias)"] = sum(p.numel() for p in self.parameters() if id(p) in pitch_ids)
        counts["adapters (low rank)"] = sum(p.numel() for p in self.parameters() if id(p) in adapter_ids)
        return counts

    def describe(self) -> str:
        """A readable summary: configuration choices and parameter counts per part."""
        c = self.config
        counts = self.parameter_counts()
        total = sum(p.numel() for p in self.parameters())
        lines = [
            f"Echo model: {total:,} parameters, d_model={c.d_model}, heads={c.attention_heads}, "
            f"encoder {c.feature_layers}+{c.encoder_layers} layers, decoder {c.decoder_layers} layers",
            f"  features={c.features} subsampling={c.subsampling}x fusion={c.fusion}",
            f"  rotary: frequencies={c.rotary_frequencies} theta={c.rotary_theta:g}"
            f"{' (learned)' if c.rotary_learnable_theta else ''} theta_mode={c.rotary_theta_mode} "
            f"radius={c.rotary_radius} pitch_bias={c.pitch_bias}",
            f"  ctc_weight={c.ctc_weight} (blank = pad id {c.pad_token_id}) label_smoothing={c.label_smoothing}",
        ]
        if c.adapter_rank:
            lines.append(f"  adapters: rank={c.adapter_rank} alpha={c.adapter_scale_alpha:g} "
                         f"targets={','.join(c.adapter_targets)} dropout={c.adapter_dropout}")
        seed = self._seed_components()
        if seed:
            lines.insert(3, f"  seed components: {', '.join(seed)}")
        width = max(len(k) for k in counts)
        lines += [f"  {name:<{width}}  {n:>12,}" for name, n in counts.items() if n]
        return "\n".join(lines)

    def _seed_components(self) -> list[str]:
        """The non-default seed options of the configuration, for `describe`."""
        c = self.config
        defaults = {
            "residual_blend": False, "residual_gate": "none", "decoder_layout": "sequential", "modal_layers": 0,
            "attention_score": "dot", "attention_curiosity": False, "attention_pad_scale": False,
            "rotary_axial_bands": 0, "decoder_rotary": True, "decoder_absolute_positions": "none",
        }  # fmt: skip
        return [f"{name}={getattr(c, name)}" for name, default in defaults.items() if getattr(c, name) != default]

    def set_pitch_debug(self, enabled: bool = True) -> None:
        """Log theta/radius statistics per stack and pitch bias statistics per layer (logger
        `echoasr.model.*`, level INFO) on every forward while enabled."""
        self.encoder.rotary.debug = enabled
        for prefix, layers in [("encoder.layers", self.encoder.layers), ("decoder.layers", self.decoder.layers)]:
            for index, layer in enumerate(layers):
                for attention_name in ("self_attn", "cross_attn"):
                    attention = getattr(layer, attention_name, None)
                    if attention is not None:
                        attention.debug_name = f"{prefix}.{index}.{attention_name}" if enabled else None
        for name, layers in self.encoder.feature_layers.items():
            for index, layer in enumerate(layers):
                layer.self_attn.debug_name = f"encoder.feature_layers.{name}.{index}.self_attn" if enabled else None
