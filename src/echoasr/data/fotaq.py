"""Real multi-speaker speech: the voiced game Flight of the Amazon Queen (Debian package).

The package ``flight-of-the-amazon-queen`` (freeware: free redistribution and modification with
attribution) ships one resource file, ``queen.1c``: a table of named entries (``QTBL``), among
them 6,745 MP3 speech clips (``.SB``, 11,025 Hz), the dialogue files (``.DOG``), the cutaway
scripts (``.CUT``) and the game's text (``QUEEN2.JAS``).

Which clip speaks which text follows from how the engine names its speech files (ScummVM's
Queen engine, ``talk.cpp``, ``cutaway.cpp``, ``logic.cpp``, ``sound.cpp``):

- a sentence is split at each ``*XX`` command into segments; segment *i* (from 1) plays the file
  ``<prefix><i in hex>``, spaces in the name becoming ``0``;
- dialogue: prefix ``"%2d%4xP"`` (talk key of the .DOG file, sentence id) for the person,
  ``"%2d%4xJ"`` for Joe, ``"%2dSSSSJ"`` / ``"%2dXXXXJ"`` for Joe's opening lines and
  ``"%2dXXXXP"`` for the person's greeting when met again;
- cutaway: the sentences follow one another after the entry string, one per object; object *n*
  (from 1) speaks with prefix ``<cutaway name padded with _ to 5><n as %02i>``;
- Joe's responses and object descriptions: ``"JOE%04i"`` of the text's index in ``QUEEN2.JAS``
  (descriptions after the 40 responses).

:func:`derive_transcripts` applies this to a ``queen.1c``; its output is shipped as
``fotaq_transcripts.tsv`` so that a build needs only the Debian package.

Splits are disjoint by character, and the dev and test splits hold no line whose normalised
transcript is also a training line (:func:`remove_shared_transcripts`: "Hello Joe" said by a test
character is otherwise a sentence the model has been trained on). Speakers are characters, not
actors: the resource file names no voice actor (the game's credits are not in it), and the
engine's naming scheme identifies who speaks in the story only, so the actor identity cannot be
derived from the data; one actor may voice characters in more than one split.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from echoasr import atomic
from echoasr.audio import SAMPLE_RATE
from echoasr.data.manifest import write_manifest
from echoasr.data.records import Utterance
from echoasr.errors import EchoError
from echoasr.text import normalize

log = logging.getLogger(__name__)

PACKAGE = "flight-of-the-amazon-queen"
DEFAULT_RESOURCE = Path("/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
INSTALL_HINT = (f"install the Debian package {PACKAGE} "
                f"(sudo apt-get install --no-install-recommends {PACKAGE})")
ATTRIBUTION = ("Flight of the Amazon Queen (c) 1995 John Passfield and Steven Stamatiadis; "
               "freeware, redistributed under its licence (Debian package flight-of-the-amazon-queen)")
TRANSCRIPTS = "fotaq_transcripts.tsv"
TRANSCRIPT_COLUMNS = ("clip", "text", "speaker", "source", "label_source")
JOE = "JOE"
JOE_RESPONSE_MAX = 40           # logic.h: Joe's responses come before the object descriptions
HEADER_SIZE = 20                # every .DOG/.CUT/.JAS entry starts with a 20-byte header the engine skips
ENTRY_SIZE = 21
SPEAK_NONE_COMMANDS = ("GD", "GM")  # Talk::getSpeakCommand: grab commands end a segment silently
OBJECT_ROOMFADE, OBJECT_JOE = -1, 0
TEXT_SPEAK_OBJECTS = (-2, -3)   # cutaway text objects that are spoken
PERSON_IMAGES = (-3, -4)
SPLITS = ("train", "dev", "test")
# Speaker-disjoint splits: the characters held out (see docs/data.md, Flight of the Amazon Queen).
DEV_SPEAKERS = ("SPARKY", "CHIEF")
TEST_SPEAKERS = ("TRADER_BOB", "MARY_LOU", "FAYE")
# One name per character: a .DOG file is named after its character (TAM1.DOG greets "I'm Mary-Lou
# Cook", LOU1.DOG "I'm Skip"), a cutaway after the speaking object's name in QUEEN.JAS.
CHARACTER_ALIASES = {
    "AND": "ANDERSON", "BOB": "TRADER_BOB", "PRIN": "PRINCESS_AZURA", "AZURA_OBJ": "PRINCESS_AZURA",
    "SEC": "SECRETARY", "JIM": "JIMMY", "TAM": "MARY_LOU", "LOU": "SKIP", "SHOWERAM": "SHOWERING_AMAZON",
    "WEDGE": "WEDGEWOOD", "APE": "GORILLA", "DOG": "GUARD_DOG", "JOE_KING": "JOE", "ZOMBIE_WOMAN": "ZOMBIE",
    "WITCH_DOCTOR": "WITCH",
}
# Cutaway speakers whose QUEEN.JAS object is a prop the engine turns into a person at run time
# (Logic::objectCopy): their lines belong to someone else, so they get no speaker label.
PROP_SPEAKERS = frozenset({"NOTE", "PATH", "SMOKE", "TORCH", "ROCK", "DOOR", "BUTTONS", "LILY_PAD", "TELEPHONE"})
BUILD_VERSION = 2  # 2: dev and test without the transcripts of training lines
# Settings that change only the manifests, which every build rewrites: a folder built with others
# is brought up to date rather than refused (its decoded clips do not depend on them).
_MANIFEST_ONLY_SETTINGS = ("version",)


@dataclass(frozen=True)
class Entry:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ClipText:
    clip: str          # resource name without ".SB", e.g. "020006J1"
    text: str
    speaker: str
    source: str        # the .DOG/.CUT/.JAS entry the text comes from
    label_source: str = "script"


# ----------------------------------------------------------------------------- the resource file

def read_table(data: bytes, path: str | os.PathLike = "queen.1c") -> dict[str, Entry]:
    """The entry table of a ``queen.1c``: name -> (offset, size)."""
    if len(data) < 15 or data[:4] != b"QTBL":
        raise EchoError("not a Flight of the Amazon Queen resource file (no QTBL magic)", path)
    count = struct.unpack_from(">H", data, 13)[0]
    if 15 + count * ENTRY_SIZE > len(data):
        raise EchoError(f"truncated entry table ({count} entries announced)", path)
    table = {}
    for index in range(count):
        raw = data[15 + index * ENTRY_SIZE: 15 + (index + 1) * ENTRY_SIZE]
        name = raw[:12].split(b"\0", 1)[0].decode("ascii", "replace")
        offset, size = struct.unpack_from(">II", raw, 13)
        table[name] = Entry(name, offset, size)
    return table


class Resource:
    """A ``queen.1c`` held in memory (about 35 MB)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as error:
            raise EchoError(f"cannot read it: {error.strerror or error}", self.path) from None
        self.table = read_table(self.data, self.path)

    def read(self, name: str) -> bytes:
        entry = self.table[name]
        if entry.offset + entry.size > len(self.data):
            raise EchoError(f"entry {name} lies beyond the end of the file", self.path)
        return self.data[entry.offset: entry.offset + entry.size]

    def clips(self) -> set[str]:
        return {name[:-3] for name in self.table if name.endswith(".SB")}


