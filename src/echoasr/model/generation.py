"""Decoding for Echo: batched greedy and beam search with a KV cache, joint CTC/attention
scoring, and best-path CTC decoding.

Our own small decoder rather than `transformers`' `generate`, whose encoder-decoder path
assumes a single input tensor and its own cache classes. Behaviour:

* every step scores the next token with the attention decoder (log-softmax). With a CTC head
  and `ctc_weight` w > 0 the score of a candidate c is
  `(1 - w) * log p_att(c) + w * (log psi(prefix + c) - log psi(prefix))`, where `psi` is the
  CTC prefix probability (ESPnet's CTCPrefixScore, Watanabe et al. 2017, Algorithm 2). As in
  ESPnet's partial scoring, only the `ctc_candidates` best attention tokens (plus EOS, always,
  so CTC can end a hypothesis that the attention decoder would loop on) get CTC scores;
* the decoder starts from `config.decoder_prompt` (one start token, or a prompt such as
  Whisper's four tokens, fed into the KV cache before the search); the pad and start tokens and
  `config.decode_suppress_ids` are never produced, `config.decode_begin_suppress_ids` not as
  the first token;
* length: at most `max_new_tokens` tokens (EOS included), and at most
  `ceil(max_length_ratio * encoder_length) + 1` per utterance; a hypothesis that reaches its
  limit is given EOS;
* `no_repeat_ngram_size` n > 0 forbids repeating any n-gram (the repetition guard);
* beam search keeps `num_beams` running hypotheses per utterance (the best non-EOS expansions
  among the top 2K) and up to K finished ones scored `sum log p / length ** length_penalty`;
  an utterance is done when K hypotheses finished and the best running one cannot beat the
  worst finished one at its current length (Hugging Face's default stopping rule). With one
  beam this is exactly greedy search.

Output: (B, L) ids without the start token, ending with EOS when produced, padded with pad. With
`nbest` N (at most the beams), the N best finished hypotheses of every utterance instead, with
their total log-probabilities and ranking scores (:class:`NBestOutput`), for rescoring them
with what the model does not know (a word LM, in `echoasr.decoding`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .encoder import EncoderOutput


class Seq2SeqModel(Protocol):
    """What decoding needs of a model (`EchoForConditionalGeneration` is one); a protocol, so that
    this module does not import the model that imports it."""

    config: Any
    decoder: Any  # EchoDecoder: start, step, logits, forward
    ctc_head: Any
    generation_config: Any

    def encode(self, features: dict[str, Tensor], feature_lengths: Tensor | None = None) -> EncoderOutput: ...

    def ctc_log_probs(self, encoder: EncoderOutput) -> Tensor: ...


# Keyword arguments Hugging Face's Seq2SeqTrainer (or a user copying HF habits) may pass that
# have no meaning here: the references, decoder prompts built from them, and trainer plumbing.
_IGNORED_KWARGS = {"labels", "decoder_input_ids", "decoder_attention_mask", "attention_mask", "early_stopping"}
# Options whose default we implement; any other value is refused rather than silently ignored.
_DEFAULT_ONLY_KWARGS = {
    "do_sample": False,
    "num_return_sequences": 1,
    "return_dict_in_generate": False,
    "output_scores": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "repetition_penalty": 1.0,
    "temperature": 1.0,
}


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int) -> Tensor:
    """Best path: argmax per frame, merge repeats, drop blanks. (B, S, V) -> (B, L), padded
    with `blank` (which is the pad id in Echo)."""
    best = log_probs.argmax(-1)
    previous = F.pad(best, (1, 0), value=-1)[:, :-1]
    valid = torch.arange(best.shape[1], device=best.device) < lengths[:, None]
    keep = (best != blank) & (best != previous) & valid
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    width = max(int(keep.sum(1).max().item()), 1)
    ids = best.gather(1, order).masked_fill(~keep.gather(1, order), blank)
    return ids[:, :width]


@dataclass
class CTCState:
    """CTC prefix state of N hypotheses: forward variables over all frames (T, N) for paths
    ending in a label (`r_n`) or a blank (`r_b`), the prefix log-probability and last label."""

    r_n: Tensor
    r_b: Tensor
    log_psi: Tensor
    last: Tensor
    length: int


class CTCPrefixScorer:
    """Batched CTC prefix scoring without a Python loop over frames.

    The per-frame recursions of the prefix algorithm,
    `r_n[t] = x_c[t] + logaddexp(r_n[t-1], phi[t-1])` and
    `r_b[t] = x_blank[t] + logaddexp(r_n[t-1], r_b[t-1])`, are linear in probability space, so
    `r_n[t] = X[t] + logcumsumexp_s(a[s] - X[s])` with `X` the cumulative log-probabilities and
    `a` the mass entering at each frame; likewise for `r_b`. Computed in float64 so the
    cumulative sums lose no precision.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int, eos: int):
        self.x = log_probs.to(torch.float64).transpose(0, 1).contiguous()  # (T, N, V)
        self.lengths = lengths
        self.blank = blank
        self.eos = eos
        frames = self.x.shape[0]
        self.in_utterance = (torch.arange(frames, device=lengths.device)[:, None] < lengths[None, :])[:, :, None]
        self.cum_blank = torch.cumsum(self.x[:, :, blank], dim=0)  # (T, N)

    def initial_state(self) -> CTCState:
        n = self.x.shape[1]
        r_n = torch.full_like(self.cum_blank, -math.inf)
        zeros = torch.zeros(n, dtype=torch.float64, device=self.x.device)
        last = torch.full((n,), -1, dtype=torch.long, device=self.x.device)
        return CTCState(r_n=r_n, r_b=self.cum_blank.clone(), log_psi=zeros, last=last, length=0)

    def score(self, state: CTCState, candidates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix log-probabilities (N, C) of `prefix + c` for candidates (N, C), and the new
        forward variables (T, N, C) for each."""
        frames, n = self.cum_blank.shape
        x_c = self.x.gather(2, candidates[None].expand(frames, -1, -1))
        r_sum = torch.logaddexp(state.r_n, state.r_b)
        repeat = (candidates == state.last[:, None])[None]
        phi = torch.where(repeat, state.r_b[:, :, None], r_sum[:, :, None])
        start = max(state.length, 1)
        entering = torch.full_like(x_c, -math.inf)
        entering[start:] = phi[start - 1 : -1] + x_c[start:]
        if state.length == 0:
            entering[0] = x_c[0]
        entering = entering.masked_fill(~self.in_utterance, -math.inf)

        log_psi = torch.logsumexp(entering, dim=0)
        cum = torch.cumsum(x_c, dim=0)
        r_n = cum + torch.logcumsumexp(entering - cum, dim=0)
        into_blank = torch.full_like(x_c, -math.inf)
        into_blank[start:] = r_n[start - 1 : -1] + self.x[start:, :, self.blank, None]
        cum_blank = self.cum_blank[:, :, None]
        r_b = cum_blank + torch.logcumsumexp(into_blank - cum_blank, dim=0)

        last_frame = (self.lengths - 1).clamp_min(0)
        full_prefix = r_sum.gather(0, last_frame[None]).squeeze(0)  # log P(prefix is the whole output)
        log_psi = torch.where(candidates == self.eos, full_prefix[:, None], log_psi)
        return log_psi, r_n, r_b

    @staticmethod
    def select(parts: tuple[Tensor, Tensor, Tensor], candidates: Tensor, rows: Tensor, tokens: Tensor, length: int) -> CTCState:
        """State after extending hypothesis `rows[i]` with `tokens[i]` (a scored candidate)."""
        log_psi, r_n, r_b = parts
        match = candidates[rows] == tokens[:, None]
        position = match.to(torch.int8).argmax(1)
        # A token that was not scored (a dead beam, a finished row's padding) is impossible.
        scored = match.any(1)
        return CTCState(
            r_n=r_n[:, rows, position].masked_fill(~scored, -math.inf),
            r_b=r_b[:, rows, position].masked_fill(~scored, -math.inf),
            log_psi=log_psi[rows, position].masked_fill(~scored, -math.inf),
            last=tokens,
            length=length,
        )


class StepScorer:
    """Next-token scores of N hypotheses (attention decoder, optionally joint with CTC)."""

    def __init__(
        self,
        model: Seq2SeqModel,
        encoder: EncoderOutput,
        max_steps: int,
        use_cache: bool,
        ctc_weight: float,
        ctc_candidates: int,
    ):
        config = model.config
        self.model = model
        self.encoder = encoder
        prompt = config.decoder_prompt
        # The search starts from the prompt's last token; the ones before it are a fixed prefix.
        rows = encoder.hidden.shape[0]
        self.prefix = torch.tensor(prompt[:-1], dtype=torch.long, device=encoder.hidden.device).expand(rows, -1)
        self.state = model.decoder.start(encoder, max_steps + len(prompt)) if use_cache else None
        if self.state is not None:
            for position in range(self.prefix.shape[1]):
                model.decoder.step(self.prefix[:, position : position + 1], self.state)
        self.ctc_weight = ctc_weight
        self.ctc_candidates = min(ctc_candidates, config.vocab_size)
        # Index tensors built once: a Whisper model suppresses ~1,600 ids at every step.
        device = encoder.hidden.device
        self.banned = torch.tensor(sorted({config.pad_token_id, config.decoder_start_token_id, *prompt,
                                           *config.decode_suppress_ids}), dtype=torch.long, device=device)
        self.banned_first = torch.tensor(config.decode_begin_suppress_ids, dtype=torch.long, device=device)
        self.eos = config.eos_token_id
        self.ctc = None
        if ctc_weight > 0:
            log_probs = model.ctc_log_probs(encoder)
            self.ctc = CTCPrefixScorer(log_probs, encoder.lengths, config.pad_token_id, self.eos)
            self.ctc_state = self.ctc.initial_state()
        self._pending: tuple[Tensor, tuple[Tensor, Tensor, Tensor]] | None = None

    def scores(self, tokens: Tensor) -> Tensor:
        """(N, V) float32 log-scores of the next token after `tokens` (N, t) (start token first)."""
        if self.state is not None:
            hidden = self.model.decoder.step(tokens[:, -1:], self.state)
        else:
            hidden = self.model.decoder(torch.cat([self.prefix, tokens], dim=1), self.encoder)[:, -1]
        scores = F.log_softmax(self.model.decoder.logits(hidden).float(), dim=-1)
        scores[:, self.banned] = -math.inf
        if tokens.shape[1] == 1 and self.banned_first.numel():
            scores[:, self.banned_first] = -math.inf
        if self.ctc is not None:
            top = scores.topk(self.ctc_candidates, dim=-1).indices
            candidates = torch.cat([top, torch.full_like(top[:, :1], self.eos)], dim=1)
            parts = self.ctc.score(self.ctc_state, candidates)
            previous = self.ctc_state.log_psi[:, None]
            # An impossible prefix stays impossible (and -inf - -inf must not become NaN).
            ctc_gain = torch.where(previous == -math.inf, -math.inf, parts[0] - previous).float()
            joint = (1.0 - self.ctc_weight) * scores.gather(1, candidates) + self.ctc_weight * ctc_gain
            scores = torch.full_like(scores, -math.inf).scatter(1, candidates, joint)
            self._pending = (candidates, parts)
        return scores

    def advance(self, rows: Tensor | None, tokens: Tensor, length: int) -> None:
        """Hypothesis i continues hypothesis `rows[i]` (None: itself) with `tokens[i]`."""
        if rows is not None and self.state is not None:
            self.state.reorder(rows)
        if self.ctc is not None:
            candidates, parts = self._pending
            index = rows if rows is not None else torch.arange(tokens.shape[0], device=tokens.device)
            self.ctc_state = CTCPrefixScorer.select(parts, candidates, index, tokens, length)


def _banned_ngrams(tokens: Tensor, n: int, vocab: int) -> Tensor | None:
    """(N, V) bool: tokens that would repeat an n-gram already in `tokens` (N, t)."""
    if n <= 0 or tokens.shape[1] < n:
        return None
    windows = tokens.unfold(1, n, 1)  # (N, W, n)
    recent = tokens[:, tokens.shape[1] - n + 1 :]
    match = (windows[:, :, :-1] == recent[:, None, :]).all(-1)
    banned = torch.zeros(tokens.shape[0], vocab, device=tokens.device)
    return banned.scatter_add_(1, windows[:, :, -1], match.float()) > 0


# Score of a forced end whose EOS is impossible (-inf): finite, so the search still returns it
# when nothing else finished, and below any real score.
IMPOSSIBLE_END = -1e9


def _constrain(scores: Tensor, tokens: Tensor, step: int, limits: Tensor, eos: int, ngram: int) -> Tensor:
    banned = _banned_ngrams(tokens, ngram, scores.shape[1])
    if banned is not None:
        scores = scores.masked_fill(banned, -math.inf)
    at_limit = (step + 1 >= limits)[:, None]
    if bool(at_limit.any()):
        # A hypothesis cut at the length limit ends with its real EOS score (attention EOS
        # probability, and with joint decoding the CTC probability of the whole sequence), so
        # length normalisation cannot favour it; an impossible EOS stays a last resort.
        forced = torch.full_like(scores, -math.inf)
        forced[:, eos] = scores[:, eos].clamp_min(IMPOSSIBLE_END)
        scores = torch.where(at_limit, forced, scores)
    return scores


def _any_unfinished(local: bool, synced: bool, device: torch.device) -> bool:
    """With `synced_gpus` every rank keeps stepping until all ranks are done (FSDP/ZeRO-3
    need every rank in every forward)."""
    if not (synced and torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local
    flag = torch.tensor(1.0 if local else 0.0, device=device)
    torch.distributed.all_reduce(flag)
    return flag.item() > 0


def _finish(sequences: Tensor, eos: int, pad: int) -> Tensor:
    """Pad everything after the first EOS and trim trailing all-pad columns."""
    after_eos = torch.cumsum((sequences == eos).int(), dim=1) - (sequences == eos).int() > 0
    sequences = sequences.masked_fill(after_eos, pad)
    width = int((sequences != pad).sum(1).max().item()) if sequences.numel() else 0
    return sequences[:, : max(width, 1)]


def greedy_search(scorer: StepScorer, batch: int, limits: Tensor, max_steps: int, options: dict[str, Any]) -> Tensor:
    config = scorer.model.config
    device = limits.device
    tokens = torch.full((batch, max_steps + 1), config.pad_token_id, dtype=torch.long, device=device)
    tokens[:, 0] = config.decoder_prompt[-1]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(max_steps):
        scores = scorer.scores(tokens[:, : step + 1])
        scores = _constrain(scores, tokens[:, 1 : step + 1], step, limits, config.eos_token_id, options["ngram"])
        chosen = scores.argmax(-1).masked_fill(finished, config.pad_token_id)
        tokens[:, step + 1] = chosen
        scorer.advance(None, chosen, step + 1)
        finished |= chosen == config.eos_token_id
        if not _any_unfinished(not bool(finished.all()), options["synced"], device):
            break
    return _finish(tokens[:, 1:], config.eos_token_id, config.pad_token_id)


@dataclass
class NBestOutput:
    """The N best hypotheses of every utterance, best first. A slot no hypothesis filled has
    log-probability and score -inf."""

    sequences: Tensor  # (B, N, L) ids as `generate` writes them: EOS where produced, then pad
    log_probs: Tensor  # (B, N) sum of the search's token scores, EOS included (joint with CTC when it is)
    scores: Tensor  # (B, N) what the search ranks by: log_probs / length_norms
    length_norms: Tensor  # (B, N) tokens (EOS included) ** length_penalty


@dataclass
class BeamResult:
    """The end of a beam search: K finished hypotheses per utterance (best first) and, for an
    utterance where none finished, its best running one."""

    finished_tokens: Tensor  # (B, K, max_steps)
    finished_scores: Tensor  # (B, K) length-normalised
    finished_log_probs: Tensor  # (B, K)
    running_tokens: Tensor  # (B, max_steps) the best running hypothesis
    eos: int
    pad: int
    length_penalty: float

    def best(self) -> Tensor:
        """(B, L) the best finished hypothesis, else the best running one."""
        use_fallback = (self.finished_scores[:, 0] == -math.inf)[:, None]
        output = torch.where(use_fallback, self.running_tokens, self.finished_tokens[:, 0])
        return _finish(output, self.eos, self.pad)

    def nbest(self, n: int) -> NBestOutput:
        batch = self.finished_scores.shape[0]
        tokens = self.finished_tokens[:, :n]
        none_finished = self.finished_scores[:, 0] == -math.inf
        if bool(none_finished.any()):
            # As in `best`, the best running hypothesis stands in. Nothing finishes only when every
            # beam died (a hypothesis at its length limit is given EOS), so its scores stay -inf.
            tokens = tokens.clone()
            tokens[none_finished, 0] = self.running_tokens[none_finished]
        norms = (tokens != self.pad).sum(2).clamp_min(1).float() ** self.length_penalty
        flat = _finish(tokens.reshape(batch * n, -1), self.eos, self.pad)
        return NBestOutput(flat.view(batch, n, -1), self.finished_log_probs[:, :n], self.finished_scores[:, :n], norms)


def beam_search(
    scorer: StepScorer, batch: int, beams: int, limits: Tensor, max_steps: int, options: dict[str, Any]
) -> BeamResult:
    config = scorer.model.config
    eos, pad = config.eos_token_id, config.pad_token_id
    device = limits.device
    vocab = config.vocab_size
    penalty = options["length_penalty"]
    rows = batch * beams
    limits = limits.repeat_interleave(beams)

    tokens = torch.full((rows, max_steps + 1), pad, dtype=torch.long, device=device)
    tokens[:, 0] = config.decoder_prompt[-1]
    running = torch.full((batch, beams), -math.inf, device=device)
    running[:, 0] = 0.0  # all beams start identical: expand only the first
    finished_scores = torch.full((batch, beams), -math.inf, device=device)
    finished_log_probs = torch.full((batch, beams), -math.inf, device=device)
    finished_tokens = torch.full((batch, beams, max_steps), pad, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    offsets = (torch.arange(batch, device=device) * beams)[:, None]

    for step in range(max_steps):
        scores = scorer.scores(tokens[:, : step + 1])
        scores = _constrain(scores, tokens[:, 1 : step + 1], step, limits, eos, options["ngram"])
        total = (running.view(rows, 1) + scores).view(batch, beams * vocab)
        top_scores, top_index = total.topk(2 * beams, dim=1)
        source, token = top_index // vocab, top_index % vocab
        is_eos = token == eos
        length = step + 1

        # EOS among the best K expansions: a finished hypothesis.
        rank = torch.arange(2 * beams, device=device)[None]
        new_finished = torch.where(is_eos & (rank < beams) & ~done[:, None], top_scores / length**penalty, -math.inf)
        candidates = tokens[(offsets + source).view(-1), 1 : step + 1].view(batch, 2 * beams, step)
        candidates = F.pad(candidates, (0, max_steps - step), value=pad)
        candidates[:, :, step] = eos
        merged_scores = torch.cat([finished_scores, new_finished], dim=1)
        merged_tokens = torch.cat([finished_tokens, candidates], dim=1)
        merged_log_probs = torch.cat([finished_log_probs, torch.where(new_finished > -math.inf, top_scores, -math.inf)],
                                     dim=1)
        finished_scores, keep = merged_scores.topk(beams, dim=1)
        finished_tokens = merged_tokens.gather(1, keep[:, :, None].expand(-1, -1, max_steps))
        finished_log_probs = merged_log_probs.gather(1, keep)

        # The best K non-EOS expansions keep running.
        order = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :beams]
        running = top_scores.gather(1, order).masked_fill(done[:, None], -math.inf)
        chosen_rows = (offsets + source.gather(1, order)).view(-1)
        chosen_tokens = token.gather(1, order).view(-1)
        tokens = tokens[chosen_rows]
        tokens[:, step + 1] = chosen_tokens
        scorer.advance(chosen_rows, chosen_tokens, length)

        best_running = running.max(1).values
        worst_finished = finished_scores.min(1).values
        done |= (worst_finished > -math.inf) & (best_running / length**penalty <= worst_finished)
        done |= best_running == -math.inf
        done |= step + 1 >= limits.view(batch, beams)[:, 0]
        if not _any_unfinished(not bool(done.all()), options["synced"], device):
            break

    return BeamResult(finished_tokens, finished_scores, finished_log_probs,
                      running_tokens=tokens.view(batch, beams, -1)[:, 0, 1:], eos=eos, pad=pad, length_penalty=penalty)


_UNSET = object()


def _option(name: str, explicit: Any, generation_config: Any, model_config: Any, default: Any) -> Any:
    """The explicit argument, else a generation config's value, else ``default``. A generation
    config's value equal to Hugging Face's own default counts as unset (HF fills unset fields with
    its defaults, e.g. ``max_length`` 20, ``no_repeat_ngram_size`` 0): the model's default wins then."""
    from transformers import GenerationConfig

    if explicit is not None:
        return explicit
    for source in (generation_config, model_config):
        value = getattr(source, name, None) if source is not None else None
        if value is None or (isinstance(source, GenerationConfig) and value == _hf_defaults().get(name, _UNSET)):
            continue
        return value
    return default


@functools.cache
def _hf_defaults() -> dict[str, Any]:
    """What Hugging Face fills a generation config's unset fields with (Seq2SeqTrainer, saving)."""
    from transformers import GenerationConfig

    return GenerationConfig._get_default_generation_params()


def generate(
    model: Seq2SeqModel,
    features: dict[str, Tensor] | None,
    feature_lengths: Tensor | None = None,
    *,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    length_penalty: float | None = None,
    ctc_weight: float | None = None,
    ctc_candidates: int | None = None,
    no_repeat_ngram_size: int | None = None,
    max_length_ratio: float | None = None,
    token_limits: Tensor | None = None,
    use_cache: bool = True,
    encoder_outputs: EncoderOutput | None = None,
    generation_config: Any = None,
    synced_gpus: bool = False,
    nbest: int | None = None,
    **kwargs: Any,
) -> Tensor | NBestOutput:
    """Decode a batch. Options left as None come from `generation_config`, then from
    `model.generation_config` (where they can be saved with the model, custom ones such as
    `ctc_weight` included), then defaults: 1 beam, `max_new_tokens` =
    `config.max_target_positions` (HF's `max_length` counts the start token, so it means
    `max_length - 1` new tokens), `max_length_ratio` = `config.decode_max_length_ratio` (1.0), `length_penalty` 1.0, `ctc_weight` =
    `config.decode_ctc_weight` when the model has a CTC head (always 0 without one),
    `ctc_candidates` = max(10, 1.5 * beams), `no_repeat_ngram_size` =
    `config.decode_no_repeat_ngram_size` (0: off). `token_limits` (B,)
    caps each utterance's output (EOS included) further. `nbest` N (1 to the beams): the N best
    hypotheses per utterance (:class:`NBestOutput`, from the beam search even with one beam)
    instead of the best one's ids; the best of them is the hypothesis returned without `nbest`."""
    unknown = set(kwargs) - _IGNORED_KWARGS - set(_DEFAULT_ONLY_KWARGS)
    if unknown:
        raise TypeError(f"generate() got unsupported arguments {sorted(unknown)}")
    for name, default in _DEFAULT_ONLY_KWARGS.items():
        if name in kwargs and kwargs[name] is not None and kwargs[name] != default:
            raise ValueError(f"generate() supports only {name}={default!r}")

    config = model.config
    model_generation_config = getattr(model, "generation_config", None)

    def option(name: str, explicit: Any, default: Any) -> Any:
        return _option(name, explicit, generation_config, model_generation_config, default)

    beams = int(option("num_beams", num_beams, 1))
    if nbest is not None and not 1 <= nbest <= beams:
        raise ValueError(f"nbest must be between 1 and the beams ({beams}), not {nbest}")
    new_tokens = option("max_new_tokens", max_new_tokens, None)
    if new_tokens is None:
        total = option("max_length", max_length, None)
        new_tokens = total - 1 if total is not None else config.max_target_positions
    new_tokens = max(1, min(int(new_tokens), config.max_target_positions))
    weight = float(option("ctc_weight", ctc_weight, config.decode_ctc_weight)) if model.ctc_head is not None else 0.0
    candidates = int(option("ctc_candidates", ctc_candidates, max(10, math.ceil(1.5 * beams))))
    ratio = float(option("max_length_ratio", max_length_ratio, config.decode_max_length_ratio))
    options = {
        "length_penalty": float(option("length_penalty", length_penalty, 1.0)),
        "ngram": int(option("no_repeat_ngram_size", no_repeat_ngram_size, config.decode_no_repeat_ngram_size)),
        "synced": bool(synced_gpus),
    }

    if encoder_outputs is None:
        if features is None:
            raise ValueError("generate needs features (or encoder_outputs)")
        encoder_outputs = model.encode(features, feature_lengths)
    per_utterance = torch.ceil(encoder_outputs.lengths.float() * ratio).long() + 1
    limits = per_utterance.clamp(min=1, max=new_tokens)
    if token_limits is not None:  # per-utterance caps (EOS included), e.g. from the CTC best path
        limits = torch.minimum(limits, token_limits.to(limits.device).clamp_min(1))
    longest = limits.max()
    if synced_gpus and torch.distributed.is_available() and torch.distributed.is_initialized():
        longest = longest.clone()  # ranks keep stepping together: room for the longest of all
        torch.distributed.all_reduce(longest, op=torch.distributed.ReduceOp.MAX)
    max_steps = int(longest.item())

    greedy = beams == 1 and nbest is None
    return _search(model, encoder_outputs, beams, limits, max_steps, use_cache, weight, candidates, options, greedy,
                   nbest)


def _search(
    model: Seq2SeqModel,
    encoder: EncoderOutput,
    beams: int,
    limits: Tensor,
    max_steps: int,
    use_cache: bool,
    ctc_weight: float,
    ctc_candidates: int,
    options: dict[str, Any],
    greedy: bool,
    nbest: int | None = None,
) -> Tensor | NBestOutput:
    batch = encoder.hidden.shape[0]
    expanded = encoder.expand(beams) if beams > 1 else encoder
    scorer = StepScorer(model, expanded, max_steps, use_cache, ctc_weight, ctc_candidates)
    if greedy:
        return greedy_search(scorer, batch, limits, max_steps, options)
    result = beam_search(scorer, batch, beams, limits, max_steps, options)
    return result.best() if nbest is None else result.nbest(nbest)
