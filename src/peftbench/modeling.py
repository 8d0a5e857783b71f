"""Base model and tokenizer loading, PEFT wrapping, device choice and memory readings."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import psutil
import torch

from peftbench.errors import BadInput, RunFailed

BUSY_ACCELERATOR_BYTES = 500 * 2**20  # the reference's threshold

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
        model.gradient_checkpointing_enable()
    return model


def wrap_with_peft(base_model: torch.nn.Module, peft_config: Any, *, autocast_adapter_dtype: bool) -> Any:
    """get_peft_model, turning a config that does not fit the model into one clear BadInput line."""
    from peft import get_peft_model

    try:
        with warnings.catch_warnings():
            # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
            # model; the FutureWarning is addressed to peft's authors, and users took it for a fault
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            return get_peft_model(base_model, peft_config, autocast_adapter_dtype=autocast_adapter_dtype)
    except (ValueError, TypeError, KeyError, NotImplementedError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"adapter_config.json does not fit the model: {first}") from exc


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
