"""Both answer rules, case by case: the reference's (MetaMathQA's "test accuracy") and ours (tinymath's
"test accuracy", MetaMathQA's "test accuracy peftbench"). Each row: the prompt, the completion, the gold
answer, the verdict of the reference's rule (on prompt + completion), the verdict of ours (on the
completion), and why. Cases written from the reference's documented behaviour (utils.get_accuracy)."""

from __future__ import annotations

import pytest

from peftbench.tasks import answers
from peftbench.tasks.base import Example
from peftbench.tasks.metamathqa import MetaMathQA
from peftbench.tasks.tinymath import TinyMath

P = "Question: How many? Think step by step.\nAnswer:"  # a prompt without any delimiter
SOLUTION = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72"

# (prompt, completion, gold, reference's verdict, ours, why)
CASES = [
    (P, " The answer is: 18", "18", True, True, "the canonical form"),
    (P, " The answer is 18", "18", True, True, "without the colon"),
    (P, " The answer is: 18.", "18", True, True, "a trailing full stop"),
    (P, " The answer is: 18!", "18", True, True, "a trailing exclamation mark"),
    (P, " The answer is 18 .", "18", True, True, "a spaced full stop"),
    (P, " The answer is:  18", "18", True, True, "two spaces after the colon"),
    (P, " the answer is: 18", "18", False, True, "lower case: the reference's delimiters are case-sensitive"),
    (P, " THE ANSWER IS 18", "18", False, True, "upper case"),
    (P, " The Answer Is: 18", "18", False, True, "title case"),
    (P, " The answer is:18", "18", False, True, "no space after the colon: no reference delimiter matches"),
    (P, " ####18", "18", False, True, "#### without its space"),
    (P, " #### 18", "18", True, True, "GSM8K's delimiter"),
    (P, " The final answer is: 18", "18", True, True, "the final answer, with colon"),
    (P, " The final answer is 18", "18", True, True, "the final answer, without colon"),
    (P, " The answer is: 1,018", "1018", False, True, "a thousands separator: no decimal for the reference"),
    (P, " The answer is: $1,200.00", "1200", False, True, "dollars with a separator"),
    (P, " The answer is: $1200.00", "1200", True, True, "dollars without a separator"),
    (P, " The answer is $18.50.", "18.5", True, True, "dollars and cents"),
    (P, " The answer is: 18%", "18", True, True, "a percent sign is stripped"),
    (P, " The answer is: - 5", "-5", False, True, "a spaced minus sign"),
    (P, " The answer is: -5", "-5", True, True, "a negative number"),
    (P, " The answer is: \\boxed{18}", "18", False, True, "a boxed answer"),
    (P, " The answer is: \\frac{1}{2}", "0.5", False, True, "a LaTeX fraction"),
    (P, " The answer is: 1/2", "0.5", True, True, "a plain fraction equals its decimal"),
    (P, " The answer is: 3 / 4", "0.75", True, True, "a fraction with spaces"),
    (P, " The answer is: 0.5714285714285714", "4/7", True, True, "equal as floats"),
    (P, " The answer is: 18.0", "18", True, True, "a decimal point"),
    (P, " The answer is: 1e1", "10", True, True, "an exponent"),
    (P, " The answer is: 1_000", "1000", True, False, "a digit separator: Decimal reads it, we do not"),
    (P, " The answer is: 1/0", "0", False, False, "a zero denominator is no number"),
    (P, " The answer is: NaN", "18", False, False, "not a number"),
    (P, " The answer is: 18 apples", "18", False, False, "a unit after the number"),
    (P, " The answer is: x = 18", "18", False, False, "an equation"),
    (P, " The answer is: 18 dollars", "18", False, False, "a word after the number"),
    (P, " 18", "18", False, False, "no delimiter"),
    (P, "", "18", False, False, "an empty completion"),
    (P, " The answer is: 18\n#### 20", "18", True, False, "the reference's first kind wins; ours, the last"),
    (P, " #### 20\nThe answer is: 18", "18", True, True, "both read The answer is"),
    (P, " The answer is 20. Wait, the final answer is 18", "18", False, True, "a later lower-case delimiter"),
    (P, " The answer is: 18\nThe answer is: 19", "18", False, False, "the last of the kind, for both"),
    (P, " The answer is: 18\n\nExplanation: 9 + 9.", "18", True, True, "text after the answer's line"),
    (P, " The answer is: 72", SOLUTION, True, True, "a full GSM8K solution as gold"),
    (P, " 1 + 1 = 2. The answer is: 2", "2", True, True, "the prompt has no delimiter"),
    (
        "Question: A note says The answer is: 5\nIs it? Think step by step.\nAnswer:",
        " #### 2",
        "2",
        False,
        True,
        "the prompt's delimiter is the reference's first kind: it reads 5 from the prompt",
    ),
    (
        "Question: A note says The answer is: 5\nIs it? Think step by step.\nAnswer:",
        " The answer is: 2",
        "2",
        True,
        True,
        "the completion's delimiter is the last of its kind",
    ),
    (
        "Question: Is it #### 3? Think step by step.\nAnswer:",
        " The answer is 2",
        "2",
        True,
        True,
        "a prompt's #### comes after The answer is in the reference's list",
    ),
]


def test_the_table_is_large_and_has_disagreements():
    assert len(CASES) >= 40
    assert sum(ref != ours for _, _, _, ref, ours, _ in CASES) >= 10


@pytest.mark.parametrize(("prompt", "completion", "gold", "reference", "ours", "why"), CASES)
def test_reference_rule(prompt, completion, gold, reference, ours, why):
    task = MetaMathQA()
    got = task.is_correct(completion, Example(query="q", response="", answer=gold), prompt=prompt)
    assert got is reference, why


@pytest.mark.parametrize(("prompt", "completion", "gold", "reference", "ours", "why"), CASES)
def test_our_rule(prompt, completion, gold, reference, ours, why):
    assert answers.is_correct(completion, gold) is ours, why
    # MetaMathQA's extra metric and tinymath's test accuracy are this rule
    metric = MetaMathQA().extra_metrics([completion], [Example("q", "", gold)])
    assert metric["test accuracy peftbench"] == float(ours)
    assert TinyMath().is_correct(completion, Example("q", "", gold), prompt=prompt) is ours
