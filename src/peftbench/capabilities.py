"""What an adapter can do at inference, each fact established by running it (docs/inference.md).

Every check runs on copies of the experiment's own adapter and base model (the task's tiny model for
tinymath) and ends in a cell: "yes" (with what was measured), "no" (with the one-line reason peft or
the comparison gave) or "not tested" (with why). A check that crashes is a "no" with its exception's
first line; it never stops the other checks or the other methods.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from peftbench.inference import one_line, perturb

YES, NO, NOT_TESTED = "yes", "no", "not tested"
# float32 logits of one model computed two ways (merged weights, a reloaded file) differ by rounding
# only; measured differences on the tinymath catalogue are recorded in each cell's detail
ATOL = RTOL = 1e-3
BF16_ATOL = 0.5  # bf16 keeps 8 bits of mantissa: logits of size ~10 move by a few tenths
PROBE_WIDTH = 192  # probe layers as wide as the tinymath model, so sizes are not what fails
PROBE_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv1D")
CAPABILITIES = (
    "merge",
    "unmerge",
    "two_adapters",
    "mixed_batch",
    "save_load",
    "torch_compile",
    "bf16",
    *(f"target_{t}" for t in PROBE_TYPES),
    "quantized_base",
)


class CheckFailed(Exception):
    """The check ran and the answer is no (the message says why)."""


class NotTested(Exception):
    """The check cannot run here (the message says why)."""


@dataclass
class Subject:
    """What the checks run on: the untouched base model, the adapted model, inputs, the device."""

    base: Any
    adapted: Any
    peft_config: Any
    batch: dict[str, torch.Tensor]  # two prompts, left-padded
    device: str


def cell(status: str, text: str | None = None) -> dict[str, str | None]:
    return {
        "status": status,
        "reason": None if status == YES else text,
        "detail": text if status == YES else None,
    }


def run_checks(checks: dict[str, Callable[[], str]]) -> dict[str, dict[str, str | None]]:
    """Each check alone: its detail is a yes; CheckFailed or any crash a no; NotTested a not tested."""
    cells = {}
    for name, check in checks.items():
        try:
            cells[name] = cell(YES, check())
        except NotTested as exc:
            cells[name] = cell(NOT_TESTED, str(exc))
        except CheckFailed as exc:
            cells[name] = cell(NO, str(exc))
        except Exception as exc:  # any crash is the method's answer, not ours to raise
            cells[name] = cell(NO, one_line(exc))
    return cells


@torch.inference_mode()
def logits(model: Any, batch: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    return model(**inputs, **kwargs).logits.float()


def compare(a: torch.Tensor, b: torch.Tensor, *, what: str, atol: float = ATOL) -> str:
    """'max |diff| x' when close; CheckFailed naming `what` otherwise."""
    if a.shape != b.shape:
        raise CheckFailed(f"{what}: logits of shape {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = float((a - b).abs().max())
    if not torch.allclose(a, b, atol=atol, rtol=RTOL):
        raise CheckFailed(f"{what}: logits differ by up to {diff:.3g} (tolerance {atol:g})")
    return f"max |logit difference| {diff:.2g}"


def check_merge(s: Subject) -> str:
    merged = copy.deepcopy(s.adapted).merge_and_unload()
    return compare(logits(merged, s.batch), logits(s.adapted, s.batch), what="merged vs unmerged")


def check_unmerge(s: Subject) -> str:
    model = copy.deepcopy(s.adapted)
    before = logits(model, s.batch)
    with model.disable_adapter():
        off_before = logits(model, s.batch)
    model.merge_adapter()
    model.unmerge_adapter()
    with model.disable_adapter():
        compare(logits(model, s.batch), off_before, what="adapter off after merge and unmerge")
    return compare(logits(model, s.batch), before, what="adapter on after merge and unmerge")


def two_adapter_model(s: Subject) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A copy with a second, different adapter "second"; (model, logits of default, logits of second)."""
    model = copy.deepcopy(s.adapted)
    first = logits(model, s.batch)
    model.add_adapter("second", copy.deepcopy(s.peft_config))
    model.set_adapter("second")
    # by name; methods that keep only the active adapter in the model (adaption prompt) name its weights
    # alike, and set_adapter left only the active adapter's weights trainable
    if not (perturb(model, seed=1, adapter="second") or perturb(model, seed=1)):
        raise CheckFailed("the second adapter has no weights of its own")
    second = logits(model, s.batch)
    model.set_adapter("default")
    return model, first, second


def check_two_adapters(s: Subject) -> str:
    model, first, second = two_adapter_model(s)
    if torch.allclose(first, second, atol=ATOL, rtol=RTOL):
        raise CheckFailed("the second adapter gives the same logits as the first")
    detail = compare(logits(model, s.batch), first, what="back to the first adapter")
    model.set_adapter("second")
    compare(logits(model, s.batch), second, what="switched to the second adapter")
    return detail


