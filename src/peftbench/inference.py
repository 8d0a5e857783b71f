"""Inference overhead of an experiment's adapter: the base model, the adapter unmerged and merged,
measured side by side in one process on the task's own prompts (docs/inference.md).

The model is built as a run builds it (`run._load_base_model`, `run._adapt`). A trained adapter saved
in `<task>/adapters/<method>--<name>/` is loaded when there is one; otherwise the config's adapter gets
small random changes to every trainable weight (`perturb`), so that no adapter is the identity by its
zero initialisation, and the record says which (`adapter.source`).
"""

from __future__ import annotations

import copy
import datetime as dt
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peftbench.experiment import Experiment

INFERENCE_SCHEMA_VERSION = 1
RESULTS_DIR = "inference_results"
ADAPTERS_DIR = (
    "adapters"  # <task>/adapters/<method>--<name>/: a trained adapter (peftbench run --save-adapter)
)
VARIANTS = ("base", "unmerged", "merged")
TIMINGS = ("prefill_s", "decode_s_per_token", "tokens_per_s_batch1", "tokens_per_s_eval_batch")
PERTURB_SCALE = 0.02  # relative to a weight's own spread (absolute for constant weights such as zeros)


@dataclass(frozen=True)
class Sizes:
    """How much to measure: repetitions of every variant, generated tokens, the eval batch size."""

    repetitions: int
    new_tokens: int
    eval_batch: int


def record_path(experiment: Experiment) -> Path:
    return experiment.task_dir / RESULTS_DIR / f"{experiment.result_stem()}.json"


def trained_adapter_dir(experiment: Experiment) -> Path | None:
    folder = experiment.task_dir / ADAPTERS_DIR / experiment.result_stem()
    return folder if (folder / "adapter_config.json").is_file() else None


@torch.no_grad()
def perturb(model: torch.nn.Module, *, seed: int, adapter: str | None = None) -> int:
    """Add seeded noise to every trainable weight, or with `adapter` to every weight of that adapter
    (whether trainable or not); returns how many tensors changed."""
    generator = torch.Generator().manual_seed(seed)
    changed = 0
    for name, param in model.named_parameters():
        chosen = f".{adapter}." in f".{name}." if adapter else param.requires_grad
        if not chosen or not param.is_floating_point():
            continue
        spread = float(param.float().std()) if param.numel() > 1 else 0.0
        scale = PERTURB_SCALE * (spread if spread > 0 else 1.0)
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * scale
        param.add_(noise.to(param.device, param.dtype))
        changed += 1
    return changed


def one_line(exc: BaseException) -> str:
    """The exception's first line, with its type: what a cell says when a check fails."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sync(device: str) -> None:
    module = getattr(torch, device, None) if device in ("cuda", "xpu", "mps") else None
    if module is not None and hasattr(module, "synchronize"):
        module.synchronize()


class StepClock:
    """A stopping criterion that never stops generation and notes the time after every step: the
    first note ends the prefill, the gaps between notes are the decode steps. The median gap is little
    moved by the moments another process takes the CPU, unlike a difference of two whole timings."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        _sync(self.device)
        self.times.append(time.perf_counter())
        rows = input_ids.shape[0] if input_ids is not None else 1
        return torch.zeros(rows, dtype=torch.bool, device=input_ids.device if input_ids is not None else None)


def _timed_generate(
    model: Any, batch: dict[str, torch.Tensor], *, new_tokens: int, device: str
) -> tuple[float, StepClock]:
    """(seconds, step times) of greedy generation of exactly `new_tokens` tokens per row (EOS does not
    stop it)."""
    from transformers import StoppingCriteriaList

    clock = StepClock(device)
    _sync(device)
    tic = time.perf_counter()
    model.generate(
        **batch,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        stopping_criteria=StoppingCriteriaList([clock]),
    )
    _sync(device)
    clock.times.insert(0, tic)
    return time.perf_counter() - tic, clock


@torch.inference_mode()
def measure_once(model: Any, *, batches: dict[str, dict], new_tokens: int, device: str) -> dict[str, float]:
    """One repetition of one variant: prefill, median per-token decode step and tokens/s at batch 1
    (one generation of new_tokens + 1 tokens), tokens/s at the eval batch (another generation)."""
    one, full = batches["batch1"], batches["eval_batch"]
    total, clock = _timed_generate(model, one, new_tokens=new_tokens + 1, device=device)
    steps = [b - a for a, b in zip(clock.times[1:], clock.times[2:], strict=False)]
    eval_time, _ = _timed_generate(model, full, new_tokens=new_tokens, device=device)
    rows = full["input_ids"].shape[0]
    return {
        "prefill_s": clock.times[1] - clock.times[0] if len(clock.times) > 1 else total,
        "decode_s_per_token": statistics.median(steps) if steps else total,
        "tokens_per_s_batch1": (new_tokens + 1) / total,
        "tokens_per_s_eval_batch": rows * new_tokens / eval_time,
    }


