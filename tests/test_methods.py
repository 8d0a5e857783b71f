"""The method-hooks table (peftbench.methods): each built-in method's hook is found and does its job
on the tiny model, a toy method registered from outside the package changes training without an
edit of the loop, and bad registrations fail with one clear error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from toyworld import LORA

from peftbench import methods
from peftbench.experiment import load_peft_config, load_train_config, resolve_experiment
from peftbench.progress import RunProgress
from peftbench.results import TrainStatus
from peftbench.tasks import get_task

ADALORA = {
    "peft_type": "ADALORA",
    "target_modules": ["q_proj", "v_proj"],
    "init_r": 4,
    "target_r": 1,
    "total_step": 4,
    "tinit": 1,
    "tfinal": 1,
    "deltaT": 1,
    "task_type": "CAUSAL_LM",
}
KASA = {**LORA, "kasa_config": {"beta": 1e-1, "gamma": 1e-1}}
IA3 = {"peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"], "task_type": "CAUSAL_LM"}


def _quiet() -> RunProgress:
    return RunProgress(stream=io.StringIO(), interactive=False, progress_file="")


def _experiment(task_dir: Path, name: str, adapter: dict, params: dict | None = None):
    folder = task_dir / "experiments" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(adapter))
    if params:
        (folder / "training_params.json").write_text(json.dumps(params))
    return resolve_experiment(folder)


def _prepare(task_dir: Path, exp, **overrides):
    """The model as a run prepares it, its config and the toy task's data."""
    from peftbench.run import prepare_model

    config = load_train_config(exp, overrides=overrides)
    data = get_task("toytask").load_data(task_dir=task_dir)
    prepared = prepare_model(exp, config, load_peft_config(exp), data=data, progress=_quiet())
    return prepared, config, data


def _train(prepared, config, data):
    from peftbench.train import train

    return train(
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        task=get_task("toytask"),
        data=data,
        config=config,
        device=prepared.device,
        forgetting_loss_before=prepared.forgetting_before,
        progress=_quiet(),
    )


def _state(prepared, config, data, **hooks):
    """A TrainState as train() sets it up; `hooks` replace the resolved ones (e.g. aux_loss=None)."""
    import dataclasses

    from peftbench.train import setup

    state = setup(
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        task=get_task("toytask"),
        data=data,
        config=config,
        device=prepared.device,
        progress=_quiet(),
        final_test=False,
    )
    if hooks:
        state.hooks = dataclasses.replace(state.hooks, **hooks)
    return state


# ---- the built-in methods ----------------------------------------------------------------------


def test_adalora_allocation_runs_every_step_and_cuts_the_ranks(task_dir, monkeypatch):
    from peft.tuners.adalora import AdaLoraModel

    exp = _experiment(task_dir, "adalora/toy", ADALORA)
    prepared, config, data = _prepare(task_dir, exp, max_steps=4, eval_steps=4)
    assert methods.hooks_for(load_peft_config(exp)).on_step is not None
    calls = []
    original = AdaLoraModel.update_and_allocate
    monkeypatch.setattr(
        AdaLoraModel, "update_and_allocate", lambda self, step: (calls.append(step), original(self, step))[1]
    )
    assert prepared.model.peft_config["default"].rank_pattern is None
    assert _train(prepared, config, data).status == TrainStatus.SUCCESS
    assert calls == [1, 2, 3, 4]
    # the final allocation kept a budget of target_r per adapted matrix out of init_r, and masked the rest
    pattern = prepared.model.peft_config["default"].rank_pattern
    singular = [p for n, p in prepared.model.named_parameters() if "lora_E" in n]
    assert len(pattern) == len(singular) and sum(sum(keep) for keep in pattern.values()) == len(singular)
    assert sum(int((p != 0).sum()) for p in singular) <= len(singular) * ADALORA["target_r"]


def test_adamss_allocation_hook_is_called_every_step(task_dir, monkeypatch):
    from peft.tuners.adamss.model import AdamssModel

    adamss = {
        "peft_type": "ADAMSS",
        "r": 8,
        "num_subspaces": 2,
        "subspace_rank": 1,
        "target_modules": ["q_proj", "v_proj"],
        "task_type": "CAUSAL_LM",
    }
    exp = _experiment(task_dir, "adamss/toy", adamss)
    prepared, config, data = _prepare(task_dir, exp, max_steps=3, eval_steps=3)
    calls = []
    original = AdamssModel.update_and_allocate
    monkeypatch.setattr(
        AdamssModel, "update_and_allocate", lambda self, step: (calls.append(step), original(self, step))[1]
    )
    assert _train(prepared, config, data).status == TrainStatus.SUCCESS
    assert calls == [1, 2, 3]


