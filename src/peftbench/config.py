"""The training configuration: every setting documented where it is defined, checked when built.

A run's config is the task's `default_training_params.json`, overlaid with the experiment's
`training_params.json` (only the differences), then with the quick variant and command-line
overrides where given. Unknown keys and bad values are errors that name the file, the key and what
is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftbench.errors import BadInput, did_you_mean

DTYPES = ("float32", "bfloat16", "float16", "int8", "int4")
PEFT_OPTIMIZERS = ("lora+", "lora-fa", "riemannian")
LR_SCHEDULERS = (None, "cosine")


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
        "A torch.optim class name (e.g. 'AdamW'), or 'lora+', 'lora-fa', 'riemannian' from peft.optimizers."
    )
    optimizer_kwargs: dict[str, Any] = _help(
        "Keyword arguments of the optimizer; must include 'lr'. For 'lora+': loraplus_lr_ratio etc."
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
        "max_new_tokens are given, the smaller total length wins."
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
        raise ValueError(f'"{name}" must be {_type_name(hint)}, got {json.dumps(value)}')


def _check_values(c: TrainConfig) -> None:
    positive = ("max_seq_length", "batch_size", "batch_size_eval", "max_steps", "eval_steps")
    for name in (*positive, "gradient_accumulation_steps"):
        if getattr(c, name) <= 0:
            raise ValueError(f'"{name}" must be a positive integer, got {getattr(c, name)}')
    if c.eval_steps > c.max_steps:
        raise ValueError(f'"eval_steps" ({c.eval_steps}) must not exceed "max_steps" ({c.max_steps})')
    if c.grad_norm_clip < 0:
        raise ValueError(f'"grad_norm_clip" must be >= 0 (0 = off), got {c.grad_norm_clip}')
    if "{query}" not in c.query_template:
        raise ValueError('"query_template" must contain "{query}"')
    if c.optimizer_type not in PEFT_OPTIMIZERS:
        import torch.optim

        optimizers = [n for n, v in vars(torch.optim).items() if isinstance(v, type) and n[0].isupper()]
        if c.optimizer_type not in optimizers or c.optimizer_type == "Optimizer":
            hint = did_you_mean(c.optimizer_type, [*optimizers, *PEFT_OPTIMIZERS])
            raise ValueError(
                f'"optimizer_type" {c.optimizer_type!r} is neither a torch.optim class nor one of '
                f"{', '.join(PEFT_OPTIMIZERS)}{hint}"
            )
    if "lr" not in c.optimizer_kwargs:
        raise ValueError('"optimizer_kwargs" must contain "lr"')


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
    return typing.get_origin(_HINTS[name]) is dict


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
    origin: dict[str, str] = {}
    for source, params in layers:
        check_keys(params, source=source)
        for key, value in params.items():
            if "." in key:
                _set_dotted(merged, key, value, source=source)
            else:
                merged[key] = value
            origin[key.split(".")[0]] = source
    missing = [k for k in REQUIRED if k not in merged]
    if missing:
        raise BadInput(f"{layers[0][0]}: missing required keys: {', '.join(missing)}")
    try:
        return TrainConfig(**merged)
    except ValueError as exc:
        key = str(exc).split('"')[1] if '"' in str(exc) else ""
        raise BadInput(f"{origin.get(key, layers[-1][0])}: {exc}") from None


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
        lines.extend(
            textwrap.wrap(f.metadata["help"], width=96, initial_indent="    ", subsequent_indent="    ")
        )
    return "\n".join(lines)