def find_resource(path: str | os.PathLike | None = None) -> Path:
    resource = Path(path) if path else DEFAULT_RESOURCE
    if not resource.is_file():
        raise EchoError(f"the game's resource file is missing: {INSTALL_HINT}", resource)
    return resource


# ----------------------------------------------------------------------------- text and speech names

def get_string(data: bytes, offset: int, align: int = 2) -> tuple[str, int]:
    """Talk::getString: a length byte and the text; the next offset is aligned to ``align``."""
    length = data[offset]
    offset += 1
    if not length:
        return "", offset
    text = data[offset: offset + length].decode("latin-1")
    return text, (offset + length + align - 1) & ~(align - 1)


def speech_segments(sentence: str) -> list[tuple[int, str]]:
    """Talk::speak: (voice file index from 1, text) for each spoken segment of ``sentence``.

    Each ``*`` command ends a segment; ``*XY`` carries 11 more characters of coordinates; the grab
    commands ``*GD``/``*GM`` end their segment without speech. Segments without words are left out.
    """
    segments, start, index, position = [], 0, 0, 0
    while position < len(sentence):
        if sentence[position] != "*":
            position += 1
            continue
        text = sentence[start:position]
        command = sentence[position + 1: position + 3]
        position += 3 + (11 if command == "XY" else 0)
        if command not in SPEAK_NONE_COMMANDS:
            segments.append((index + 1, text))
        index += 1
        start = position
    if start < len(sentence):
        segments.append((index + 1, sentence[start:]))
    return [(number, clean_text(text)) for number, text in segments if clean_text(text)]


