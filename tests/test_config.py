"""`--set` overrides (dotted keys for objects) and `peftbench config EXP`'s preview with value sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toyworld import DEFAULTS, make_task_dir, register_toy_task

from peftbench.cli import main
from peftbench.config import build_config, parse_overrides
from peftbench.errors import BadInput
from peftbench.experiment import load_train_config, resolve_experiment

EXP = "experiments/lora/toy-rank4"


@pytest.fixture
def task_dir(tmp_path, monkeypatch) -> Path:
    register_toy_task(monkeypatch)
    task_dir = make_task_dir(tmp_path, model_dir=tmp_path / "no-model")  # previews never load it
    (task_dir / EXP / "training_params.json").write_text(
        json.dumps({"optimizer_kwargs": {"lr": 5e-3, "amsgrad": True}, "batch_size": 2})
    )
    return task_dir


def test_dotted_set_changes_one_entry_and_keeps_the_others(task_dir):
    overrides = parse_overrides(["optimizer_kwargs.lr=3e-3", "generation_kwargs.max_new_tokens=32"])
    config = load_train_config(resolve_experiment(task_dir / EXP), overrides=overrides)
    assert config.optimizer_kwargs == {"lr": 3e-3, "amsgrad": True}  # the experiment's other entry
    assert config.generation_kwargs == {"max_length": 80, "max_new_tokens": 32}  # the default's
    assert json.loads((task_dir / EXP / "training_params.json").read_text())["optimizer_kwargs"]["lr"] == 5e-3


def test_a_plain_key_still_replaces_the_whole_object(task_dir):
    overrides = parse_overrides(['optimizer_kwargs={"lr": 0.1}'])
    config = load_train_config(resolve_experiment(task_dir / EXP), overrides=overrides)
    assert config.optimizer_kwargs == {"lr": 0.1}


def test_dotted_keys_are_for_the_command_line_only(task_dir):
    (task_dir / EXP / "training_params.json").write_text(json.dumps({"optimizer_kwargs.lr": 0.1}))
    with pytest.raises(BadInput) as caught:
        load_train_config(resolve_experiment(task_dir / EXP))
    assert 'training_params.json: unknown key "optimizer_kwargs.lr"; dotted keys are for --set' in str(
        caught.value
    )


def test_dotted_keys_reach_deeper_and_add_new_entries():
    layers = [
        ("defaults", DEFAULTS),
        ("--set", parse_overrides(["generation_kwargs.watermarking_config.bias=2.0"])),
    ]
    assert build_config(layers).generation_kwargs["watermarking_config"] == {"bias": 2.0}


BAD_SETS = [
    (["max_step=3"], '--set: unknown key "max_step" (did you mean "max_steps"?)'),
    (["optimiser_kwargs.lr=1"], 'unknown key "optimiser_kwargs" (did you mean "optimizer_kwargs"?)'),
    (["seed.value=1"], '"seed.value": "seed" is integer, not an object with keys; dotted keys work for'),
    (["optimizer_kwargs.lr.x=1"], '"optimizer_kwargs.lr.x": "optimizer_kwargs.lr" is 0.01, not an object'),
    (["max_steps"], "--set 'max_steps': expected KEY=VALUE or KEY.ENTRY=VALUE"),
    (["=3"], "--set '=3': expected KEY=VALUE"),
    (["optimizer_kwargs.=3"], "--set 'optimizer_kwargs.=3': expected KEY=VALUE"),
    ([".lr=3"], "--set '.lr=3': expected KEY=VALUE"),
]


@pytest.mark.parametrize(("items", "message"), BAD_SETS, ids=[i[0] for i, _ in BAD_SETS])
def test_bad_overrides_are_one_line(items, message):
    with pytest.raises(BadInput) as caught:
        build_config([("defaults", DEFAULTS), ("--set", parse_overrides(items))])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def preview(capsys, *args: str) -> dict[str, tuple[str, str]]:
    """`peftbench config ...` parsed: key -> (JSON value, source), header row dropped."""
    assert main(["config", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["key", "value", "source"]
    rows = {}
    for line in lines[1:]:
        key, rest = line.split(maxsplit=1)
        value, source = rest.rsplit(maxsplit=1)
        rows[key] = (value.strip(), source)
    return rows


def test_config_preview_marks_the_source_of_every_value(task_dir, capsys):
    rows = preview(
        capsys, str(task_dir / EXP), "--quick", "--set", "optimizer_kwargs.lr=3e-3", "--set", "seed=7"
    )
    assert rows["dtype"] == ('"float32"', "default")
    assert rows["batch_size"] == ("2", "experiment")
    assert rows["optimizer_kwargs.amsgrad"] == ("true", "experiment")
    assert rows["optimizer_kwargs.lr"] == ("0.003", "--set")
    assert rows["seed"] == ("7", "--set")
    assert rows["max_steps"] == ("2", "quick")
    assert rows["generation_kwargs.max_new_tokens"] == ("8", "default")
    assert rows["gradient_accumulation_steps"] == ("1", "built-in")  # in no file: the field's default
    # the experiment replaced the defaults' optimizer_kwargs, so their weight_decay is gone
    assert "optimizer_kwargs.weight_decay" not in rows


def test_config_json_is_the_config_a_run_would_use(task_dir, capsys):
    assert main(["config", str(task_dir / EXP), "--json", "--set", "generation_kwargs.max_new_tokens=4"]) == 0
    shown = json.loads(capsys.readouterr().out)
    overrides = {"generation_kwargs.max_new_tokens": 4}
    assert shown == load_train_config(resolve_experiment(task_dir / EXP), overrides=overrides).to_dict()


def test_config_with_a_bad_override_is_one_line_and_exit_2(task_dir, capsys):
    assert main(["config", str(task_dir / EXP), "--set", "max_stepz=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        'peftbench config: error: --set: unknown key "max_stepz" (did you mean "max_steps"?); '
        "run `peftbench config --explain` for the valid keys"
    ]
