"""The training configuration: every setting documented where it is defined, checked when built.

A run's config is the task's `default_training_params.json`, overlaid with the experiment's
`training_params.json` (only the differences), then with the quick variant and command-line
overrides where given. Unknown keys and bad values are errors that name the file, the key and what
is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from peftbench.errors import BadInput, did_you_mean
from peftbench.methods import OPTIMIZERS

# The checker is hand-written rather than a pydantic model: the allowed entries of the two object
# settings are not fixed but read at run time from the libraries that take them (the optimizer's
# signature, transformers' GenerationConfig), and every error must be one line naming the file that
# set the value, which our checker already does for the top-level fields. Bounds ride on
# `Annotated` so that one type table serves checking and `--explain`.
Positive = "> 0"
NonNegative = ">= 0"
_BOUNDS = {Positive: lambda v: v > 0, NonNegative: lambda v: v >= 0}
_Number = Annotated[float, NonNegative]
_Count = Annotated[int, NonNegative]
_PositiveInt = Annotated[int, Positive]

# Types of the entries peftbench knows; an entry the library accepts but not listed here passes as is.
ENTRY_TYPES: dict[str, dict[str, Any]] = {
    "optimizer_kwargs": {
        **dict.fromkeys(("lr", "weight_decay", "eps", "momentum", "dampening", "alpha", "reg"), _Number),
        **dict.fromkeys(("loraplus_lr_ratio", "loraplus_lr_embedding", "loraplus_weight_decay"), _Number),
        **dict.fromkeys(("amsgrad", "nesterov", "maximize", "capturable", "differentiable"), bool),
        **dict.fromkeys(("foreach", "fused", "use_rslora"), bool | None),
        "betas": list[float],
        "r": _PositiveInt,
        "lora_alpha": _Number,
    },
    "generation_kwargs": {
        **dict.fromkeys(("max_new_tokens", "max_length", "num_beams"), _PositiveInt | None),
        **dict.fromkeys(("num_return_sequences", "top_k"), _PositiveInt | None),
        **dict.fromkeys(("min_new_tokens", "min_length", "no_repeat_ngram_size"), _Count),
        **dict.fromkeys(("temperature", "top_p", "min_p", "typical_p", "repetition_penalty"), _Number | None),
        "length_penalty": float,
        **dict.fromkeys(("do_sample", "use_cache", "output_scores", "return_dict_in_generate"), bool),
        "early_stopping": bool | Literal["never"],
        **dict.fromkeys(("pad_token_id", "bos_token_id"), _Count | None),
        "eos_token_id": _Count | list[int] | None,
        "stop_strings": str | list[str] | None,
    },
}


class BadValue(ValueError):
    """A bad setting. `key` (a field, or `field.entry`) lets the caller name the layer that set it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": " ".join(text.split())}, **kwargs)


