"""Fit an adapter config to the base model's config before any data, weights or baseline load.

peft takes sizes such as `num_layers` or `token_dim` from adapter_config.json as given: a config written
for a 3B model then fails late and far from its cause (an IndexError, a tensor-size message at the first
step), or trains something else than meant (a prefix for 28 layers on a 4-layer model, 0 parameters).
The checks read only the model's config.json, build the model on the meta device (no weights, no
memory) and wrap it there, so a misfit costs seconds, not a data load and a forgetting baseline.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.errors import BadInput


@dataclass(frozen=True)
class ModelShape:
    """What the checks need from the model's config.json."""

    name: str  # model_id, for messages
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int
    is_encoder_decoder: bool
    has_kv_heads: bool  # grouped-query attention: peft recomputes prefix sizes from the key/value heads


# Adapter keys that must equal a value of the model's config: key -> (model's key, the value).
EQUAL_TO_MODEL: dict[str, tuple[str, Callable[[ModelShape], int]]] = {
    "num_layers": ("num_hidden_layers", lambda m: m.num_layers),
    "token_dim": ("hidden_size", lambda m: m.hidden_size),
    "num_attention_heads": ("num_attention_heads", lambda m: m.num_attention_heads),
    "num_transformer_submodules": ("2 if encoder-decoder else 1", lambda m: 2 if m.is_encoder_decoder else 1),
}
# Adapter keys that must not exceed a value of the model's config.
AT_MOST_MODEL: dict[str, tuple[str, Callable[[ModelShape], int]]] = {
    "adapter_layers": ("num_hidden_layers", lambda m: m.num_layers),
}


def _prefix_recomputes(model: ModelShape) -> bool:
    return model.has_kv_heads


# Where peft overwrites or ignores a key above, a misfit is harmless: (peft_type, key) -> (when, why).
# The warning says so; everywhere else a misfit is an error.
HARMLESS: dict[tuple[str, str], tuple[Callable[[ModelShape], bool], str]] = {
    **{
        (peft_type, key): (_prefix_recomputes, "peft recomputes it from the model's key/value heads")
        for peft_type in ("PREFIX_TUNING", "CARTRIDGE")
        for key in ("token_dim", "num_attention_heads")
    },
    **{
        (peft_type, key): (lambda m: True, f"{peft_type.lower()} does not use it")
        for peft_type in ("PROMPT_TUNING", "P_TUNING")
        for key in ("num_layers", "num_attention_heads")
    },
}
# Methods whose rank keys count what stays frozen, bounded by a layer's smaller side: OSF trains
# min(in, out) - rank singular directions, so a rank at or beyond the width trains nothing.
FROZEN_RANK_KEYS: dict[str, tuple[str, ...]] = {"OSF": ("effective_rank", "rank_pattern")}
# Keys holding token ids, checked against the vocabulary.
TOKEN_INDEX_KEYS = ("token_indices", "trainable_token_indices")


def check_adapter_fit(
    peft_config: Any, *, model_path: str, config_file: Path, model_id: str | None = None
) -> list[str]:
    """Raise BadInput (one line: file, key, value, the model's value) for a config that does not fit
    the model at `model_path` (named `model_id` in messages); print and return warning lines for
    harmless misfits."""
    model_config = _load_model_config(model_path)
    model = _shape(model_config, name=f'"{model_id or model_path}"')
    raw = peft_config.to_dict()
    peft_type = str(raw.get("peft_type", "")).split(".")[-1]
    where = f"{config_file}:"
    found = _check_sizes(raw, peft_type=peft_type, model=model, where=where)
    _check_token_indices(raw, model=model, where=where)
    meta_model = _meta_model(model_config)
    if meta_model is not None:
        found += _check_targets(raw, meta_model=meta_model, model=model, where=where)
        _check_frozen_ranks(raw, peft_type=peft_type, meta_model=meta_model, model=model, where=where)
        _check_meta_wrap(peft_config, meta_model=meta_model, model=model, where=where)
    for line in found:
        print(line, file=sys.stderr)
    return found


def _load_model_config(model_path: str) -> Any:
    from transformers import AutoConfig

    from peftbench import hub

    if hub.is_hub_id(model_path):
        hub.check_reachable(
            f'model_id "{model_path}"', local_copy="set model_id to a local folder (--set model_id=/path)"
        )
    try:
        return AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise BadInput(
            f'model_id "{model_path}": cannot load its config ({str(exc).splitlines()[0]})'
        ) from None


def _shape(model_config: Any, *, name: str) -> ModelShape:
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return ModelShape(
        name=name,
        num_layers=getattr(text, "num_hidden_layers", 0),
        hidden_size=getattr(text, "hidden_size", 0),
        num_attention_heads=getattr(text, "num_attention_heads", 0),
        vocab_size=getattr(text, "vocab_size", 0),
        is_encoder_decoder=bool(getattr(model_config, "is_encoder_decoder", False)),
        has_kv_heads=getattr(text, "num_key_value_heads", None) is not None,
    )