def test_kasa_regularisers_join_the_gradient_and_plain_lora_has_no_aux_loss(task_dir):
    from peftbench.train import train_step

    assert methods.hooks_for(load_peft_config(_experiment(task_dir, "lora/plain", LORA))).aux_loss is None
    exp = _experiment(task_dir, "lora/kasa", KASA)
    grads = []
    for aux in ("registered", None):
        prepared, config, data = _prepare(task_dir, exp, max_steps=1, eval_steps=1)
        state = _state(prepared, config, data) if aux else _state(prepared, config, data, aux_loss=None)
        assert (state.hooks.aux_loss is not None) == bool(aux)
        loss = train_step(state, 1)
        grads.append(
            (loss, {n: p.grad.clone() for n, p in state.model.named_parameters() if p.grad is not None})
        )
    (loss_with, with_aux), (loss_without, without) = grads
    assert loss_with == loss_without  # the logged loss is the task loss: the regulariser is not in it
    diag = [n for n in with_aux if "lora_diag" in n]
    assert diag and all(not torch.equal(with_aux[n], without[n]) for n in diag)


def _optimizer(task_dir, name, optimizer_type, kwargs):
    from peftbench.train import make_optimizer

    exp = _experiment(task_dir, name, LORA, {"optimizer_type": optimizer_type, "optimizer_kwargs": kwargs})
    prepared, config, _ = _prepare(task_dir, exp)
    return prepared.model, make_optimizer(prepared.model, config)[0]


def test_loraplus_gives_lora_b_the_larger_learning_rate(task_dir):
    model, optimizer = _optimizer(task_dir, "lora/plus", "lora+", {"lr": 1e-3, "loraplus_lr_ratio": 16})
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lrs[names[id(p)]] = group["lr"]
    assert {lr for n, lr in lrs.items() if "lora_A" in n} == {1e-3}
    assert {lr for n, lr in lrs.items() if "lora_B" in n} == {1e-3 * 16}


def test_lorafa_freezes_lora_a_and_takes_r_and_alpha_from_the_adapter(task_dir):
    from peft.optimizers.lorafa import LoraFAOptimizer

    model, optimizer = _optimizer(task_dir, "lora/fa", "lora-fa", {"lr": 1e-3})
    assert isinstance(optimizer, LoraFAOptimizer)
    assert [n for n, p in model.named_parameters() if "lora_A" in n and p.requires_grad] == []
    [group] = optimizer.param_groups
    assert group["scaling_factor"] == LORA["lora_alpha"] / LORA["r"]
    assert any("lora_B" in n for n in group["names"])


def test_riemannian_optimizer_is_adamw_over_the_trainable_parameters(task_dir):
    model, optimizer = _optimizer(task_dir, "lora/riem", "riemannian", {"lr": 1e-3, "reg": 0.01})
    assert isinstance(optimizer, torch.optim.AdamW) and type(optimizer) is not torch.optim.AdamW
    [group] = optimizer.param_groups
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(group["params"]) == len(trainable) and group["lr"] == 1e-3


# ---- a method from outside the package ----------------------------------------------------------


@pytest.fixture
def toy_method():
    """IA3 with a counting step hook, an aux loss pulling the IA3 vectors to 0, and a data-dependent init."""
    seen: dict[str, list] = {"steps": [], "init": []}

    def aux_loss(model):
        return sum((p**2).sum() for n, p in model.named_parameters() if "ia3_l" in n)

    def init(model, batches):
        seen["init"].extend(batches)
        with torch.no_grad():  # "data-dependent": scale by the number of tokens seen, visibly
            for n, p in model.named_parameters():
                if "ia3_l" in n:
                    p.fill_(1.0 + 1.0 / sum(int(b["attention_mask"].sum()) for b in batches))

    hooks = {"aux_loss": aux_loss, "on_step": lambda model, step: seen["steps"].append(step), "init": init}
    methods.register("IA3", hooks, name="toy")
    yield seen
    methods.unregister("IA3", name="toy")


