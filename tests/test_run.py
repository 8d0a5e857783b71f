"""The core run: result files, routing, training-loop invariants, determinism, cancellation, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from toyworld import LORA

from peftbench.cli import main
from peftbench.experiment import load_train_config, resolve_experiment
from peftbench.results import SECTIONS, TrainStatus, load_completions, load_result

# The reference's keys (huggingface/peft method_comparison result files); ours must have all of them.
REFERENCE_KEYS = {
    "run_info": {
        "created_at",
        "total_time",
        "experiment_name",
        "peft_branch",
        "train_config",
        "peft_config",
        "error_msg",
    },
    "train_info": {
        "accelerator_memory_reserved_avg",
        "accelerator_memory_max",
        "accelerator_memory_reserved_99th",
        "train_time",
        "file_size",
        "num_trainable_params",
        "num_total_params",
        "status",
        "metrics",
    },
    "meta_info": {"model_info", "dataset_info", "package_info", "system_info", "pytorch_info"},
}
EVAL_KEYS = {
    "step",
    "valid accuracy",
    "train loss",
    "train samples",
    "train time",
    "eval time",
    "tokens / sec",
    "elapsed time",
}
FINAL_KEYS = {"step", "test accuracy", "train loss", "train samples", "train total tokens", "forgetting"}
TIMING = {"train time", "eval time", "tokens / sec", "elapsed time", "mem allocated avg", "mem reserved avg"}


def result_files(task_dir: Path, kind: str) -> list[Path]:
    return sorted((task_dir / kind).glob("*.json")) if (task_dir / kind).exists() else []


def run_cli(*args: str) -> int:
    return main(["run", *map(str, args)])


def test_lora_run_writes_a_complete_result(task_dir, capsys):
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    [path] = result_files(task_dir, "temporary_results")  # not a git checkout: never a main run
    assert path.name.startswith("lora--toy-rank4--")
    assert result_files(task_dir, "results") == []
    data = load_result(path)
    for section, keys in REFERENCE_KEYS.items():
        assert keys <= set(data[section]), section
    metrics = data["train_info"]["metrics"]
    assert [m["step"] for m in metrics[:-1]] == [2, 4]
    assert all(set(m) >= EVAL_KEYS for m in metrics[:-1])
    assert set(metrics[-1]) >= FINAL_KEYS
    info = data["train_info"]
    assert info["status"] == "success"
    assert info["device"] == "cpu" and info["memory_kind"] == "process_rss"
    assert len(info["test_correct"]) == 16 and set(info["test_correct"]) <= {"0", "1"}
    assert metrics[-1]["test accuracy"] == info["test_correct"].count("1") / 16
    assert info["scoring_version"] == "peftbench-1" and data["schema_version"] == 2
    completions = load_completions(path)
    assert [c["index"] for c in completions] == list(range(16))
    assert all(c["prompt"] and isinstance(c["completion"], str) and c["gold"] for c in completions)
    assert 0 < info["num_trainable_params"] < info["num_total_params"]
    assert info["file_size"] > 0
    assert data["run_info"]["experiment_name"] == "lora/toy-rank4"
    assert data["run_info"]["peft_config"]["peft_type"] == "LORA"
    assert data["meta_info"]["model_info"]["fingerprint"]
    assert len(data["meta_info"]["dataset_info"]["fingerprint"]) == 64
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "success" and summary["result"] == str(path)


def test_without_save_adapter_nothing_but_the_result_is_left(task_dir, tmp_path, monkeypatch, capsys):
    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where an adapter folder would go
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    assert list(temp.iterdir()) == []
    assert "saved in" not in capsys.readouterr().err
    [path] = result_files(task_dir, "temporary_results")
    assert load_result(path)["train_info"]["file_size"] > 0


def test_save_adapter_keeps_it_where_asked_and_measures_those_files(task_dir, tmp_path, capsys):
    folder = tmp_path / "adapters" / "rank4"
    assert run_cli(task_dir / "experiments/lora/toy-rank4", "--save-adapter", folder) == 0
    assert f"adapter saved in {folder}" in capsys.readouterr().err.splitlines()
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    [path] = result_files(task_dir, "temporary_results")
    size = (folder / "adapter_model.safetensors").stat().st_size
    assert load_result(path)["train_info"]["file_size"] == size


@pytest.mark.parametrize("occupied", ["file", "folder with a file"])
def test_save_adapter_refuses_an_occupied_path_before_training(task_dir, tmp_path, capsys, occupied):
    target = tmp_path / "taken"
    if occupied == "file":
        target.write_text("x")
        problem = "is not a folder"
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        problem = "is not empty"
    assert run_cli(task_dir / "experiments/lora/toy-rank4", "--save-adapter", target) == 2
    _assert_one_line_error(capsys, f"--save-adapter {target}: {problem}")
    _assert_nothing_written(task_dir)


def test_result_has_every_key_of_a_reference_file(task_dir, reference_dir):
    reference = json.loads(next((reference_dir / "MetaMathQA" / "results").glob("lora--*.json")).read_text())
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    ours = load_result(result_files(task_dir, "temporary_results")[0])
    for section in SECTIONS:
        assert set(reference[section]) <= set(ours[section]), section
    assert set(reference["train_info"]["metrics"][-1]) <= set(ours["train_info"]["metrics"][-1])


def test_forgetting_baseline_is_the_base_model_even_when_the_init_rewrites_it(task_dir):
    """PiSSA moves principal components out of the base weights: switching the adapter off then is not
    the base model, so the baseline is measured before wrapping (every method the same base loss)."""
    pissa = task_dir / "experiments" / "lora" / "toy-pissa"
    pissa.mkdir()
    (pissa / "adapter_config.json").write_text(json.dumps({**LORA, "init_lora_weights": "pissa"}))
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    assert run_cli(pissa) == 0
    before = {}
    for path in result_files(task_dir, "temporary_results"):
        data = load_result(path)
        before[data["run_info"]["experiment_name"]] = data["train_info"]["metrics"][-1][
            "forgetting loss before"
        ]
    assert before["lora/toy-pissa"] == pytest.approx(before["lora/toy-rank4"], rel=1e-6)


def test_full_finetuning_run(task_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    assert run_cli(task_dir / "experiments/full-finetuning/toy-default", "--save-adapter", folder) == 0
    assert f"model saved in {folder}" in capsys.readouterr().err.splitlines()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    data = load_result(result_files(task_dir, "temporary_results")[0])
    info = data["train_info"]
    assert data["run_info"]["peft_config"] is None
    assert info["num_trainable_params"] == info["num_total_params"]
    # estimated size: float32 parameters
    assert info["file_size"] == 4 * info["num_total_params"]


def test_results_of_the_runner_load_in_the_aggregation(task_dir):
    aggregate = pytest.importorskip("peftbench.analysis.aggregate")
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    loaded = aggregate.load_results([task_dir / "temporary_results"])
    assert loaded.warnings == []
    assert list(loaded.table["experiment_name"]) == ["lora/toy-rank4"]
    assert list(loaded.table["task"]) == ["toytask"]


def _git(root: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=env)


def test_routing_main_run_only_on_clean_main_without_overrides(task_dir):
    root = task_dir.parent.parent
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    exp = task_dir / "experiments/lora/toy-rank4"
    assert run_cli(exp) == 0
    assert [p.name for p in result_files(task_dir, "results")] == ["lora--toy-rank4.json"]
    # a result in results/ does not make the tree dirty for the next run
    assert run_cli(exp, "--seed", "1") == 0
    assert {p.name for p in result_files(task_dir, "results")} == {
        "lora--toy-rank4.json",
        "lora--toy-rank4--seed1.json",
    }
    # a command-line override or the quick variant is never a main run
    assert run_cli(exp, "--set", "max_steps=2") == 0
    assert run_cli(exp, "--quick") == 0
    assert len(result_files(task_dir, "temporary_results")) == 2
    # a dirty tree is never a main run either
    (task_dir / "experiments/lora/toy-rank4/notes.txt").write_text("wip")
    assert run_cli(exp, "--seed", "2") == 0
    assert not (task_dir / "results" / "lora--toy-rank4--seed2.json").exists()


def test_a_reference_parity_experiment_goes_to_parity_results_on_main(task_dir):
    parity = task_dir / "experiments/lora/toy-rank4-reference-parity"
    shutil.copytree(task_dir / "experiments/lora/toy-rank4", parity)
    (parity / "training_params.json").write_text('{"reference_parity": true}')
    root = task_dir.parent.parent
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    assert run_cli(parity) == 0
    assert result_files(task_dir, "results") == []
    [path] = result_files(task_dir, "parity_results")
    assert path.name == "lora--toy-rank4-reference-parity.json"
    assert load_result(path)["run_info"]["train_config"]["reference_parity"] is True
    assert load_completions(path) is not None


def test_a_dotted_set_changes_one_entry_of_the_runs_config(task_dir):
    assert run_cli(task_dir / "experiments/lora/toy-rank4", "--set", "optimizer_kwargs.lr=0.05") == 0
    [path] = result_files(task_dir, "temporary_results")
    run_info = load_result(path)["run_info"]
    assert run_info["train_config"]["optimizer_kwargs"] == {"lr": 0.05, "weight_decay": 0.0}
    assert run_info["cli_overrides"] == {"optimizer_kwargs.lr": 0.05}


def _build(task_dir: Path, experiment: str, **overrides):
    """The model as `execute` prepares it (run.prepare_model), with its config."""
    from peftbench.experiment import load_peft_config
    from peftbench.run import prepare_model
    from peftbench.tasks import get_task

    exp = resolve_experiment(task_dir / "experiments" / experiment)
    config = load_train_config(exp, overrides=overrides)
    data = get_task("toytask").load_data(task_dir=task_dir)
    return prepare_model(exp, config, load_peft_config(exp), data=data), config


def _train(task_dir: Path, prepared, config):
    from peftbench.tasks import get_task
    from peftbench.train import train

    task = get_task("toytask")
    return train(
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        task=task,
        data=task.load_data(task_dir=task_dir),
        config=config,
        device=prepared.device,
        forgetting_loss_before=prepared.forgetting_before,
    )


def test_adapter_weights_change_and_base_weights_do_not(task_dir):
    prepared, config = _build(task_dir, "lora/toy-rank4", max_steps=2, eval_steps=2)
    before = {k: v.clone() for k, v in prepared.model.state_dict().items()}
    assert _train(task_dir, prepared, config).status == TrainStatus.SUCCESS
    after = prepared.model.state_dict()
    lora_b = [k for k in before if "lora_B" in k]
    base = [k for k in before if "lora_" not in k]
    assert lora_b and base
    assert all(not torch.equal(before[k], after[k]) for k in lora_b)
    assert all(torch.equal(before[k], after[k]) for k in base)


def test_gradient_accumulation_matches_one_big_batch(task_dir):
    common = {
        "max_steps": 1,
        "eval_steps": 1,
        "optimizer_type": "SGD",
        "optimizer_kwargs": {"lr": 0.5},
        "lr_scheduler": None,
        "grad_norm_clip": 0.0,
    }
    big, cfg_big = _build(task_dir, "full-finetuning/toy-default", batch_size=8, **common)
    small, cfg_small = _build(
        task_dir, "full-finetuning/toy-default", batch_size=2, gradient_accumulation_steps=4, **common
    )
    start = {k: v.clone() for k, v in big.model.state_dict().items()}
    assert _train(task_dir, big, cfg_big).status == TrainStatus.SUCCESS
    assert _train(task_dir, small, cfg_small).status == TrainStatus.SUCCESS
    moved = 0
    for key, value in big.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, rtol=1e-4, atol=1e-6)
        moved += not torch.equal(value, start[key])
    assert moved > 0


def test_same_config_same_seed_same_metrics(task_dir):
    from peftbench.run import execute

    exp = resolve_experiment(task_dir / "experiments/lora/toy-rank4")
    runs = [execute(exp, write=False).record["train_info"] for _ in range(2)]
    strip = [[{k: v for k, v in m.items() if k not in TIMING} for m in r["metrics"]] for r in runs]
    assert strip[0] == strip[1]
    assert runs[0]["test_correct"] == runs[1]["test_correct"]
    other = execute(exp, seed=1, write=False).record["train_info"]["metrics"]
    assert other[0]["train loss"] != runs[0]["metrics"][0]["train loss"]


@pytest.mark.parametrize(
    "settings",
    [
        {"use_gc": True},
        {"use_amp": True},
        {"optimizer_type": "lora+", "optimizer_kwargs": {"lr": 1e-3, "loraplus_lr_ratio": 16}},
        {"optimizer_type": "lora-fa", "optimizer_kwargs": {"lr": 1e-3}},
        {"generation_kwargs": {"max_length": 20, "max_new_tokens": 100}},
        {"reference_parity": True},
    ],
    ids=["gradient-checkpointing", "amp", "lora+", "lora-fa", "max-length-wins", "reference-parity"],
)
def test_training_options(task_dir, settings):
    exp_dir = task_dir / "experiments/lora/toy-rank4"
    (exp_dir / "training_params.json").write_text(json.dumps({**settings, "max_steps": 2, "eval_steps": 2}))
    assert run_cli(exp_dir) == 0
    data = load_result(result_files(task_dir, "temporary_results")[0])
    assert data["run_info"]["train_config"]["max_steps"] == 2
    # LoRA r=4 on q_proj (32->32) and v_proj (32->16) in 2 layers: A = 2*(4*32 + 4*32), B = 2*(32*4 + 16*4).
    # LoRA-FA freezes A when its optimizer is made, and parameters are counted after that.
    a_params, b_params = 2 * (128 + 128), 2 * (128 + 64)
    expected = b_params if settings.get("optimizer_type") == "lora-fa" else a_params + b_params
    assert data["train_info"]["num_trainable_params"] == expected


def test_max_length_and_max_new_tokens_smaller_total_wins():
    from transformers import AutoTokenizer  # noqa: F401  (only to mirror the runner's import)

    from peftbench.evaluation import generation_config

    class Tok:
        pad_token_id = eos_token_id = 0

    config = generation_config(
        prompt_length=10, generation_kwargs={"max_length": 50, "max_new_tokens": 5}, tokenizer=Tok()
    )
    assert config.max_length == 15 and config.max_new_tokens is None
    config = generation_config(
        prompt_length=10, generation_kwargs={"max_length": 12, "max_new_tokens": 5}, tokenizer=Tok()
    )
    assert config.max_length == 12


def test_adalora_calls_update_and_allocate(task_dir, monkeypatch):
    from peft.tuners.adalora import AdaLoraModel

    calls = []
    original = AdaLoraModel.update_and_allocate
    monkeypatch.setattr(
        AdaLoraModel, "update_and_allocate", lambda self, step: (calls.append(step), original(self, step))
    )
    exp_dir = task_dir / "experiments/adalora/toy-default"
    exp_dir.mkdir(parents=True)
    (exp_dir / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "ADALORA",
                "target_modules": ["q_proj", "v_proj"],
                "init_r": 4,
                "target_r": 2,
                "total_step": 4,
                "tinit": 1,
                "tfinal": 1,
                "task_type": "CAUSAL_LM",
            }
        )
    )
    assert run_cli(exp_dir) == 0
    assert calls == [1, 2, 3, 4]


@pytest.mark.parametrize("kasa", [True, False])
def test_kasa_regularizers_join_the_loss_once_per_step(task_dir, monkeypatch, kasa):
    from peft.tuners.lora import LoraModel

    calls = []
    original = LoraModel._get_kasa_loss
    monkeypatch.setattr(LoraModel, "_get_kasa_loss", lambda self: (calls.append(1), original(self))[1])
    exp_dir = task_dir / "experiments/lora/toy-kasa"
    exp_dir.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}
    if kasa:
        config["kasa_config"] = {"beta": 1e-4, "gamma": 1e-3}
    (exp_dir / "adapter_config.json").write_text(json.dumps(config))
    (exp_dir / "training_params.json").write_text(json.dumps({"gradient_accumulation_steps": 2}))
    assert run_cli(exp_dir) == 0
    [path] = result_files(task_dir, "temporary_results")
    steps = load_result(path)["run_info"]["train_config"]["max_steps"]
    assert len(calls) == (2 * steps if kasa else 0)  # one call per micro-batch, each weighted 1/2


def test_ctrl_c_lands_in_cancelled_results(task_dir, monkeypatch):
    import peftbench.train

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(peftbench.train, "evaluate_accuracy", interrupt)
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 1
    [path] = result_files(task_dir, "cancelled_results")
    data = load_result(path)
    assert data["train_info"]["status"] == "canceled"
    assert data["run_info"]["error_msg"] == "manually canceled"
    assert len(data["train_info"]["metrics"]) == 0
    assert result_files(task_dir, "results") == [] and result_files(task_dir, "temporary_results") == []


def test_non_finite_loss_stops_at_once(task_dir, monkeypatch):
    import peftbench.run

    original = peftbench.run._adapt

    def poisoned(*args, **kwargs):
        model = original(*args, **kwargs)
        model.get_output_embeddings().register_forward_hook(lambda m, i, out: out * float("nan"))
        return model

    monkeypatch.setattr(peftbench.run, "_adapt", poisoned)
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 1
    data = load_result(result_files(task_dir, "cancelled_results")[0])
    assert data["train_info"]["status"] == "canceled"
    assert "non-finite training loss" in data["run_info"]["error_msg"]
    assert "at step 1" in data["run_info"]["error_msg"]
    assert result_files(task_dir, "results") == []


BAD_TRAINING_PARAMS = [
    ("{not json", "malformed JSON at line 1"),
    ('{"max_step": 10}', 'unknown key "max_step" (did you mean "max_steps"?)'),
    ('{"batch_size": "4"}', '"batch_size" must be integer, got "4"'),
    ('{"lr_scheduler": "linear"}', '"lr_scheduler" must be "cosine" | null, got "linear"'),
    ('{"eval_steps": 100}', '"eval_steps" (100) must not exceed "max_steps" (4)'),
    ('{"optimizer_type": "Adamw"}', '(did you mean "AdamW"?)'),
    ('{"query_template": "no placeholder"}', 'must contain "{query}"'),
    ('{"gradient_accumulation_steps": 0}', '"gradient_accumulation_steps" must be a positive integer'),
    ("[1, 2]", "must hold a JSON object"),
]


@pytest.mark.parametrize(("content", "message"), BAD_TRAINING_PARAMS, ids=[m for _, m in BAD_TRAINING_PARAMS])
def test_bad_training_params(task_dir, capsys, content, message):
    exp_dir = task_dir / "experiments/lora/toy-rank4"
    (exp_dir / "training_params.json").write_text(content)
    assert run_cli(exp_dir) == 2
    _assert_one_line_error(capsys, message, where="training_params.json")
    _assert_nothing_written(task_dir)


BAD_ADAPTER_CONFIGS = [
    ({"peft_type": "LORAX", "r": 4}, 'unknown or missing "peft_type" \'LORAX\' (did you mean "LORA"?)'),
    ({"r": 4}, 'unknown or missing "peft_type" None'),
    ({**LORA, "target_modules": ["nonexistent_proj"]}, "does not fit the model"),
]


@pytest.mark.parametrize(
    ("config", "message"), BAD_ADAPTER_CONFIGS, ids=["unknown-type", "no-type", "no-target"]
)
def test_bad_adapter_config(task_dir, capsys, config, message):
    exp_dir = task_dir / "experiments/lora/toy-rank4"
    (exp_dir / "adapter_config.json").write_text(json.dumps(config))
    assert run_cli(exp_dir) == 2
    _assert_one_line_error(capsys, message)
    _assert_nothing_written(task_dir)


def test_bad_paths(task_dir, tmp_path, capsys):
    cases = [
        (task_dir / "experiments/lora/../lora/toy-rank4", "must not contain '..'"),
        (task_dir / "experiments/lora/missing", "no such experiment folder"),
        (task_dir / "experiments/lora", "not an experiment folder"),
        (task_dir / "default_training_params.json", "not a folder"),
    ]
    link = task_dir / "experiments/lora/linked"
    link.symlink_to(tmp_path, target_is_directory=True)
    cases.append((link, "symbolic link"))
    for path, message in cases:
        assert run_cli(path) == 2, path
        _assert_one_line_error(capsys, message)
    (task_dir / "experiments/lora/toy-rank2").mkdir()
    suggestions = [
        ("experiments/lora/toy-rnak4", "experiments/lora/toy-rank4"),  # a typo in the name
        ("experiments/lroa/toy-rank4", "experiments/lora/toy-rank4"),  # in the method
        ("experimnts/lora/toy-rank2", "experiments/lora/toy-rank2"),  # above the method
        ("experiments/full-fine-tuning/toy-default", "experiments/full-finetuning/toy-default"),
    ]
    for typo, meant in suggestions:
        assert run_cli(task_dir / typo) == 2, typo
        _assert_one_line_error(capsys, f'no such experiment folder (did you mean "{task_dir / meant}"?)')
    assert run_cli(task_dir / "experiments/lora/zzzzzzzz") == 2
    err = capsys.readouterr().err
    assert "zzzzzzzz: no such experiment folder" in err and "did you mean" not in err  # nothing close
    (task_dir / "default_training_params.json").unlink()
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 2
    _assert_one_line_error(capsys, "has no default_training_params.json")
    _assert_nothing_written(task_dir)


def test_unknown_model_is_bad_input(task_dir, capsys):
    exp_dir = task_dir / "experiments/lora/toy-rank4"
    (exp_dir / "training_params.json").write_text(json.dumps({"model_id": str(task_dir / "no-such-model")}))
    assert run_cli(exp_dir) == 2
    _assert_one_line_error(capsys, 'model_id "')


def _assert_one_line_error(capsys, message: str, where: str = "") -> None:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("peftbench run: error:")]
    assert len(errors) == 1, err
    assert message in errors[0], errors[0]
    assert where in errors[0]
    assert not any("Traceback" in line for line in err)


def _assert_nothing_written(task_dir: Path) -> None:
    for kind in ("results", "temporary_results", "cancelled_results"):
        assert result_files(task_dir, kind) == [], kind


def test_a_busy_accelerator_stops_the_run_before_loading(monkeypatch):
    from peftbench import modeling
    from peftbench.errors import RunFailed

    class FakeCuda:
        @staticmethod
        def mem_get_info():
            return 1 * 2**30, 80 * 2**30  # 79 GiB used by someone else

    monkeypatch.setattr(torch, "cuda", FakeCuda)
    with pytest.raises(RunFailed, match="80896 MiB in use"):
        modeling.check_accelerator_free("cuda")
    modeling.check_accelerator_free("cpu")  # nothing to check on a CPU


# --- the warning before a long CPU run -------------------------------------------------------------------


def test_cpu_time_estimate_counts_flops_per_parameter_and_token(monkeypatch):
    from peftbench import modeling

    monkeypatch.setattr(modeling, "CPU_FLOPS_PER_THREAD", 1e10)
    estimate = modeling.estimated_cpu_seconds
    assert estimate(num_params=10**9, train_tokens=10**6, eval_tokens=0, threads=1) == pytest.approx(6e5)
    assert estimate(num_params=10**9, train_tokens=0, eval_tokens=10**6, threads=1) == pytest.approx(2e5)
    assert estimate(num_params=10**9, train_tokens=10**6, eval_tokens=10**6, threads=4) == pytest.approx(2e5)


def test_the_cpu_throughput_matches_the_committed_tinymath_runs():
    """The documented throughput predicts the committed CPU runs' train time within a factor of 3."""
    from peftbench import modeling

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "tinymath" / "results"
    records = [load_result(p) for p in results.glob("*.json")]
    assert len(records) > 10
    for record in records:
        info = record["train_info"]
        threads = record["meta_info"]["system_info"]["torch_threads"]
        tokens = info["metrics"][-1]["train total tokens"]
        estimate = modeling.estimated_cpu_seconds(
            num_params=info["num_total_params"], train_tokens=tokens, eval_tokens=0, threads=threads
        )
        assert 1 / 3 < estimate / info["train_time"] < 3, record["run_info"]["experiment_name"]


