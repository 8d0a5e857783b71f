"""`peftbench rescore`: test metrics recomputed from the completions sidecar, written only with --write."""

from __future__ import annotations

import gzip
import json

import pytest
from result_records import make_record, write_record

from peftbench.cli import main
from peftbench.results import completions_path, load_completions, load_result, write_completions

PROMPT = "Question: How many? Think step by step.\nAnswer:"
# completions the two rules judge differently: ours accepts the second and third, the reference not
ITEMS = [
    (" The answer is: 18", "18"),
    (" the answer is: 7", "7"),
    (" The answer is: 1,000", "1000"),
    (" no answer", "3"),
]


def items() -> list[dict]:
    return [{"index": i, "prompt": PROMPT, "completion": c, "gold": g} for i, (c, g) in enumerate(ITEMS)]


@pytest.fixture
def mmqa_result(tmp_path):
    """An older-rule MetaMathQA result of ours (scored 3 of 4 by our rule) with its sidecar."""
    record = make_record("lora/r8", task="MetaMathQA", accuracy=0.75, test_correct="1110")
    record["schema_version"] = 2
    record["train_info"]["scoring_version"] = "peftbench-1"
    path = write_record(tmp_path / "MetaMathQA" / "results", record)
    write_completions(completions_path(path), items())
    return path


def test_dry_run_shows_the_changes_and_writes_nothing(mmqa_result, capsys):
    before = mmqa_result.read_bytes()
    assert main(["rescore", str(mmqa_result)]) == 0
    out = capsys.readouterr().out
    assert "scoring peftbench-1 -> reference" in out
    assert "test accuracy 0.7500 -> 0.2500" in out
    assert "test accuracy peftbench none -> 0.7500" in out
    assert mmqa_result.read_bytes() == before


def test_write_rescores_in_place_and_keeps_the_old_values(mmqa_result, capsys):
    assert main(["rescore", "--write", str(mmqa_result)]) == 0
    assert "(written)" in capsys.readouterr().out
    data = load_result(mmqa_result)
    info = data["train_info"]
    assert info["scoring_version"] == "reference"
    assert info["test_correct"] == "1000"
    final = info["metrics"][-1]
    assert final["test accuracy"] == 0.25 and final["test accuracy peftbench"] == 0.75
    [old] = info["rescored"]
    assert old["scoring_version"] == "peftbench-1" and old["test_correct"] == "1110"
    assert old["metrics"] == {"test accuracy": 0.75}
    # rescoring again with the same rule changes no metric, and records a second entry
    assert main(["rescore", "--write", str(mmqa_result)]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert len(load_result(mmqa_result)["train_info"]["rescored"]) == 2


def test_a_reference_file_has_no_completions(tmp_path, capsys):
    path = write_record(tmp_path / "MetaMathQA" / "results", make_record("lora/r8", task=None, seed=None))
    assert main(["rescore", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no stored completions (the reference's files keep none)" in err and str(path) in err


def test_an_older_file_of_ours_without_sidecar(tmp_path, capsys):
    path = write_record(tmp_path / "tinymath" / "results", make_record("lora/r8", test_correct="10"))
    assert main(["rescore", str(path)]) == 2
    assert "no stored completions (an older file)" in capsys.readouterr().err


def test_a_missing_path(tmp_path, capsys):
    assert main(["rescore", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such result file" in capsys.readouterr().err


def test_a_corrupt_result_file(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    assert main(["rescore", str(path)]) == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not gzip at all", "not a readable gzip file"),
        (gzip.compress(b'{"index": 0, "prompt": "p"}\n'), "line 1 lacks completion, gold"),
        (gzip.compress(b"{oops\n"), "line 1 is not valid JSON"),
        (gzip.compress(b'{"index": 5, "prompt": "", "completion": "", "gold": "1"}\n'), "line 1 has index 5"),
    ],
)
def test_a_corrupt_sidecar_writes_nothing(mmqa_result, capsys, content, message):
    completions_path(mmqa_result).write_bytes(content)
    before = mmqa_result.read_bytes()
    assert main(["rescore", "--write", str(mmqa_result)]) == 2
    err = capsys.readouterr().err
    assert message in err and ".completions.jsonl.gz" in err
    assert mmqa_result.read_bytes() == before


def test_one_bad_file_among_several_writes_none(mmqa_result, tmp_path, capsys):
    before = mmqa_result.read_bytes()
    assert main(["rescore", "--write", str(mmqa_result), str(tmp_path / "missing.json")]) == 2
    assert mmqa_result.read_bytes() == before


def test_sidecar_of_another_length_is_refused(mmqa_result, capsys):
    write_completions(completions_path(mmqa_result), items()[:3])
    assert main(["rescore", str(mmqa_result)]) == 2
    assert "holds 3 items but test_correct 4" in capsys.readouterr().err


def test_sidecar_round_trip_is_byte_stable(tmp_path):
    path = tmp_path / "r.json"
    write_completions(completions_path(path), items())
    first = completions_path(path).read_bytes()
    write_completions(completions_path(path), items())
    assert completions_path(path).read_bytes() == first
    assert load_completions(path) == items()
    assert json.loads(gzip.decompress(first).splitlines()[1])["completion"] == ITEMS[1][0]
