"""English words for numbers: cardinals, ordinals, years and decimals (the simple cases)."""

from __future__ import annotations

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


def cardinal(number: int) -> str:
    """``1234`` -> ``"one thousand two hundred thirty four"`` (American style, no "and")."""
    if number < 0:
        return "minus " + cardinal(-number)
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + cardinal(rest))
    for scale, name in _SCALES:
        if number >= scale:
            high, rest = divmod(number, scale)
            return cardinal(high) + " " + name + ("" if rest == 0 else " " + cardinal(rest))
    raise AssertionError("unreachable")


def ordinal(number: int) -> str:
    """``21`` -> ``"twenty first"``."""
    words = cardinal(number).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(number: int) -> str:
    """Read a year the way people say it: 1984 -> nineteen eighty four, 2005 -> two thousand five."""
    if not 1000 <= number <= 9999 or 2000 <= number <= 2009 or number % 1000 == 0:
        return cardinal(number)
    high, low = divmod(number, 100)
    if low == 0:
        return cardinal(high) + " hundred"
    if low < 10:
        return cardinal(high) + " oh " + cardinal(low)
    return cardinal(high) + " " + cardinal(low)


def plural(words: str) -> str:
    """``"nineteen sixty"`` -> ``"nineteen sixties"`` (for "1960s")."""
    head, _, last = words.rpartition(" ")
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last == "six":
        last = "sixes"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def looks_like_year(digits: str) -> bool:
    """Four plain digits between 1100 and 2099 are read as a year."""
    return len(digits) == 4 and 1100 <= int(digits) <= 2099


def decimal(integer_part: str, fraction_part: str) -> str:
    """``("3", "14")`` -> ``"three point one four"``."""
    return cardinal(int(integer_part)) + " point " + " ".join(_ONES[int(d)] for d in fraction_part)
