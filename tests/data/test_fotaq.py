"""Flight of the Amazon Queen: resource table, engine naming scheme, shipped table, corpus build."""

import json
import shutil
import struct
import subprocess

import pytest
import soundfile

from echoasr.data import fotaq
from echoasr.data.manifest import read_manifest
from echoasr.errors import EchoError

HEADER = b"\x00" * fotaq.HEADER_SIZE


def resource_file(entries: dict[str, bytes]) -> bytes:
    """A queen.1c with the documented layout: QTBL, flag at 12, BE count at 13, 21-byte entries."""
    table_size = 15 + len(entries) * 21
    head, blobs, offset = b"QTBLCEM10\x00\x00\x00\x01" + struct.pack(">H", len(entries)), b"", table_size
    for name, blob in entries.items():
        head += name.encode().ljust(12, b"\0") + b"\x01" + struct.pack(">II", offset, len(blob))
        blobs += blob
        offset += len(blob)
    return head + blobs


def pascal(text: str, align: int = 2) -> bytes:
    data = bytes([len(text)]) + text.encode("latin-1")
    return data + b"\0" * (-len(data) % align)


def dialogue_records(records: list[tuple[int, str]]) -> bytes:
    """Talk::findDialogueString records: 2 bytes, id, string aligned to 4 (section starts aligned)."""
    return b"".join(b"\0\0" + struct.pack(">h", ident) + pascal(text, 4) for ident, text in records)


def dog_file(talk_key: int, joe: list[tuple[int, str]], person: list[tuple[int, str]],
             greeting: str, joe_again: str) -> bytes:
    joe_offset = 32 + 96  # one level
    joe_section = dialogue_records(joe)
    person1 = joe_offset + len(joe_section)
    person_section = dialogue_records(person)
    person2 = person1 + len(person_section)
    header = struct.pack(">5h", 1, talk_key, talk_key, len(joe), len(person)) + b"\0" * 12
    header += struct.pack(">3H", person1, 0, person2)
    body = header.ljust(32, b"\0") + b"\0" * 96 + joe_section + person_section
    return HEADER + body + pascal(greeting) + pascal(joe_again)


def cut_object(number: int, anim_list: int = 0, execute: int = 0, people: tuple[int, ...] = ()) -> bytes:
    values = [0] * 17
    values[0], values[4], values[5] = number, anim_list, execute
    return struct.pack(">17h", *values) + struct.pack(">h", len(people)) + struct.pack(f">{len(people)}h", *people)


def cut_file(objects: list[bytes], sentences: list[str]) -> bytes:
    records = b"".join(objects)
    sentence_offset = 12 + len(records)
    head = struct.pack(">H2h3H", 0, len(objects), 0, 0, sentence_offset, 0)
    return HEADER + head + records + pascal("*FL") + b"".join(pascal(s) for s in sentences)


def test_read_table_names_offsets_sizes():
    data = resource_file({"A.DOG": b"x" * 5, "020006J1.SB": b"yy"})
    table = fotaq.read_table(data)
    assert table["A.DOG"] == fotaq.Entry("A.DOG", 15 + 2 * 21, 5)
    assert table["020006J1.SB"] == fotaq.Entry("020006J1.SB", 15 + 2 * 21 + 5, 2)
    assert data[table["020006J1.SB"].offset:][:2] == b"yy"
    with pytest.raises(EchoError, match="QTBL"):
        fotaq.read_table(b"RIFF" + data[4:])


def test_clean_text_strips_commands_and_spaces():
    assert fotaq.clean_text("  Hello *24 there*XY00(237,112)  Joe. ") == "Hello there Joe."
    assert fotaq.clean_text("*FL") == ""
    assert fotaq.clean_text("...") == ""


def test_speech_segments_follow_the_engine():
    # Each command ends the segment before it; a grab command (*GD, *GM) makes that segment silent;
    # *XY carries 11 characters of coordinates.
    assert fotaq.speech_segments("There's a label:*14\"Antidote\" *14") == [(1, "There's a label:"),
                                                                           (2, '"Antidote"')]
    assert fotaq.speech_segments("*FLHello.*GDgrab*XY00(237,112)Bye.") == [(3, "grab"), (4, "Bye.")]
    assert fotaq.speech_segments("Just one line") == [(1, "Just one line")]


def test_voice_names_from_prefixes():
    assert fotaq.voice_name(f"{2:2d}{6:4x}J", 1) == "020006J1"
    assert fotaq.voice_name(f"{57:2d}{0x1e:4x}P", 10) == "57001EPA"
    assert fotaq.voice_name(f"{'c41b':_<5}{3:02d}", 1) == "C41B_031"