def check_mixed_batch(s: Subject) -> str:
    model, first, second = two_adapter_model(s)
    if s.batch["input_ids"].shape[0] < 2:
        raise NotTested("needs two prompts")
    mixed = logits(model, s.batch, adapter_names=["default", "second"])
    compare(mixed[0], first[0], what="row of the first adapter")
    return compare(mixed[1], second[1], what="row of the second adapter")


def check_save_load(s: Subject) -> str:
    from peft import PeftModel

    with tempfile.TemporaryDirectory(prefix="peftbench-capability-") as folder:
        s.adapted.save_pretrained(folder)
        loaded = PeftModel.from_pretrained(copy.deepcopy(s.base), folder).eval()
        return compare(logits(loaded, s.batch), logits(s.adapted, s.batch), what="reloaded vs saved")


def compile_backend(device: str) -> str:
    # on a CPU, inductor adds C++ code generation and compilation to every method's check; aot_eager
    # alone took 12-17 s per tinymath model on this project's loaded 2-core machine. It still traces the
    # model with dynamo and AOTAutograd, which is where adapters' Python code breaks or not
    return "inductor" if device in ("cuda", "xpu") else "aot_eager"


def check_compile(s: Subject) -> str:
    import torch._dynamo

    torch._dynamo.reset()
    backend = compile_backend(s.device)
    compiled = torch.compile(s.adapted, backend=backend)
    detail = compare(logits(compiled, s.batch), logits(s.adapted, s.batch), what="compiled vs eager")
    return f"backend {backend}; {detail}"


def check_bf16(s: Subject) -> str:
    low = copy.deepcopy(s.adapted).to(torch.bfloat16)
    out = logits(low, s.batch)
    if not torch.isfinite(out).all():
        raise CheckFailed("bfloat16 logits are not finite")
    return compare(out, logits(s.adapted, s.batch), what="bfloat16 vs float32", atol=BF16_ATOL)


class Probe(torch.nn.Module):
    """One layer of each type an adapter may target, as wide as the tinymath model."""

    def __init__(self) -> None:
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        w = PROBE_WIDTH
        self.layer_Linear = torch.nn.Linear(w, w)
        self.layer_Embedding = torch.nn.Embedding(w, w)
        self.layer_Conv1d = torch.nn.Conv1d(w, w, 3)
        self.layer_Conv2d = torch.nn.Conv2d(w, w, 3)
        self.layer_Conv1D = Conv1D(w, w)  # GPT-2's transposed linear layer


def check_target(s: Subject, layer_type: str) -> str:
    """get_peft_model with the experiment's config aimed at one probe layer."""
    from peft import get_peft_model

    if any(
        getattr(s.peft_config, a, False) for a in ("is_prompt_learning", "is_adaption_prompt")
    ) or not hasattr(s.peft_config, "target_modules"):
        raise NotTested(
            f"{getattr(s.peft_config.peft_type, 'value', s.peft_config.peft_type)} does not target layers"
        )
    config = copy.deepcopy(s.peft_config)
    config.target_modules = {f"layer_{layer_type}"}
    config.task_type = None
    for attr in ("layers_to_transform", "layers_pattern", "modules_to_save", "exclude_modules"):
        if hasattr(config, attr):
            setattr(config, attr, None)
    if hasattr(config, "target_parameters"):
        config.target_parameters = None
    model = get_peft_model(Probe(), config)
    layer = model.get_submodule(f"base_model.model.layer_{layer_type}")
    return f"wrapped as {type(layer).__module__.rsplit('.', 2)[-2]}.{type(layer).__name__}"


def check_quantized(s: Subject) -> str:
    if s.device != "cuda":
        raise NotTested(f"bitsandbytes needs a CUDA GPU; this machine has {s.device}")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise NotTested("bitsandbytes is not installed")
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = s.base.config._name_or_path
    quant = BitsAndBytesConfig(load_in_4bit=True)
    base = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map="cuda")
    model = get_peft_model(base, copy.deepcopy(s.peft_config))
    out = logits(model, s.batch)
    if not torch.isfinite(out).all():
        raise CheckFailed("4-bit logits are not finite")
    return "4-bit base (bitsandbytes nf4): forward pass finite"


def capability_cells(subject: Subject | None, *, why_none: str = "") -> dict[str, dict[str, str | None]]:
    """Every capability of CAPABILITIES for `subject`; all "not tested" (why_none) without one."""
    if subject is None:
        return {name: cell(NOT_TESTED, why_none) for name in CAPABILITIES}
    checks: dict[str, Callable[[], str]] = {
        "merge": lambda: check_merge(subject),
        "unmerge": lambda: check_unmerge(subject),
        "two_adapters": lambda: check_two_adapters(subject),
        "mixed_batch": lambda: check_mixed_batch(subject),
        "save_load": lambda: check_save_load(subject),
        "torch_compile": lambda: check_compile(subject),
        "bf16": lambda: check_bf16(subject),
        **{f"target_{t}": (lambda t=t: check_target(subject, t)) for t in PROBE_TYPES},
        "quantized_base": lambda: check_quantized(subject),
    }
    return run_checks(checks)
