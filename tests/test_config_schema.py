"""Configs are checked whole, nested entries included, before any data or model loads (issue 17)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from toyworld import DEFAULTS, LORA, ToyTask, make_task_dir, register_toy_task

from peftbench import run
from peftbench.cli import main
from peftbench.config import build_config
from peftbench.errors import BadInput
from peftbench.experiment import (
    RESULT_DIRS,
    discover,
    load_peft_config,
    load_train_config,
    resolve_experiment,
    schedule_warnings,
)

EXP = "experiments/lora/toy-rank4"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def task_dir(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A toy task whose data and model loaders fail the test when called (the model's config.json is
    there: the adapter is fitted to it before anything loads)."""
    register_toy_task(monkeypatch)

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded data or a model before the config was checked")

    monkeypatch.setattr(ToyTask, "load_data", must_not_load)
    monkeypatch.setattr(run, "_load_base_model", must_not_load)
    return make_task_dir(tmp_path, model_dir=tiny_model_dir)


def run_with(task_dir: Path, params: dict, capsys) -> list[str]:
    """`peftbench run` on the LoRA experiment with these training_params; must exit 2 with one line."""
    (task_dir / EXP / "training_params.json").write_text(json.dumps(params))
    assert main(["run", str(task_dir / EXP)]) == 2
    assert not any((task_dir / kind).exists() and any((task_dir / kind).iterdir()) for kind in RESULT_DIRS)
    return capsys.readouterr().err.strip().splitlines()


BAD_ENTRIES = [
    ({"optimizer_kwargs": {"lr": "fast"}}, '"optimizer_kwargs.lr" must be number >= 0, got "fast"'),
    (
        {"generation_kwargs": {"max_new_tokens": "many"}},
        '"generation_kwargs.max_new_tokens" must be integer > 0 | null, got "many"',
    ),
    ({"generation_kwargs": {"max_length": 0}}, '"generation_kwargs.max_length" must be integer > 0'),
    ({"generation_kwargs": {"do_sample": "yes"}}, '"generation_kwargs.do_sample" must be true/false'),
    ({"optimizer_kwargs": {"lr": 1e-3, "betas": [0.9, "x"]}}, '"optimizer_kwargs.betas" must be a list'),
    (
        {"optimizer_kwargs": {"lr": 1e-3, "betaz": [0.9, 0.99]}},
        'unknown key "optimizer_kwargs.betaz": not an argument of torch.optim.AdamW (did you mean "betas"?); '
        "allowed: lr, betas, eps, weight_decay, amsgrad,",
    ),
    (  # the entries depend on the optimizer: momentum is SGD's, not AdamW's
        {"optimizer_kwargs": {"lr": 1e-3, "momentum": 0.9}},
        'unknown key "optimizer_kwargs.momentum": not an argument of torch.optim.AdamW',
    ),
    (
        {"generation_kwargs": {"max_new_token": 8}},
        'unknown key "generation_kwargs.max_new_token": not an argument of transformers\' GenerationConfig '
        '(did you mean "max_new_tokens"?)',
    ),
    (
        {"optimizer_type": "lora+", "optimizer_kwargs": {"lr": 1e-3, "loraplus_ratio": 16}},
        "not an argument of peft's create_loraplus_optimizer (with torch.optim.AdamW) "
        '(did you mean "loraplus_lr_ratio"?)',
    ),
    (
        {"optimizer_type": "lora-fa", "optimizer_kwargs": {"lr": 1e-3, "betas": [0.9, 0.99]}},
        "not an argument of peft's create_lorafa_optimizer; allowed: r, lora_alpha, lr, weight_decay",
    ),
]


@pytest.mark.parametrize(("params", "message"), BAD_ENTRIES, ids=[m[:40] for _, m in BAD_ENTRIES])
def test_bad_nested_entries_fail_in_one_line_before_loading(task_dir, capsys, params, message):
    (line,) = run_with(task_dir, params, capsys)
    assert line.startswith(f"peftbench run: error: {task_dir / EXP / 'training_params.json'}: ")
    assert message in line


GOOD_ENTRIES = [
    {"optimizer_type": "SGD", "optimizer_kwargs": {"lr": 0.1, "momentum": 0.9, "nesterov": True}},
    {"optimizer_type": "lora+", "optimizer_kwargs": {"lr": 1e-3, "loraplus_lr_ratio": 16, "eps": 1e-6}},
    {"optimizer_type": "lora+", "optimizer_kwargs": {"lr": 1e-3, "loraplus_lr_embedding": 1e-6}},
    {"optimizer_type": "lora-fa", "optimizer_kwargs": {"lr": 1e-3, "r": 4, "lora_alpha": 8}},
    {"optimizer_type": "riemannian", "optimizer_kwargs": {"lr": 1e-3, "reg": 0.01, "betas": [0.9, 0.99]}},
    {"generation_kwargs": {"max_new_tokens": 8, "do_sample": False, "repetition_penalty": 1.1}},
]


