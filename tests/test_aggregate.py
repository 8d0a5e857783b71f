"""Aggregation of result files into the runs table: hand-made records with known answers, bad files,
and the reference suite's real files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from result_records import make_record, write_record

from peftbench.analysis import aggregate as agg
from peftbench.analysis.overhead import TABLE_OVERHEAD_METRICS
from peftbench.analysis.stats import t_interval, wilson_interval
from peftbench.analysis.variant import labelled, run_variant
from peftbench.errors import BadInput
from peftbench.tasks.base import (
    COMMON_METRICS,
    RUN_FACTS,
    TEST_ACCURACY,
    TOKENS_PER_SEC,
    TRAIN_TOKENS,
    VALID_ACCURACY,
)


def test_row_maps_every_common_metric():
    record = make_record("lora/r8", accuracy=0.4, forgetting=0.07, memory=5000, train_time=12.0, params=77)
    row = agg.record_to_row(record, file=agg.Path("x.json"), task="tinymath")
    assert row["test_accuracy"] == 0.4
    assert row["forgetting"] == 0.07
    assert row["memory_max"] == 5000
    assert row["memory_reserved_avg"] == 2500
    assert row["memory_reserved_99th"] == 4999
    assert row["train_time"] == 12.0
    assert row["total_time"] == 18.0
    assert row["num_trainable_params"] == 77
    assert row["file_size"] == 4000
    assert row["train_loss"] == 1.0
    assert (row["method"], row["name"], row["peft_type"]) == ("lora", "r8", "LORA")
    assert row["family"] == "low-rank (LoRA-like)"
    assert row["train_total_tokens"] == 4000
    assert {m.name for m in COMMON_METRICS} <= set(row)


def test_reference_style_record_without_our_additions():
    record = make_record("full-finetuning/lr1", task=None, seed=None, peft_type=None, forgetting=None)
    record["train_info"]["cuda_memory_max"] = record["train_info"].pop("accelerator_memory_max")
    row = agg.record_to_row(record, file=agg.Path("MetaMathQA/results/x.json"), task="MetaMathQA")
    assert row["seed"] == 0
    assert row["family"] == agg.FULL_FINETUNING
    assert row["memory_max"] == 1_000_000  # older spelling
    assert math.isnan(row["forgetting"])
    assert row["memory_kind"] == "accelerator"


def test_columns_come_from_the_declared_metrics_and_undeclared_keys_are_not_columns():
    record = make_record("lora/r8", accuracy=0.25)
    final = record["train_info"]["metrics"][-1]
    final["test dino_similarity"] = 0.9  # a key that no metric of the task declares
    row = agg.record_to_row(record, file=agg.Path("x.json"), task="tinymath")
    for metric in (*COMMON_METRICS, *RUN_FACTS):
        assert metric.name in row
    assert row[TEST_ACCURACY.name] == final[TEST_ACCURACY.key] == 0.25
    assert row[TRAIN_TOKENS.name] == final[TRAIN_TOKENS.key]
    assert "test_dino_similarity" not in row and "test dino_similarity" not in row
    [*points] = agg.curve_rows(record, file=agg.Path("x.json"), task="tinymath")
    assert [p[TOKENS_PER_SEC.name] for p in points] == [100.0, 100.0, 100.0]
    assert [p[VALID_ACCURACY.name] for p in points] == pytest.approx([0.25 / 3, 0.5 / 3, 0.25])


def test_task_from_record_else_from_the_folder_above_results(tmp_path):
    write_record(tmp_path / "mytask" / "results", make_record("lora/a", task="tinymath"))
    write_record(tmp_path / "mytask" / "results", make_record("lora/b", task=None, seed=None))
    loaded = agg.load_results([tmp_path / "mytask"])
    assert dict(zip(loaded.table["experiment_name"], loaded.table["task"], strict=True)) == {
        "lora/a": "tinymath",
        "lora/b": "mytask",
    }


def test_non_success_runs_are_skipped_and_counted(tmp_path):
    results = tmp_path / "t" / "results"
    write_record(results, make_record("lora/a"))
    write_record(results, make_record("lora/b", status="failed"))
    write_record(results, make_record("lora/c", status="canceled"))
    loaded = agg.load_results([results])
    assert loaded.table["experiment_name"].tolist() == ["lora/a"]
    assert loaded.n_not_success == 2
    assert "2 skipped: status not success" in loaded.summary


def test_latest_run_per_experiment_and_seed_is_kept(tmp_path):
    results = tmp_path / "t" / "results"
    temporary = tmp_path / "t" / "temporary_results"
    write_record(results, make_record("lora/a", accuracy=0.1, created_at="2026-01-01T00:00:00+00:00"))
    later = make_record("lora/a", accuracy=0.2, created_at="2026-02-01T00:00:00+00:00")
    write_record(temporary, later, "lora--a--t.json")
    write_record(results, make_record("lora/a", seed=1, accuracy=0.3))
    only_results = agg.load_results([tmp_path / "t"])
    assert sorted(only_results.table["test_accuracy"]) == [0.1, 0.3]
    both = agg.load_results([tmp_path / "t"], include_temporary=True)
    assert both.table[["seed", "test_accuracy"]].values.tolist() == [[0, 0.2], [1, 0.3]]
    assert both.n_superseded == 1
    # the superseded run's curve went with it
    assert set(both.curves["file"]) == set(both.table["file"])
    assert "superseded" in both.summary


def test_same_folder_twice_counts_once(tmp_path):
    results = tmp_path / "t" / "results"
    write_record(results, make_record("lora/a"))
    loaded = agg.load_results([results, tmp_path / "t", results / ".." / "results"])
    assert len(loaded.table) == 1
    assert loaded.n_superseded == 0


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    results = tmp_path / "t" / "results"
    good = write_record(results, make_record("lora/a"))
    (results / "corrupt.json").write_bytes(b"\x00\xff{{{ not json")
    (results / "truncated.json").write_text(good.read_text()[:200])
    (results / "foreign.json").write_text(json.dumps({"name": "package.json", "version": "1.0"}))
    (results / "list.json").write_text("[1, 2, 3]")
    wrong_types = make_record("lora/z")
    wrong_types["run_info"]["peft_config"] = ["not", "an", "object"]
    write_record(results, wrong_types, "wrong-types.json")
    (results / "notes.txt").write_text("ignored: not JSON by name")
    loaded = agg.load_results([results])
    assert loaded.table["experiment_name"].tolist() == ["lora/a"]
    assert loaded.n_files == 6
    for name in ("corrupt.json", "truncated.json", "foreign.json", "list.json", "wrong-types.json"):
        assert sum(name in w for w in loaded.warnings) == 1, (name, loaded.warnings)
    assert all("\n" not in w for w in loaded.warnings)
    assert "5 unreadable" in loaded.summary


def _with(record: dict, where: str, value) -> dict:
    """`record` with the field at dotted path `where` ("final.test accuracy": the final metrics dict)."""
    *parents, key = where.split(".")
    target = record["train_info"]["metrics"][-1] if parents == ["final"] else record
    for part in parents if parents != ["final"] else []:
        target = target[part]
    target[key] = value
    return record


@pytest.mark.parametrize(
    ("where", "value", "reason"),
    [
        ("final.test accuracy", "0.5", "final metric \"test accuracy\" is '0.5' (str); expected a number"),
        ("final.forgetting", True, 'final metric "forgetting" is True (bool); expected a number'),
        ("final.test accuracy math-verify", [0.5], 'final metric "test accuracy math-verify" is [0.5]'),
        ("train_info.train_time", "fast", "train_info.train_time is 'fast' (str); expected a number"),
        ("train_info.accelerator_memory_max", {"gb": 1}, "train_info.accelerator_memory_max is {'gb': 1}"),
        ("run_info.seed", "1", "run_info.seed is '1' (str); expected a whole number"),
        ("run_info.seed", 1.5, "run_info.seed is 1.5 (float); expected a whole number"),
        ("train_info.test_items_hash", 7, "train_info.test_items_hash is 7 (int); expected a non-empty"),
        ("train_info.test_correct", [1, 0], "train_info.test_correct must be a string of 0 and 1, found [1"),
        ("train_info.test_correct", "10x0", "train_info.test_correct must be a string of 0 and 1, found 'x'"),
        # the per-item data gives 0.25, the table would show 0.5: compare and table would disagree
        ("train_info.test_correct", "1000", 'final metric "test accuracy" is 0.5 but train_info.test_corr'),
    ],
)
def test_a_wrongly_typed_field_skips_the_file_naming_field_and_file(tmp_path, where, value, reason):
    results = tmp_path / "t" / "results"
    write_record(results, make_record("lora/good"))
    bad = write_record(results, _with(make_record("lora/bad"), where, value))
    loaded = agg.load_results([results])
    assert loaded.table["experiment_name"].tolist() == ["lora/good"]
    assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith(f"skipped {bad}: {reason}")
    assert "1 unreadable or with a wrongly typed field" in loaded.summary


def test_a_nan_accuracy_with_per_item_data_is_skipped_not_loaded_as_nan(tmp_path):
    results = tmp_path / "t" / "results"
    write_record(results, make_record("lora/a", accuracy=float("nan"), test_correct="1100"))
    loaded = agg.load_results([results])
    assert loaded.table.empty
    assert (
        'final metric "test accuracy" is nan but train_info.test_correct gives 2/4 = 0.5'
        in (loaded.warnings[0])
    )


def test_a_nan_metric_without_per_item_data_is_kept_and_flagged(tmp_path):
    results = tmp_path / "t" / "results"
    path = write_record(results, make_record("lora/a", forgetting=float("inf"), accuracy=float("nan")))
    loaded = agg.load_results([results])
    assert loaded.warnings == []
    assert loaded.not_finite == [
        f'{path}: final metric "test accuracy" is nan (shown as empty)',
        f'{path}: final metric "forgetting" is inf (shown as empty)',
    ]
    assert "2 NaN or infinite values shown as empty" in loaded.summary
    assert loaded.table["test_accuracy"].isna().all()


def test_null_means_not_measured_and_matching_per_item_data_loads(tmp_path):
    results = tmp_path / "t" / "results"
    record = make_record("lora/a", accuracy=0.75, forgetting=None, test_correct="1101", seed=3)
    record["train_info"]["train_time"] = None
    write_record(results, record)
    loaded = agg.load_results([results])
    assert loaded.warnings == [] and loaded.not_finite == []
    row = loaded.table.iloc[0]
    assert (row["test_accuracy"], row["n_test_items"], row["seed"]) == (0.75, 4, 3)
    assert math.isnan(row["train_time"])


def test_empty_and_missing_results_give_an_empty_table(tmp_path):
    (tmp_path / "empty").mkdir()
    loaded = agg.load_results([tmp_path / "empty"])
    assert loaded.table.empty
    assert {"experiment_name", "test_accuracy"} <= set(loaded.table.columns)
    assert loaded.summary == agg.NO_RESULTS
    # a task folder that has experiments but no results/ yet
    (tmp_path / "task" / "experiments").mkdir(parents=True)
    assert agg.load_results([tmp_path / "task"]).summary == agg.NO_RESULTS


def test_a_folder_of_task_folders_means_all_their_results(tmp_path):
    write_record(tmp_path / "benchmarks" / "a" / "results", make_record("lora/x", task="a"))
    write_record(tmp_path / "benchmarks" / "b" / "results", make_record("lora/y", task="b"))
    write_record(tmp_path / "benchmarks" / "b" / "temporary_results", make_record("lora/z", task="b"))
    (tmp_path / "benchmarks" / "notes").mkdir()
    loaded = agg.load_results([tmp_path / "benchmarks"])
    assert loaded.table["experiment_name"].tolist() == ["lora/x", "lora/y"]
    with_temporary = agg.load_results([tmp_path / "benchmarks"], include_temporary=True)
    assert with_temporary.table["experiment_name"].tolist() == ["lora/x", "lora/y", "lora/z"]


def test_missing_path_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no such folder"):
        agg.load_results([tmp_path / "nope"])
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(BadInput, match="not a folder"):
        agg.load_results([tmp_path / "file.json"])


def test_curves(tmp_path):
    write_record(tmp_path / "t" / "results", make_record("lora/a", steps=4, accuracy=0.8))
    curves = agg.load_results([tmp_path / "t"]).curves
    assert curves["step"].tolist() == [10, 20, 30, 40]
    assert curves["train_loss"].tolist() == [2.0, 1.5, 1.0, 0.5]
    assert curves["valid_accuracy"].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert set(curves["experiment_name"]) == {"lora/a"}


def test_seed_summary_uses_the_t_interval_and_wilson(tmp_path):
    results = tmp_path / "t" / "results"
    for seed, acc in enumerate([0.4, 0.5, 0.6]):
        write_record(results, make_record("lora/a", seed=seed, accuracy=acc))
    write_record(results, make_record("ia3/b", accuracy=0.3, test_correct="1110000000"))
    write_record(results, make_record("ia3/c", accuracy=0.3))
    table = agg.load_results([results]).table
    summary = agg.seed_summary(table, COMMON_METRICS).set_index("experiment_name")
    expected = t_interval([0.4, 0.5, 0.6])
    assert summary.loc["lora/a", "n_seeds"] == 3
    assert summary.loc["lora/a", "test_accuracy"] == pytest.approx(expected.mean)
    assert summary.loc["lora/a", "test_accuracy_low"] == pytest.approx(expected.low)
    assert summary.loc["lora/a", "test_accuracy_high"] == pytest.approx(expected.high)
    wilson = wilson_interval(3, 10)
    assert summary.loc["ia3/b", "test_accuracy_low"] == pytest.approx(wilson.low)
    assert summary.loc["ia3/b", "test_accuracy_high"] == pytest.approx(wilson.high)
    # one seed and no per-item results: no interval, not a made-up one
    assert math.isnan(summary.loc["ia3/c", "test_accuracy_low"])
    assert math.isnan(summary.loc["ia3/c", "memory_max_low"])


def test_task_metrics_come_from_the_plugin_or_fall_back_with_a_note():
    metrics, note = agg.task_metrics("no-such-task")
    # the common metrics, then the overhead columns of inference records (present where measured)
    assert metrics == (*COMMON_METRICS, *TABLE_OVERHEAD_METRICS)
    assert "no-such-task" in note


def test_available_metrics_skips_empty_columns():
    df = pd.DataFrame({"test_accuracy": [math.nan], "memory_max": [1.0]})
    assert [m.name for m in agg.available_metrics(df, COMMON_METRICS)] == ["memory_max"]


def test_diff_runs_shows_config_and_metric_differences(tmp_path):
    results = tmp_path / "t" / "results"
    write_record(results, make_record("lora/a", lr=1e-3, accuracy=0.5))
    write_record(results, make_record("lora/b", lr=1e-4, accuracy=0.5))
    table = agg.load_results([results]).table
    diff = agg.diff_runs(table.iloc[0], table.iloc[1]).set_index("key")
    assert diff.loc["train_config.optimizer_kwargs.lr"].tolist() == ["0.001", "0.0001"]
    assert diff.loc["experiment_name"].tolist() == ["lora/a", "lora/b"]
    assert "test_accuracy" not in diff.index  # equal values are left out
    full = agg.diff_runs(table.iloc[0], table.iloc[1], only_differences=False)
    assert "test_accuracy" in set(full["key"])


def test_reference_files_load_unchanged(reference_dir):
    loaded = agg.load_results([reference_dir / "MetaMathQA", reference_dir / "image-gen"])
    assert loaded.warnings == []
    # full fine-tuning has no drift from a base: the reference stores NaN, flagged and kept
    assert [n.rsplit("/", 1)[-1] for n in loaded.not_finite] == [
        'full-finetuning--flux2-klein-default.json: final metric "drift" is nan (shown as empty)'
    ]
    table = loaded.table
    math_runs = table[table["task"] == "MetaMathQA"]
    assert len(math_runs) == len(list((reference_dir / "MetaMathQA" / "results").glob("*.json")))
    assert set(table["task"]) == {"MetaMathQA", "image-gen"}
    assert (table["seed"] == 0).all()
    # values straight from one file
    path = reference_dir / "MetaMathQA" / "results" / "lora--llama-3.2-3B-rank32.json"
    raw = json.loads(path.read_text())
    row = table[table["file"] == str(path.resolve())].iloc[0]
    assert row["memory_max"] == raw["train_info"]["accelerator_memory_max"]
    assert row["test_accuracy"] == raw["train_info"]["metrics"][-1]["test accuracy"]
    assert row["forgetting"] == raw["train_info"]["metrics"][-1]["forgetting"]
    assert row["model_id"] == "meta-llama/Llama-3.2-3B"
    assert math_runs["test_accuracy"].notna().all()
    assert (table.loc[table["method"] == "full-finetuning", "family"] == agg.FULL_FINETUNING).all()
    # the image task's own final metrics become columns without any task-specific code
    images = table[table["task"] == "image-gen"]
    assert images["test_dino_similarity"].notna().all()
    assert images["test_accuracy"].isna().all()
    assert not loaded.curves.empty


# ---- quick and shortened runs: another identity ----------------------------------------------------


@pytest.mark.parametrize(
    ("run_info", "variant"),
    [
        ({}, ""),  # reference format: no quick key, a full run
        ({"quick": False, "cli_overrides": {}}, ""),
        ({"quick": True, "cli_overrides": {}}, "quick"),
        ({"quick": False, "cli_overrides": {"max_steps": 150}}, "max_steps=150"),
        (
            {"quick": True, "cli_overrides": {"optimizer_kwargs": {"lr": 0.001}, "max_steps": 150}},
            "quick, max_steps=150, optimizer_kwargs.lr=0.001",
        ),
        ({"cli_overrides": {"optimizer_kwargs.lr": 0.001}}, "optimizer_kwargs.lr=0.001"),
    ],
)
def test_run_variant_names_quick_runs_and_overrides(run_info, variant):
    assert run_variant(run_info) == variant
    assert labelled("lora/a", variant) == (f"lora/a [{variant}]" if variant else "lora/a")


def _variant_record(experiment, *, quick=False, overrides=None, created_at, **kwargs):
    record = make_record(experiment, created_at=created_at, **kwargs)
    record["run_info"].update(quick=quick, cli_overrides=overrides or {})
    return record


def test_quick_and_shortened_runs_never_supersede_full_runs(tmp_path):
    """The demo's case: a later 150-step quick run must not replace the committed 800-step result."""
    results, temporary = tmp_path / "t" / "results", tmp_path / "t" / "temporary_results"
    write_record(results, _variant_record("full/a", accuracy=0.556, created_at="2026-01-01T00:00:00+00:00"))
    quick = _variant_record("full/a", quick=True, accuracy=0.208, created_at="2026-02-01T00:00:00+00:00")
    write_record(temporary, quick, "full--a--q1.json")
    later_quick = _variant_record("full/a", quick=True, accuracy=0.21, created_at="2026-03-01T00:00:00+00:00")
    write_record(temporary, later_quick, "full--a--q2.json")
    short = _variant_record(
        "full/a", overrides={"max_steps": 5}, accuracy=0.01, created_at="2026-02-01T00:00:00+00:00"
    )
    write_record(temporary, short, "full--a--s.json")
    loaded = agg.load_results([tmp_path / "t"], include_temporary=True)
    rows = loaded.table.set_index("experiment_name")
    assert rows["test_accuracy"].to_dict() == {
        "full/a": 0.556,
        "full/a [max_steps=5]": 0.01,
        "full/a [quick]": 0.21,  # the later quick run supersedes the earlier quick run only
    }
    assert rows["variant"].to_dict() == {
        "full/a": "",
        "full/a [max_steps=5]": "max_steps=5",
        "full/a [quick]": "quick",
    }
    assert set(rows["method"]) == {"full"} and set(rows["name"]) == {"a"}
    assert loaded.n_superseded == 1 and loaded.n_variant_runs == 2
    assert "2 quick or shortened" in loaded.summary and "1 superseded" in loaded.summary
    summary = agg.seed_summary(loaded.table, COMMON_METRICS).set_index("experiment_name")
    assert summary.loc["full/a", "test_accuracy"] == 0.556 and summary.loc["full/a", "n_seeds"] == 1
    assert summary.loc["full/a [quick]", "variant"] == "quick"
    # curves stay with their own run
    assert set(loaded.curves["experiment_name"]) == set(rows.index)
