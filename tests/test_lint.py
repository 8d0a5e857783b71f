"""`peftbench lint`: each rule with a folder that triggers it and one that does not; the reference suite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from peft import IA3Config, LoraConfig, PromptTuningConfig

from peftbench.cli import main as cli_main
from peftbench.experiment import config_hashes, load_peft_config, load_train_config, resolve_experiment
from peftbench.maintainer.lint import Finding, lint, near_duplicate

# A registered task, so that the naming rule has a base-model short name ("llama-3.2-3B"). Lint never
# loads a model or data, so the defaults only have to be a valid config.
TASK = "MetaMathQA"
PREFIX = "llama-3.2-3B"
DEFAULTS = {
    "model_id": "tiny/llama",
    "dtype": "float32",
    "max_seq_length": 64,
    "batch_size": 4,
    "batch_size_eval": 8,
    "max_steps": 20,
    "eval_steps": 10,
    "compile": False,
    "use_gc": False,
    "query_template": "Q: {query}\nA:",
    "seed": 0,
    "grad_norm_clip": 1.0,
    "optimizer_type": "AdamW",
    "optimizer_kwargs": {"lr": 1e-3, "weight_decay": 0.1},
    "lr_scheduler": None,
    "use_amp": False,
    "autocast_adapter_dtype": True,
    "generation_kwargs": {"max_new_tokens": 8},
    "attn_implementation": None,
    "init_kv_cache_prefix": None,
}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def task(tmp_path: Path) -> Path:
    task_dir = tmp_path / TASK
    write_json(task_dir / "default_training_params.json", DEFAULTS)
    (task_dir / "experiments").mkdir()
    return task_dir


def add_experiment(
    task_dir: Path,
    name: str,
    *,
    peft_config: Any = None,
    params: dict[str, Any] | None = None,
    adapter_json: dict[str, Any] | None = None,
) -> Path:
    """An experiment folder; adapter_config.json written by peft itself (or raw JSON for broken ones)."""
    folder = task_dir / "experiments" / name
    folder.mkdir(parents=True)
    if peft_config is not None:
        peft_config.save_pretrained(str(folder))
    if adapter_json is not None:
        write_json(folder / "adapter_config.json", adapter_json)
    if params is not None:
        write_json(folder / "training_params.json", params)
    return folder


def lora(r: int = 8, **kwargs: Any) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=16, target_modules=["q_proj", "v_proj"], **kwargs)


def add_result(folder: Path, *, hashes: bool = True, **run_info_changes: Any) -> Path:
    """The result `peftbench run` would write for this folder now: resolved configs as the runner
    records them, with the keys peft fills at run time filled."""
    exp = resolve_experiment(folder)
    peft_config = load_peft_config(exp)
    peft_dict = None
    if peft_config is not None:
        peft_dict = json.loads(json.dumps(peft_config.to_dict(), default=sorted))
        peft_dict.update(base_model_name_or_path="tiny/llama", inference_mode=False)
    run_info = {
        "experiment_name": exp.experiment_name,
        "train_config": load_train_config(exp).to_dict(),
        "peft_config": peft_dict,
        "error_msg": "",
        **({"config_files_sha256": config_hashes(exp)} if hashes else {}),
        **run_info_changes,
    }
    record = {
        "schema_version": 1,
        "run_info": run_info,
        "train_info": {"status": "success", "metrics": [{"step": 20, "test accuracy": 0.5}]},
        "meta_info": {},
    }
    return write_json(exp.result_path(kind="results", seed=run_info["train_config"]["seed"]), record)


def rules(findings: list[Finding], *, level: str | None = None) -> list[str]:
    return sorted(f.rule for f in findings if level is None or f.level == level)


def only(findings: list[Finding], rule: str) -> Finding:
    matching = [f for f in findings if f.rule == rule]
    assert len(matching) == 1, findings
    return matching[0]


# --- a clean task -----------------------------------------------------------------------------------


def test_clean_task_has_no_findings(task: Path) -> None:
    add_experiment(
        task, f"lora/{PREFIX}-rank8", peft_config=lora(8), params={"optimizer_kwargs": {"lr": 3e-3}}
    )
    add_experiment(task, f"ia3/{PREFIX}-default", peft_config=IA3Config(target_modules=["k_proj"]))
    add_experiment(task, f"full-finetuning/{PREFIX}-lr1e-5", params={"optimizer_kwargs": {"lr": 1e-5}})
    add_result(task / "experiments" / "lora" / f"{PREFIX}-rank8")
    add_result(task / "experiments" / "full-finetuning" / f"{PREFIX}-lr1e-5")
    assert lint([task]) == []


# --- adapter_config.json ----------------------------------------------------------------------------


def test_malformed_adapter_config_is_an_error(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-x")
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA",', encoding="utf-8")
    finding = only(lint([folder]), "adapter-config")
    assert finding.level == "error"
    assert finding.path.endswith("adapter_config.json")
    assert "malformed JSON at line 1" in finding.message


def test_unknown_peft_type_is_an_error_with_a_suggestion(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-x", adapter_json={"peft_type": "LORRA", "r": 8})
    finding = only(lint([folder]), "adapter-config")
    assert finding.level == "error"
    assert '"LORRA"' in finding.message and 'did you mean "LORA"' in finding.message


def test_unknown_key_with_a_value_is_an_error_naming_it(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora())
    raw = json.loads((folder / "adapter_config.json").read_text())
    raw["lora_alhpa"] = 32  # a typo peft would silently drop
    write_json(folder / "adapter_config.json", raw)
    finding = only(lint([folder]), "unknown-peft-key")
    assert finding.level == "error"
    assert '"lora_alhpa"' in finding.message and 'did you mean "lora_alpha"' in finding.message
    assert "32" in finding.message


def test_unknown_key_with_an_empty_value_is_a_warning(task: Path) -> None:
    # the reference's c3a/oft/unilora configs carry such keys (fan_in_fan_out: false, rank_pattern: {})
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora())
    raw = json.loads((folder / "adapter_config.json").read_text())
    raw.update(old_pattern={}, old_flag=False)
    write_json(folder / "adapter_config.json", raw)
    findings = lint([folder])
    assert rules(findings) == ["unknown-peft-key", "unknown-peft-key"]
    assert {f.level for f in findings} == {"warning"}


def test_unknown_key_from_a_newer_peft_is_a_warning_to_upgrade(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora())
    raw = json.loads((folder / "adapter_config.json").read_text())
    raw.update(peft_version="99.0.0", brand_new_option=3)
    write_json(folder / "adapter_config.json", raw)
    finding = only(lint([folder]), "unknown-peft-key")
    assert finding.level == "warning"
    assert "upgrade peft" in finding.message and "99.0.0" in finding.message


def test_config_that_peft_rejects_is_an_error(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora())
    raw = json.loads((folder / "adapter_config.json").read_text())
    raw["init_lora_weights"] = "loftq"  # needs a loftq_config: LoraConfig.__post_init__ raises
    write_json(folder / "adapter_config.json", raw)
    finding = only(lint([folder]), "adapter-config")
    assert finding.level == "error"
    assert "loftq" in finding.message


# --- training_params.json ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_step": 10}, 'unknown key "max_step" (did you mean "max_steps"?)'),
        ({"batch_size": 0}, '"batch_size" must be a positive integer, got 0'),
        ({"optimizer_kwargs": {"weight_decay": 0.0}}, '"optimizer_kwargs" must contain "lr"'),
    ],
)
def test_bad_training_params_are_errors(task: Path, params: dict[str, Any], expected: str) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora(), params=params)
    finding = only(lint([folder]), "training-params")
    assert finding.level == "error"
    assert finding.path.endswith("training_params.json")
    assert expected in finding.message


def test_bad_task_defaults_are_an_error_on_the_defaults_file(task: Path) -> None:
    write_json(task / "default_training_params.json", {**DEFAULTS, "eval_steps": 100})
    finding = only(lint([task]), "training-params")
    assert finding.path.endswith("default_training_params.json")
    assert '"eval_steps" (100) must not exceed "max_steps" (20)' in finding.message


@pytest.mark.parametrize("key", ["model_id", "max_steps", "batch_size", "gradient_accumulation_steps"])
def test_changing_what_is_compared_is_a_not_comparable_warning(task: Path, key: str) -> None:
    value = {"model_id": "other/model", "max_steps": 40, "batch_size": 8, "gradient_accumulation_steps": 2}[
        key
    ]
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora(), params={key: value})
    finding = only(lint([folder]), "not-comparable")
    assert finding.level == "warning"
    assert f'"{key}"' in finding.message


def test_restating_a_default_is_not_a_change(task: Path) -> None:
    # the reference's adamss experiment restates model_id, max_steps, batch_size, ... at their defaults
    params = {k: DEFAULTS[k] for k in ("model_id", "max_steps", "batch_size", "eval_steps")}
    params["gradient_accumulation_steps"] = 1  # TrainConfig's own default, absent from the defaults file
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora(), params=params)
    assert lint([folder]) == []


def test_more_than_two_changes_is_a_warning(task: Path) -> None:
    params = {"optimizer_kwargs": {"lr": 3e-3}, "use_gc": True, "grad_norm_clip": 0.5}
    folder = add_experiment(task, f"lora/{PREFIX}-x", peft_config=lora(), params=params)
    finding = only(lint([folder]), "too-many-changes")
    assert finding.level == "warning"
    assert "3 training parameters" in finding.message and "grad_norm_clip" in finding.message

    two = add_experiment(
        task, f"lora/{PREFIX}-y", peft_config=lora(16), params=dict(list(params.items())[:2])
    )
    assert lint([two]) == []


# --- near-duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [
        ({"adapter.r": 32}, {"adapter.r": 30}, True),
        ({"adapter.r": 32}, {"adapter.r": 28}, False),  # 12.5% apart
        ({"adapter.r": 32}, {"adapter.r": 32}, True),  # the same experiment twice
        ({"adapter.r": 32, "adapter.lora_alpha": 64}, {"adapter.r": 31, "adapter.lora_alpha": 62}, False),
        ({"training.optimizer_kwargs.lr": 1e-4}, {"training.optimizer_kwargs.lr": 1.05e-4}, True),
        ({"adapter.sparsity": 0.974}, {"adapter.sparsity": 0.9935}, False),  # keeps 4x the weights
        ({"adapter.lora_dropout": 0.05}, {"adapter.lora_dropout": 0.052}, True),
        ({"adapter.use_dora": True}, {"adapter.use_dora": False}, False),  # not a number
        ({"adapter.target_modules": ["q"]}, {"adapter.target_modules": ["v"]}, False),
    ],
)
def test_near_duplicate_cases(a: dict[str, Any], b: dict[str, Any], near: bool) -> None:
    assert (near_duplicate(a, b) is not None) is near
    assert (near_duplicate(b, a) is not None) is near


def test_near_duplicate_experiments_warn_naming_each_other(task: Path) -> None:
    add_experiment(task, f"lora/{PREFIX}-rank32", peft_config=lora(32))
    add_experiment(task, f"lora/{PREFIX}-rank31", peft_config=lora(31))
    add_experiment(task, f"lora/{PREFIX}-rank64", peft_config=lora(64))
    # same numbers but another method: not a duplicate of anything
    add_experiment(task, f"loha/{PREFIX}-rank31", adapter_json={"peft_type": "LOHA", "r": 31, "alpha": 16})
    findings = [f for f in lint([task]) if f.rule == "near-duplicate"]
    assert len(findings) == 2
    by_path = {Path(f.path).name: f.message for f in findings}
    assert f"lora/{PREFIX}-rank31" in by_path[f"{PREFIX}-rank32"]
    assert f"lora/{PREFIX}-rank32" in by_path[f"{PREFIX}-rank31"]
    assert "differs only in r (32 vs 31" in by_path[f"{PREFIX}-rank32"]
    assert all(f.level == "warning" for f in findings)


# --- edited experiments -----------------------------------------------------------------------------


def test_editing_an_experiment_with_a_result_is_an_error(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    result = add_result(folder)
    assert lint([folder]) == []
    lora(16).save_pretrained(str(folder))
    finding = only(lint([folder]), "edited-experiment")
    assert finding.level == "error"
    assert "create a new experiment instead" in finding.message
    assert "r (recorded 8, now 16)" in finding.message
    assert result.name in finding.message


def test_editing_training_params_with_a_result_is_an_error(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(folder)
    write_json(folder / "training_params.json", {"optimizer_kwargs": {"lr": 3e-3}})
    finding = only(lint([folder]), "edited-experiment")
    assert "training optimizer_kwargs" in finding.message


def test_editing_the_task_defaults_is_an_edit_of_every_experiment_with_results(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(folder)
    write_json(task / "default_training_params.json", {**DEFAULTS, "use_gc": True})
    finding = only(lint([task]), "edited-experiment")
    assert "training use_gc (recorded false, now true)" in finding.message


def test_switching_to_full_finetuning_is_an_edit(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(folder)
    (folder / "adapter_config.json").unlink()
    assert 'now "full fine-tuning"' in only(lint([folder]), "edited-experiment").message


def test_equivalent_rewrites_are_not_edits(task: Path) -> None:
    """Hashes differ, meaning does not: key order, whitespace, a default written out, a list reordered,
    keys peft fills at run time, another seed."""
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(folder)
    add_result(
        folder,
        hashes=False,
        train_config={**load_train_config(resolve_experiment(folder)).to_dict(), "seed": 1},
    )
    raw = json.loads((folder / "adapter_config.json").read_text())
    raw = dict(reversed(list(raw.items())))
    raw["target_modules"] = ["v_proj", "q_proj"]
    raw["peft_version"] = "0.0.1"
    raw["base_model_name_or_path"] = "somewhere/else"
    (folder / "adapter_config.json").write_text(json.dumps(raw), encoding="utf-8")
    write_json(folder / "training_params.json", {"max_seq_length": DEFAULTS["max_seq_length"]})
    assert lint([folder]) == []


def test_null_target_modules_filled_at_run_time_are_not_an_edit(task: Path) -> None:
    folder = add_experiment(task, f"ia3/{PREFIX}-default", peft_config=IA3Config())
    add_result(folder, hashes=False)
    record_path = task / "results" / f"ia3--{PREFIX}-default.json"
    record = json.loads(record_path.read_text())
    record["run_info"]["peft_config"].update(
        target_modules=["k_proj", "v_proj"], feedforward_modules=["down_proj"]
    )
    write_json(record_path, record)
    assert lint([folder]) == []


def test_model_shape_of_prompt_learning_configs_is_filled_at_run_time(task: Path) -> None:
    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4, token_dim=64, num_attention_heads=4
    )
    folder = add_experiment(task, f"prompt_tuning/{PREFIX}-default", peft_config=config)
    record_path = add_result(folder, hashes=False)
    record = json.loads(record_path.read_text())
    record["run_info"]["peft_config"].update(token_dim=16, num_attention_heads=1, num_layers=2)
    write_json(record_path, record)
    assert lint([folder]) == []
    record["run_info"]["peft_config"]["num_virtual_tokens"] = 8
    write_json(record_path, record)
    assert "num_virtual_tokens" in only(lint([folder]), "edited-experiment").message


def test_peft_default_drift_is_a_warning_not_an_edit(task: Path) -> None:
    """A key the file does not set, recorded by another peft version with another default."""
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", adapter_json={"peft_type": "LORA", "r": 8})
    record_path = add_result(folder, hashes=False)
    record = json.loads(record_path.read_text())
    record["run_info"]["peft_config"].update(peft_version="0.10.0", lora_dropout=0.1)
    write_json(record_path, record)
    finding = only(lint([folder]), "peft-default-drift")
    assert finding.level == "warning"
    assert "lora_dropout" in finding.message and "0.10.0" in finding.message
    # the same difference under the installed peft can only come from an edit of the file
    import peft

    record["run_info"]["peft_config"]["peft_version"] = peft.__version__
    write_json(record_path, record)
    assert only(lint([folder]), "edited-experiment").level == "error"


def test_matching_hashes_are_trusted(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    record_path = add_result(folder)
    record = json.loads(record_path.read_text())
    record["run_info"]["train_config"]["max_steps"] = 12345  # would be an edit without the fast path
    write_json(record_path, record)
    assert lint([folder]) == []


def test_temporary_results_are_not_checked_for_edits(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    record_path = add_result(folder)
    (task / "temporary_results").mkdir()
    shutil.move(record_path, task / "temporary_results" / f"lora--{PREFIX}-rank8--2026-01-01T00-00-00.json")
    lora(16).save_pretrained(str(folder))
    assert lint([task]) == []


# --- naming, orphans, result files ------------------------------------------------------------------


def test_name_without_the_base_model_prefix_is_a_warning(task: Path) -> None:
    folder = add_experiment(task, "lora/rank8", peft_config=lora(8))
    add_experiment(task, f"lora/{PREFIX}-rank64", peft_config=lora(64))
    finding = only(lint([task]), "naming")
    assert finding.level == "warning"
    assert finding.path.endswith(str(Path("lora") / "rank8"))
    assert f'"{PREFIX}"' in finding.message
    assert folder.exists()


def test_result_without_an_experiment_folder_is_an_orphan(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(folder)
    gone = add_experiment(task, f"lora/{PREFIX}-gone", peft_config=lora(64))
    record_path = add_result(gone)
    shutil.rmtree(gone)
    finding = only(lint([task]), "orphan")
    assert finding.level == "warning"
    assert finding.path.endswith(record_path.name)
    assert f"lora/{PREFIX}-gone" in finding.message
    assert lint([folder]) == []  # orphans are a task-level check


def test_broken_result_file_is_an_error(task: Path) -> None:
    add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    write_json(task / "results" / f"lora--{PREFIX}-rank8.json", {"run_info": {}})
    finding = only(lint([task]), "result-file")
    assert finding.level == "error"
    assert 'missing section "train_info"' in finding.message


def test_result_with_a_malformed_config_is_an_error(task: Path) -> None:
    folder = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(folder, hashes=False, peft_config="r=8")
    finding = only(lint([folder]), "result-file")
    assert finding.message == "run_info.peft_config is not an object"


# --- the command ------------------------------------------------------------------------------------


def test_command_exit_codes_and_text_format(task: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    assert cli_main(["lint", str(good)]) == 0
    assert capsys.readouterr().out == ""

    warned = add_experiment(task, "lora/rank64", peft_config=lora(64))
    assert cli_main(["lint", str(warned)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{warned}: warning: ")  # outside the working directory: absolute
    assert out.endswith("[naming]") and len(out.splitlines()) == 1

    bad = add_experiment(task, f"lora/{PREFIX}-bad", peft_config=lora(4), params={"max_step": 1})
    assert cli_main(["lint", str(task)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(": error: " in line and "training_params.json" in line for line in lines)
    assert bad.exists()


def test_command_json_format(task: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_experiment(task, f"lora/{PREFIX}-bad", peft_config=lora(4), params={"max_step": 1})
    assert cli_main(["lint", str(task), "--format", "json"]) == 1
    findings = json.loads(capsys.readouterr().out)
    assert [(f["level"], f["rule"]) for f in findings] == [("error", "training-params")]
    assert set(findings[0]) == {"path", "level", "rule", "message"}


def test_method_folder_lints_its_experiments(task: Path) -> None:
    add_experiment(task, "lora/rank8", peft_config=lora(8))
    add_experiment(task, "lora/rank64", peft_config=lora(64))
    add_experiment(task, "ia3/default", peft_config=IA3Config(target_modules=["k_proj"]))
    assert len(lint([task / "experiments" / "lora"])) == 2  # two naming warnings, not ia3's


@pytest.mark.parametrize("where", ["missing", "file", "not-experiment"])
def test_bad_paths_exit_2(task: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = {
        "missing": task / "nope",
        "file": write_json(task / "notes.json", {}),
        "not-experiment": task.parent,
    }[where]
    assert cli_main(["lint", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftbench lint: error: ") and str(path) in err and len(err.splitlines()) == 1


# --- the reference suite ----------------------------------------------------------------------------


def test_reference_experiments_and_results_lint_without_errors(reference_dir: Path, tmp_path: Path) -> None:
    """The reference's 70+ experiments and 63 results, as its users would bring them: no errors. Its
    known quirks are warnings: keys that today's peft dropped with empty values, a peft default that
    changed since the run (OSF init_weights), two supertuning runs whose sparsity differs by 2%
    (near by value, but not by the kept fraction: not flagged)."""
    task_dir = tmp_path / "MetaMathQA"
    shutil.copytree(reference_dir / "MetaMathQA", task_dir)
    findings = lint([task_dir])
    assert [f for f in findings if f.level == "error"] == []
    assert {f.rule for f in findings} <= {"unknown-peft-key", "peft-default-drift"}
    assert any("c3a" in f.path and "fan_in_fan_out" in f.message for f in findings)

    # and the rules do fire on the same data once it is edited
    lora_dir = task_dir / "experiments" / "lora" / "llama-3.2-3B-rank32"
    raw = json.loads((lora_dir / "adapter_config.json").read_text())
    raw["r"] = 16
    write_json(lora_dir / "adapter_config.json", raw)
    assert rules(lint([lora_dir]), level="error") == ["edited-experiment"]


def test_command_ends_with_a_summary_line_on_stderr(task: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = add_experiment(task, f"lora/{PREFIX}-rank8", peft_config=lora(8))
    add_result(good)
    add_experiment(task, "lora/rank64", peft_config=lora(64))  # a naming warning
    assert cli_main(["lint", str(task)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1].startswith(
        "lint: 2 experiments and 1 result file checked, 0 errors, 1 warning in "
    )
    assert captured.err.rstrip().endswith(" s")
    assert len(captured.out.splitlines()) == 1  # the warning; stdout holds findings only

    add_experiment(task, f"lora/{PREFIX}-bad", peft_config=lora(4), params={"max_step": 1})
    assert cli_main(["lint", str(task), "--format", "json"]) == 1
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2  # still one JSON document
    assert "lint: 3 experiments and 1 result file checked, 1 error, 1 warning in " in captured.err


def test_check_counts_what_it_read_and_shows_each_experiment_to_progress(task: Path) -> None:
    from peftbench.maintainer.lint import check

    for r in (4, 8):
        add_result(add_experiment(task, f"lora/{PREFIX}-rank{r}", peft_config=lora(r)))
    seen: list[tuple[str, str]] = []

    def progress(experiments, name):
        for exp in experiments:
            seen.append((name, exp.experiment_name))
            yield exp

    run = check([task / "experiments" / "lora" / f"{PREFIX}-rank4"], progress=progress)
    # one experiment asked for; all of the task's are loaded (near-duplicates), and all results read
    assert (run.experiments, run.results) == (1, 2)
    assert seen == [(TASK, f"lora/{PREFIX}-rank4"), (TASK, f"lora/{PREFIX}-rank8")]
    assert run.findings == lint([task / "experiments" / "lora" / f"{PREFIX}-rank4"])
