"""Tokenizers with the ids the model expects: pad 0, bos 1, eos 2, unk 3 (a pretrained backbone's
:class:`WhisperTokenizer` keeps Whisper's ids).

Both kinds normalise what they encode with :func:`echoasr.text.normalize`, so labels always live in
the scoring space and ``decode(encode(t)) == normalize(t)`` for text the vocabulary covers.
``encode`` adds no BOS/EOS; ``decode`` skips the special ids (and ids outside the vocabulary, which a
model with a padded embedding table may emit).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from echoasr import atomic
from echoasr.errors import EchoError
from echoasr.text.normalize import normalize

log = logging.getLogger(__name__)

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
CONFIG_NAME = "tokenizer_config.json"
SENTENCEPIECE_MODEL_NAME = "tokenizer.model"
# Always in a character vocabulary, whatever the training text holds.
BASE_ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"


class Tokenizer:
    """Common interface; use :func:`train_tokenizer` or :func:`load_tokenizer` to get one."""

    kind: str
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> None:
        raise NotImplementedError

    @staticmethod
    def load(directory: str | os.PathLike) -> Tokenizer:
        return load_tokenizer(directory)

    def content_ids(self, ids: Iterable[int]) -> list[int]:
        """The ids that spell text (no special id, none outside the vocabulary)."""
        return [int(i) for i in ids if UNK_ID < int(i) < self.vocab_size]


class CharTokenizer(Tokenizer):
    """One id per character of the normalised text (space included)."""

    kind = "char"

    def __init__(self, characters: Sequence[str]):
        if len(set(characters)) != len(characters) or any(len(c) != 1 for c in characters):
            raise ValueError("characters must be distinct single characters")
        self.characters = list(characters)
        self._ids = {char: index for index, char in enumerate(self.characters, start=len(SPECIAL_TOKENS))}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        seen = set(BASE_ALPHABET)
        for text in texts:
            seen.update(normalize(text))
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.characters)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(char, UNK_ID) for char in normalize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        offset = len(SPECIAL_TOKENS)
        return "".join(self.characters[i - offset] for i in self.content_ids(ids))

    def save(self, directory: str | os.PathLike) -> None:
        _write_config(directory, {"type": self.kind, "characters": self.characters})


class SentencePieceTokenizer(Tokenizer):
    """Subword units (unigram or BPE) learnt with ``sentencepiece`` on the training transcripts."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.model_proto = model_proto
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        specials = [self._processor.id_to_piece(i) for i in range(len(SPECIAL_TOKENS))]
        if specials != list(SPECIAL_TOKENS):
            raise EchoError(f"SentencePiece model has special pieces {specials}, expected {list(SPECIAL_TOKENS)}")

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 256, model_type: str = "unigram"
    ) -> SentencePieceTokenizer:
        import sentencepiece

        if model_type not in ("unigram", "bpe"):
            raise EchoError(f"unknown SentencePiece model type {model_type!r} (use 'unigram' or 'bpe')")
        sentences = sorted({normalized for text in texts if (normalized := normalize(text))})
        if not sentences:
            raise EchoError("cannot train a tokenizer: no non-empty transcripts")
        model = io.BytesIO()
        try:
            # One thread and the full, sorted input: the same transcripts give the same model.
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
                model_type=model_type, character_coverage=1.0, normalization_rule_name="identity",
                pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
                pad_piece=SPECIAL_TOKENS[0], bos_piece=SPECIAL_TOKENS[1], eos_piece=SPECIAL_TOKENS[2],
                unk_piece=SPECIAL_TOKENS[3], num_threads=1, input_sentence_size=0,
                shuffle_input_sentence=False, minloglevel=2,
            )
        except RuntimeError as error:
            raise EchoError(f"SentencePiece training failed: {str(error).split('] ')[-1]}") from None
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(normalize(text))

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode(self.content_ids(ids))

    def save(self, directory: str | os.PathLike) -> None:
        atomic.write_bytes(Path(directory) / SENTENCEPIECE_MODEL_NAME, self.model_proto)
        _write_config(directory, {"type": self.kind, "model_file": SENTENCEPIECE_MODEL_NAME})


