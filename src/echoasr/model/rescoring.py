"""Scores of given token sequences under the attention decoder (WeNet's "attention rescoring"),
and the CTC evidence that an utterance holds speech at all (the guard against hallucination).

Teacher forcing scores every hypothesis of every utterance in one decoder pass: the encoder output
is repeated per hypothesis, hypotheses are right-padded (the causal mask keeps the padding out of
the real positions), and each score is ``sum log p(token | prefix)`` over the tokens and EOS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .encoder import EncoderOutput
from .pitch import PitchTrack

if TYPE_CHECKING:
    from .modeling import EchoForConditionalGeneration


def select_rows(encoder: EncoderOutput, rows: Tensor) -> EncoderOutput:
    """The encoder output of utterances ``rows`` (repeats allowed), in that order."""
    pitch = None
    if encoder.pitch is not None:
        p = encoder.pitch
        pitch = PitchTrack(p.f0[rows], p.voiced[rows], p.z[rows], p.valid[rows])
    return EncoderOutput(encoder.hidden[rows], encoder.lengths[rows], pitch)


def sequence_log_probs(model: EchoForConditionalGeneration, encoder: EncoderOutput, sequences: list[list[int]],
                       owners: list[int]) -> Tensor:
    """(N,) float32: log p(sequence + EOS | utterance ``owners[i]``) under the attention decoder."""
    config = model.config
    if not sequences:
        return torch.zeros(0)
    device = encoder.hidden.device
    prompt = config.decoder_prompt
    width = max(len(s) for s in sequences) + len(prompt)
    inputs = torch.full((len(sequences), width), config.pad_token_id, dtype=torch.long, device=device)
    targets = torch.full((len(sequences), width - len(prompt) + 1), -100, dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        inputs[row, : len(sequence) + len(prompt)] = torch.tensor([*prompt, *sequence])
        targets[row, : len(sequence) + 1] = torch.tensor([*sequence, config.eos_token_id])
    rows = torch.tensor(owners, dtype=torch.long, device=device)
    hidden = model.decoder(inputs, select_rows(encoder, rows))[:, len(prompt) - 1 :]
    log_probs = F.log_softmax(model.decoder.logits(hidden).float(), dim=-1)
    picked = log_probs.gather(2, targets.clamp_min(0)[:, :, None]).squeeze(2)
    return picked.masked_fill(targets == -100, 0.0).sum(1)


def ctc_speech_evidence(log_probs: Tensor, lengths: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """Per utterance: the number of tokens on the CTC best path, and the mean posterior of the
    blank over its frames. An empty best path means the CTC head heard no speech."""
    best = log_probs.argmax(-1)
    valid = torch.arange(best.shape[1], device=best.device)[None] < lengths[:, None]
    previous = F.pad(best, (1, 0), value=-1)[:, :-1]
    tokens = ((best != blank) & (best != previous) & valid).sum(1)
    blank_mass = (log_probs[:, :, blank].exp() * valid).sum(1) / lengths.clamp_min(1)
    return tokens, blank_mass


def token_limits(ctc_tokens: Tensor, ratio: float = 1.5, slack: int = 4) -> Tensor:
    """Most output tokens allowed per utterance given its CTC best-path length: the attention
    decoder may fix the CTC path's spelling, not write much more than it heard."""
    return torch.ceil(ctc_tokens.float() * ratio).long() + slack + 1  # + 1: EOS