def make_batches(tokenizer: Any, prompts: list[str], *, eval_batch: int, device: str) -> dict[str, dict]:
    """The first prompt alone, and the first `eval_batch` prompts (cycled if there are fewer) left-padded."""
    many = [prompts[i % len(prompts)] for i in range(eval_batch)]

    def encode(texts: list[str]) -> dict:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(device)
        return {**encoded, "pad_token_id": tokenizer.pad_token_id}

    return {"batch1": encode(prompts[:1]), "eval_batch": encode(many)}


def measure_variants(
    models: dict[str, Any], *, batches: dict[str, dict], sizes: Sizes, device: str
) -> dict[str, dict[str, Any]]:
    """Every variant `sizes.repetitions` times, the order reversed on every other repetition (drift and
    warm-up then hit all variants alike); one untimed warm-up each first. Medians and raw samples."""
    names = list(models)
    for name in names:  # warm-up: first calls allocate caches and pick kernels
        measure_once(models[name], batches=batches, new_tokens=2, device=device)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for rep in range(sizes.repetitions):
        for name in names if rep % 2 == 0 else reversed(names):
            samples[name].append(
                measure_once(models[name], batches=batches, new_tokens=sizes.new_tokens, device=device)
            )
    return {
        name: {
            "median": {key: statistics.median(s[key] for s in runs) for key in TIMINGS},
            "samples": {key: [s[key] for s in runs] for key in TIMINGS},
            "memory_bytes": model_bytes(models[name]),
        }
        for name, runs in samples.items()
    }


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers: what the variant holds in memory."""
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def ratios(measured: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each variant's medians divided by the base model's (1.0: no overhead; times >1 are slower)."""
    base = measured["base"]["median"]
    return {
        name: {key: values["median"][key] / base[key] for key in TIMINGS if base[key] > 0}
        for name, values in measured.items()
        if name != "base"
    }


def peak_generate_memory(model: Any, *, batch: dict, new_tokens: int, device: str) -> int | None:
    """Peak accelerator memory of one generation at the eval batch; None on a CPU (no per-model reading
    there: the process's resident memory mixes all variants; see memory_bytes instead)."""
    module = getattr(torch, device, None) if device in ("cuda", "xpu") else None
    if module is None:
        return None
    module.reset_peak_memory_stats()
    _timed_generate(model, batch, new_tokens=new_tokens, device=device)
    return int(module.max_memory_allocated())


def adapter_file_and_load_time(peft_model: Any, base: Any) -> dict[str, Any]:
    """Save the adapter, then time `PeftModel.from_pretrained` onto a copy of the base model."""
    from peft import PeftModel

    with tempfile.TemporaryDirectory(prefix="peftbench-inference-") as folder:
        peft_model.save_pretrained(folder)
        size = sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors"))
        fresh = copy.deepcopy(base)
        tic = time.perf_counter()
        PeftModel.from_pretrained(fresh, folder)
        load_time = time.perf_counter() - tic
    return {"file_size": int(size), "load_time_s": load_time}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def build_adapted(
    experiment: Experiment, *, base: Any, tokenizer: Any, config: Any, peft_config: Any
) -> tuple:
    """(the adapted model on a copy of `base`, what it is): the trained adapter where one was saved,
    else the config's adapter (the whole model for full fine-tuning) with perturbed weights."""
    from peftbench import run

    trained = trained_adapter_dir(experiment) if peft_config is not None else None
    if trained is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(copy.deepcopy(base), str(trained))
        return model.eval(), {"source": "trained", "path": str(trained.relative_to(experiment.task_dir))}
    model = run._adapt(copy.deepcopy(base), tokenizer, config, peft_config)
    if peft_config is None:
        model.requires_grad_(True)
    changed = perturb(model, seed=config.seed)
    return model.eval(), {"source": "perturbed", "path": None, "perturbed_tensors": changed}


