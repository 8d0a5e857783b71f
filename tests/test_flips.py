"""Items that flipped between two runs (peftbench.analysis.flips), the app's view and the report's section."""

from __future__ import annotations

import pandas as pd
import pytest
from result_records import make_record, write_record

from peftbench.analysis.aggregate import load_results
from peftbench.analysis.flips import NOT_STORED, flips_summary, item_flips
from peftbench.cli import main
from peftbench.dashboard import app as dash
from peftbench.errors import BadInput
from peftbench.results import completions_path, write_completions

GOLD = ["4", "6", "8", "10"]


def items(completions: list[str]) -> list[dict]:
    return [
        {"index": i, "prompt": f"Question: {i} + {i + 4}?\nAnswer:", "completion": c, "gold": g}
        for i, (c, g) in enumerate(zip(completions, GOLD, strict=True))
    ]


A_TEXT = [" The answer is 4", " The answer is 6", " The answer is 9", " The answer is 1"]
B_TEXT = [" The answer is 4", " The answer is 7", " The answer is 8", " The answer is 2"]


def make_runs(root, *, sidecar_b: bool = True):
    """Two tinymath runs: A right on items 0 and 1, B on 0 and 2 (item 1 flipped to A, item 2 to B)."""
    results = root / "tinymath" / "results"
    a = write_record(results, make_record("lora/a", accuracy=0.5, test_correct="1100"))
    b = write_record(results, make_record("lora/b", accuracy=0.5, test_correct="1010"))
    write_completions(completions_path(a), items(A_TEXT))
    if sidecar_b:
        write_completions(completions_path(b), items(B_TEXT))
    return root / "tinymath"


def test_item_flips_in_test_order_with_both_completions():
    a = {"test_correct": "1100", "test_items_hash": "h"}
    b = {"test_correct": "1010", "test_items_hash": "h"}
    flips = item_flips(a, b, items(A_TEXT), items(B_TEXT))
    assert flips["item"].tolist() == [1, 2]
    assert flips["right in"].tolist() == ["A only", "B only"]
    assert flips["gold"].tolist() == ["6", "8"]
    assert flips["completion A"].tolist() == [A_TEXT[1], A_TEXT[2]]
    assert flips["completion B"].tolist() == [B_TEXT[1], B_TEXT[2]]
    assert (
        flips_summary(flips, n_items=4) == "2 of 4 test items flipped: 1 right only in A, 1 right only in B"
    )


def test_a_run_without_completions_still_shows_which_items_flipped():
    flips = item_flips({"test_correct": "10"}, {"test_correct": "01"}, None, None)
    assert flips["right in"].tolist() == ["A only", "B only"]
    assert set(flips["completion A"]) == {NOT_STORED} and set(flips["gold"]) == {""}


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ({"test_correct": None}, {"test_correct": "1"}, "A has no per-item test results"),
        (
            {"test_correct": "10", "test_items_hash": "x"},
            {"test_correct": "01", "test_items_hash": "y"},
            "different items",
        ),
        ({"test_correct": "10"}, {"test_correct": "011"}, "A has 2 test items and B 3"),
    ],
)
def test_runs_that_cannot_be_paired(a, b, message):
    with pytest.raises(BadInput, match=message):
        item_flips(a, b, None, None)


def test_identical_runs_have_no_flips():
    flips = item_flips({"test_correct": "101"}, {"test_correct": "101"}, None, None)
    assert isinstance(flips, pd.DataFrame) and flips.empty


def test_app_flips_view_reads_the_sidecars(tmp_path):
    runs = load_results([make_runs(tmp_path, sidecar_b=False)]).table
    a, b = dash.run_labels(runs)
    line, flips = dash.flips_view(runs, a, b)
    assert line.startswith("2 of 4 test items flipped") and "no stored completions for B" in line
    assert flips["completion A"].tolist() == [A_TEXT[1], A_TEXT[2]]
    assert set(flips["completion B"]) == {NOT_STORED}
    assert dash.flips_view(runs, a, None)[0] == "Choose two runs above."


def test_app_flips_view_names_a_corrupt_sidecar(tmp_path):
    task = make_runs(tmp_path)
    completions_path(task / "results" / "lora--b.json").write_bytes(b"garbage")
    runs = load_results([task]).table
    line, flips = dash.flips_view(runs, *dash.run_labels(runs))
    assert line.startswith("No item comparison:") and "not a readable gzip file" in line and flips.empty


def test_report_flips_section(tmp_path, capsys):
    task = make_runs(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(task), "-o", str(out), "--flips", "lora/a", "lora/b@0"]) == 0
    html = out.read_text()
    assert "Items that flipped: A = lora/a, B = lora/b@0" in html
    assert "2 of 4 test items flipped" in html and "The answer is 7" in html


@pytest.mark.parametrize(
    ("flips", "message"),
    [
        (["lora/aa", "lora/b"], 'no run "lora/aa" with seed 0 (did you mean "lora/a"?)'),
        (["lora/a@3", "lora/b"], 'no run "lora/a" with seed 3; it has seeds 0'),
        (["lora/a@x", "lora/b"], "the seed after @ must be a whole number"),
    ],
)
def test_report_flips_bad_runs_write_nothing(tmp_path, capsys, flips, message):
    task = make_runs(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(task), "-o", str(out), "--flips", *flips]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()
