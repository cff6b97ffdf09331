"""Text: the scoring normaliser and the tokenizers (SentencePiece, characters, a backbone's Whisper BPE)."""

from echoasr.text.normalize import normalize
from echoasr.text.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WhisperTokenizer,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "CharTokenizer", "SentencePieceTokenizer", "Tokenizer",
    "WhisperTokenizer", "load_tokenizer", "normalize", "train_tokenizer",
]
