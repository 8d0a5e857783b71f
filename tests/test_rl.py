"""The RL loop (peftbench.rl) and the tinymath-rl plug-in, on the tiny toy model: advantages, gradients,
the KL reference, determinism, config checks and a `peftbench run` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from toyworld import DEFAULTS, LORA, ToyTask

from peftbench import rl, tasks
from peftbench.cli import main
from peftbench.config import build_config
from peftbench.errors import BadInput
from peftbench.rlconfig import REWARDS, RLSettings, rl_settings
from peftbench.tasks.base import STEP_METRICS, STEP_TRAIN_KL, STEP_TRAIN_REWARD, TRAIN_REWARD, Example

TOYRL = "toyrl"
RL = {"group_size": 4, "prompts_per_step": 2, "temperature": 1.0, "max_new_tokens": 6}


class ToyRLTask(ToyTask):
    """The toy task trained by the RL loop: a task declares its loop, the runner does not branch."""

    name = TOYRL
    metrics = (*ToyTask.metrics, TRAIN_REWARD)
    step_metrics = (*STEP_METRICS, STEP_TRAIN_REWARD, STEP_TRAIN_KL)

    def training_loop(self):
        return rl.train


def parity_reward(completion: str, example: Example, task) -> float:
    """A reward the random toy model earns half the time, so that updates are not all zero."""
    return float(len(completion) % 2)


@pytest.fixture
def rl_task_dir(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    monkeypatch.setitem(tasks.BUILTIN, TOYRL, "test_rl:ToyRLTask")
    monkeypatch.setitem(REWARDS, "parity", parity_reward)
    tasks.get_task.cache_clear()
    task_dir = tmp_path / "benchmarks" / TOYRL
    for exp in ("lora/toy-rank4", "full-finetuning/toy-default"):
        (task_dir / "experiments" / exp).mkdir(parents=True)
    defaults = {**DEFAULTS, "max_steps": 2, "eval_steps": 2, "rl": {**RL, "reward": "parity"}}
    (task_dir / "default_training_params.json").write_text(json.dumps(defaults))
    (task_dir / "experiments/lora/toy-rank4/adapter_config.json").write_text(json.dumps(LORA))
    (task_dir / "base_model").symlink_to(tiny_model_dir, target_is_directory=True)
    yield task_dir
    tasks.get_task.cache_clear()


def load(tiny_model_dir: Path, *, lora: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if lora:
        config = {k: v for k, v in LORA.items() if k != "peft_type"}
        model = get_peft_model(model, LoraConfig(**config, init_lora_weights=False))
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def some_samples(model, tokenizer, *, group_size: int = 4) -> rl.Samples:
    torch.manual_seed(1)
    prompts = tokenizer(["Q: 1 + 2 ?\nA:", "Q: 3 ?\nA:"])["input_ids"]
    settings = RLSettings(group_size=group_size, max_new_tokens=6)
    return rl.sample(model, tokenizer, prompts=prompts, settings=settings, device="cpu")


def logprobs(model, samples: rl.Samples) -> torch.Tensor:
    return rl.token_logprobs(
        model, samples.sequences, samples.attention_mask, prompt_length=samples.prompt_length, temperature=1.0
    )


def test_group_advantages_match_a_hand_computed_case():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735; group 2: all equal -> 0;
    # group 3: mean 0.75, std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5
    got = rl.group_advantages(rewards, group_size=4, scale=True)
    a, b = 0.5 / (math.sqrt(1 / 3) + 1e-4), 0.25 / (0.5 + 1e-4)
    expected = [a, -a, -a, a, 0, 0, 0, 0, b, b, b, -3 * b]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    unscaled = rl.group_advantages(rewards, group_size=4, scale=False)
    assert unscaled.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 0.25, 0.25, 0.25, -0.75])


def test_clipped_ratio_and_kl_terms():
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5]]))  # ratios 2 and 1
    mask = torch.ones(1, 2)
    loss, _ = rl.policy_loss_sum(
        logp, old_logp=old, advantages=torch.tensor([1.0]), mask=mask, clip_epsilon=0.2
    )
    assert float(loss) == pytest.approx(
        -(1.2 + 1.0)
    )  # the ratio 2 is clipped to 1.2 for a positive advantage
    loss, kl = rl.policy_loss_sum(
        logp,
        old_logp=logp,
        advantages=torch.tensor([0.0]),
        mask=mask,
        clip_epsilon=0.2,
        ref_logp=old,
        kl_coef=0.5,
    )
    k3 = 0.5 - math.log(0.5) - 1  # exp(ref - logp) - (ref - logp) - 1 with ref - logp = log 0.5
    assert float(kl) == pytest.approx(k3) and float(loss) == pytest.approx(0.5 * k3)


def test_a_group_with_zero_reward_gives_zero_gradient(tiny_model_dir):
    model, tokenizer = load(tiny_model_dir, lora=True)
    samples = some_samples(model, tokenizer)
    rewards = torch.tensor([0.0] * 4 + [1.0, 0.0, 1.0, 0.0])
    advantages = rl.group_advantages(rewards, group_size=4)
    logp = logprobs(model, samples)
    loss, _ = rl.policy_loss_sum(
        logp[:4],
        old_logp=logp[:4].detach(),
        advantages=advantages[:4],
        mask=samples.completion_mask[:4],
        clip_epsilon=0.2,
    )
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    # the whole step: the zero group's rows are skipped, the other group's still move the adapter
    model.zero_grad()
    batch = rl.Batch(samples, rewards, advantages, None, None, [i for i in range(8) if advantages[i] != 0])
    assert batch.active == [4, 5, 6, 7]
    rl.update(model, batch, settings=RLSettings(group_size=4), config=build_config([("d", DEFAULTS)]))
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.parameters())


def test_kl_reference_of_an_adapter_is_the_base_model(tiny_model_dir):
    model, tokenizer = load(tiny_model_dir, lora=True)  # init_lora_weights=False: the adapter changes outputs
    base, _ = load(tiny_model_dir, lora=False)
    samples = some_samples(model, tokenizer)
    with torch.no_grad():
        with rl.reference_policy(model, is_peft=True)() as reference:
            ref = logprobs(reference, samples)
        policy, expected = logprobs(model, samples), logprobs(base, samples)
    assert torch.allclose(ref, expected, atol=1e-6)
    assert not torch.allclose(policy, expected, atol=1e-3)


def test_kl_reference_of_full_finetuning_is_a_frozen_copy_of_the_start(tiny_model_dir):
    model, tokenizer = load(tiny_model_dir, lora=False)
    samples = some_samples(model, tokenizer)
    reference = rl.reference_policy(model, is_peft=False)
    with torch.no_grad():
        start = logprobs(model, samples)
        for p in model.parameters():  # training moves the policy
            p.add_(0.05 * torch.randn_like(p))
        with reference() as ref_model:
            assert ref_model is not model
            assert not any(p.requires_grad for p in ref_model.parameters())
            ref = logprobs(ref_model, samples)
        moved = logprobs(model, samples)
    assert torch.allclose(ref, start, atol=1e-6)
    assert not torch.allclose(moved, start, atol=1e-3)


def test_sampling_batches_every_completion_in_one_generate_call(tiny_model_dir, monkeypatch):
    model, tokenizer = load(tiny_model_dir, lora=False)
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw) or original(**kw))
    samples = some_samples(model, tokenizer, group_size=3)
    assert len(calls) == 1 and calls[0]["generation_config"].use_cache
    assert len(samples.completions) == 6 and samples.sequences.shape[0] == 6
    assert samples.num_generated_tokens == int(samples.completion_mask.sum())


def run_loop(tiny_model_dir, *, seed: int, kl_coef: float = 0.0):
    from peftbench.run import seed_everything

    seed_everything(seed)
    model, tokenizer = load(tiny_model_dir, lora=True)
    task, config = (
        ToyTask(),
        build_config(
            [
                (
                    "d",
                    {
                        **DEFAULTS,
                        "seed": seed,
                        "max_steps": 3,
                        "eval_steps": 3,
                        "rl": {**RL, "reward": "parity", "kl_coef": kl_coef, "updates_per_batch": 2},
                    },
                )
            ]
        ),
    )
    out = rl.train(
        model=model,
        tokenizer=tokenizer,
        task=task,
        data=task.load_data(task_dir=Path(".")),
        config=config,
        device="cpu",
        final_test=False,
    )
    assert out.status == "success", out.error_msg
    weights = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
    return out.metrics, weights


def test_the_loop_is_deterministic_for_a_seed_on_cpu(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(REWARDS, "parity", parity_reward)
    first, w1 = run_loop(tiny_model_dir, seed=0, kl_coef=0.1)
    again, w2 = run_loop(tiny_model_dir, seed=0, kl_coef=0.1)
    keys = ("train reward", "train loss", "train kl", "valid accuracy", "train samples")
    assert [[m[k] for k in keys] for m in first] == [[m[k] for k in keys] for m in again]
    assert torch.equal(w1, w2)
    assert first[0]["train kl"] > 0  # updates_per_batch 2: the second update starts away from the reference
    _, other = run_loop(tiny_model_dir, seed=1)
    assert not torch.equal(w1, other)


def test_the_loop_runs_the_methods_hooks_not_a_method_of_its_own(tiny_model_dir, monkeypatch):
    from peftbench import methods

    monkeypatch.setitem(REWARDS, "parity", parity_reward)
    steps: list[int] = []
    aux_calls: list[int] = []

    def aux(model):
        aux_calls.append(1)
        return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0

    hooks = methods.MethodHooks(on_step=lambda model, step: steps.append(step), aux_loss=aux)
    methods.register("LORA", hooks, name="toy")
    try:
        run_loop(tiny_model_dir, seed=0)
    finally:
        methods.unregister("LORA", name="toy")
    assert steps == [1, 2, 3] and len(aux_calls) == 3


def test_the_final_test_needs_the_forgetting_baseline_of_the_base_model():
    with pytest.raises(ValueError, match="forgetting_loss_before is required"):
        rl.train(model=None, tokenizer=None, task=ToyTask(), data=None, config=None, device="cpu")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"group_size": 1}, '"rl.group_size" must be at least 2'),
        ({"temperature": 0}, '"rl.temperature" must be > 0'),
        ({"temperature": -1.0}, '"rl.temperature" must be > 0'),
        ({"reward": "corect"}, '"rl.reward" "corect" is not a known reward (did you mean "correct"?)'),
        ({"group_sise": 4}, 'unknown key "rl.group_sise" (did you mean "group_size"?)'),
        ({"group_size": 2.5}, '"rl.group_size" must be an integer'),
        ({"kl_coef": -0.1}, '"rl.kl_coef" must be >= 0'),
    ],
)
def test_bad_rl_settings_are_one_clear_line(entries, message):
    with pytest.raises(BadInput) as err:
        build_config([("defaults.json", {**DEFAULTS, "rl": {**RL, **entries}})])
    assert message in str(err.value) and "defaults.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_rl_defaults_and_supervised_tasks_unaffected():
    assert rl_settings(None) == RLSettings()
    assert build_config([("d", DEFAULTS)]).rl is None


def result_files(task_dir: Path) -> list[Path]:
    return sorted(task_dir.glob("*results/*.json"))


@pytest.mark.parametrize(("key", "value"), [("group_size", "1"), ("temperature", "0"), ("reward", "nope")])
def test_bad_rl_setting_on_the_command_line_exits_2_and_writes_nothing(rl_task_dir, capsys, key, value):
    code = main(["run", str(rl_task_dir / "experiments/lora/toy-rank4"), "--set", f"rl.{key}={value}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"rl.{key}" in err
    assert result_files(rl_task_dir) == []


@pytest.mark.parametrize("experiment", ["lora/toy-rank4", "full-finetuning/toy-default"])
def test_peftbench_run_of_an_rl_experiment_writes_a_result_that_table_reads(rl_task_dir, capsys, experiment):
    assert main(["run", str(rl_task_dir / "experiments" / experiment), "--set", "rl.kl_coef=0.1"]) == 0
    [path] = result_files(rl_task_dir)
    data = json.loads(path.read_text())
    info = data["train_info"]
    assert info["status"] == "success"
    [valid, final] = info["metrics"]
    assert {"valid accuracy", "train reward", "generated tokens / sec", "train kl"} <= set(valid)
    assert final["generated tokens"] > 0 and final["train reward"] == valid["train reward"]
    assert {"test accuracy", "forgetting", "generated tokens / sec"} <= set(final)
    assert data["run_info"]["train_config"]["rl"]["kl_coef"] == 0.1
    from peftbench.analysis.aggregate import curve_rows

    assert [r["train_reward"] for r in curve_rows(data, file=path, task=TOYRL)] == [valid["train reward"]]
    capsys.readouterr()
    assert main(["table", str(rl_task_dir), "--include-temporary", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["experiment_name"].startswith(experiment)
    assert row["test_accuracy"] == final["test accuracy"]
    assert row["train_reward"] == final["train reward"]


def test_tinymath_rl_is_registered_and_declares_the_rl_loop():
    task = tasks.get_task("tinymath-rl")
    assert task.training_loop() is rl.train
    assert tasks.get_task("tinymath").training_loop() is not rl.train
    assert {"train_reward", "generated_tokens_per_sec"} <= {m.name for m in task.metrics}


def test_the_reward_curve_is_shown_beside_the_train_loss():
    import pandas as pd

    from peftbench.analysis.views import curve_columns

    curves = pd.DataFrame({"train_loss": [0.1], "train_reward": [0.5], "valid_accuracy": [0.2]})
    assert curve_columns(curves) == [
        ("train_loss", "train loss"),
        ("train_reward", "train reward"),
        ("valid_accuracy", "valid accuracy"),
    ]
