"""Method hooks: the one place where a PEFT method declares what it needs from the training loop.

The loops (peftbench.train; peftbench.rl, which takes no `init` hook) are method-free: they call
whatever hooks the model's method registered.
A method registers its hooks under its peft type (`"ADALORA"`, `"LORA"`, ...):

    from peftbench import methods

    methods.register("MYMETHOD", methods.MethodHooks(on_step=my_allocation))

The kinds of hook (`HOOK_KINDS`), each optional:

- `aux_loss(model) -> tensor | float`: added to every micro-batch's objective, weighted by
  1 / micro-batches, so that a step's total is one auxiliary term (KaSA's regularisers). It is not
  part of the logged training loss.
- `on_step(model, step)`: after each optimizer step, before the next zero_grad (AdaLoRA's and
  AdaMSS's rank allocation). Steps count from 1.
- `init(model, batches)`: once before the optimizer is built, with the collated micro-batches of
  the first `init_steps` training steps (on the run's device) for a data-dependent initialisation.
  The batches come from a separate stream with the run's seed: training sees the same data as
  without the hook.
- `applies(peft_config) -> bool`: when a variant lives inside another type's config (KaSA is a
  `LoraConfig` with `kasa_config`), the registration counts only for configs it accepts. Several
  registrations of one peft type are told apart by `name`.

Optimizer factories are keyed by the `optimizer_type` training parameter instead, since the choice
of optimizer is a training setting of an experiment (`"lora+"`, `"lora-fa"`, `"riemannian"`):
`register_optimizer(name, OptimizerFactory(...))`. Registering an optimizer makes its name valid in
`training_params.json`.

Nothing here imports torch or peft at import time: configs load without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from peftbench.errors import did_you_mean

HOOK_KINDS = ("aux_loss", "on_step", "init")


@dataclass(frozen=True)
class MethodHooks:
    """What one method needs from the loop beyond forward, backward and step (see the module docstring)."""

    aux_loss: Callable[[Any], Any] | None = None
    on_step: Callable[[Any, int], None] | None = None
    init: Callable[[Any, list[dict[str, Any]]], None] | None = None
    init_steps: int = 1  # training steps whose micro-batches `init` sees
    applies: Callable[[Any], bool] | None = None  # None: every config of the peft type

    def __post_init__(self) -> None:
        for kind in HOOK_KINDS:
            hook = getattr(self, kind)
            if hook is not None and not callable(hook):
                raise TypeError(f"method hook {kind!r} must be callable, got {type(hook).__name__}")
        if self.init_steps < 1:
            raise ValueError(f"method hook init_steps must be >= 1, got {self.init_steps}")


@dataclass(frozen=True)
class OptimizerFactory:
    """Builds an optimizer for a model from `optimizer_kwargs`.

    `create(model, kwargs)` returns the optimizer. The kwargs an experiment may set are checked
    against `arguments`, or, for peft's factories, against the signature of `peft_function` (in
    peft.optimizers) plus the entries it `pops` itself, plus those of the torch.optim class
    `passes_to` that gets its remaining **kwargs.
    """

    create: Callable[[Any, dict[str, Any]], Any]
    arguments: tuple[str, ...] = ()
    peft_function: str = ""
    passes_to: str | None = None
    pops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registration:
    peft_type: str
    name: str
    hooks: MethodHooks


_METHODS: dict[tuple[str, str], Registration] = {}
OPTIMIZERS: dict[str, OptimizerFactory] = {}


def register(
    peft_type: str, hooks: MethodHooks | Mapping[str, Any], *, name: str | None = None
) -> Registration:
    """Declare the hooks of a PEFT type (or of a named variant of it: `name`, with `hooks.applies`).

    `hooks` is a MethodHooks or a mapping of hook kind to callable. An unknown kind, or a second
    registration of one (peft_type, name), raises ValueError.
    """
    if not isinstance(hooks, MethodHooks):
        known = [f.name for f in fields(MethodHooks)]
        for kind in hooks:
            if kind not in known:
                raise ValueError(
                    f"unknown method hook kind {kind!r} for {peft_type}; allowed: "
                    f"{', '.join(known)}{did_you_mean(kind, known)}"
                )
        hooks = MethodHooks(**hooks)
    peft_type = str(peft_type).upper()
    key = (peft_type, name or peft_type)
    if key in _METHODS:
        raise ValueError(f"method hooks for {peft_type} ({key[1]}) are already registered; unregister first")
    _METHODS[key] = registration = Registration(peft_type=peft_type, name=key[1], hooks=hooks)
    return registration


def unregister(peft_type: str, *, name: str | None = None) -> None:
    """Remove a registration (a test's toy method, or to replace a built-in one)."""
    peft_type = str(peft_type).upper()
    _METHODS.pop((peft_type, name or peft_type), None)


def register_optimizer(name: str, factory: OptimizerFactory) -> None:
    """Make `name` a valid `optimizer_type`; a name already taken raises ValueError."""
    if name in OPTIMIZERS:
        raise ValueError(f"optimizer_type {name!r} is already registered")
    OPTIMIZERS[name] = factory


@dataclass(frozen=True)
class Hooks:
    """The hooks that apply to one model, resolved once when training starts."""

    aux_loss: Callable[[Any], Any] | None = None
    on_step: Callable[[Any, int], None] | None = None
    init: Callable[[Any, list[dict[str, Any]]], None] | None = None
    init_steps: int = 0


def hooks_for(peft_config: Any) -> Hooks:
    """The registered hooks for a PEFT config (None, full fine-tuning, has none).

    Two registrations giving the same kind to one config raise ValueError: which to run would
    otherwise depend on the order of registration.
    """
    if peft_config is None:
        return Hooks()
    peft_type = str(getattr(peft_config.peft_type, "value", peft_config.peft_type)).upper()
    chosen: dict[str, Any] = {}
    for reg in _METHODS.values():
        if reg.peft_type != peft_type or (reg.hooks.applies and not reg.hooks.applies(peft_config)):
            continue
        for kind in HOOK_KINDS:
            hook = getattr(reg.hooks, kind)
            if hook is None:
                continue
            if kind in chosen:
                raise ValueError(
                    f"two registrations give {peft_type} a {kind!r} hook: {chosen[kind][0]}, {reg.name}"
                )
            chosen[kind] = (reg.name, hook, reg.hooks.init_steps)
    init = chosen.get("init")
    return Hooks(
        aux_loss=chosen["aux_loss"][1] if "aux_loss" in chosen else None,
        on_step=chosen["on_step"][1] if "on_step" in chosen else None,
        init=init[1] if init else None,
        init_steps=init[2] if init else 0,
    )


def create_optimizer(model: Any, *, optimizer_type: str, kwargs: dict[str, Any]) -> Any:
    """A registered factory's optimizer, else torch.optim.<optimizer_type> over the trainable parameters."""
    import torch

    if optimizer_type in OPTIMIZERS:
        return OPTIMIZERS[optimizer_type].create(model, dict(kwargs))
    params = [p for p in model.parameters() if p.requires_grad]
    return getattr(torch.optim, optimizer_type)(params, **kwargs)


# ---- the built-in methods ---------------------------------------------------------------------


def _allocate(model: Any, step: int) -> None:
    # peft's rank allocation: AdaLoRA's budget schedule, AdaMSS's subspace masking (a no-op
    # unless use_asa); both ask to be called after optimizer.step, before zero_grad
    model.base_model.update_and_allocate(step)


def _uses_kasa(peft_config: Any) -> bool:
    return getattr(peft_config, "kasa_config", None) is not None


def _kasa_loss(model: Any) -> Any:
    # KaSA's regularisers (on its singular values and the factors' orthogonality) are part of the
    # method, but peft cannot add them to the loss itself: the training loop must (peft's KaSA docs)
    return model.base_model._get_kasa_loss()


def _loraplus(model: Any, kwargs: dict[str, Any]) -> Any:
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)