def merged_copy(adapted: Any, peft_config: Any) -> tuple[Any, str | None]:
    """(a merged copy, None) or (None, why not): peft's one-line reason, or full fine-tuning's."""
    if peft_config is None:
        return None, "full fine-tuning: no adapter to merge"
    try:
        return copy.deepcopy(adapted).merge_and_unload().eval(), None
    except Exception as exc:  # peft's refusal, whatever its type, is the answer
        return None, one_line(exc)


def adapter_facts(adapted: Any, *, base: Any, peft_config: Any) -> dict[str, Any]:
    """File size and load time; for full fine-tuning the weights' size (as a run estimates it)."""
    if peft_config is None:
        return {"file_size": model_bytes(adapted), "load_time_s": None, "load_reason": "full fine-tuning"}
    try:
        return {**adapter_file_and_load_time(adapted, base), "load_reason": None}
    except Exception as exc:
        return {"file_size": None, "load_time_s": None, "load_reason": one_line(exc)}


def benchmark(experiment: Experiment, *, sizes: Sizes) -> dict[str, Any]:
    """The inference record of one experiment: measurements, ratios and capability cells."""
    from peftbench import run
    from peftbench.capabilities import Subject, capability_cells
    from peftbench.experiment import load_peft_config, load_train_config
    from peftbench.tasks import get_task

    config = load_train_config(experiment, overrides={"compile": False})  # compiling is a capability
    peft_config = load_peft_config(experiment)
    data = get_task(experiment.task_name).load_data(task_dir=experiment.task_dir, seed=0)
    prompts = [config.query_template.format(query=e.query) for e in data.test]
    base, tokenizer, device, _ = run._load_base_model(experiment, config)
    base.eval()
    adapted, adapter = build_adapted(
        experiment, base=base, tokenizer=tokenizer, config=config, peft_config=peft_config
    )
    models = {"base": base, "unmerged": adapted}
    merged, merge_reason = merged_copy(adapted, peft_config)
    if merged is not None:
        models["merged"] = merged
    batches = make_batches(tokenizer, prompts, eval_batch=sizes.eval_batch, device=device)
    measured = measure_variants(models, batches=batches, sizes=sizes, device=device)
    for name, model in models.items():
        measured[name]["peak_memory_bytes"] = peak_generate_memory(
            model, batch=batches["eval_batch"], new_tokens=sizes.new_tokens, device=device
        )
    variants = {name: {"available": True, "reason": None, **measured[name]} for name in models}
    if merged is None:
        variants["merged"] = {"available": False, "reason": merge_reason}
    pair = make_batches(tokenizer, prompts[:2], eval_batch=2, device=device)["eval_batch"]
    subject = Subject(base=base, adapted=adapted, peft_config=peft_config, batch=pair, device=device)
    return new_record(
        experiment,
        device=device,
        sizes=sizes,
        prompt_tokens=int(batches["batch1"]["input_ids"].shape[1]),
        adapter={
            **adapter,
            "peft_type": str(peft_config.peft_type.value) if peft_config is not None else None,
            **adapter_facts(adapted, base=base, peft_config=peft_config),
        },
        variants=variants,
        ratios=ratios(measured),
        capabilities=capability_cells(
            subject if peft_config is not None else None, why_none="full fine-tuning: no adapter"
        ),
    )


def new_record(experiment: Experiment, *, device: str, sizes: Sizes, **sections: Any) -> dict[str, Any]:
    """The record around `sections` (adapter, variants, ratios, capabilities; error for a failure)."""
    import peft
    import transformers

    return {
        "schema_version": INFERENCE_SCHEMA_VERSION,
        "kind": "peftbench-inference",
        "experiment_name": experiment.experiment_name,
        "task_name": experiment.task_name,
        "created_at": now(),
        "device": device,
        "threads": torch.get_num_threads(),
        "versions": {
            "peft": peft.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "settings": {
            "repetitions": sizes.repetitions,
            "new_tokens": sizes.new_tokens,
            "eval_batch": sizes.eval_batch,
            "prompt_tokens": sections.pop("prompt_tokens", None),
        },
        "adapter": sections.get("adapter"),
        "variants": sections.get("variants", {}),
        "ratios": sections.get("ratios", {}),
        "capabilities": sections["capabilities"],
        "error": sections.get("error"),
    }


def failed_record(experiment: Experiment, *, device: str, sizes: Sizes, error: str) -> dict[str, Any]:
    """The record of an experiment whose adapter could not be built or measured: every cell a no."""
    from peftbench.capabilities import CAPABILITIES, NO, cell

    cells = {name: cell(NO, error) for name in CAPABILITIES}
    return new_record(experiment, device=device, sizes=sizes, capabilities=cells, error=error)