@dataclass(frozen=True)
class TrainConfig:
    """Training and evaluation settings of one run (the reference's TrainConfig, plus new options that
    default to off)."""

    model_id: str = _help(
        "Base model: a hub id, a local folder, or the name of a folder inside the task folder "
        "(e.g. 'base_model' for the embedded benchmark)."
    )
    dtype: Literal["float32", "bfloat16", "float16", "int8", "int4"] = _help(
        "Weights' dtype. int8/int4 quantize the base model with bitsandbytes (CUDA only)."
    )
    max_seq_length: int = _help("Training sequences are truncated to this many tokens.")
    batch_size: int = _help(
        "Training examples per optimizer step (per micro-batch with gradient accumulation)."
    )
    batch_size_eval: int = _help("Prompts per generation batch in validation and test.")
    max_steps: int = _help("Number of optimizer steps.")
    eval_steps: int = _help("Validate every this many steps (must not exceed max_steps).")
    compile: bool = _help("Apply torch.compile to the model after PEFT wrapping.")
    use_gc: bool = _help("Gradient checkpointing: less activation memory, more compute.")
    query_template: str = _help("Prompt template; must contain '{query}'. The response follows it directly.")
    seed: int = _help("Seeds everything random: initialisation, data order, dropout.")
    grad_norm_clip: float = _help("Clip the gradient norm to this value; 0 turns clipping off.")
    optimizer_type: str = _help(
        "A torch.optim class name (e.g. 'AdamW'), or an optimizer of peftbench.methods: 'lora+', "
        "'lora-fa', 'riemannian' (from peft.optimizers)."
    )
    optimizer_kwargs: dict[str, Any] = _help(
        "Keyword arguments of the optimizer; must include 'lr'. For 'lora+': loraplus_lr_ratio etc. "
        "Keys are checked against the optimizer's signature (for peft's optimizers, their factory's)."
    )
    lr_scheduler: Literal["cosine"] | None = _help(
        "null for a constant learning rate, or 'cosine' with 10% linear warm-up."
    )
    use_amp: bool = _help("Automatic mixed precision (autocast and a gradient scaler).")
    autocast_adapter_dtype: bool = _help(
        "Keep adapter weights in float32 when the base model is in 16 bit (peft)."
    )
    generation_kwargs: dict[str, Any] = _help(
        "transformers GenerationConfig arguments for evaluation. When both max_length and "
        "max_new_tokens are given, the smaller total length wins. Keys must be GenerationConfig attributes."
    )
    attn_implementation: str | None = _help(
        "transformers attention implementation (e.g. 'sdpa'); null = default."
    )
    init_kv_cache_prefix: str | None = _help(
        "Prefix tuning only: initialise the prefix from the base model's KV cache of this text."
    )
    gradient_accumulation_steps: int = _help(
        "Micro-batches per optimizer step; 1 = off. Not in the reference; defaults to off.", default=1
    )
    reference_parity: bool = _help(
        "Train as the reference's run.py does, to measure our fixes (peftbench.reference_parity): no "
        "appended EOS (the first pad token is the label instead, so the longest row of a batch gets "
        "none), the loss divided by the attention-mask sum, length ties in a bucket broken by "
        "torch.argsort, the last partial bucket of an epoch repeated. Off by default.",
        default=False,
    )
    rl: dict[str, Any] | None = _help(
        "Reinforcement learning settings, for tasks whose training loop is peftbench.rl (tinymath-rl): "
        "group_size, prompts_per_step, temperature, clip_epsilon, kl_coef, max_new_tokens, reward, "
        "updates_per_batch, scale_advantages (see peftbench.rlconfig.RLSettings); null = off for "
        "supervised tasks, the defaults for an RL task. Not in the reference; defaults to off.",
        default=None,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _HINTS[f.name])
        _check_values(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(TrainConfig)
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))
REQUIRED = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.default is dataclasses.MISSING)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *bounds = typing.get_args(hint)
        return " ".join((_type_name(base), *bounds))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {str: "string", int: "integer", float: "number", bool: "true/false", dict: "object"}.get(
        origin or hint, str(hint)
    )


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *bounds = typing.get_args(hint)
        return _matches(value, base) and all(_BOUNDS[b](value) for b in bounds)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(hint)[0]) for v in value)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _check_type(name: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise BadValue(name, f'"{name}" must be {_type_name(hint)}, got {json.dumps(value)}')


def _check_values(c: TrainConfig) -> None:
    positive = ("max_seq_length", "batch_size", "batch_size_eval", "max_steps", "eval_steps")
    for name in (*positive, "gradient_accumulation_steps"):
        if getattr(c, name) <= 0:
            raise BadValue(name, f'"{name}" must be a positive integer, got {getattr(c, name)}')
    if c.eval_steps > c.max_steps:
        raise BadValue(
            "eval_steps", f'"eval_steps" ({c.eval_steps}) must not exceed "max_steps" ({c.max_steps})'
        )
    if c.grad_norm_clip < 0:
        raise BadValue("grad_norm_clip", f'"grad_norm_clip" must be >= 0 (0 = off), got {c.grad_norm_clip}')
    if "{query}" not in c.query_template:
        raise BadValue("query_template", '"query_template" must contain "{query}"')
    if c.optimizer_type not in OPTIMIZERS:
        optimizers = _torch_optimizers()
        if c.optimizer_type not in optimizers:
            hint = did_you_mean(c.optimizer_type, [*optimizers, *OPTIMIZERS])
            raise BadValue(
                "optimizer_type",
                f'"optimizer_type" {c.optimizer_type!r} is neither a torch.optim class nor one of '
                f"{', '.join(OPTIMIZERS)}{hint}",
            )
    if "lr" not in c.optimizer_kwargs:
        raise BadValue("optimizer_kwargs", '"optimizer_kwargs" must contain "lr"')
    _check_entries("optimizer_kwargs", c.optimizer_kwargs, allowed=optimizer_arguments(c.optimizer_type))
    _check_entries("generation_kwargs", c.generation_kwargs, allowed=generation_arguments())
    if c.rl is not None:
        from peftbench.rlconfig import rl_settings

        rl_settings(c.rl)


def _check_entries(field_name: str, entries: dict[str, Any], *, allowed: tuple[str, tuple[str, ...]]) -> None:
    """Each entry of an object setting is one the library takes (`allowed`: whose, which), of its type."""
    owner, names = allowed
    for name, value in entries.items():
        key = f"{field_name}.{name}"
        if name not in names:
            shown = f"; allowed: {', '.join(names)}" if len(names) <= 20 else ""
            raise BadValue(
                key, f'unknown key "{key}": not an argument of {owner}{did_you_mean(name, names)}{shown}'
            )
        if name in ENTRY_TYPES[field_name]:
            _check_type(key, value, ENTRY_TYPES[field_name][name])


@functools.cache
def _torch_optimizers() -> tuple[str, ...]:
    import torch.optim

    return tuple(
        n
        for n, v in vars(torch.optim).items()
        if isinstance(v, type) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer
    )


def _parameters(function: Any, *, skip: tuple[str, ...]) -> tuple[list[str], bool]:
    """A function's parameter names less `skip`, and whether it takes **kwargs."""
    params = inspect.signature(function).parameters.values()
    names = [p.name for p in params if p.name not in skip and p.kind is not p.VAR_KEYWORD]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


@functools.cache
def optimizer_arguments(optimizer_type: str) -> tuple[str, tuple[str, ...]]:
    """(what takes them, the keyword arguments `optimizer_kwargs` may hold) for an optimizer type."""
    import torch.optim

    if optimizer_type not in OPTIMIZERS:
        names, _ = _parameters(getattr(torch.optim, optimizer_type).__init__, skip=("self", "params"))
        return f"torch.optim.{optimizer_type}", tuple(names)
    spec = OPTIMIZERS[optimizer_type]
    if not spec.peft_function:
        return f"the {optimizer_type!r} optimizer factory", spec.arguments
    import peft.optimizers

    factory, passes_to = spec.peft_function, spec.passes_to
    names, has_kwargs = _parameters(getattr(peft.optimizers, factory), skip=("model", "optimizer_cls"))
    names += spec.pops
    if has_kwargs and passes_to:
        names += _parameters(getattr(torch.optim, passes_to).__init__, skip=("self", "params"))[0]
        return f"peft's {factory} (with torch.optim.{passes_to})", tuple(dict.fromkeys(names))
    return f"peft's {factory}", tuple(names)


@functools.cache
def generation_arguments() -> tuple[str, tuple[str, ...]]:
    """The settings transformers' GenerationConfig has (its private and version entries left out)."""
    from transformers import GenerationConfig

    names = [n for n in GenerationConfig().to_dict() if not n.startswith("_") and n != "transformers_version"]
    return "transformers' GenerationConfig", tuple(sorted(names))


def read_json_object(path: Path) -> dict[str, Any]:
    """Read a JSON file that must hold an object; BadInput names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


OVERRIDES = "--set"  # the source name of command-line overrides, the only layer that may use dotted keys


def _is_object_field(name: str) -> bool:
    hint = _HINTS[name]  # an object, or an object or null (rl)
    return dict in (typing.get_origin(hint), *map(typing.get_origin, typing.get_args(hint)))


def check_keys(params: dict[str, Any], *, source: str) -> None:
    """Every key names a field; a dotted key (`optimizer_kwargs.lr`, --set only) an object field."""
    for key in params:
        head, *rest = key.split(".")
        if rest and source != OVERRIDES:  # files keep the reference's format: whole objects
            raise BadInput(
                f'{source}: unknown key "{key}"; dotted keys are for --set, here give "{head}" whole'
            )
        if head not in FIELD_NAMES:
            raise BadInput(
                f'{source}: unknown key "{head}"{did_you_mean(head, FIELD_NAMES)}; '
                f"run `peftbench config --explain` for the valid keys"
            )
        if rest and not _is_object_field(head):
            raise BadInput(
                f'{source}: "{key}": "{head}" is {_type_name(_HINTS[head])}, not an object with keys; '
                f"dotted keys work for: {', '.join(n for n in FIELD_NAMES if _is_object_field(n))}"
            )


def _set_dotted(merged: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    """Set `a.b.c` inside merged["a"], keeping the object's other keys (a copy: the layers stay as read)."""
    parts = key.split(".")
    merged[parts[0]] = copy.deepcopy(merged.get(parts[0], {}))
    node = merged
    for depth, part in enumerate(parts[:-1], start=1):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[:depth])
            raise BadInput(f'{source}: "{key}": "{where}" is {json.dumps(node)}, not an object')
    node[parts[-1]] = value