def _check_sizes(raw: dict[str, Any], *, peft_type: str, model: ModelShape, where: str) -> list[str]:
    warned = []
    for key, (model_key, value_of) in {**EQUAL_TO_MODEL, **AT_MOST_MODEL}.items():
        value, model_value = raw.get(key), value_of(model)
        if not isinstance(value, int) or not model_value:
            continue
        fits = value == model_value if key in EQUAL_TO_MODEL else value <= model_value
        if fits:
            continue
        relation = "" if key in EQUAL_TO_MODEL else "at most "
        line = f'{where} "{key}" is {value}, but the model {model.name} has {model_key} {model_value}'
        harmless = HARMLESS.get((peft_type, key))
        if harmless is not None and harmless[0](model):
            warned.append(f"warning: {line} ({harmless[1]}; remove the key or set it to {model_value})")
        else:
            raise BadInput(f"{line}; set it to {relation}{model_value} or remove it")
    return warned


def _check_token_indices(raw: dict[str, Any], *, model: ModelShape, where: str) -> None:
    for key in TOKEN_INDEX_KEYS:
        value = raw.get(key)
        groups = value.values() if isinstance(value, dict) else [value] if value else []
        beyond = sorted(
            {i for group in groups for i in group if isinstance(i, int) and i >= model.vocab_size}
        )
        if model.vocab_size and beyond:
            raise BadInput(
                f'{where} "{key}" has token index {", ".join(map(str, beyond))}, but the model '
                f"{model.name} has vocab_size {model.vocab_size} (indices 0 to {model.vocab_size - 1})"
            )


def _meta_model(model_config: Any) -> Any:
    """The model built from its config on the meta device (no weights), or None where that fails
    (a custom architecture, say): the checks that need it are then left to the real wrap."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_config(model_config)
    except Exception:  # any failure here only means "check later, on the real model"
        return None


def _linear_widths(meta_model: Any) -> dict[str, int]:
    """name -> min(in, out) of each 2-D weight's module."""
    return {
        name: min(module.weight.shape)
        for name, module in meta_model.named_modules()
        if getattr(getattr(module, "weight", None), "ndim", 0) == 2
    }


def _check_targets(raw: dict[str, Any], *, meta_model: Any, model: ModelShape, where: str) -> list[str]:
    targets = raw.get("target_modules")
    if not isinstance(targets, list | set | tuple) or not targets:
        return []  # a regex or "all-linear": peft's own match is the check
    names = [name for name, _ in meta_model.named_modules()]
    leaves = sorted({name.rsplit(".", 1)[-1] for name in _linear_widths(meta_model)})
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if not missing:
        return []
    line = (
        f'{where} does not fit the model {model.name}: "target_modules" names {", ".join(sorted(missing))}, '
        f"which it does not have (its linear layers: {', '.join(leaves)})"
    )
    if len(missing) == len(targets):
        raise BadInput(line)
    return [f"warning: {line}"]


def _check_frozen_ranks(
    raw: dict[str, Any], *, peft_type: str, meta_model: Any, model: ModelShape, where: str
) -> None:
    widths = _linear_widths(meta_model)
    for key in FROZEN_RANK_KEYS.get(peft_type, ()):
        value = raw.get(key)
        patterns = value if isinstance(value, dict) else {"": value}
        for pattern, rank in patterns.items():
            # a float in (0, 1] is a fraction of the width, which always fits
            if not isinstance(rank, int) or isinstance(rank, bool):
                continue
            matched = [w for name, w in widths.items() if re.search(pattern, name)]
            if matched and rank >= min(matched):
                label = f'"{key}"' if not pattern else f'"{key}" for "{pattern}"'
                raise BadInput(
                    f"{where} {label} is {rank}, but those layers of the model {model.name} have "
                    f"min(in, out) = {min(matched)}: {peft_type} would train nothing there; use less than "
                    f"{min(matched)}"
                )


def _check_meta_wrap(peft_config: Any, *, meta_model: Any, model: ModelShape, where: str) -> None:
    """Wrap the meta model as the run will wrap the real one: peft's own misfit errors, and a run that
    would train 0 parameters, come out now. Initialisations that need real weights (SVD and the like)
    cannot run on the meta device; those configs are checked after the real wrap instead."""
    import copy

    from peft import get_peft_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = get_peft_model(meta_model, copy.deepcopy(peft_config), low_cpu_mem_usage=True)
    except (ValueError, TypeError, KeyError, NotImplementedError, AttributeError, RuntimeError) as exc:
        message = str(exc).strip()
        if "meta" in message.lower() or not message:
            return
        raise BadInput(f"{where} does not fit the model {model.name}: {message.splitlines()[0]}") from None
    refuse_zero_trainable(wrapped, where=where, model_name=model.name)


def refuse_zero_trainable(model: Any, *, where: str, model_name: str = "") -> None:
    """A run that would train nothing measures nothing: refuse it rather than report success."""
    if not any(p.requires_grad and p.numel() for p in model.parameters()):
        on = f" on the model {model_name}" if model_name else ""
        raise BadInput(f"{where} the adapter has 0 trainable parameters{on}; the run would train nothing")
