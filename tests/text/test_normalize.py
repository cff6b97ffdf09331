import pytest

from echoasr.text import normalize
from echoasr.text import numbers

CASES = [
    ("Hello, World!", "hello world"),
    ("It\u2019s 5 o'clock.", "it's five o'clock"),
    ("'Tis the dogs' day -- isn't it?", "tis the dogs day isn't it"),
    ("well-known  \t words\n", "well known words"),
    ("On the 21st of May, 1984.", "on the twenty first of may nineteen eighty four"),
    ("In 2005 and 2024 and 1900 and 1905",
     "in two thousand five and twenty twenty four and nineteen hundred and nineteen oh five"),
    ("1,000,000 people paid $5 and 1 paid $1", "one million people paid five dollars and one paid one dollar"),
    ("50% of 3.14", "fifty percent of three point one four"),
    ("the 1960s and the '80s", "the nineteen sixties and the eighties"),
    ("Rock & roll", "rock and roll"),
    ("Café naïve Straße ÆON İstanbul", "cafe naive strasse aeon istanbul"),
    ("ﬁne", "fine"),
    ("Привет, мир!", "привет мир"),
    ("日本語のテキスト。", "日本語のテキスト"),
    ("", ""),
    ("  ...  ", ""),
    ("!!!", ""),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(("text", "_"), CASES)
def test_normalize_is_idempotent(text, _):
    assert normalize(normalize(text)) == normalize(text)


def test_reference_and_hypothesis_agree_whatever_their_style():
    assert normalize("The LORD'S 2nd Day, 10:30") == normalize("the lord's second day ten thirty")


@pytest.mark.parametrize(("number", "words"), [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (99, "ninety nine"), (100, "one hundred"),
    (101, "one hundred one"), (1234, "one thousand two hundred thirty four"),
    (2_000_005, "two million five"), (-7, "minus seven"),
])
def test_cardinal(number, words):
    assert numbers.cardinal(number) == words


@pytest.mark.parametrize(("number", "words"), [
    (1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (12, "twelfth"), (20, "twentieth"),
    (21, "twenty first"), (100, "one hundredth"), (108, "one hundred eighth"),
])
def test_ordinal(number, words):
    assert numbers.ordinal(number) == words


@pytest.mark.parametrize(("number", "words"), [
    (1066, "ten sixty six"), (1900, "nineteen hundred"), (1905, "nineteen oh five"),
    (2000, "two thousand"), (2009, "two thousand nine"), (2010, "twenty ten"), (3000, "three thousand"),
])
def test_year(number, words):
    assert numbers.year(number) == words
