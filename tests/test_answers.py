"""Answer extraction and comparison for the math tasks, as a table of cases."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peftbench.errors import BadInput
from peftbench.tasks import answers
from peftbench.tasks.answers import extract_answer, is_correct, normalize_answer, parse_number, same_answer

EXTRACT_CASES = [
    # (text, extracted answer)
    ("So she has 5 apples. The answer is: 5", "5"),
    ("The answer is 5.", "5"),
    ("The final answer is: 42!", "42"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("It costs $1,250 in total. The answer is: $1,250.", "1250"),
    ("The answer is: 1,234,567", "1234567"),
    ("The discount is 25%. The answer is 25%", "25"),
    ("The answer is: -7", "-7"),
    ("The answer is - 7", "-7"),
    ("The answer is: \\frac{3}{4}", "3/4"),
    ("The answer is: \\dfrac{-1}{2}", "-1/2"),
    ("The answer is: \\boxed{12}", "12"),
    ("The answer is: 3\nQuestion: what is 2+2?\nAnswer: 4", "3"),
    # several delimiters: the last one wins, of whatever kind
    ("The answer is: 4. Wait, I made a mistake. The answer is: 6", "6"),
    ("#### 10\nLet me recheck. The answer is 12", "12"),
    ("the answer is 9", "9"),
    ("The answer is: x^2 + 1", "x^2 + 1"),
    # no answer stated
    ("I think it is 5", None),
    ("The answer is:", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


NUMBER_CASES = [
    ("13", Fraction(13)),
    ("65.33", Fraction("65.33")),
    ("-2.5", Fraction(-5, 2)),
    ("20/14", Fraction(10, 7)),
    (" 3 / 4 ", Fraction(3, 4)),
    (".5", Fraction(1, 2)),
    ("1e3", Fraction(1000)),
    ("1/0", None),
    ("1/2/3", None),
    ("abc", None),
    ("x/2", None),
    ("", None),
    (None, None),
    ("nan", None),
    ("inf", None),
]


@pytest.mark.parametrize(("text", "expected"), NUMBER_CASES)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


CORRECT_CASES = [
    # (completion, gold, correct)
    ("The answer is: 18", "18", True),
    ("The answer is: 18.0", "18", True),
    ("The answer is: 18.00.", "18", True),
    ("The answer is 17", "18", False),
    # fractions and decimals compare as numbers
    ("The answer is: 3/4", "0.75", True),
    ("The answer is: \\frac{3}{4}", "0.75", True),
    ("The answer is: 20/35", "0.5714285714285714", True),  # equal as floats, like the reference
    ("The answer is: 0.57", "4/7", False),
    # commas, $ and %
    ("The answer is: $1,000", "1000", True),
    ("The answer is 1,000.", "1,000", True),
    ("The answer is: 50%", "50", True),
    ("The answer is: $ 5.", "5", True),
    # negative numbers
    ("The answer is: -3", "-3", True),
    ("The answer is: 3", "-3", False),
    # gold given as a full GSM8K solution
    ("The answer is: 72", "Natalia sold 48/2 = 24 clips in May.\n#### 72", True),
    ("The answer is: 24", "Natalia sold 48/2 = 24 clips in May.\n#### 72", False),
    # missing answer, even when the right number appears in the working
    ("48/2 = 24, 24 + 48 = 72", "72", False),
    ("", "72", False),
    # several answers: the last one counts
    ("The answer is: 5. No wait, the answer is: 7", "7", True),
    ("The answer is: 7. No wait, the answer is: 5", "7", False),
    # non-numeric answers compare as (whitespace-normalised) strings
    ("The answer is: (2, 3)", "(2,  3)", True),
    ("The answer is: (2, 3)", "(3, 2)", False),
    ("The answer is: 5", "five", False),
]


@pytest.mark.parametrize(("completion", "gold", "correct"), CORRECT_CASES)
def test_is_correct(completion, gold, correct):
    assert is_correct(completion, gold) is correct


def test_same_answer_missing_never_matches():
    assert not same_answer(None, None)
    assert not same_answer("5", None)
    assert not same_answer(None, "5")


def test_normalize_answer_keeps_non_numbers():
    assert normalize_answer(" \\boxed{x + 1}. ") == "x + 1"
    assert normalize_answer("$12.50") == "12.50"


MATH_VERIFY_CASES = [
    ("The answer is: 18", "18", True),
    ("The answer is: \\frac{3}{4}", "0.75", True),
    ("so the result is $\\boxed{\\frac{1}{2}}$", "1/2", True),
    ("The answer is: 17", "18", False),
    ("I do not know", "18", False),
    # the working's numbers are not taken for the answer when a delimiter is present
    ("18 - 1 = 17. The answer is: 17", "18", False),
]


@pytest.mark.parametrize(("completion", "gold", "correct"), MATH_VERIFY_CASES)
def test_math_verify_correct(completion, gold, correct):
    pytest.importorskip("math_verify")
    assert answers.math_verify_correct(completion, gold) is correct


def test_math_verify_works_off_the_main_thread():
    pytest.importorskip("math_verify")
    out = []
    thread = threading.Thread(target=lambda: out.append(answers.math_verify_correct("The answer is 4", "4")))
    thread.start()
    thread.join()
    assert out == [True]


def test_math_verify_missing_gives_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_math_verify(name, *args, **kwargs):
        if name.startswith("math_verify"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    assert answers.math_verify_available() is False
    with pytest.raises(BadInput, match=r'pip install "peftbench\[math\]"'):
        answers.math_verify_correct("The answer is 4", "4")


@given(
    value=st.integers(min_value=-(10**12), max_value=10**12),
    commas=st.booleans(),
    dollar=st.booleans(),
    tail=st.sampled_from(["", ".", "!", " ", ".\n\nQuestion: next one"]),
)
def test_any_integer_in_any_usual_spelling_matches(value, commas, dollar, tail):
    text = f"{value:,}" if commas else str(value)
    if dollar:
        text = "-$" + text[1:] if text.startswith("-") else "$" + text
    assert is_correct(f"Some working. The answer is: {text}{tail}", str(value))
    assert not is_correct(f"Some working. The answer is: {text}{tail}", str(value + 1))


@given(numerator=st.integers(-1000, 1000), denominator=st.integers(1, 1000))
def test_fractions_match_their_decimal_value(numerator, denominator):
    decimal = repr(numerator / denominator)
    assert is_correct(f"The answer is {numerator}/{denominator}", decimal)


@pytest.mark.parametrize("text", ["-$5", "$-5", "- 5", "\\$-5", "-5.00"])
def test_signs_and_dollars_in_either_order(text):
    assert is_correct(f"The answer is: {text}", "-5")