def test_a_toy_method_registered_from_outside_changes_training_without_a_loop_edit(task_dir, toy_method):
    from peftbench.train import collate, step_batches, tokenize_train

    exp = _experiment(task_dir, "ia3/toy", IA3, {"gradient_accumulation_steps": 2})
    prepared, config, data = _prepare(task_dir, exp, max_steps=3, eval_steps=3)
    outcome = _train(prepared, config, data)
    assert outcome.status == TrainStatus.SUCCESS, outcome.error_msg
    assert toy_method["steps"] == [1, 2, 3]
    # the init saw the first training step's two micro-batches, collated: the data the first step trains on
    seqs = tokenize_train(
        prepared.tokenizer, data.train, template=config.query_template, max_len=config.max_seq_length
    )
    stream = step_batches(seqs, batch_size=config.batch_size, accumulation=2, seed=config.seed)
    expected = [collate(mb, pad_id=prepared.tokenizer.pad_token_id)["input_ids"] for mb in next(stream)]
    seen = [b["input_ids"] for b in toy_method["init"]]
    assert len(seen) == 2 and all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_the_toy_aux_loss_changes_the_gradient_and_init_changes_the_weights(task_dir, toy_method):
    from peftbench.train import train_step

    exp = _experiment(task_dir, "ia3/toy", IA3)
    prepared, config, data = _prepare(task_dir, exp, max_steps=1, eval_steps=1)
    vectors = [p for n, p in prepared.model.named_parameters() if "ia3_l" in n]
    assert all(torch.equal(p, torch.ones_like(p)) for p in vectors)  # IA3 starts at 1
    state = _state(prepared, config, data)
    assert toy_method["init"] and all(not torch.equal(p, torch.ones_like(p)) for p in vectors)
    train_step(state, 1)
    with_aux = [p.grad.clone() for p in vectors]

    prepared, config, data = _prepare(task_dir, exp, max_steps=1, eval_steps=1)
    state = _state(prepared, config, data)
    state.hooks = methods.Hooks(init=None, aux_loss=None)
    with torch.no_grad():  # the same starting point as the run with the hooks
        for p, q in zip((p for n, p in state.model.named_parameters() if "ia3_l" in n), vectors, strict=True):
            p.copy_(q.detach())
    train_step(state, 1)
    without = [p.grad for n, p in state.model.named_parameters() if "ia3_l" in n]
    assert any(not torch.equal(a, b) for a, b in zip(with_aux, without, strict=True))


def test_an_optimizer_registered_from_outside_is_a_valid_optimizer_type(task_dir, monkeypatch):
    made = []

    def create(model, kwargs):
        made.append(kwargs)
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **kwargs)

    monkeypatch.setitem(methods.OPTIMIZERS, "toy-sgd", methods.OptimizerFactory(create, arguments=("lr",)))
    exp = _experiment(
        task_dir, "lora/sgd", LORA, {"optimizer_type": "toy-sgd", "optimizer_kwargs": {"lr": 0.1}}
    )
    prepared, config, data = _prepare(task_dir, exp, max_steps=2, eval_steps=2)
    assert _train(prepared, config, data).status == TrainStatus.SUCCESS
    assert made == [{"lr": 0.1}]


# ---- bad registrations -------------------------------------------------------------------------


def test_an_unknown_hook_kind_is_one_clear_error():
    with pytest.raises(
        ValueError, match=r"unknown method hook kind 'on_stpe' for TOY.*did you mean \"on_step\""
    ):
        methods.register("TOY", {"on_stpe": lambda model, step: None})


def test_a_duplicate_registration_is_one_clear_error():
    with pytest.raises(ValueError, match=r"method hooks for ADALORA \(ADALORA\) are already registered"):
        methods.register("ADALORA", methods.MethodHooks(on_step=lambda model, step: None))
    with pytest.raises(ValueError, match="optimizer_type 'lora\\+' is already registered"):
        methods.register_optimizer("lora+", methods.OptimizerFactory(lambda model, kwargs: None))


def test_two_registrations_giving_one_config_the_same_kind_are_refused(task_dir):
    methods.register("ADALORA", {"on_step": lambda model, step: None}, name="second")
    try:
        config = load_peft_config(_experiment(task_dir, "adalora/two", ADALORA))
        with pytest.raises(
            ValueError, match="two registrations give ADALORA a 'on_step' hook: ADALORA, second"
        ):
            methods.hooks_for(config)
    finally:
        methods.unregister("ADALORA", name="second")


def test_a_hook_that_is_not_callable_is_refused():
    with pytest.raises(TypeError, match="method hook 'aux_loss' must be callable, got float"):
        methods.MethodHooks(aux_loss=0.1)