_COMMAND = re.compile(r"\*(?:XY\d\d\(\d+,\d+\)|[A-Z0-9]{2})")


def clean_text(text: str) -> str:
    """Words as displayed: no ``*NN`` commands, no stray control characters, single spaces."""
    text = _COMMAND.sub(" ", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if re.search(r"[A-Za-z]", text) else ""


def voice_name(prefix: str, index: int) -> str:
    """Talk::speakSegment + Sound::playSound: ``prefix`` + hex index, spaces to zeros, upper case."""
    return f"{prefix}{index:x}".replace(" ", "0").upper()


def dialogue_speaker(dog_name: str) -> str:
    """The person a dialogue file talks to, named by the file: ``BOB3.DOG`` -> ``BOB``."""
    return character(re.sub(r"\d+$", "", dog_name.rsplit(".", 1)[0].upper()))


def character(name: str) -> str:
    """One label per character; props that speak only at run time get none (``""``)."""
    return "" if name in PROP_SPEAKERS else CHARACTER_ALIASES.get(name, name)


# ----------------------------------------------------------------------------- the three sources

def dialogue_clips(name: str, data: bytes) -> list[ClipText]:
    """Every voice file a .DOG entry can play, with its text (Talk::load / Talk::talk)."""
    body = data[HEADER_SIZE:]
    level_max, _unique_key, talk_key, joe_max, person_max = struct.unpack_from(">5h", body, 0)
    level_max = abs(level_max)
    person1_offset, _cutaway_offset, person2_offset = struct.unpack_from(">3H", body, 22)
    joe_offset = 32 + level_max * 96
    person = dialogue_speaker(name)
    lines: list[tuple[str, str, str]] = []  # (voice prefix, sentence, speaker)
    for sentence_id, sentence in _dialogue_strings(body, person1_offset, person_max):
        lines.append((f"{talk_key:2d}{sentence_id:4x}P", sentence, person))
    for sentence_id, sentence in _dialogue_strings(body, joe_offset, joe_max):
        lines.append((f"{talk_key:2d}{sentence_id:4x}J", sentence, JOE))
    has_no_opening = struct.unpack_from(">H", body, joe_offset + 2)[0]
    if not has_no_opening:
        opening, _ = get_string(body, joe_offset + 4)
        lines.append((f"{talk_key:2d}SSSSJ", opening, JOE))
    offset = person2_offset
    greeting, offset = get_string(body, offset)
    joe_again, _ = get_string(body, offset)
    lines.append((f"{talk_key:2d}XXXXP", greeting, person))
    lines.append((f"{talk_key:2d}XXXXJ", joe_again, JOE))
    return [ClipText(voice_name(prefix, index), text, speaker, name)
            for prefix, sentence, speaker in lines for index, text in speech_segments(sentence)]


def _dialogue_strings(body: bytes, offset: int, count: int) -> list[tuple[int, str]]:
    """Talk::findDialogueString's walk: ``count`` records of (2 bytes, id, 4-aligned string)."""
    strings = []
    for _ in range(count):
        offset += 2
        sentence_id = struct.unpack_from(">h", body, offset)[0]
        offset += 2
        text, offset = get_string(body, offset, align=4)
        strings.append((sentence_id, text))
    return strings


@dataclass(frozen=True)
class GameObjects:
    """What QUEEN.JAS / QUEEN2.JAS say about objects: names, person-ness, Joe's texts."""

    names: dict[int, str]          # object number -> display name
    persons: frozenset[int]        # object numbers whose image marks a person
    joe_texts: list[str]           # responses (1..40) then object descriptions

    @classmethod
    def from_resource(cls, resource: Resource) -> GameObjects:
        jas = resource.read("QUEEN.JAS")[HEADER_SIZE:]
        rooms, names_count, objects, descriptions = struct.unpack_from(">4H", jas, 0)
        lines = resource.read("QUEEN2.JAS").decode("latin-1").splitlines()
        object_names = lines[descriptions: descriptions + names_count]
        start_responses = descriptions + names_count + rooms + 12
        responses = lines[start_responses: start_responses + JOE_RESPONSE_MAX]
        names, persons = {}, set()
        for number in range(1, objects + 1):
            name, _x, _y, _desc, _entry, _room, _state, image = struct.unpack_from(">8h", jas, 8 + (number - 1) * 16)
            if name:
                names[number] = object_names[abs(name) - 1].strip()
            if image in PERSON_IMAGES:
                persons.add(number)
        return cls(names, frozenset(persons), responses + lines[:descriptions])


def cutaway_clips(name: str, data: bytes, objects: GameObjects) -> list[ClipText]:
    """Every voice file a .CUT entry can play (Cutaway::load / Cutaway::run / handlePersonRecord)."""
    body = data[HEADER_SIZE:]
    base = name.rsplit(".", 1)[0].upper()
    _panel, count, _flags, _state_offset, sentence_offset, _banks = struct.unpack_from(">H2h3H", body, 0)
    _entry, sentence_offset = get_string(body, sentence_offset)
    pointer = 12
    clips = []
    for number in range(1, abs(count) + 1):
        fields = struct.unpack_from(">17h", body, pointer)
        pointer += 34
        object_number, anim_list, execute, from_object = fields[0], fields[4], fields[5], fields[12]
        people = struct.unpack_from(">h", body, pointer)[0]
        pointer += 2 + 2 * people
        sentence, sentence_offset = get_string(body, sentence_offset)
        if object_number == OBJECT_ROOMFADE:
            object_number = OBJECT_JOE
        kind = _cutaway_object_kind(object_number, anim_list, execute, from_object, objects)
        if kind == "animation":
            pointer = _skip_animation(body, pointer)
            continue
        prefix = f"{base:_<5}{number:02d}"
        if kind == "person" and sentence != "*" and not sentence.startswith("#"):
            speaker = JOE if object_number == OBJECT_JOE else _person_name(object_number, objects)
            clips.extend(ClipText(voice_name(prefix, index), text, speaker, name)
                         for index, text in speech_segments(sentence))
        elif kind == "text":
            text = clean_text(sentence)
            if text:
                clips.append(ClipText(voice_name(prefix, 1), text, "", name))
    return clips


def _cutaway_object_kind(number: int, anim_list: int, execute: int, from_object: int, objects: GameObjects) -> str:
    """Cutaway::getObjectType, reduced to what decides speech and the record layout."""
    kind = "animation"
    if number > 0 and not anim_list and number in objects.persons:
        kind = "person"
    elif number == OBJECT_JOE and not anim_list:
        kind = "person"
    if from_object > 0:
        kind = "none"
    if number in TEXT_SPEAK_OBJECTS:
        kind = "text"
    elif number == -4:
        kind = "none"
    if kind == "animation" and not execute:
        kind = "none"
    return kind


def _skip_animation(body: bytes, pointer: int) -> int:
    """Cutaway::handleAnimation: frames of 9 values after a header, up to a header of -2."""
    while True:
        header = struct.unpack_from(">h", body, pointer)[0]
        pointer += 2
        if header == -2:
            return pointer
        pointer += 18


def _person_name(number: int, objects: GameObjects) -> str:
    name = objects.names.get(number, "")
    return character(re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")) if name else ""


def joe_clips(objects: GameObjects) -> list[ClipText]:
    """Logic::makeJoeSpeak: text k (responses, then descriptions) plays ``JOE%04i`` of k."""
    return [ClipText(voice_name(f"JOE{number:04d}", index), text, JOE, "QUEEN2.JAS")
            for number, sentence in enumerate(objects.joe_texts, start=1)
            for index, text in speech_segments(sentence)]


def derive_transcripts(resource: Resource) -> tuple[list[ClipText], Counter]:
    """Clip -> text for every clip of ``resource`` that the naming scheme reaches, and counts of
    what was left: clips no script line names, and script lines whose clip does not exist."""
    objects = GameObjects.from_resource(resource)
    candidates: list[ClipText] = []
    for name in sorted(resource.table):
        if name.endswith(".DOG"):
            candidates += dialogue_clips(name, resource.read(name))
        elif name.endswith(".CUT"):
            candidates += cutaway_clips(name, resource.read(name), objects)
    candidates += joe_clips(objects)
    clips = resource.clips()
    found: dict[str, ClipText] = {}
    counts: Counter = Counter()
    for candidate in candidates:
        if candidate.clip not in clips:
            counts["script lines without a clip"] += 1
        elif candidate.clip not in found:
            found[candidate.clip] = candidate
    counts["clips without a script line"] = len(clips - set(found))
    return [found[clip] for clip in sorted(found)], counts


# ----------------------------------------------------------------------------- the shipped table

def write_transcripts(path: str | os.PathLike, rows: list[ClipText]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(TRANSCRIPT_COLUMNS)
    for row in rows:
        writer.writerow([row.clip, row.text, row.speaker, row.source, row.label_source])
    atomic.write_text(path, buffer.getvalue())


def read_transcripts(path: str | os.PathLike | None = None) -> list[ClipText]:
    """The transcript table (by default the one shipped with echoasr)."""
    if path is None:
        text = resources.files("echoasr.data").joinpath(TRANSCRIPTS).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    return [ClipText(row["clip"], row["text"], row["speaker"], row["source"], row["label_source"])
            for row in reader]


def split_of(speaker: str) -> str | None:
    """The split a speaker belongs to; clips without a known speaker belong to none."""
    if not speaker:
        return None
    if speaker in TEST_SPEAKERS:
        return "test"
    if speaker in DEV_SPEAKERS:
        return "dev"
    return "train"


# ----------------------------------------------------------------------------- building the corpus

def build_fotaq(out: str | os.PathLike, resource_path: str | os.PathLike | None = None,
                limit: int | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Decode the transcribed clips to ``out/wav`` (16 kHz mono) and write ``out/{train,dev,test}.tsv``."""
    root = Path(out)
    settings = {"corpus": "fotaq", "version": BUILD_VERSION, "limit": limit,
                "dev_speakers": list(DEV_SPEAKERS), "test_speakers": list(TEST_SPEAKERS)}
    _check_settings(root, settings)
    resource = Resource(find_resource(resource_path))
    rows = read_transcripts()
    counts: Counter = Counter()
    usable = []
    for row in rows:
        if f"{row.clip}.SB" not in resource.table:
            counts["clips missing from the resource file"] += 1
        elif split_of(row.speaker) is None:
            counts["clips without a speaker label"] += 1
        else:
            usable.append(row)
    if limit is not None:
        usable = usable[: max(0, limit)]
    targets = {row.clip: root / "wav" / f"{row.clip}.wav" for row in usable}
    pending = [row for row in usable if not targets[row.clip].is_file()]
    from tqdm import tqdm

    def decode(row: ClipText) -> str | None:
        return _decode(resource.read(f"{row.clip}.SB"), targets[row.clip])

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        failures = dict(zip((row.clip for row in pending),
                            tqdm(pool.map(decode, pending), total=len(pending), unit="clip",
                                 desc="decoding clips", disable=not progress or not pending), strict=True))
    import soundfile

    splits: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    for row in usable:
        target = targets[row.clip]
        if failures.get(row.clip) or not target.is_file():
            counts["unreadable clips"] += 1
            continue
        duration = round(soundfile.info(str(target)).duration, 3)
        splits[split_of(row.speaker)].append(
            Utterance(row.clip, row.text, row.speaker, duration, path=str(target), voice="fotaq"))
    splits, removed = remove_shared_transcripts(splits)
    for split, count in removed.items():
        log.info("fotaq: %d %s clips removed: their transcript is also a training line's", count, split)
    for split, utterances in splits.items():
        write_manifest(root / f"{split}.tsv", utterances)
    summary = {
        split: {"clips": len(u), "hours": round(sum(x.duration for x in u) / 3600, 3),
                "speakers": len({x.speaker for x in u})}
        for split, u in splits.items()
    }
    summary["skipped"] = dict(counts)
    summary["removed_shared_transcripts"] = removed
    summary["attribution"] = ATTRIBUTION
    atomic.write_text(root / "corpus.json", json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n")
    log.info("fotaq: %s", summary)
    return summary


def remove_shared_transcripts(splits: dict[str, list[Utterance]]) -> tuple[dict[str, list[Utterance]], dict[str, int]]:
    """The splits without the dev and test utterances whose normalised transcript
    (:func:`echoasr.text.normalize`, as scored) occurs in ``train``, and how many each lost."""
    seen = {normalize(u.text) for u in splits.get("train", [])}
    kept, removed = dict(splits), {}
    for split in ("dev", "test"):
        if split in splits:
            kept[split] = [u for u in splits[split] if normalize(u.text) not in seen]
            removed[split] = len(splits[split]) - len(kept[split])
    return kept, removed


def _check_settings(root: Path, settings: dict) -> None:
    existing = root / "corpus.json"
    if existing.is_file():
        try:
            previous = json.loads(existing.read_text()).get("settings")
        except (OSError, ValueError):
            raise EchoError("unreadable corpus.json; use another folder", existing) from None
        def compared(values):
            return {k: v for k, v in (values or {}).items() if k not in _MANIFEST_ONLY_SETTINGS}

        if compared(previous) != compared(settings):
            raise EchoError(f"built with other settings ({previous}); use another folder", existing)
    elif root.is_dir() and any(root.iterdir()) and not (root / "wav").is_dir():
        raise EchoError("folder is not empty and holds no fotaq corpus; use another folder", root)


def _decode(mp3: bytes, target: Path) -> str | None:
    """MP3 frames -> 16 kHz mono 16-bit wav (libsndfile decodes MP3 in-process, ~100x faster than
    one ffmpeg process per clip; soxr HQ resamples); the error text when it fails (nothing is
    written)."""
    import numpy as np
    import soundfile
    import soxr

    try:
        audio, rate = soundfile.read(io.BytesIO(mp3), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        log.warning("%s: could not decode it: %s", target.name, error)
        return str(error) or "undecodable"
    if audio.shape[0] == 0:
        log.warning("%s: no audio", target.name)
        return "no audio"
    audio = soxr.resample(audio.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
    with atomic.atomic_path(target) as temporary:
        soundfile.write(str(temporary), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return None
