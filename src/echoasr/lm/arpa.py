"""Word n-gram language models as ARPA files: the general English model from the pocketsphinx wheel,
models built from text with IRSTLM, and their vocabulary.

pocketsphinx's ``NGramModel.write(..., "arpa")`` prints every log-probability and back-off weight as
log10 x 512 (its internal log base): :func:`convert_pocketsphinx` divides them back, so the unigram
probabilities sum to one again. Converted files are cached in ``$ECHOASR_CACHE`` (default
``~/.cache/echoasr``) and written atomically.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from echoasr import atomic
from echoasr.errors import EchoError

log = logging.getLogger(__name__)

POCKETSPHINX_SCALE = 512.0
SENTENCE_MARKERS = ("<s>", "</s>", "<unk>")
DEFAULT_NAME = "en-us-pocketsphinx.arpa"
IRSTLM_BIN = Path("/usr/lib/irstlm/bin")
CHARACTER_SEPARATOR = "|"  # the space between words in a character LM
DEFAULT_BUILD_SECONDS = 10  # converting the general English model: 6.5 s measured on 2 busy cores


def cache_dir() -> Path:
    return Path(os.environ.get("ECHOASR_CACHE") or Path.home() / ".cache" / "echoasr")


def pocketsphinx_lm_path() -> Path:
    try:
        import pocketsphinx
    except ImportError:
        raise EchoError("pocketsphinx is not installed (pip install 'echoasr[reference]')") from None
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "en-us.lm.bin"
    if not path.is_file():
        raise EchoError("the pocketsphinx wheel has no English language model", path)
    return path


def arpa_line(line: str, order: int, scale: float = 1.0, backoff: bool = True) -> str:
    """An n-gram line in the standard layout ``logprob<TAB>w1 w2<TAB>backoff`` from any whitespace
    layout (pocketsphinx separates the words with tabs), the numbers divided by ``scale``."""
    fields = line.split()
    if len(fields) < order + 1:
        raise ValueError(f"not a {order}-gram line: {line!r}")
    numbers = [float(fields[0])] + ([float(fields[order + 1])] if backoff and len(fields) > order + 1 else [])
    scaled = [f"{value / scale:.6g}" for value in numbers]
    return "\t".join([scaled[0], " ".join(fields[1 : order + 1]), *scaled[1:]]) + "\n"


def convert_pocketsphinx(out: str | os.PathLike | None = None, source: str | os.PathLike | None = None) -> Path:
    """ARPA file of the pocketsphinx English model (72k words), in log10 units.

    pocketsphinx 5.1.1 cannot write this model whole: its header declares six more bigrams than
    its trie holds, and the ARPA writer crashes at the end of the bigrams (cmusphinx/pocketsphinx
    #502, fixed upstream after 5.1.1). The writer therefore runs in a child process, and what it
    wrote before the crash is kept as a bigram model: every unigram, and the bigrams up to the last
    complete line (the few lost ones back off to unigrams). The values' scale is read off the
    unigram mass (log10; log10 x 512 has been seen, and garbage when the LogMath object was freed
    before writing). Default ``out``: the cache, reused."""
    target = Path(out) if out else default_lm_cache()
    if out is None and target.is_file():
        return target
    source = Path(source) if source else pocketsphinx_lm_path()
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.arpa"
        subprocess.run([sys.executable, "-c", _POCKETSPHINX_WRITE, str(source), str(raw)], capture_output=True)
        sections = _read_sections(raw)
        if not sections.get(1):
            raise EchoError("pocketsphinx wrote no unigrams", source)
        scale = unigram_scale([float(line.split("\t", 1)[0]) for line in sections[1]], source)
        orders = [order for order in sorted(sections) if order == 1 or sections.get(order - 1) is not None]
        with atomic.atomic_path(target) as temporary, open(temporary, "w", encoding="utf-8") as written:
            written.write("\\data\\\n")
            for order in orders:
                written.write(f"ngram {order}={len(sections[order])}\n")
            for order in orders:
                written.write(f"\n\\{order}-grams:\n")
                highest = order == orders[-1]
                for line in sections[order]:
                    written.write(arpa_line(line, order, scale, backoff=not highest))
            written.write("\n\\end\\\n")
    log.info("wrote %s (%s)", target, ", ".join(f"{len(sections[o])} {o}-grams" for o in orders))
    return target


_POCKETSPHINX_WRITE = """
import sys
from pocketsphinx import Config, LogMath, NGramModel
config, logmath = Config(), LogMath()  # the model keeps pointers to both: they must outlive it
model = NGramModel(config, logmath, sys.argv[1])
model.write(sys.argv[2], NGramModel.str_to_type("arpa"))
"""


def _read_sections(path: Path) -> dict[int, list[str]]:
    """n-gram lines per order of a possibly truncated ARPA file; an order whose section was cut
    short keeps its complete lines (a truncated last line is dropped)."""
    sections: dict[int, list[str]] = {}
    if not path.is_file():
        return sections
    current = None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            stripped = line.strip()
            if stripped.endswith("-grams:") and stripped.startswith("\\"):
                current = int(stripped[1:].split("-")[0])
                sections[current] = []
            elif stripped.startswith("\\"):
                current = None
            elif current is not None and stripped and line.endswith("\n") and len(line.split()) > current:
                sections[current].append(line)
    return sections


def unigram_scale(log_probs: Sequence[float], path: str | os.PathLike | None = None) -> float:
    """The divisor that turns the written unigram values into log10 probabilities: the one of 1
    and 512 under which they sum to one."""
    for scale in (1.0, POCKETSPHINX_SCALE):
        if abs(sum(10.0 ** (value / scale) for value in log_probs) - 1.0) < 1e-2:
            return scale
    raise EchoError("the unigram probabilities sum to one under no known scale", path)


def default_lm_cache() -> Path:
    """Where the general English model is cached once converted."""
    return cache_dir() / DEFAULT_NAME


def default_lm() -> Path:
    """The general English model (converted once, then from the cache)."""
    if not default_lm_cache().is_file():
        pocketsphinx_lm_path()  # no pocketsphinx: fail before announcing the build
        log.warning("building the general English LM (once, ~%d s) in %s", DEFAULT_BUILD_SECONDS, default_lm_cache())
    return convert_pocketsphinx()


def read_unigrams(path: str | os.PathLike) -> Iterator[tuple[str, float]]:
    """(word, log10 probability) for every unigram of an ARPA file, sentence markers included."""
    path = Path(path)
    section = None
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                stripped = line.strip()
                if stripped.startswith("\\"):
                    if section == "\\1-grams:":
                        return  # the unigrams come first: nothing more to read
                    section = stripped
                    continue
                if section == "\\1-grams:" and stripped:
                    fields = stripped.split()
                    yield fields[1], float(fields[0])
    except FileNotFoundError:
        raise EchoError("no such language model file", path) from None
    except (IndexError, ValueError):
        raise EchoError("not an ARPA language model", path) from None


def is_character_lm(words: Sequence[str]) -> bool:
    """Whether a vocabulary (without sentence markers) is that of a character LM."""
    return all(len(word) == 1 for word in words)


def vocabulary(path: str | os.PathLike) -> list[str]:
    """The words of an ARPA model, without the sentence markers."""
    words = [word for word, _ in read_unigrams(path) if word not in SENTENCE_MARKERS]
    if not words:
        raise EchoError("the language model has no words", path)
    return words


def build_lm(texts: Sequence[str | os.PathLike], out: str | os.PathLike, order: int = 3,
             characters: bool = False) -> Path:
    """An ARPA model of ``order`` from text files (one sentence a line, normalised like transcripts)
    estimated by IRSTLM's ``tlm`` with modified shift-beta smoothing (a Kneser-Ney variant). With
    ``characters`` its units are characters, ``|`` between words (for lexicon-free decoding), and
    the smoothing Witten-Bell."""
    from echoasr.text import normalize

    tool = shutil.which("tlm") or (str(IRSTLM_BIN / "tlm") if (IRSTLM_BIN / "tlm").is_file() else None)
    if tool is None:
        raise EchoError("IRSTLM is not installed (scripts/install-system-deps installs the irstlm package)")
    if order < 2:  # KenLM loads bigram models and up
        raise EchoError(f"the order must be at least 2 (got {order})")
    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.txt"
        sentences = 0
        with open(corpus, "w", encoding="utf-8") as written:
            for text in texts:
                try:
                    lines = Path(text).read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError as error:
                    raise EchoError(f"cannot read ({error.strerror})", text) from None
                for line in lines:
                    if normalized := normalize(line):
                        if characters:
                            normalized = " ".join(CHARACTER_SEPARATOR if c == " " else c for c in normalized)
                        written.write(f"<s> {normalized} </s>\n")
                        sentences += 1
        if not sentences:
            raise EchoError("no text to build a language model from", texts[0] if texts else None)
        arpa = Path(scratch) / "lm.arpa"
        # modified shift-beta needs singletons to estimate its discounts, which few characters are
        smoothing = "wb" if characters else "msb"
        result = subprocess.run([tool, f"-tr={corpus}", f"-n={order}", f"-lm={smoothing}", f"-o={arpa}"],
                                capture_output=True, text=True)
        if result.returncode != 0 or not arpa.is_file():
            raise EchoError(f"IRSTLM tlm failed: {result.stderr.strip()[-300:]}")
        with atomic.atomic_path(out) as temporary:
            shutil.copyfile(arpa, temporary)
    log.info("%s: order %d from %d sentences", out, order, sentences)
    return out
