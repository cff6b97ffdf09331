"""The voices of the synthetic corpus and the human speakers behind them.

Disjointness between training and ``test_unseen`` is about *speakers*, not engine settings: flite
kal/kal16 and festival's kal diphone voice are one man (Kal), flite slt and festival's slt HTS voice
are one woman (the CMU ARCTIC speaker SLT). espeak-ng's formant voices have no human behind them;
a variant (``m3``, ``f2``, ...) is treated as one speaker whatever the accent it reads with.
"""

from __future__ import annotations

from dataclasses import dataclass

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
# slt stays in training: it is the only real female voice, and the human test set is a woman.
DEFAULT_HELD_OUT = ("awb", "ked", "espeak-m5", "espeak-f3")


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


HUMAN_VOICES = (
    Voice("flite-kal16", "flite", "kal16", "kal", "male", 88, 0.45, f0_control=True),
    Voice("flite-kal", "flite", "kal", "kal", "male", 88, 0.2, f0_control=True),  # 8 kHz: narrowband
    Voice("festival-kal", "festival", "voice_kal_diphone", "kal", "male", 100, 0.35, f0_control=True),
    Voice("flite-awb", "flite", "awb", "awb", "male", 128, 1.0, f0_control=True),
    Voice("flite-rms", "flite", "rms", "rms", "male", 101, 1.0),  # ignores int_f0_target_mean
    Voice("festival-ked", "festival", "voice_ked_diphone", "ked", "male", 101, 1.0, f0_control=True),
    Voice("flite-slt", "flite", "slt", "slt", "female", 170, 0.6, f0_control=True),
    Voice("festival-slt-hts", "festival", "voice_cmu_us_slt_arctic_hts", "slt", "female", 168, 0.4),
)


def espeak_voice(accent: str, variant: str) -> Voice:
    sex = ESPEAK_VARIANTS[variant]
    return Voice(
        f"espeak-{accent}+{variant}", "espeak", f"{accent}+{variant}", f"espeak-{variant}", sex,
        100 if sex == "male" else 190, 1.0,
    )


def all_speakers() -> list[str]:
    return sorted({voice.speaker for voice in HUMAN_VOICES} | {f"espeak-{v}" for v in ESPEAK_VARIANTS})


def voices_for(speakers: set[str]) -> tuple[list[Voice], list[float]]:
    """The voices of ``speakers`` and their sampling weights: each human speaker weighs 1 (split
    among their voices), espeak-ng voices share ESPEAK_SHARE of the total."""
    humans = [voice for voice in HUMAN_VOICES if voice.speaker in speakers]
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