@pytest.mark.parametrize("params", GOOD_ENTRIES, ids=[json.dumps(p)[:60] for p in GOOD_ENTRIES])
def test_entries_the_library_takes_are_accepted(params):
    config = build_config([("defaults", DEFAULTS), ("experiment", params)])
    assert {**config.optimizer_kwargs, **config.generation_kwargs}.items() >= {
        **params.get("optimizer_kwargs", {}),
        **params.get("generation_kwargs", {}),
    }.items()


def test_a_bad_entry_is_blamed_on_the_layer_that_set_it():
    layers = [
        ("defaults.json", DEFAULTS),
        ("exp.json", {"batch_size": 2}),
        ("--set", {"optimizer_kwargs.lr": "x"}),
    ]
    with pytest.raises(BadInput, match=r'^--set: "optimizer_kwargs.lr" must be'):
        build_config(layers)
    layers[2] = ("--set", {"seed": 3})
    layers[0] = ("defaults.json", {**DEFAULTS, "generation_kwargs": {"max_new_tokens": -1}})
    with pytest.raises(BadInput, match=r'^defaults.json: "generation_kwargs.max_new_tokens" must be'):
        build_config(layers)


@pytest.mark.parametrize("task", ["tinymath", "MetaMathQA"])
def test_every_committed_experiment_passes_the_check(task):
    experiments = discover(REPO / "benchmarks" / task)
    assert experiments
    for exp in experiments:
        load_train_config(exp, quick=True)


def test_the_references_training_params_pass_the_check(reference_dir):
    folder = reference_dir / "MetaMathQA"
    defaults = json.loads((folder / "default_training_params.json").read_text())
    files = sorted(folder.glob("experiments/*/*/training_params.json"))
    assert files
    for f in files:
        build_config([("defaults", defaults), (str(f), json.loads(f.read_text()))])


def test_a_missing_optional_dependency_names_the_extra(task_dir, capsys, monkeypatch):
    (task_dir / EXP / "adapter_config.json").write_text(
        json.dumps({"peft_type": "ADAMSS", "task_type": "CAUSAL_LM", "target_modules": ["q_proj"]})
    )
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` raises ImportError
    (line,) = run_with(task_dir, {}, capsys)
    assert line == (
        f"peftbench run: error: {task_dir / EXP / 'adapter_config.json'}: ADAMSS needs scikit-learn, "
        "which is not installed: pip install 'peftbench[methods]'"
    )


def test_an_installed_optional_dependency_passes(task_dir):
    pytest.importorskip("sklearn")
    (task_dir / EXP / "adapter_config.json").write_text(
        json.dumps({"peft_type": "ADAMSS", "task_type": "CAUSAL_LM", "target_modules": ["q_proj"]})
    )
    assert load_peft_config(resolve_experiment(task_dir / EXP)).peft_type == "ADAMSS"


ADALORA = {**{k: v for k, v in LORA.items() if k != "r"}, "peft_type": "ADALORA", "init_r": 8, "target_r": 4}


def adalora_warnings(task_dir: Path, **schedule: int) -> list[str]:
    (task_dir / EXP / "adapter_config.json").write_text(json.dumps({**ADALORA, **schedule}))
    exp = resolve_experiment(task_dir / EXP)
    return schedule_warnings(exp, load_train_config(exp), load_peft_config(exp))


def test_adalora_schedule_longer_than_the_run_is_warned_before_loading(task_dir, capsys):
    max_steps = DEFAULTS["max_steps"]
    assert adalora_warnings(task_dir, total_step=max_steps, tinit=1, tfinal=1) == []
    assert len(adalora_warnings(task_dir, total_step=5000, tinit=200, tfinal=500)) == 1
    with pytest.raises(AssertionError, match="loaded data"):  # the fixture's loaders: the warning came first
        run.execute(resolve_experiment(task_dir / EXP))
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert line == (
        f'warning: {task_dir / EXP / "adapter_config.json"}: ADALORA "total_step" is 5000 (tinit 200, '
        f'tfinal 500) but "max_steps" is {max_steps}: training stops before its schedule ends; '
        'set "total_step" to max_steps and fit tinit and tfinal'
    )


def test_explain_documents_the_checked_entries():
    from peftbench.config import explain

    text = " ".join(explain().split())
    assert "Entries checked for type: lr: number >= 0;" in text
    assert "max_new_tokens: integer > 0 | null;" in text