def test_dialogue_mapping_on_constructed_file():
    data = dog_file(7, joe=[(0, "I'm Joe."), (6, "Who are you?*03And why?")],
                    person=[(6, "I'm Bob.")], greeting="You again?", joe_again="Yes, me.")
    clips = {c.clip: c for c in fotaq.dialogue_clips("BOB2.DOG", data)}
    assert {k: (v.text, v.speaker) for k, v in clips.items()} == {
        "070006P1": ("I'm Bob.", "TRADER_BOB"),        # BOB -> the character's one label
        "070000J1": ("I'm Joe.", "JOE"),
        "07SSSSJ1": ("I'm Joe.", "JOE"),               # the opening line: first Joe record, id 0
        "070006J1": ("Who are you?", "JOE"),
        "070006J2": ("And why?", "JOE"),
        "07XXXXP1": ("You again?", "TRADER_BOB"),
        "07XXXXJ1": ("Yes, me.", "JOE"),
    }


def test_cutaway_mapping_skips_animations_and_names_speakers():
    animation = cut_object(5, anim_list=1, execute=1) + struct.pack(">h9h", 1, *range(9)) + struct.pack(">h", -2)
    data = cut_file([cut_object(0), animation, cut_object(7, people=(7,)), cut_object(-2)],
                    ["Hi.*02How are you?", "*", "I am Bob.", "Narrated."])
    objects = fotaq.GameObjects(names={7: "Trader Bob"}, persons=frozenset({7}), joe_texts=[])
    clips = [(c.clip, c.text, c.speaker) for c in fotaq.cutaway_clips("C1A.CUT", data, objects)]
    assert clips == [("C1A__011", "Hi.", "JOE"), ("C1A__012", "How are you?", "JOE"),
                     ("C1A__031", "I am Bob.", "TRADER_BOB"), ("C1A__041", "Narrated.", "")]


def _jas_entries(descriptions: list[str], responses: list[str]) -> dict[str, bytes]:
    names = ["Trader Bob", "Lamp"]
    jas = HEADER + struct.pack(">4H", 1, len(names), 2, len(descriptions))
    jas += struct.pack(">8h", 1, 0, 0, 0, 0, 1, 0, -3) + struct.pack(">8h", 2, 0, 0, 0, 0, 1, 0, 0)
    lines = descriptions + names + ["room"] + [f"verb{i}" for i in range(12)] + responses
    return {"QUEEN.JAS": jas, "QUEEN2.JAS": "\r\n".join(lines).encode()}


def test_derive_transcripts_keeps_existing_clips_and_counts_the_rest(tmp_path):
    responses = [f"Response {i}." for i in range(1, 41)]
    entries = _jas_entries(["A shiny lamp*24"], responses)
    entries["BOB2.DOG"] = dog_file(7, joe=[(6, "Who are you?")], person=[(6, "I'm Bob.")],
                                   greeting="Again?", joe_again="Me.")
    entries.update({f"{clip}.SB": b"mp3" for clip in ("070006J1", "070006P1", "JOE00411", "JOE00021", "99SSSSSS")})
    path = tmp_path / "queen.1c"
    path.write_bytes(resource_file(entries))
    rows, counts = fotaq.derive_transcripts(fotaq.Resource(path))
    assert {r.clip: r.text for r in rows} == {"070006J1": "Who are you?", "070006P1": "I'm Bob.",
                                             "JOE00021": "Response 2.", "JOE00411": "A shiny lamp"}
    assert counts["clips without a script line"] == 1  # the sound effect 99SSSSSS
    assert counts["script lines without a clip"] > 0


