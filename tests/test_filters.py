"""The safe filter parser: what it accepts, what it refuses, and that it never runs code."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftbench.analysis.filters import MAX_LENGTH, apply_filter, filter_mask
from peftbench.errors import BadInput


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "experiment_name": ["lora/a", "lora/b", "ia3/c", "prompt_tuning/d"],
            "peft_type": ["LORA", "LORA", "IA3", "PROMPT_TUNING"],
            "test_accuracy": [0.5, 0.3, 0.2, math.nan],
            "seed": [0, 1, 0, 0],
            "project_dirty": [False, True, False, False],
        }
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", ["lora/a", "lora/b", "ia3/c", "prompt_tuning/d"]),
        ("   ", ["lora/a", "lora/b", "ia3/c", "prompt_tuning/d"]),
        ("peft_type == 'LORA'", ["lora/a", "lora/b"]),
        ("peft_type != 'LORA'", ["ia3/c", "prompt_tuning/d"]),
        ("test_accuracy > 0.25", ["lora/a", "lora/b"]),
        ("test_accuracy >= 0.3", ["lora/a", "lora/b"]),
        ("test_accuracy < 0.3", ["ia3/c"]),
        ("test_accuracy <= 0.3", ["lora/b", "ia3/c"]),
        ("0.25 < test_accuracy", ["lora/a", "lora/b"]),
        ("peft_type in ['IA3', 'PROMPT_TUNING']", ["ia3/c", "prompt_tuning/d"]),
        ("peft_type not in ('LORA',)", ["ia3/c", "prompt_tuning/d"]),
        ("peft_type == 'LORA' and seed == 0", ["lora/a"]),
        ("peft_type == 'IA3' or seed == 1", ["lora/b", "ia3/c"]),
        ("(peft_type == 'LORA') & (seed == 1)", ["lora/b"]),
        ("(peft_type == 'IA3') | (seed == 1)", ["lora/b", "ia3/c"]),
        ("not peft_type == 'LORA'", ["ia3/c", "prompt_tuning/d"]),
        ("~(peft_type == 'LORA')", ["ia3/c", "prompt_tuning/d"]),
        ("seed > -1 and test_accuracy > -0.5", ["lora/a", "lora/b", "ia3/c"]),
        ("project_dirty == True", ["lora/b"]),
        ("seed == 0 and (peft_type == 'IA3' or test_accuracy > 0.4)", ["lora/a", "ia3/c"]),
    ],
)
def test_filters_select_the_right_rows(df, expr, expected):
    assert apply_filter(df, expr)["experiment_name"].tolist() == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("test_accuracy == None", ["prompt_tuning/d"]),
        ("None == test_accuracy", ["prompt_tuning/d"]),
        ("test_accuracy != None", ["lora/a", "lora/b", "ia3/c"]),
        ("model_id == None", ["ia3/c", "prompt_tuning/d"]),  # None in an object column
        ("model_id != None and seed == 0", ["lora/a"]),
        ("model_id in [None, 'tiny/b']", ["lora/b", "ia3/c", "prompt_tuning/d"]),
        ("model_id not in [None]", ["lora/a", "lora/b"]),
        ("seed == -0 and test_accuracy != None", ["lora/a", "ia3/c"]),
    ],
)
def test_none_matches_missing_values(df, expr, expected):
    with_model = df.assign(model_id=["tiny/a", "tiny/b", None, math.nan])
    assert apply_filter(with_model, expr)["experiment_name"].tolist() == expected


def test_a_missing_value_never_passes_a_numeric_filter(df):
    # prompt_tuning/d has no accuracy: it is neither > nor <= any threshold
    assert "prompt_tuning/d" not in apply_filter(df, "test_accuracy > 0")["experiment_name"].tolist()
    assert "prompt_tuning/d" not in apply_filter(df, "test_accuracy <= 1")["experiment_name"].tolist()


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("peft_type.upper() == 'LORA'", "function call"),
        ("df.shape == 1", "attribute access"),
        ("__import__('os').system('echo hacked') == 0", "function call"),
        ("__class__ == 1", "dunder"),
        ("import os", "not a valid expression"),
        ("[x for x in seed] == 1", "comprehension"),
        ("seed in [x for x in [1]]", "list of literals"),
        ("(lambda: 1)() == 1", "function call"),
        ("(lambda: 1) == seed", "lambda"),
        ("seed[0] == 1", "indexing"),
        ("seed + 1 > 2", "arithmetic"),
        ("seed == (seed := 1)", "assignment expression"),
        ("0 < seed < 2", "chained"),
        ("seed", "bare column name"),
        ("1 == 1", "column name"),
        ("seed == f'{seed}'", "f-string"),
        ("seed == 1 if True else 2", "conditional"),
        ("nonexistent == 1", 'unknown column "nonexistent"'),
        ("peft_typ == 'LORA'", 'did you mean "peft_type"'),
        ("seed == 1; import os", "not a valid expression"),
        ("seed is None", "'is' is not supported: write x == None or x != None"),
        # & binds tighter than >=: the parser sees `a >= (0.4 & b) < 0.2`, not a chained comparison
        ("test_accuracy >= 0.4 & seed < 2", "& and | bind tighter than comparisons"),
        ("seed == 0 | seed == 1", "write `a >= 0.4 and b < 0.2` or `(a >= 0.4) & (b < 0.2)`"),
        ("-seed", "a sign (-) applies to number literals only, not to column seed"),
        ("-seed > 1", "a sign (-) applies to number literals only, not to column seed"),
        ("seed == -None", "a sign (-) applies to number literals only, not to None"),
        ("seed == -True", "not to True"),
        ("seed == +'a'", "a sign (+) applies to number literals only, not to 'a'"),
        ("test_accuracy < None", "None (a missing value) can only be compared with == or !=, not <"),
        ("seed == b'x'", "not a literal"),
        ("seed == ...", "not a literal"),
        ("seed == 1\x00", "null bytes"),
        ("seed in 'abc'", "list of literals"),
        ("'LORA' in peft_type", "column name"),
    ],
)
def test_everything_else_is_refused_with_a_message(df, expr, message):
    with pytest.raises(BadInput) as info:
        filter_mask(df, expr)
    text = str(info.value)
    assert message.lower() in text.lower(), text
    assert "\n" not in text


def test_refused_code_is_never_run(df, tmp_path):
    marker = tmp_path / "ran"
    attempts = [
        f"__import__('os').system('touch {marker}') == 0",
        f"open('{marker}', 'w') == 1",
        f"seed == [open('{marker}', 'w')]",
        f"seed in [open('{marker}', 'w')]",
        f"(lambda: open('{marker}', 'w'))() == 1",
    ]
    for expr in attempts:
        with pytest.raises(BadInput):
            filter_mask(df, expr)
    assert not marker.exists()


@pytest.mark.parametrize(
    "expr",
    [
        "seed == 1 or " * 400 + "seed == 1",  # too long
        "(" * 300 + "seed == 1" + ")" * 300,  # deep nesting
        "not " * 300 + "seed == 1",  # deep unary nesting
        " or ".join(["seed == 1"] * 90),  # many nodes, short enough
        "seed in [" + ",".join(["1"] * 400) + "]",  # huge list literal
    ],
)
def test_huge_or_deep_inputs_are_refused(df, expr):
    with pytest.raises(BadInput):
        filter_mask(df, expr)


def test_redundant_parentheses_are_harmless(df):
    assert filter_mask(df, "(" * 100 + "seed == 1" + ")" * 100).tolist() == [False, True, False, False]


def test_length_limit_is_stated(df):
    with pytest.raises(BadInput, match=str(MAX_LENGTH)):
        filter_mask(df, "seed == 1 " + " " * MAX_LENGTH)


def test_type_mismatch_is_bad_input_not_a_crash(df):
    with pytest.raises(BadInput, match="type"):
        filter_mask(df, "peft_type > 3")


def test_mask_is_aligned_with_a_non_default_index(df):
    shifted = df.set_index(pd.Index([10, 20, 30, 40]))
    mask = filter_mask(shifted, "seed == 1")
    assert mask.index.tolist() == [10, 20, 30, 40]
    assert mask.tolist() == [False, True, False, False]


# Fuzzing: any text either gives a boolean mask of the right length or a BadInput; nothing else
# (no other exception, no code run). Texts are drawn from a Python-ish alphabet so that many parse.
_TOKENS = st.sampled_from(
    [
        "seed",
        "peft_type",
        "test_accuracy",
        "__class__",
        "os",
        "open",
        "==",
        "!=",
        "<",
        ">=",
        " in ",
        " not in ",
        " and ",
        " or ",
        "not ",
        "&",
        "|",
        "~",
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "lambda:",
        "1",
        "-2.5",
        "'LORA'",
        "None",
        "True",
        "*",
        "+",
        ":=",
        " for x in ",
        " if ",
        " else ",
    ]
)


def _check_outcome(df: pd.DataFrame, expr: str) -> None:
    try:
        mask = filter_mask(df, expr)
    except BadInput as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert mask.dtype == bool
    assert len(mask) == len(df)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_TOKENS, min_size=1, max_size=12).map("".join))
def test_fuzz_token_soup(df, expr):
    _check_outcome(df, expr)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_fuzz_arbitrary_text(df, expr):
    _check_outcome(df, expr)
