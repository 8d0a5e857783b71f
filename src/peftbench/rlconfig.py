"""The settings of reinforcement learning with a verifiable reward (the `rl` object of a task's
training parameters) and the rewards it can use. No torch here: configs are checked before it loads.

The semantics follow trl's `GRPOConfig` where it has the same knob (num_generations, temperature,
epsilon, beta, num_iterations, scale_rewards), so that a trl user reads these settings as they expect;
trl itself is not a dependency (peftbench.rl is a loop of our own, see there).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peftbench.tasks import answers
from peftbench.tasks.base import Example, Task

# the small format reward of "correct+format": a completion that states a final answer gets this much
# even when the answer is wrong (never more than a correct answer's 1)
FORMAT_REWARD = 0.1


def reward_correct(completion: str, example: Example, task: Task) -> float:
    """1 when the task's answer rule accepts the completion, else 0."""
    return 1.0 if task.is_correct(completion, example) else 0.0


def reward_correct_and_format(completion: str, example: Example, task: Task) -> float:
    """1 when correct; FORMAT_REWARD when it states an answer ("The answer is: N") that is wrong; else 0."""
    if task.is_correct(completion, example):
        return 1.0
    return FORMAT_REWARD if answers.extract_answer(completion) is not None else 0.0


REWARDS: dict[str, Callable[[str, Example, Task], float]] = {
    "correct": reward_correct,
    "correct+format": reward_correct_and_format,
}


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": " ".join(text.split())})


@dataclass(frozen=True)
class RLSettings:
    """GRPO-style settings. The number of steps, the learning rate, the validation interval and the
    micro-batch size are the run's ordinary `max_steps`, `optimizer_kwargs.lr`, `eval_steps` and
    `batch_size` (sequences per forward/backward pass)."""

    group_size: int = _help("G: completions sampled per prompt (trl: num_generations); at least 2.", 8)
    prompts_per_step: int = _help("Training prompts per optimizer step; a step scores G x this many.", 8)
    temperature: float = _help("Sampling temperature of the completions; > 0.", 1.0)
    clip_epsilon: float = _help(
        "The policy ratio is clipped to [1 - eps, 1 + eps] (trl: epsilon). It only acts when "
        "updates_per_batch > 1: on the first update the ratio is 1.",
        0.2,
    )
    kl_coef: float = _help(
        "Weight of the KL penalty to the starting policy (trl: beta; 0 = off, trl's default, and no "
        "reference forward pass). The reference is the base model with the adapter disabled, or a "
        "frozen copy of the model for full fine-tuning.",
        0.0,
    )
    max_new_tokens: int = _help("Most tokens sampled per completion (tinymath answers take 30-50).", 64)
    reward: str = _help(
        f"Reward function: 'correct' (1 if the final answer is right, else 0) or 'correct+format' "
        f"(also {FORMAT_REWARD} for a wrong answer stated in the answer format).",
        "correct",
    )
    updates_per_batch: int = _help(
        "Optimizer steps on each batch of samples (trl: num_iterations); each counts as a step.", 1
    )
    scale_advantages: bool = _help(
        "Divide each group's advantages by its reward standard deviation (trl: scale_rewards).", True
    )


RL_FIELDS = {f.name: f for f in dataclasses.fields(RLSettings)}
_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def rl_settings(entries: dict[str, Any] | None) -> RLSettings:
    """The settings from a config's `rl` object (None: the defaults). Raises config.BadValue naming
    `rl.<key>` for unknown keys and bad values."""
    from peftbench.config import BadValue
    from peftbench.errors import did_you_mean

    entries = dict(entries or {})
    for key, value in entries.items():
        if key not in RL_FIELDS:
            raise BadValue(
                f"rl.{key}",
                f'unknown key "rl.{key}"{did_you_mean(key, RL_FIELDS)}; allowed: {", ".join(RL_FIELDS)}',
            )
        kind = RL_FIELDS[key].type
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, kind)
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise BadValue(f"rl.{key}", f'"rl.{key}" must be {_TYPES[kind]}, got {json.dumps(value)}')
    s = RLSettings(**entries)
    checks = (
        ("group_size", s.group_size >= 2, "at least 2 (advantages are relative to the group)"),
        ("prompts_per_step", s.prompts_per_step >= 1, "a positive integer"),
        ("temperature", s.temperature > 0, "> 0 (sampling needs a positive temperature)"),
        ("clip_epsilon", 0 < s.clip_epsilon < 1, "between 0 and 1"),
        ("kl_coef", s.kl_coef >= 0, ">= 0 (0 = off)"),
        ("max_new_tokens", s.max_new_tokens >= 1, "a positive integer"),
        ("updates_per_batch", s.updates_per_batch >= 1, "a positive integer"),
    )
    for key, ok, allowed in checks:
        if not ok:
            raise BadValue(f"rl.{key}", f'"rl.{key}" must be {allowed}, got {json.dumps(getattr(s, key))}')
    if s.reward not in REWARDS:
        raise BadValue(
            "rl.reward",
            f'"rl.reward" {json.dumps(s.reward)} is not a known reward{did_you_mean(s.reward, REWARDS)}; '
            f"known: {', '.join(REWARDS)}",
        )
    return s
