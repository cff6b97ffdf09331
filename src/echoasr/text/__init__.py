"""Text: the scoring normaliser and the tokenizers (SentencePiece and characters)."""

from echoasr.text.normalize import normalize
from echoasr.text.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "CharTokenizer", "SentencePieceTokenizer", "Tokenizer",
    "load_tokenizer", "normalize", "train_tokenizer",
]