class WhisperTokenizer(Tokenizer):
    """Whisper's byte-level BPE (a pretrained backbone's, `echoasr.backbones`), from its
    `tokenizer.json`. Text is encoded as Whisper writes it: cased and punctuated as given, with a
    leading space, no special tokens; `decode` drops every special and timestamp token.

    Ids: end of text is EOS, `<|startoftranscript|>` is BOS; the pad id (also the CTC blank of an
    optional CTC head) is `<|startoflm|>`, a token Whisper never produces in transcription."""

    kind = "whisper"
    TOKENIZER_FILE = "tokenizer.json"

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.tokenizer_json = tokenizer_json
        self._tokenizer = HFTokenizer.from_str(tokenizer_json)
        ids = {name: self._tokenizer.token_to_id(name) for name in
               ("<|endoftext|>", "<|startoftranscript|>", "<|startoflm|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")}
        missing = [name for name, value in ids.items() if value is None]
        if missing:
            raise EchoError(f"not a Whisper tokenizer: no {', '.join(missing)}")
        self.eos_id, self.bos_id, self.pad_id = ids["<|endoftext|>"], ids["<|startoftranscript|>"], ids["<|startoflm|>"]
        self.unk_id = None
        # Everything from end of text on is special (task, language, timestamp tokens).
        self.first_special_id = self.eos_id
        self.prompt_ids = [self.bos_id, ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(" " + " ".join(text.split()), add_special_tokens=False).ids

    def content_ids(self, ids: Iterable[int]) -> list[int]:
        return [int(i) for i in ids if 0 <= int(i) < self.first_special_id]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode(self.content_ids(ids), skip_special_tokens=True).strip()

    def save(self, directory: str | os.PathLike) -> None:
        atomic.write_text(Path(directory) / self.TOKENIZER_FILE, self.tokenizer_json)
        config = {"type": self.kind, "tokenizer_file": self.TOKENIZER_FILE,
                  "pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        atomic.write_text(Path(directory) / CONFIG_NAME, json.dumps(config, indent=1) + "\n")


def train_tokenizer(
    texts: Iterable[str], kind: str = "sentencepiece", vocab_size: int = 256, model_type: str = "unigram"
) -> Tokenizer:
    """Train a tokenizer of ``kind`` (``"sentencepiece"`` or ``"char"``) on transcripts."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=model_type)
    raise EchoError(f"unknown tokenizer kind {kind!r} (use 'sentencepiece' or 'char')")


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved by ``save(directory)``, whichever kind it is."""
    config_path = Path(directory) / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        kind = config["type"]
    except FileNotFoundError:
        raise EchoError("no tokenizer here (tokenizer_config.json is missing)", directory) from None
    except (ValueError, KeyError, TypeError) as error:
        raise EchoError(f"not a tokenizer config: {error}", config_path) from None
    if kind == CharTokenizer.kind:
        return CharTokenizer(config["characters"])
    if kind == SentencePieceTokenizer.kind:
        model_path = Path(directory) / config.get("model_file", SENTENCEPIECE_MODEL_NAME)
        try:
            return SentencePieceTokenizer(model_path.read_bytes())
        except OSError as error:
            raise EchoError(f"cannot read the SentencePiece model: {error.strerror}", model_path) from None
    if kind == WhisperTokenizer.kind:
        path = Path(directory) / config.get("tokenizer_file", WhisperTokenizer.TOKENIZER_FILE)
        try:
            return WhisperTokenizer(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise EchoError(f"cannot read the tokenizer: {error.strerror}", path) from None
        except Exception as error:  # the tokenizers library raises its own exception types
            raise EchoError(f"not a tokenizer.json: {error}", path) from None
    raise EchoError(f"unknown tokenizer type {kind!r}", config_path)


def _write_config(directory: str | os.PathLike, config: dict) -> None:
    config = {**config, "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "unk_id": UNK_ID}
    text = json.dumps(config, indent=1, ensure_ascii=False) + "\n"
    atomic.write_text(Path(directory) / CONFIG_NAME, text)
