"""The project's experiment catalogue: one default adapter config per PEFT method, sized to a base model.

`peftbench catalogue benchmarks/<task>` writes
`benchmarks/<task>/experiments/<method>/<base-model-short>-<variant>/adapter_config.json` (and a
`training_params.json` with the differences from the task's defaults where a method needs them) for
every PEFT method of the installed peft that can adapt a LlamaForCausalLM, plus full fine-tuning
(a folder without adapter_config.json) and the LoRA variants (DoRA, rsLoRA, LoRA+, LoRA-FA,
PiSSA, OLoRA, Riemannian, KaSA, MiCA, BD-LoRA, and LoRA on the MLP only). `--check` only compares
and exits 1 when a file differs.

Hyperparameters follow the reference suite's MetaMathQA experiments on Llama-3.2-3B (rank 32,
alpha 64, the learning rates that worked there) and are scaled to the base model's shapes by
`Scale`: ranks, block sizes, virtual tokens and per-module patterns must fit the model (the
embedded tinymath model is a 4-layer, hidden-192 Llama). With `--model-config`, learning rates
keep their ratio to the task's default lr (see `Scale.lr`), and full fine-tuning takes
`--full-finetuning-lr` (measured per task: it does not follow the adapters' ratio). A method that
needs something the runner does not provide is listed in `EXCLUDED` with the reason. Learning rates
chosen on the validation split come from `peftbench tune` (an experiment's `-tuned` copy), not from
the catalogue.

    peftbench catalogue benchmarks/tinymath \
        --model-config benchmarks/tinymath/base_model/config.json --full-finetuning-lr 2e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.errors import BadInput, did_you_mean
from peftbench.files import ADAPTER_CONFIG, DEFAULT_PARAMS, EXPERIMENTS, TRAINING_PARAMS, atomic_write_text

REFERENCE_DEFAULT_LR = 1e-4  # the reference's MetaMathQA default_training_params.json
LR_CAP = 0.05  # scaled learning rates stop here (see Scale.lr)

# PEFT methods (peft.PeftType values) that the catalogue leaves out, and why
EXCLUDED: dict[str, str] = {
    "MULTITASK_PROMPT_TUNING": "needs a task id per example (task_ids in forward); the benchmark has 1 task",
    "POLY": "multi-task routing: needs task_ids in every forward; the benchmark is single-task",
    "XLORA": "mixes already trained LoRA adapters; it needs adapters to start from, not a base model",
    "CPT": "needs token-type masks of in-context examples (cpt_token_ids, cpt_tokens_type_mask) that the "
    "benchmark's prompt format does not have",
}


@dataclass(frozen=True)
class Scale:
    """The base model's shapes that hyperparameters depend on, and the reference rank for it."""

    prefix: str  # base_model_short: experiment names start with it
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    bos_token_id: int
    eos_token_id: int
    rank: int = 32  # the LoRA family's rank; 32 on Llama-3.2-3B
    virtual_tokens: int = 200  # prompt and prefix tuning
    head_dim: int | None = None  # when the config sets it; else hidden_size // num_attention_heads
    # learning rates: the reference's, times lr_factor (the task's default lr over the reference's
    # default, 1e-4), capped at LR_CAP unless the reference's own lr is higher; see `lr`
    lr_factor: float = 1.0
    full_finetuning_lr: float = 1e-5  # the reference's; a small model needs its own, measured

    def lr(self, reference_lr: float) -> float:
        """The learning rate for this scale of a method whose reference lr is `reference_lr`.

        Keeps each method's lr relative to the task default, as the reference tuned it (IA3 and VeRA
        10x the default, OSF half). The cap stops a 10x method at a rate that diverges on a small model,
        but methods tuned far above it (C3A 0.3, trainable tokens 0.2) keep their own.
        """
        if self.lr_factor == 1.0:
            return reference_lr
        return float(f"{min(reference_lr * self.lr_factor, max(reference_lr, LR_CAP)):.2g}")

    def lr_name(self, reference_text: str, reference_lr: float) -> str:
        """How an experiment name spells the lr: the reference's spelling at its own scale."""
        return reference_text if self.lr_factor == 1.0 else f"{self.lr(reference_lr):g}"

    @property
    def kv_dim(self) -> int:
        """Output width of k_proj and v_proj."""
        return self.num_key_value_heads * (self.head_dim or self.hidden_size // self.num_attention_heads)

    @classmethod
    def from_model_config(cls, config: Any, *, prefix: str) -> Scale:
        """Derive the scale from a transformers LlamaConfig (or a dict of its fields)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        hidden = int(get("hidden_size"))
        heads = int(get("num_attention_heads"))
        bos, eos = get("bos_token_id", 0), get("eos_token_id", 1)
        eos = eos[0] if isinstance(eos, list) else eos
        return cls(
            prefix=prefix,
            hidden_size=hidden,
            intermediate_size=int(get("intermediate_size")),
            num_layers=int(get("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=int(get("num_key_value_heads") or heads),
            bos_token_id=int(bos if bos is not None else 0),
            eos_token_id=int(eos if eos is not None else 1),
            # rank 32 at hidden 3072 as in the reference; a quarter of that per 4x smaller, at least 4
            rank=max(4, min(32, hidden // 32)),
            virtual_tokens=200 if hidden >= 1024 else 20,
            head_dim=int(get("head_dim")) if get("head_dim") else None,
        )


# meta-llama/Llama-3.2-3B's config.json (facts; the model itself is not needed to write configs)
LLAMA_3_2_3B = Scale(
    prefix="llama-3.2-3B",
    hidden_size=3072,
    intermediate_size=8192,
    num_layers=28,
    num_attention_heads=24,
    num_key_value_heads=8,
    bos_token_id=128000,
    eos_token_id=128001,
)
BUILTIN_SCALES = {LLAMA_3_2_3B.prefix: LLAMA_3_2_3B}


@dataclass(frozen=True)
class Entry:
    """One experiment of the catalogue: `<method>/<scale.prefix>-<variant>`."""

    method: str  # folder name, e.g. "lora", "full-finetuning"
    variant: str
    peft_type: str | None  # peft.PeftType value; None for full fine-tuning
    config: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the peft config class
    training_params: dict[str, Any] = field(default_factory=dict)  # differences from the task defaults

    def name(self, scale: Scale) -> str:
        return f"{scale.prefix}-{self.variant}"

    def peft_config(self) -> Any:
        """The peft config object (None for full fine-tuning); task_type CAUSAL_LM as in the reference."""
        if self.peft_type is None:
            return None
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
        from peft.utils import PeftType

        cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(self.peft_type)]
        return cls(task_type="CAUSAL_LM", **self.config)


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n not above limit (block sizes must divide the layer widths)."""
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def _lr(s: Scale, lr: float, *, weight_decay: float | None = None, **extra: Any) -> dict[str, Any]:
    """optimizer_kwargs for the reference lr `lr`, scaled to `s`."""
    # optimizer_kwargs replaces the task's dict as a whole, as in the reference: without weight_decay here,
    # AdamW's own default (0.01) applies, which is what the reference's runs with {"lr": ...} used
    kwargs: dict[str, Any] = {"lr": s.lr(lr)}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return {"optimizer_kwargs": {**kwargs, **extra}}


QV = ["q_proj", "v_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", *MLP]


def _e(
    method: str, variant: str, peft_type: str, params: dict[str, Any] | None = None, /, **config: Any
) -> Entry:
    # positional-only, so that config fields may be called "variant" or "method" (RoAd has one)
    return Entry(method, variant, peft_type, config, params or {})


def _mlp_ranks(s: Scale, *, nblocks: int) -> tuple[int, int]:
    """Ranks on the MLP (gate, up, down) with about the trainable parameters of rank `s.rank` on
    q and v, as the reference's rank 10 (plain) and rank 14 (BD-LoRA, a multiple of nblocks) on
    Llama-3.2-3B. BD-LoRA's block-diagonal factor has 1/nblocks of the weights."""
    h, i = s.hidden_size, s.intermediate_size
    budget = s.rank * (2 * h + h + s.kv_dim)  # q: h -> h, v: h -> kv_dim
    plain = max(1, round(budget / (3 * (h + i))))
    per_rank_bd = 3 * (h + i // nblocks)  # gate, up: B block-diagonal; down: A block-diagonal
    bd = max(nblocks, budget // per_rank_bd // nblocks * nblocks)
    return plain, bd


def _lora_family(s: Scale) -> list[Entry]:
    r, alpha = s.rank, 2 * s.rank
    nblocks = 2
    mlp_r, bd_r = _mlp_ranks(s, nblocks=nblocks)
    # BD-LoRA: which factor is block-diagonal follows the layer's sharding (peft's BdLoraConfig)
    bdlora = {
        "target_modules_bd_a": ["o_proj", "down_proj"],
        "target_modules_bd_b": ["q_proj", "v_proj", "k_proj", "up_proj", "gate_proj"],
        "nblocks": nblocks,
    }
    return [
        _e("lora", f"rank{r}", "LORA", r=r, lora_alpha=alpha),
        _e("lora", f"rank{2 * r}", "LORA", r=2 * r, lora_alpha=4 * r),
        _e("lora", f"rank{r}-dora", "LORA", r=r, lora_alpha=alpha, use_dora=True),
        # rsLoRA scales by alpha/sqrt(r): the reference's rank-64 run with alpha 64
        _e("lora", f"rank{2 * r}-rslora", "LORA", r=2 * r, lora_alpha=2 * r, use_rslora=True),
        _e("lora", f"rank{r}-loraplus", "LORA",
           {"optimizer_type": "lora+", **_lr(s, 1e-4, weight_decay=0.1, loraplus_lr_ratio=16)},
           r=r, lora_alpha=alpha),
        _e("lora", f"rank{r}-lorafa", "LORA",
           {"optimizer_type": "lora-fa", **_lr(s, 1e-4, weight_decay=0.1, r=r, lora_alpha=alpha)},
           r=r, lora_alpha=alpha),
        _e("lora", f"rank{r}-riemannian", "LORA",
           {"optimizer_type": "riemannian", **_lr(s, 1e-4, weight_decay=0.1, reg=0.01)},
           r=r, lora_alpha=alpha),
        # PiSSA and OLoRA move principal components of W into the adapter; alpha = r keeps the scale at 1.
        # PiSSA through peft's randomized SVD (4 iterations): a full SVD of every matrix is slow on 3B
        _e("lora", f"rank{r}-pissa", "LORA", r=r, lora_alpha=r, init_lora_weights="pissa_niter_4"),
        _e("lora", f"rank{r}-olora", "LORA", r=r, lora_alpha=r, init_lora_weights="olora"),
        # KaSA truncates the base weight's smallest singular directions; its regularizers (beta, gamma)
        # are added to the loss by the training loop
        _e("lora", f"rank{r}-kasa", "LORA", r=r, lora_alpha=alpha, kasa_config={"beta": 1e-4, "gamma": 1e-3}),
        # MiCA: B from the smallest singular directions of W, A zero
        _e("lora", f"rank{r}-mica", "LORA", r=r, lora_alpha=alpha, init_lora_weights="mica"),
        _e("lora", f"rank{mlp_r}-target-mlp", "LORA", r=mlp_r, lora_alpha=2 * mlp_r, target_modules=MLP),
        _e("lora", f"rank{bd_r}-target-mlp-bdlora", "LORA", r=bd_r, lora_alpha=2 * bd_r, target_modules=MLP,
           use_bdlora=bdlora),
    ]  # fmt: skip


def _prompt_methods(s: Scale) -> list[Entry]:
    # token_dim, num_layers and num_attention_heads are filled in by peft from the model's config
    n = s.virtual_tokens
    lr3, lr5 = _lr(s, 1e-3), _lr(s, 5e-3)
    return [
        _e("prompt_tuning", f"sample_vocab-lr_{s.lr_name('0.001', 1e-3)}", "PROMPT_TUNING", lr3,
           num_virtual_tokens=n, prompt_tuning_init="SAMPLE_VOCAB"),
        _e("ptuning", "default", "P_TUNING", num_virtual_tokens=max(1, n // 10),
           encoder_hidden_size=s.hidden_size),
        _e("prefixtuning", f"lr_{s.lr_name('0.005', 5e-3)}_zero_init", "PREFIX_TUNING", lr5,
           num_virtual_tokens=n, init_weights="zero"),
        _e("cartridge", f"lr_{s.lr_name('0.005', 5e-3)}", "CARTRIDGE", lr5, num_virtual_tokens=n),
        _e("adaptionprompt", f"lr_{s.lr_name('5e-3', 5e-3)}", "ADAPTION_PROMPT", lr5,
           adapter_layers=s.num_layers, adapter_len=max(10, n // 2)),
    ]  # fmt: skip


def _additive_methods(s: Scale, *, max_steps: int) -> list[Entry]:
    r, alpha = s.rank, 2 * s.rank
    min_dim = min(s.hidden_size, s.kv_dim)
    # block sizes and vector lengths must divide the widths of every target matrix
    width_gcd = math.gcd(s.hidden_size, s.kv_dim)
    # spectral methods: 5000 coefficients per matrix on the 3B model, at most 1/8 of the smaller matrix
    n_freq = min(5000, s.hidden_size * s.kv_dim // 8)
    lily_r = min(28 * r, min_dim)  # 896 on the 3B model: Lily wants several times the LoRA rank
    wide_r = min(8 * r, min_dim)  # 256 on the 3B model (PSOFT, VeRA, PVeRA)
    supra_r = max(1, r // 4)
    return [
        # AdaLoRA's schedule as in the reference on 5000 steps: 200 warm-up steps, 500 final steps
        _e("adalora", f"rank{r}", "ADALORA", init_r=2 * r, target_r=r, lora_alpha=8, beta1=0.85, beta2=0.85,
           orth_reg_weight=0.5, tinit=max(1, round(0.04 * max_steps)), tfinal=max(1, round(0.1 * max_steps)),
           deltaT=1, total_step=max_steps),
        _e("adamss", f"rank{r}", "ADAMSS", r=min(100, min_dim), num_subspaces=r),
        _e("beft", "target-v_proj", "BEFT", target_modules=["v_proj"]),
        _e("boft", "default", "BOFT"),
        _e("c3a", "default", "C3A", _lr(s, 0.3, weight_decay=1e-5),
           block_size=_divisor_at_most(width_gcd, 64), target_modules=QV),
        _e("deft", f"rank{r}", "DEFT", r=r, alpha=4 * r),
        _e("delora", f"rank{r}", "DELORA", _lr(s, 1e-3), r=r),
        _e("fourierft", f"n_frequency-{n_freq}", "FOURIERFT", n_frequency=n_freq, scaling=300,
           target_modules=QV),
        # keeps the frozen base weights of adapted layers off the accelerator, as in the reference's run
        _e("frod", "default", "FROD", runtime_offload_base_weight=True),
        _e("glora", "default", "GLORA", target_modules=QV),
        _e("gralora", f"rank{r}", "GRALORA", _lr(s, 2e-4), r=r, alpha=alpha),
        _e("hira", f"rank{r}-lr{s.lr_name('4.5e-3', 4.5e-3)}", "HIRA", _lr(s, 4.5e-3, weight_decay=0.0),
           r=r, target_modules=QV),
        _e("hra", f"rank{2 * min(r, 8)}", "HRA", r=2 * min(r, 8), target_modules=QV),
        _e("ia3", f"lr_{s.lr_name('0.001', 1e-3)}", "IA3", _lr(s, 1e-3)),
        # A shared by half of the layers, two B experts
        _e("lily", f"rank{lily_r}-a2-b2-s2.0", "LILY", r=lily_r, stride_A=max(1, s.num_layers // 2), num_B=2,
           scaling=2.0, target_modules=QV),
        _e("ln_tuning", "default", "LN_TUNING"),
        _e("loha", f"rank{r}", "LOHA", r=r, alpha=alpha, target_modules=QV),
        _e("lokr", f"rank{r}-factor4-lr{s.lr_name('0.003', 3e-3)}", "LOKR", _lr(s, 3e-3, weight_decay=0.1),
           r=r, alpha=alpha, decompose_factor=4, target_modules=QV),
        _e("miss", "default", "MISS", r=_divisor_at_most(s.kv_dim, 2 * r)),
        _e("oft", f"rank{r}", "OFT", r=r, oft_block_size=0, target_modules=QV),
        # OSF trains min(shape) - effective_rank directions: 4x the LoRA rank (the reference's 128)
        _e("osf", f"rank{4 * r}", "OSF", {"autocast_adapter_dtype": False, **_lr(s, 5e-5)},
           target_modules=ALL_LINEAR, rank_pattern=_osf_pattern(s)),
        _e("peanut", f"rank{r}-relu-depth0-s2.0", "PEANUT", r=r, scaling=2.0, target_modules=QV),
        _e("psoft", "default", "PSOFT", r=wide_r, psoft_alpha=wide_r),
        _e("pvera", "default", "PVERA", _lr(s, 3e-3), r=wide_r),
        _e("randlora", "default", "RANDLORA", r=r),
        _e("road", f"lr_{s.lr_name('0.001', 1e-3)}", "ROAD", _lr(s, 1e-3), variant="road_2",
           group_size=_divisor_at_most(s.kv_dim, 64)),
        _e("shadow", "default", "SHADOW"),
        _e("shira", f"lr_{s.lr_name('0.0003', 3e-4)}-random_seed_42", "SHIRA", _lr(s, 3e-4), r=r,
           random_seed=42),
        _e("supertuning", f"s99-supra-r{supra_r}", "SUPERTUNING", r=supra_r, lora_alpha=float(2 * supra_r),
           target_modules=QV),
        _e("tinylora", "default", "TINYLORA", _lr(s, 1e-3)),
        _e("trainable_tokens", "sos+eos", "TRAINABLE_TOKENS", _lr(s, 0.2),
           token_indices=sorted({s.bos_token_id, s.eos_token_id})),  # one token when bos is eos
        _e("unilora", "default", "UNILORA", r=r, target_modules=QV),
        _e("vblora", "default", "VBLORA", vector_length=_divisor_at_most(width_gcd, 256), target_modules=QV),
        _e("vera", "default", "VERA", _lr(s, 1e-3), r=wide_r),
        _e("waveft", f"n_frequency-{n_freq}", "WAVEFT", n_frequency=n_freq, target_modules=QV),
    ]  # fmt: skip


def _osf_pattern(s: Scale) -> dict[str, int]:
    trainable = 4 * s.rank
    dims = {
        "q_proj": s.hidden_size,
        "o_proj": s.hidden_size,
        "k_proj": min(s.hidden_size, s.kv_dim),
        "v_proj": min(s.hidden_size, s.kv_dim),
        "gate_proj": min(s.hidden_size, s.intermediate_size),
        "up_proj": min(s.hidden_size, s.intermediate_size),
        "down_proj": min(s.hidden_size, s.intermediate_size),
    }
    return {name: max(1, dim - trainable) for name, dim in dims.items()}


def catalogue(scale: Scale, *, max_steps: int = 5000) -> list[Entry]:
    """Every experiment of the catalogue for a base model of this scale, sorted by id.

    `max_steps` is the task's training length, which schedules such as AdaLoRA's depend on.
    """
    entries = [
        Entry(
            "full-finetuning",
            "lr_0.00001" if scale.lr_factor == 1.0 else f"lr_{scale.full_finetuning_lr:g}",
            None,
            {},
            {"optimizer_kwargs": {"lr": scale.full_finetuning_lr}},
        ),
        *_lora_family(scale),
        *_prompt_methods(scale),
        *_additive_methods(scale, max_steps=max_steps),
    ]
    return sorted(entries, key=lambda e: (e.method, e.variant))


def config_json(entry: Entry) -> str | None:
    """The adapter_config.json text of an entry, deterministic (sorted keys, sets as sorted lists)."""
    config = entry.peft_config()
    if config is None:
        return None
    data = config.to_dict()
    for key, value in data.items():
        if isinstance(value, set):
            data[key] = sorted(value)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def planned_files(
    entries: list[Entry], scale: Scale, experiments_dir: Path
) -> Iterator[tuple[Path, str | None]]:
    """(path, text) for every file the catalogue owns; text None means the file must not exist."""
    for entry in entries:
        folder = experiments_dir / entry.method / entry.name(scale)
        yield folder / ADAPTER_CONFIG, config_json(entry)
        params = (
            json.dumps(entry.training_params, indent=2, sort_keys=True) + "\n"
            if entry.training_params
            else None
        )
        yield folder / TRAINING_PARAMS, params


def write_catalogue(
    entries: list[Entry], scale: Scale, *, experiments_dir: Path, check: bool = False
) -> list[Path]:
    """Write (or with check=True only compare) the catalogue; return the paths that differed.

    Only files whose text differs are written (or removed): a sweep takes a config file newer than
    its result as a change, as make does, so rewriting identical files would make every run pending.
    Other experiment folders are left alone.
    """
    plan = list(planned_files(entries, scale, experiments_dir))
    changed = [
        path for path, text in plan if (path.read_text(encoding="utf-8") if path.is_file() else None) != text
    ]
    if check:
        return changed
    for path, text in plan:
        if path not in changed:
            continue
        if text is None:
            path.unlink(missing_ok=True)
            continue
        atomic_write_text(path, text)
    return changed


def _scale_for(args: argparse.Namespace, task_dir: Path, *, default_lr: float) -> Scale:
    if args.model_config:
        path = Path(args.model_config)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"{path}: cannot read a model config ({exc})") from None
        missing = [
            k
            for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            if k not in config
        ]
        if missing:
            raise BadInput(f"{path}: not a Llama config; missing {', '.join(missing)}")
        from peftbench.tasks import get_task

        prefix = args.prefix or get_task(task_dir.name).base_model_short
        scale = Scale.from_model_config(config, prefix=prefix)
        scale = dataclasses.replace(scale, lr_factor=default_lr / REFERENCE_DEFAULT_LR)
        if args.full_finetuning_lr is not None and not args.full_finetuning_lr > 0:
            raise BadInput(f"--full-finetuning-lr must be positive, got {args.full_finetuning_lr}")
        full_ft_lr = args.full_finetuning_lr or scale.lr(LLAMA_3_2_3B.full_finetuning_lr)
        return dataclasses.replace(scale, full_finetuning_lr=full_ft_lr)
    name = args.scale
    if name not in BUILTIN_SCALES:
        raise BadInput(
            f'--scale: unknown scale "{name}"{did_you_mean(name, BUILTIN_SCALES)}; '
            f"known: {', '.join(BUILTIN_SCALES)}"
        )
    return BUILTIN_SCALES[name]


def regenerate(args: argparse.Namespace) -> tuple[int, list[Path], Path]:
    """`peftbench catalogue`'s work (peftbench.commands.catalogue_cmd has the options): read the task's
    defaults, size the catalogue, write it (or with `args.check` only compare). Returns the number of
    experiments, the files that differ (written or removed unless checking) and the experiments folder."""
    task_dir = Path(args.task_dir)
    defaults_path = task_dir / DEFAULT_PARAMS
    if not defaults_path.is_file():
        raise BadInput(f"{task_dir}: not a task folder (no {DEFAULT_PARAMS})")
    try:
        defaults = json.loads(defaults_path.read_text(encoding="utf-8"))
        max_steps = int(defaults["max_steps"])
        default_lr = float(defaults.get("optimizer_kwargs", {}).get("lr", REFERENCE_DEFAULT_LR))
        if not default_lr > 0:
            raise ValueError(f"lr {default_lr} is not positive")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{defaults_path}: needs an integer max_steps and a numeric lr ({exc})") from None
    scale = _scale_for(args, task_dir, default_lr=default_lr)
    entries = catalogue(scale, max_steps=max_steps)
    experiments_dir = task_dir / EXPERIMENTS
    changed = write_catalogue(entries, scale, experiments_dir=experiments_dir, check=args.check)
    return len(entries), changed, experiments_dir