def test_shipped_table_invariants():
    rows = fotaq.read_transcripts()
    assert len(rows) > 6000
    assert len({r.clip for r in rows}) == len(rows)
    assert all(r.text.strip() and "*" not in r.text for r in rows)
    assert {r.label_source for r in rows} <= {"script", "whisper"}
    speakers = {split: {r.speaker for r in rows if fotaq.split_of(r.speaker) == split} for split in fotaq.SPLITS}
    assert speakers["test"] == set(fotaq.TEST_SPEAKERS) and speakers["dev"] == set(fotaq.DEV_SPEAKERS)
    assert not speakers["test"] & speakers["train"] and not speakers["dev"] & speakers["train"]
    assert "JOE" in speakers["train"]
    test_clips = [r for r in rows if fotaq.split_of(r.speaker) == "test"]
    assert all(sum(r.speaker == s for r in test_clips) >= 100 for s in fotaq.TEST_SPEAKERS)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_build_decodes_splits_resumes_and_refuses_other_settings(tmp_path):
    mp3 = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                          "sine=frequency=300:duration=0.5:sample_rate=11025", "-c:a", "libmp3lame",
                          "-f", "mp3", "pipe:1"], capture_output=True, check=True).stdout
    rows = fotaq.read_transcripts()
    joe = next(r for r in rows if r.speaker == "JOE")
    faye = next(r for r in rows if r.speaker == "FAYE")
    sparky = next(r for r in rows if r.speaker == "SPARKY")
    broken = next(r for r in rows if r.speaker == "JOE" and r.clip != joe.clip)
    # a test line whose words a training line also says ("Hello Joe" to Joe is common)
    from echoasr.text import normalize

    train_texts = {normalize(r.text): r for r in rows if fotaq.split_of(r.speaker) == "train"}
    shared = next(r for r in rows if r.speaker == "FAYE" and normalize(r.text) in train_texts)
    said_in_training = train_texts[normalize(shared.text)]
    path = tmp_path / "queen.1c"
    path.write_bytes(resource_file({f"{joe.clip}.SB": mp3, f"{faye.clip}.SB": mp3, f"{sparky.clip}.SB": mp3,
                                    f"{broken.clip}.SB": b"not an mp3 at all", f"{shared.clip}.SB": mp3,
                                    f"{said_in_training.clip}.SB": mp3}))
    out = tmp_path / "corpus"
    summary = fotaq.build_fotaq(out, resource_path=path, workers=1, progress=False)
    assert (summary["train"]["clips"], summary["dev"]["clips"], summary["test"]["clips"]) == (2, 1, 1)
    assert summary["removed_shared_transcripts"] == {"dev": 0, "test": 1}
    assert summary["skipped"]["unreadable clips"] == 1
    assert summary["skipped"]["clips missing from the resource file"] == len(rows) - 6
    test = read_manifest(out / "test.tsv")
    assert [(u.text, u.speaker) for u in test] == [(faye.text, "FAYE")]
    audio, rate = soundfile.read(test[0].path)
    assert rate == 16000 and audio.ndim == 1 and 0.4 < len(audio) / rate < 0.7
    wav = out / "wav" / f"{joe.clip}.wav"
    stamp = wav.stat().st_mtime_ns
    fotaq.build_fotaq(out, resource_path=path, workers=1, progress=False)  # resumes: nothing re-decoded
    assert wav.stat().st_mtime_ns == stamp
    assert json.loads((out / "corpus.json").read_text())["settings"]["limit"] is None
    with pytest.raises(EchoError, match="other settings"):
        fotaq.build_fotaq(out, resource_path=path, limit=1, progress=False)


def test_dev_and_test_lose_the_lines_whose_transcript_is_in_training():
    from echoasr.data.records import Utterance

    splits = {
        "train": [Utterance("t1", "Hello, Joe!", "JOE"), Utterance("t2", "Where am I?", "JOE")],
        "dev": [Utterance("d1", "hello joe", "SPARKY"), Utterance("d2", "Nice hat.", "SPARKY")],
        "test": [Utterance("x1", "HELLO JOE.", "FAYE"), Utterance("x2", "Where am I, then?", "FAYE"),
                 Utterance("x3", "where am i", "MARY_LOU")],
    }
    kept, removed = fotaq.remove_shared_transcripts(splits)
    assert removed == {"dev": 1, "test": 2}  # the same words after normalisation (case, punctuation)
    assert [u.id for u in kept["dev"]] == ["d2"] and [u.id for u in kept["test"]] == ["x2"]
    assert kept["train"] == splits["train"]


def test_shipped_table_test_split_shares_92_transcripts_with_training():
    from echoasr.text import normalize

    rows = fotaq.read_transcripts()
    train = {normalize(r.text) for r in rows if fotaq.split_of(r.speaker) == "train"}
    test = [r for r in rows if fotaq.split_of(r.speaker) == "test"]
    assert (len(test), sum(normalize(r.text) in train for r in test)) == (700, 92)  # the review's count


def test_missing_package_is_one_line_error(tmp_path):
    with pytest.raises(EchoError, match="apt-get install --no-install-recommends flight-of-the-amazon-queen"):
        fotaq.build_fotaq(tmp_path / "out", resource_path=tmp_path / "absent.1c", progress=False)


@pytest.mark.skipif(not fotaq.DEFAULT_RESOURCE.is_file(), reason="Debian package flight-of-the-amazon-queen absent")
def test_real_package_matches_shipped_table():
    rows, _ = fotaq.derive_transcripts(fotaq.Resource(fotaq.DEFAULT_RESOURCE))
    assert rows == fotaq.read_transcripts()
