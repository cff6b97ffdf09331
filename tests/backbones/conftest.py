"""A tiny Whisper for the backbone tests: a byte-level BPE tokenizer with Whisper's special
tokens, a randomly initialised `transformers` Whisper of that vocabulary, and its CTranslate2 file
written by CTranslate2's own converter (so the reader is checked against the real writer)."""

from __future__ import annotations

import json

import pytest
import torch

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|startoflm|>", "<|notimestamps|>"]
MERGES = ["Ġ t", "h e", "Ġt he"]  # ranks 0-2 create ids 256-258


def tiny_tokenizer_json(merges: list[str] = MERGES) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    for merge in MERGES:
        vocab["".join(merge.split())] = len(vocab)
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIALS)
    return tokenizer.to_str()


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    """(transformers Whisper in eval mode, CTranslate2 folder, tokenizer.json text, ct2 config)."""
    from ctranslate2.converters.transformers import WhisperLoader
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from echoasr.text import WhisperTokenizer

    tokenizer_json = tiny_tokenizer_json()
    tokenizer = WhisperTokenizer(tokenizer_json)
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=30,
        max_target_positions=24, pad_token_id=tokenizer.eos_id, bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id, decoder_start_token_id=tokenizer.bos_id,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random biases and norm gains, so that a dropped or misplaced one shows
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and "k_proj" not in name:
                parameter.normal_(0.0, 0.1)
            elif "layer_norm.weight" in name:
                parameter.uniform_(0.5, 1.5)
    spec = WhisperLoader().get_model_spec(model)
    spec.register_vocabulary([tokenizer._tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)])
    spec.validate()
    spec.optimize()  # float32, as the transformers model
    folder = tmp_path_factory.mktemp("ct2-tiny")
    spec.save(str(folder))
    ct2_config = {"suppress_ids": [7], "suppress_ids_begin": [220, tokenizer.eos_id]}
    return model, folder, tokenizer_json, ct2_config