def _lorafa(model: Any, kwargs: dict[str, Any]) -> Any:
    from peft.optimizers import create_lorafa_optimizer

    # the reference repeats r and lora_alpha in optimizer_kwargs; default them from the LoRA config
    lora = model.peft_config[model.active_adapter]
    kwargs.setdefault("r", lora.r)
    kwargs.setdefault("lora_alpha", lora.lora_alpha)
    return create_lorafa_optimizer(model, **kwargs)


def _riemannian(model: Any, kwargs: dict[str, Any]) -> Any:
    import torch
    from peft.optimizers import create_riemannian_optimizer

    return create_riemannian_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)


register("ADALORA", MethodHooks(on_step=_allocate))
register("ADAMSS", MethodHooks(on_step=_allocate))
register("LORA", MethodHooks(aux_loss=_kasa_loss, applies=_uses_kasa), name="kasa")
register_optimizer(
    "lora+",
    OptimizerFactory(
        _loraplus,
        peft_function="create_loraplus_optimizer",
        passes_to="AdamW",
        pops=("loraplus_weight_decay", "loraplus_lr_embedding"),
    ),
)
register_optimizer("lora-fa", OptimizerFactory(_lorafa, peft_function="create_lorafa_optimizer"))
register_optimizer(
    "riemannian",
    OptimizerFactory(_riemannian, peft_function="create_riemannian_optimizer", passes_to="AdamW"),
)
