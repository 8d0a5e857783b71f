"""Base model and tokenizer loading, PEFT wrapping, device choice and memory readings."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import psutil
import torch

from peftbench import hub
from peftbench.errors import BadInput, RunFailed

BUSY_ACCELERATOR_BYTES = 500 * 2**20  # the reference's threshold

# A rough training throughput of one CPU thread, in FLOP/s, for the warning below: the committed
# tinymath results reach a median of 7.2e10 (71 runs, 1 torch thread, counted as 6 FLOPs per parameter
# per token, Kaplan et al. 2020: forward 2, backward 4). Bigger matrices use a core better, bfloat16
# without AMX much worse, and threads do not scale perfectly: the estimate is a warning, not a claim.
CPU_FLOPS_PER_THREAD = 7e10
SLOW_CPU_RUN_S = 3600  # warn when a run would take more than an hour by the estimate

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def choose_device() -> str:
    """The best available device, decided when a run starts (never at import)."""
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_model_id(model_id: str, task_dir: Path) -> str:
    """A model_id naming a folder inside the task folder means that folder; anything else goes to
    from_pretrained unchanged (a hub id or a path)."""
    local = task_dir / model_id
    if not Path(model_id).is_absolute() and ".." not in Path(model_id).parts and local.is_dir():
        return str(local)
    return model_id


def load_tokenizer(model_id: str, *, max_seq_length: int) -> Any:
    from transformers import AutoTokenizer

    if hub.is_hub_id(model_id):  # the first download of a run: fail fast when the hub is out of reach
        hub.check_reachable(
            f'model_id "{model_id}"', local_copy="set model_id to a local folder (--set model_id=/path)"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    tokenizer.model_max_length = max_seq_length
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    model_id: str, *, dtype: str, device: str, attn_implementation: str | None, use_gc: bool
) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if dtype in ("int8", "int4"):
        if device != "cuda":
            raise BadInput(f'dtype "{dtype}" needs bitsandbytes and a CUDA GPU; this machine has {device}')
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise BadInput(f'dtype "{dtype}" needs bitsandbytes: pip install "peftbench[quant]"') from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=dtype == "int4", load_in_8bit=dtype == "int8"
        )
        kwargs["device_map"] = device
    else:
        kwargs["dtype"] = _DTYPES[dtype]
    model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(device)
    if use_gc:
        model.enable_input_require_grads()
        # transformers 5.x renamed it (the old name warns); older releases in our range have only the old
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    return model


def estimated_cpu_seconds(*, num_params: int, train_tokens: float, eval_tokens: float, threads: int) -> float:
    """Run time on a CPU at CPU_FLOPS_PER_THREAD per thread: 6 FLOPs per parameter and training token,
    2 per parameter and evaluation token (prompt or generated; a forward pass only).

    6 counts the weight gradients too; an adapter skips most of them (about 4 per parameter), so for
    adapters this errs long, which suits a warning. Generation is slower per FLOP than training.
    """
    flops = 6 * num_params * train_tokens + 2 * num_params * eval_tokens
    return flops / (CPU_FLOPS_PER_THREAD * max(1, threads))


def slow_cpu_warning(
    *, num_params: int, train_tokens: float, eval_tokens: float, steps: int, threads: int
) -> str | None:
    """One line when the estimate for this run on this CPU exceeds SLOW_CPU_RUN_S, else None."""
    seconds = estimated_cpu_seconds(
        num_params=num_params, train_tokens=train_tokens, eval_tokens=eval_tokens, threads=threads
    )
    if seconds <= SLOW_CPU_RUN_S:
        return None
    return (
        f"warning: this run of a {num_params / 1e9:.2g}B-parameter model on a CPU with {threads} "
        f"thread(s) takes roughly {_duration(seconds)}: {steps} training steps (about "
        f"{train_tokens / 1e6:.3g}M tokens) and evaluation (at most {eval_tokens / 1e6:.3g}M tokens), "
        f"estimated at 6 (training) or 2 (evaluation) FLOPs per parameter and token and "
        f"{CPU_FLOPS_PER_THREAD:.2g} FLOP/s per thread; use a GPU, or try it out with --quick or "
        f"--set max_steps=N"
    )


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def wrap_with_peft(base_model: torch.nn.Module, peft_config: Any, *, autocast_adapter_dtype: bool) -> Any:
    """get_peft_model, turning a config that does not fit the model into one clear BadInput line."""
    from peft import get_peft_model

    from peftbench.adapter_fit import refuse_zero_trainable

    try:
        with warnings.catch_warnings():
            # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
            # model; the FutureWarning is addressed to peft's authors, and users took it for a fault
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            model = get_peft_model(base_model, peft_config, autocast_adapter_dtype=autocast_adapter_dtype)
    except (ValueError, TypeError, KeyError, NotImplementedError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"adapter_config.json does not fit the model: {first}") from exc
    # again on the real model: the early check wraps on the meta device, where initialisations that
    # need real weights (SVD and the like) cannot run and that check is skipped
    refuse_zero_trainable(model, where="adapter_config.json:")
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) as peft counts them, so that adapters and full fine-tuning compare."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def weights_fingerprint(model_path: str) -> str | None:
    """sha256 over the weight files of a local model folder (None for a hub id not on disk)."""
    from peftbench.experiment import sha256_file

    folder = Path(model_path)
    files = (
        sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")) if folder.is_dir() else []
    )
    if not files:
        return None
    return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()


def check_accelerator_free(device: str) -> None:
    """Before loading the model: memory held by other processes on the accelerator would distort the
    memory figures and may cause an out-of-memory error (the reference's check, same threshold)."""
    module = getattr(torch, device, None) if device in ("cuda", "xpu") else None
    if module is None or not hasattr(module, "mem_get_info"):
        return
    free, total = module.mem_get_info()
    if total - free > BUSY_ACCELERATOR_BYTES:
        raise RunFailed(
            f"{device} has {(total - free) // 2**20} MiB in use before the run starts "
            f"(> {BUSY_ACCELERATOR_BYTES // 2**20} MiB): make sure no other process uses it"
        )


class MemoryMeter:
    """Memory readings per step: accelerator allocated/reserved on GPUs, process RSS on a CPU.

    The reference only measures accelerators; on a CPU we record the resident set size instead and
    say so (`kind`), so that CPU figures are never mistaken for GPU ones.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.module = getattr(torch, device, None) if device in ("cuda", "xpu") else None
        self.kind = "accelerator" if self.module is not None else "process_rss"
        self.init = 0
        self.process = psutil.Process()
        self.peak_rss = 0
        if self.module is not None:
            self.module.reset_peak_memory_stats()
            self.init = self.module.max_memory_reserved()

    def read(self) -> tuple[int, int]:
        """(allocated, reserved) in bytes above the start level; on a CPU both are the RSS."""
        if self.module is not None:
            return self.module.memory_allocated() - self.init, self.module.memory_reserved() - self.init
        rss = self.process.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        return rss, rss

    def peak(self) -> int:
        if self.module is not None:
            return self.module.max_memory_reserved() - self.init
        return self.peak_rss

    def empty_cache(self) -> None:
        if self.module is not None:
            self.module.empty_cache()
