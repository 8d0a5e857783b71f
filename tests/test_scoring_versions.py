"""Each result records the rule that scored its test accuracy; tables, pareto and compare never mix rules."""

from __future__ import annotations

import pytest
from result_records import make_record, write_record

from peftbench.analysis.aggregate import load_results
from peftbench.cli import main
from peftbench.results import scoring_version

CORRECT = {a: "1" * round(20 * a) + "0" * (20 - round(20 * a)) for a in (0.4, 0.5, 0.6)}


def run(experiment, *, accuracy, version, seed=0):
    record = make_record(
        experiment, task="MetaMathQA", seed=seed, accuracy=accuracy, test_correct=CORRECT[accuracy]
    )
    record["train_info"]["test_items_hash"] = "gsm8k-test"
    if version is not None:
        record["schema_version"] = 2
        record["train_info"]["scoring_version"] = version
    return record


@pytest.fixture
def mixed(tmp_path):
    """lora/new (reference rule) and lora/old (our rule, before scoring versions) of one task."""
    results = tmp_path / "MetaMathQA" / "results"
    write_record(results, run("lora/new", accuracy=0.5, version="reference"))
    write_record(results, run("lora/new2", accuracy=0.6, version="reference"))
    write_record(results, run("lora/old", accuracy=0.4, version=None))
    return tmp_path / "MetaMathQA"


def test_version_of_files_without_one():
    assert scoring_version(make_record(task=None, seed=None)) == "reference"  # the reference's file
    assert scoring_version(make_record()) == "peftbench-1"  # ours, before scoring versions
    assert scoring_version(run("lora/x", accuracy=0.5, version="reference")) == "reference"


def test_table_has_the_column_and_the_summary_warns(mixed, capsys):
    loaded = load_results([mixed])
    assert dict(zip(loaded.table["experiment_name"], loaded.table["scoring_version"], strict=True)) == {
        "lora/new": "reference",
        "lora/new2": "reference",
        "lora/old": "peftbench-1",
    }
    warning = loaded.summary.splitlines()[1]
    assert warning.startswith("warning: task MetaMathQA: test accuracy comes from 2 scoring rules")
    assert "peftbench-1: 1 runs, reference: 2 runs" in warning
    assert main(["table", str(mixed)]) == 0
    assert "2 scoring rules" in capsys.readouterr().err


def test_one_rule_no_warning(tmp_path):
    results = tmp_path / "MetaMathQA" / "results"
    write_record(results, run("lora/new", accuracy=0.5, version="reference"))
    assert "scoring rules" not in load_results([tmp_path / "MetaMathQA"]).summary


def test_pareto_warns(mixed, capsys):
    assert main(["pareto", str(mixed), "--x", "memory_max", "--y", "test_accuracy"]) == 0
    assert "2 scoring rules" in capsys.readouterr().err


def test_compare_refuses_two_rules(mixed, capsys):
    assert main(["compare", str(mixed), "lora/new", "lora/old"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "scored by different rules (lora/new: reference; lora/old: peftbench-1)" in err


def test_compare_one_rule_works(mixed, capsys):
    assert main(["compare", str(mixed), "lora/new", "lora/new2"]) == 0
    assert "difference A - B" in capsys.readouterr().out


def test_compare_baseline_leaves_the_other_rule_out(mixed, capsys):
    assert main(["compare", str(mixed), "--baseline", "lora/new"]) == 0
    out = capsys.readouterr().out
    assert 'lora/old: test accuracy scored by "peftbench-1", the baseline\'s by "reference"' in out
    assert "lora/new2" in out.split("not compared:")[0]