def build_config(layers: list[tuple[str, dict[str, Any]]]) -> TrainConfig:
    """Merge parameter layers (source name, params), later ones winning, into a checked TrainConfig.

    A dotted key (`optimizer_kwargs.lr`) changes one entry of an object and keeps the others; a plain
    key replaces the whole value, objects included, as the reference's JSON files do.
    A bad value is reported against the last layer that set it, so the user knows which file to fix.
    """
    merged: dict[str, Any] = {}
    for source, params in layers:
        check_keys(params, source=source)
        for key, value in params.items():
            if "." in key:
                _set_dotted(merged, key, value, source=source)
            else:
                merged[key] = value
    missing = [k for k in REQUIRED if k not in merged]
    if missing:
        raise BadInput(f"{layers[0][0]}: missing required keys: {', '.join(missing)}")
    try:
        return TrainConfig(**merged)
    except BadValue as exc:
        raise BadInput(f"{value_sources(layers).get(exc.key, layers[-1][0])}: {exc}") from None


def value_sources(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """Which layer set each value: keys are field names, or `field.key` for the entries of objects.

    A plain key that sets an object sets each of its entries (and forgets the earlier entries'
    sources, since the object is replaced); a dotted key sets that entry only.
    """
    sources: dict[str, str] = {}
    for source, params in layers:
        for key, value in params.items():
            if "." not in key and isinstance(value, dict):
                sources = {k: v for k, v in sources.items() if not k.startswith(f"{key}.")}
                sources.update({f"{key}.{sub}": source for sub in value})
            sources[key] = source
    return sources


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; the value is JSON when it parses as JSON, else a plain string.

    `key` may be dotted (`optimizer_kwargs.lr=3e-3`) to change one entry of an object setting.
    Keys are checked against the fields when the config is built (see `check_keys`).
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not all(key.split(".")):
            raise BadInput(
                f"--set {item!r}: expected KEY=VALUE or KEY.ENTRY=VALUE, e.g. --set max_steps=100, "
                f'--set dtype="bfloat16" or --set optimizer_kwargs.lr=3e-3'
            )
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def explain() -> str:
    """Documentation of every field, for `peftbench config --explain`."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = "" if f.default is dataclasses.MISSING else f" (default: {json.dumps(f.default)})"
        lines.append(f"{f.name}: {_type_name(_HINTS[f.name])}{default}")
        text = f.metadata["help"]
        if f.name in ENTRY_TYPES:
            entries = "; ".join(f"{k}: {_type_name(v)}" for k, v in ENTRY_TYPES[f.name].items())
            text += f" Entries checked for type: {entries}."
        lines.extend(textwrap.wrap(text, width=96, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)