def test_slow_cpu_warning_only_past_an_hour():
    from peftbench.modeling import slow_cpu_warning

    llama_3b = 3_212_749_824
    full = slow_cpu_warning(num_params=llama_3b, train_tokens=5e6, eval_tokens=5e5, steps=5000, threads=2)
    assert full.startswith("warning: this run of a 3.2B-parameter model on a CPU with 2 thread(s)")
    assert "roughly 8 days: 5000 training steps (about 5M tokens)" in full and "--quick" in full
    assert "\n" not in full
    assert (
        slow_cpu_warning(num_params=2_000_000, train_tokens=1e6, eval_tokens=1e5, steps=800, threads=1)
        is None
    )


def test_a_long_cpu_run_warns_with_its_estimate(task_dir, monkeypatch, capsys):
    from peftbench import modeling

    seen = []
    real = modeling.slow_cpu_warning
    monkeypatch.setattr(modeling, "slow_cpu_warning", lambda **kw: seen.append(kw) or real(**kw))
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    assert "warning: this run" not in capsys.readouterr().err  # a toy run takes seconds
    [path] = result_files(task_dir, "temporary_results")
    actual = load_result(path)["train_info"]["metrics"][-1]["train total tokens"]
    assert seen[0]["train_tokens"] == pytest.approx(actual, rel=0.3)  # estimated from a sample

    monkeypatch.setattr(modeling, "CPU_FLOPS_PER_THREAD", 1.0)  # a very slow CPU
    assert run_cli(task_dir / "experiments/lora/toy-rank4") == 0
    err = capsys.readouterr().err.splitlines()
    [warning] = [line for line in err if line.startswith("warning: this run of a")]
    assert "on a CPU with" in warning and "4 training steps" in warning
