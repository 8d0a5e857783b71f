"""Final-answer extraction and comparison shared by the math tasks (MetaMathQA/GSM8K, tinymath).

Two rules. `reference_is_correct` is the reference suite's (huggingface/peft method_comparison,
`utils.get_accuracy`), reproduced verdict for verdict: MetaMathQA's "test accuracy", so that our files
sit beside the reference's number for number:

1. The text (the reference scores the decoded prompt + completion) is stripped, and ". ! ?" at its
   end. The delimiter is the first of "The answer is: ", "The answer is ", "The final answer is: ",
   "The final answer is ", "#### " that occurs anywhere in it (case and the trailing space count),
   and the answer is the text after its last occurrence, up to the end of that line, stripped of
   " . ! ? $ %".
2. Both sides are compared as floats when both parse as decimal numbers or a/b fractions (Python's
   Decimal syntax: "1e3", "1_000" and "NaN" parse, "1,000" and "- 5" do not), else as exact strings.

`is_correct` is ours (tinymath's "test accuracy"; MetaMathQA's "test accuracy peftbench"):

1. The answer is the text after the *last* "The answer is" / "The final answer is" / "####"
   (with or without a colon), up to the end of that line.
2. Whitespace, trailing ". ! ?" and any "$" or "%" around it are stripped (GSM8K writes 50% as 50).
3. Both sides are compared as numbers when both parse as numbers, so "3/4", "0.75" and "3/4."
   match; otherwise as strings.

Deliberate differences from the reference, each making it more robust without changing the verdict
on well-formed answers: the *last* delimiter in the text wins (the reference takes the first kind
of delimiter in its list that occurs anywhere, which can pick an earlier "####"), thousands
separators are removed ("1,000" == 1000), a whole-answer \\boxed{...} is unwrapped, and \\frac{a}{b}
is read as a/b. Numbers are parsed exactly (`fractions.Fraction`) and equal when exactly equal or
equal as floats, which is the reference's test (it converts to float), so "0.5714285714285714"
still matches "4/7".

`math_verify_correct` is a second opinion through the optional Math-Verify package
(`pip install "peftbench[math]"`), imported only when called.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from peftbench.errors import BadInput

__all__ = [
    "REFERENCE_DELIMITERS",
    "extract_answer",
    "is_correct",
    "math_verify_available",
    "math_verify_correct",
    "normalize_answer",
    "parse_number",
    "reference_extract",
    "reference_is_correct",
    "same_answer",
]

# Longest alternatives first so that "The answer is:" is not cut at "The answer is".
_DELIMITER = re.compile(r"(?:The final answer is|The answer is)\s*:?|####", re.IGNORECASE)
_BOXED = re.compile(r"^\\boxed\{(.*)\}$", re.DOTALL)
_FRAC = re.compile(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def extract_answer(text: str | None) -> str | None:
    """The final answer stated in `text` (normalised), or None when no answer is stated.

    >>> extract_answer("2 + 2 = 4, plus 1 is 5. The answer is: 5.")
    '5'
    """
    answer = _after_last_delimiter(text)
    if answer is None:
        return None
    return normalize_answer(answer) or None


def _after_last_delimiter(text: str | None) -> str | None:
    """The raw text of the line after the last answer delimiter, or None without a delimiter."""
    matches = list(_DELIMITER.finditer(text or ""))
    if not matches:
        return None
    # a new paragraph can follow the answer (the model keeps generating): keep only its line
    return text[matches[-1].end() :].strip().split("\n", 1)[0]


def normalize_answer(answer: str) -> str:
    """Strip what does not change an answer's value: spaces, $ and %, trailing punctuation,
    thousands separators, a whole-answer \\boxed{}; read \\frac{a}{b} as a/b."""
    answer = answer.strip().strip(" .!?$%")
    boxed = _BOXED.match(answer)
    if boxed:
        answer = boxed.group(1).strip().strip(" .!?$%")
    answer = _FRAC.sub(r"\1/\2", answer)
    answer = _THOUSANDS.sub("", answer)
    # "- 5", "-$5", "\\$5": spaces and dollar signs inside a plain number carry no meaning
    compact = re.sub(r"\s|\\?\$", "", answer)
    if parse_number(compact) is not None:
        return compact
    return answer


def parse_number(text: str | None) -> Fraction | None:
    """`text` as an exact number ("13", "-2.5", "1e3", "20/14"), or None when it is not one."""
    if text is None:
        return None
    text = text.strip()
    try:
        if "/" in text:
            num, _, den = text.partition("/")
            if not (_NUMBER.match(num.strip()) and _NUMBER.match(den.strip())):
                return None
            denominator = Fraction(den.strip())
            if denominator == 0:
                return None
            return Fraction(num.strip()) / denominator
        if not _NUMBER.match(text):
            return None
        return Fraction(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def same_answer(predicted: str | None, gold: str | None) -> bool:
    """Whether two normalised answers agree: as numbers when both are numbers, else as strings.
    A missing answer on either side never agrees."""
    if predicted is None or gold is None:
        return False
    p, g = parse_number(predicted), parse_number(gold)
    if p is not None and g is not None:
        if p == g:
            return True
        try:
            # the reference's test: equal as floats (so a 16-digit decimal matches a fraction)
            return float(p) == float(g)
        except OverflowError:
            return False
    if p is not None or g is not None:
        return False
    return " ".join(predicted.split()) == " ".join(gold.split())


def _gold_answer(gold: str) -> str | None:
    # gold is either a bare answer ("18") or a full solution ending in "#### 18"
    return extract_answer(gold) or normalize_answer(gold) or None


def is_correct(completion: str, gold: str) -> bool:
    """The main metric: whether a generated completion states the gold answer.

    `gold` may be the bare answer or a full reference solution with "#### N" / "The answer is: N".
    """
    return same_answer(extract_answer(completion), _gold_answer(gold))


# The reference's delimiters in its order of preference: the first one found anywhere wins.
REFERENCE_DELIMITERS = (
    "The answer is: ",
    "The answer is ",
    "The final answer is: ",
    "The final answer is ",
    "#### ",
)


def reference_extract(text: str | None) -> str | None:
    """The answer the reference's rule reads in `text`, or None when no delimiter occurs (rule 1).

    >>> reference_extract("#### 7\nThe answer is: 18")
    '18'
    """
    text = (text or "").strip().rstrip(".!?")
    delimiter = next((d for d in REFERENCE_DELIMITERS if d in text), None)
    if delimiter is None:
        return None
    return text.rpartition(delimiter)[2].strip().split("\n", 1)[0].strip(" .!?$%")


def _reference_value(answer: str | None) -> float | str | None:
    """A float when `answer` is a decimal number or a fraction of two, else the string itself (rule 2)."""
    if answer is None:
        return None
    try:
        parts = answer.strip().split("/")
        if len(parts) > 2:
            return answer
        value = Decimal(parts[0].strip())
        if len(parts) == 2:
            denominator = Decimal(parts[1].strip())
            if denominator == 0:
                return answer
            value = value / denominator
        return float(value)
    except (InvalidOperation, ValueError, ArithmeticError):
        return answer


def reference_is_correct(text: str, gold: str) -> bool:
    """The reference's verdict on `text` (the prompt + completion) against `gold` (a bare answer, or a
    solution ending in "#### N", read with rule 1); a missing answer on either side is wrong."""
    expected = reference_extract(gold)
    if expected is None:
        expected = gold.strip().strip(" .!?$%")
    predicted, target = _reference_value(reference_extract(text)), _reference_value(expected)
    return predicted is not None and target is not None and predicted == target


def math_verify_available() -> bool:
    """Whether the optional Math-Verify package can be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def math_verify_correct(completion: str, gold: str) -> bool:
    """Second-opinion metric: Math-Verify's symbolic comparison of the completion with the gold answer.

    Math-Verify reads the text after the last answer delimiter when there is one (so that numbers in
    the working are not taken for the answer) and the whole completion otherwise (so that a \\boxed{}
    answer without "The answer is" still counts).
    """
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        raise BadInput(
            'the Math-Verify metric needs the math-verify package: pip install "peftbench[math]"'
        ) from exc
    # Math-Verify's timeouts use signal.alarm, which works only in the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    target_text = _after_last_delimiter(completion)
    if target_text is None:
        target_text = completion or ""
    gold_text = _gold_answer(gold) or ""
    parsed_gold = parse(gold_text, parsing_timeout=timeout)
    parsed_target = parse(target_text, parsing_timeout=timeout)
    if not parsed_gold or not parsed_target:
        return False
    return bool(verify(parsed_gold, parsed_target, timeout_seconds=timeout))
