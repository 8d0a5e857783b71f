"""Performance benchmark of the peftbench harness against bare loops, its fixed costs and growth (issue 10).

Everything is measured side by side in one process (subprocesses only where a whole run or a fresh
interpreter is the thing measured): the harness's training loop against a bare
forward/backward/step loop on the same model, PEFT config and batches; the harness's evaluation
against bare batched `generate` calls on the same prompts, sorted and unsorted; the fixed costs of one
run as a fraction of a quick-variant run; run time against max_steps, validation size and sweep
--jobs. Repetitions are interleaved (A B, then B A) and medians reported, because the machine is
shared and noisy. Prints a table of ratios and writes JSON.

    python perf/run_perf.py                      # the embedded benchmark, a few minutes
    python perf/run_perf.py --quick --out x.json # tiny sizes, seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TASK = REPO / "benchmarks" / "tinymath"
RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = "peftbench-perf/1"
TARGET_RATIO = 0.95
# both training sides draw their batches from the first examples of the training set: the same
# batches for both, and each timed train() call re-tokenizes only these (20 length buckets of 16 x 10)
TRAIN_POOL = 3200
TARGET_FIXED_FRACTION = 0.10
# what a run imports before it trains (peftbench.run alone imports little: the rest is lazy)
RUN_IMPORTS = "import peftbench.run, peftbench.train, peft; from transformers import AutoModelForCausalLM"


@dataclass(frozen=True)
class Sizes:
    train_steps: int  # optimizer steps per timed training repetition
    reps: int  # interleaved repetitions of each A/B comparison
    eval_prompts: int  # prompts per timed evaluation
    eval_reps: int  # interleaved repetitions of the three evaluation variants
    # generation batch of the evaluation comparison: smaller than the task's, so that the prompts
    # make several batches and sorting them by length can matter (one batch pads the same either way)
    eval_batch_size: int
    step_sizes: tuple[int, ...]  # max_steps of the growth fit
    # validation sizes of the growth fit, in generation batches (batch_size_eval prompts each): within
    # one batch, more prompts cost little more, so only whole batches show the growth of a run
    valid_batches: tuple[int, ...]
    fixed_reps: int  # repetitions of each fixed-cost measurement
    forgetting_reps: int  # the forgetting pass is long (every forgetting text): fewer repetitions
    sweep_runs: int  # runs per timed sweep (one experiment, several seeds)
    sweep_jobs: tuple[int, ...]


FULL = Sizes(
    train_steps=6,
    reps=3,
    eval_prompts=48,
    eval_reps=3,
    eval_batch_size=16,
    step_sizes=(3, 6, 12),
    valid_batches=(1, 2, 3),
    fixed_reps=2,
    forgetting_reps=1,
    sweep_runs=2,
    sweep_jobs=(1, 2),
)
QUICK = Sizes(
    train_steps=2,
    reps=1,
    eval_prompts=4,
    eval_reps=1,
    eval_batch_size=2,
    step_sizes=(1, 2, 3),
    valid_batches=(1, 2, 3),
    fixed_reps=1,
    forgetting_reps=1,
    sweep_runs=2,
    sweep_jobs=(1, 2),
)


# ---------------------------------------------------------------- timing helpers


@contextmanager
def timed(sync: Callable[[], None] = lambda: None) -> Iterator[dict[str, float]]:
    """Wall and process CPU seconds of the block (CPU time is less sensitive to other users' load)."""
    result: dict[str, float] = {}
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    yield result
    sync()
    result["wall"] = time.perf_counter() - wall
    result["cpu"] = time.process_time() - cpu


def timed_subprocess(cmd: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds and the child's CPU seconds (user + system) of one command; its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "stdout": done.stdout}


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def fit_line(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares line y = slope * x + intercept and its R^2."""
    slope, intercept = np.polyfit(x, y, 1)
    predicted = np.polyval([slope, intercept], x)
    total = float(np.sum((np.asarray(y) - np.mean(y)) ** 2))
    r2 = 1.0 - float(np.sum((np.asarray(y) - predicted) ** 2)) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


# ---------------------------------------------------------------- the objects under test


@dataclass
class Bench:
    experiment: Any
    config: Any
    peft_config: Any
    task: Any
    data: Any
    model: Any
    tokenizer: Any
    device: str
    model_path: str
    train_seqs: list[list[int]]
    snapshot: dict[str, Any]

    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def restore(self) -> None:
        """Trainable weights back to their initial values, so that every repetition starts alike."""
        import torch

        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in self.snapshot:
                    param.copy_(self.snapshot[name])

    def examples(self, n: int) -> list[Any]:
        """n evaluation examples: validation first, then test, repeated if the task has fewer."""
        pool = [*self.data.valid, *self.data.test]
        return [pool[i % len(pool)] for i in range(n)]

    def tiny_data(self, *, valid: int = 1) -> Any:
        """The task's data with evaluation sets cut down, so that a timed train() is mostly steps."""
        return dataclasses.replace(
            self.data,
            train=self.data.train[:TRAIN_POOL],
            valid=self.examples(valid),
            test=self.data.test[:1],
            forgetting_texts=self.data.forgetting_texts[:1],
        )


def find_experiment(task_dir: Path) -> Path:
    lora = sorted((task_dir / "experiments").glob("lora/*"))
    if not lora:
        raise SystemExit(f"run_perf: no lora experiment in {task_dir}/experiments; pass --experiment")
    return lora[0]


def set_up(experiment_path: Path, fixed: dict[str, Any], sizes: Sizes) -> Bench:
    """Load everything once, timing the fixed costs of doing so (model load, data, tokenization)."""
    from peftbench.experiment import load_peft_config, load_train_config, resolve_experiment
    from peftbench.run import prepare_model
    from peftbench.tasks import get_task
    from peftbench.train import tokenize_train

    experiment = resolve_experiment(experiment_path)
    config = load_train_config(experiment)
    peft_config = load_peft_config(experiment)
    task = get_task(experiment.task_name)

    loads = []
    for _ in range(sizes.fixed_reps):
        with timed() as t:
            # the run's own path (seed, load, wrap); no forgetting baseline: not part of what is timed
            prepared = prepare_model(experiment, config, peft_config, data=None, final_test=False)
        model, tokenizer, device, model_path = (
            prepared.model,
            prepared.tokenizer,
            prepared.device,
            prepared.model_path,
        )
        loads.append(t["wall"])
    fixed["model load"] = summary(loads)

    data_times = []
    for _ in range(sizes.fixed_reps):
        with timed() as t:
            data = task.load_data(task_dir=experiment.task_dir, seed=0)
        data_times.append(t["wall"])
    fixed["data generation"] = summary(data_times)

    train_seqs = tokenize_train(
        tokenizer, data.train[:TRAIN_POOL], template=config.query_template, max_len=config.max_seq_length
    )
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return Bench(
        experiment=experiment,
        config=config,
        peft_config=peft_config,
        task=task,
        data=data,
        model=model,
        tokenizer=tokenizer,
        device=device,
        model_path=model_path,
        train_seqs=train_seqs,
        snapshot=snapshot,
    )


# ---------------------------------------------------------------- training: harness vs bare loop


def harness_train(b: Bench, *, steps: int, valid: int = 1, short_generation: bool = False) -> dict[str, Any]:
    """peftbench.train.train; the loop's own wall time is its elapsed time at the (single) validation,
    minus that validation: everything from the first step to the last, bookkeeping included.
    short_generation: one new token per prompt in the evaluations around the loop, which are not
    measured then (saves the script's time, changes nothing in the loop)."""
    from peftbench.train import train

    b.restore()
    config = dataclasses.replace(b.config, max_steps=steps, eval_steps=steps)
    if short_generation:
        config = dataclasses.replace(
            config, generation_kwargs={**config.generation_kwargs, "max_new_tokens": 1}
        )
    with timed(b.sync) as whole:
        out = train(
            model=b.model,
            tokenizer=b.tokenizer,
            task=b.task,
            data=b.tiny_data(valid=valid),
            config=config,
            device=b.device,
            # the final phase runs as in a real run (timed in whole_wall); its forgetting value is unused
            forgetting_loss_before=0.0,
        )
    if out.status != "success":
        raise RuntimeError(f"harness training failed: {out.error_msg}")
    last_eval = out.metrics[-2]
    return {
        "loop_wall": last_eval["elapsed time"] - sum(m["eval time"] for m in out.metrics[:-1]),
        "step_timer": sum(m["train time"] for m in out.metrics[:-1]),
        "whole_wall": whole["wall"],
        "whole_cpu": whole["cpu"],
    }


def bare_train(b: Bench, *, steps: int) -> dict[str, float]:
    """The same steps with nothing but forward, backward, (clipping,) optimizer and scheduler steps on
    batches collated and moved to the device beforehand: the physical limit of the harness's loop."""
    import torch

    from peftbench.train import collate, make_optimizer, step_batches

    b.restore()
    config = b.config
    stream = step_batches(
        b.train_seqs,
        batch_size=config.batch_size,
        accumulation=config.gradient_accumulation_steps,
        seed=config.seed,
        shuffle=b.task.shuffle_train,
    )
    prepared = []
    for _ in range(steps):
        micro = [collate(mb, pad_id=b.tokenizer.pad_token_id) for mb in next(stream)]
        n_items = sum(int((mb["labels"][:, 1:] != -100).sum()) for mb in micro)
        prepared.append(([{k: v.to(b.device) for k, v in mb.items()} for mb in micro], n_items))
    optimizer, scheduler = make_optimizer(b.model, config)
    params = [p for p in b.model.parameters() if p.requires_grad]
    autocast = (lambda: torch.autocast(device_type=b.device)) if config.use_amp else nullcontext
    b.model.train()
    with timed(b.sync) as t:
        for micro, n_items in prepared:
            optimizer.zero_grad(set_to_none=True)
            for mb in micro:
                with autocast():
                    loss = b.model(**mb, num_items_in_batch=n_items).loss
                loss.backward()
            if config.grad_norm_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_norm_clip)
            optimizer.step()
            scheduler.step()
    return t


def measure_training(b: Bench, sizes: Sizes) -> dict[str, Any]:
    steps = sizes.train_steps
    harness_train(
        b, steps=min(2, steps), short_generation=True
    )  # warm-up: allocator, lazy imports, first-call paths
    bare_train(b, steps=min(2, steps))
    harness, bare = [], []
    for rep in range(sizes.reps):
        # A B, then B A: a drift in the machine's load hits both sides alike
        for side in ("harness", "bare") if rep % 2 == 0 else ("bare", "harness"):
            if side == "harness":
                harness.append(harness_train(b, steps=steps, short_generation=True))
            else:
                bare.append(bare_train(b, steps=steps))
    h_wall = [h["loop_wall"] for h in harness]
    b_wall = [x["wall"] for x in bare]
    pairs = [bw / hw for bw, hw in zip(b_wall, h_wall, strict=True)]
    return {
        "steps": steps,
        "batch_size": b.config.batch_size,
        "gradient_accumulation_steps": b.config.gradient_accumulation_steps,
        "harness_steps_per_s": steps / statistics.median(h_wall),
        "bare_steps_per_s": steps / statistics.median(b_wall),
        "ratio": statistics.median(b_wall) / statistics.median(h_wall),
        "ratio_pairwise_median": statistics.median(pairs),
        "harness_loop_wall": summary(h_wall),
        "harness_step_timer": summary([h["step_timer"] for h in harness]),
        "harness_whole_train_call_wall": summary([h["whole_wall"] for h in harness]),
        "bare_wall": summary(b_wall),
        "bare_cpu": summary([x["cpu"] for x in bare]),
    }


# ---------------------------------------------------------------- evaluation: harness vs bare generate


def bare_generate(b: Bench, prompts: list[list[int]], *, sort: bool) -> dict[str, Any]:
    """Batched model.generate on pre-padded batches (left padding, as the harness), only the calls timed."""
    import torch

    from peftbench.evaluation import generation_config

    order = list(range(len(prompts)))
    if sort:
        order.sort(key=lambda i: len(prompts[i]), reverse=True)
    size = b.config.batch_size_eval
    batches = []
    padded = real = 0
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        batch = b.tokenizer.pad(
            {"input_ids": [prompts[i] for i in idx]}, return_tensors="pt", padding_side="left"
        ).to(b.device)
        width = batch["input_ids"].shape[1]
        padded += width * len(idx)
        real += sum(len(prompts[i]) for i in idx)
        gen = generation_config(
            prompt_length=width, generation_kwargs=b.config.generation_kwargs, tokenizer=b.tokenizer
        )
        batches.append((batch, gen, width))
    b.model.eval()
    outputs = []
    with torch.inference_mode(), timed(b.sync) as t:
        for batch, gen, _ in batches:
            outputs.append(b.model.generate(**batch, generation_config=gen))
    b.model.train()
    tokens = 0
    for out, (_, _, width) in zip(outputs, batches, strict=True):
        for row in out[:, width:]:
            ended = (row == b.tokenizer.eos_token_id).nonzero()
            tokens += int(ended[0]) if len(ended) else len(row)
    return {**t, "tokens": tokens, "prompt_padding_fraction": 1 - real / padded}


def harness_evaluate(b: Bench, examples: list[Any], prompts: list[list[int]]) -> dict[str, Any]:
    from peftbench.train import evaluate_accuracy

    with timed(b.sync) as t:
        _, gen = evaluate_accuracy(
            b.model,
            b.tokenizer,
            task=b.task,
            examples=examples,
            prompts=prompts,
            config=b.config,
            device=b.device,
        )
    return {**t, "tokens": gen.num_generated_tokens}


def measure_evaluation(b: Bench, sizes: Sizes) -> dict[str, Any]:
    from peftbench.train import tokenize_prompts

    b.restore()
    task_batch_size = b.config.batch_size_eval
    b = dataclasses.replace(b, config=dataclasses.replace(b.config, batch_size_eval=sizes.eval_batch_size))
    examples = b.examples(sizes.eval_prompts)
    prompts = tokenize_prompts(b.tokenizer, examples, template=b.config.query_template)
    # warm-up: each variant once on the same prompts (the first call of a shape allocates)
    harness_evaluate(b, examples, prompts)
    bare_generate(b, prompts, sort=True)
    bare_generate(b, prompts, sort=False)
    runs: dict[str, list[dict[str, Any]]] = {"harness": [], "bare_sorted": [], "bare_unsorted": []}
    sides = list(runs)
    for rep in range(sizes.eval_reps):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            if side == "harness":
                runs[side].append(harness_evaluate(b, examples, prompts))
            else:
                runs[side].append(bare_generate(b, prompts, sort=side == "bare_sorted"))
    wall = {side: statistics.median(r["wall"] for r in rs) for side, rs in runs.items()}
    tokens = {side: rs[0]["tokens"] for side, rs in runs.items()}
    tps = {side: tokens[side] / wall[side] for side in runs}
    return {
        "prompts": len(prompts),
        "batch_size_eval": b.config.batch_size_eval,
        "task_batch_size_eval": task_batch_size,
        "generation_kwargs": b.config.generation_kwargs,
        "generated_tokens": tokens,
        "tokens_per_s": tps,
        "ratio": tps["harness"] / tps["bare_sorted"],
        "sorting_gain": wall["bare_unsorted"] / wall["bare_sorted"],
        "prompt_padding_fraction": {
            "sorted": runs["bare_sorted"][0]["prompt_padding_fraction"],
            "unsorted": runs["bare_unsorted"][0]["prompt_padding_fraction"],
        },
        "wall": {side: summary([r["wall"] for r in rs]) for side, rs in runs.items()},
    }


# ---------------------------------------------------------------- fixed costs


def measure_imports(sizes: Sizes, *, quick: bool) -> dict[str, Any]:
    """Fresh interpreters: startup alone, `import peftbench.run`, and everything a run imports (skipped
    with --quick: it costs several seconds of CPU, the smoke test does not need it)."""
    codes = {"python startup": "pass", "import peftbench.run": "import peftbench.run"}
    if not quick:
        codes["run imports"] = RUN_IMPORTS
    return {
        name: summary(
            [timed_subprocess([sys.executable, "-c", code])["wall"] for _ in range(sizes.fixed_reps)]
        )
        for name, code in codes.items()
    }


def measure_tokenization(b: Bench, sizes: Sizes) -> dict[str, Any]:
    """The tokenizer's own work on every split (no cache), and the harness's tokenize_train with an empty
    on-disk cache (a miss: tokenize and store) and with it filled (a hit)."""
    from peftbench.train import tokenize_prompts, tokenize_train

    cfg = b.config
    train_texts = [cfg.query_template.format(query=e.query) + e.response for e in b.data.train]
    eval_examples = [*b.data.valid, *b.data.test]
    cold = []
    for _ in range(sizes.fixed_reps):
        with timed() as t:
            b.tokenizer(train_texts)
            tokenize_prompts(b.tokenizer, eval_examples, template=cfg.query_template)
        cold.append(t["wall"])
    out: dict[str, Any] = {"cold": summary(cold), "train examples": len(b.data.train)}
    with timed() as t:
        tokenize_prompts(b.tokenizer, eval_examples, template=cfg.query_template)
    prompts = t["wall"]  # prompts are not cached by the harness: every run pays for them

    def harness_tokenize() -> None:
        tokenize_train(b.tokenizer, b.data.train, template=cfg.query_template, max_len=cfg.max_seq_length)

    with private_cache():
        with timed() as miss:
            harness_tokenize()
        hits = []
        for _ in range(sizes.fixed_reps):
            with timed() as hit:
                harness_tokenize()
            hits.append(hit["wall"] + prompts)
    out["cache miss"] = miss["wall"] + prompts
    out["cache hit"] = summary(hits)
    return out


@contextmanager
def private_cache() -> Iterator[str]:
    """PEFTBENCH_CACHE pointed at an empty temporary folder (inherited by subprocesses): cold
    measurements, and the user's cache is neither read nor filled."""
    previous = os.environ.get("PEFTBENCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="perf-cache-") as folder:
        os.environ["PEFTBENCH_CACHE"] = folder
        try:
            yield folder
        finally:
            if previous is None:
                os.environ.pop("PEFTBENCH_CACHE")
            else:
                os.environ["PEFTBENCH_CACHE"] = previous


def measure_in_process_fixed(b: Bench, sizes: Sizes) -> dict[str, Any]:
    from peftbench import provenance
    from peftbench.modeling import weights_fingerprint
    from peftbench.run import _checkpoint_size
    from peftbench.train import forgetting_loss

    out: dict[str, Any] = {}
    texts = b.data.forgetting_texts
    # texts sorted by length pad less; the loss is a sum over tokens, so the order cannot change it
    by_length = sorted(texts, key=lambda text: len(b.tokenizer(text)["input_ids"]))
    timings: dict[str, list[float]] = {"as given": [], "sorted by length": []}
    losses = {}
    for rep in range(sizes.forgetting_reps):
        for label in timings if rep % 2 == 0 else list(timings)[::-1]:
            with timed(b.sync) as t:
                losses[label] = forgetting_loss(
                    b.model,
                    b.tokenizer,
                    texts if label == "as given" else by_length,
                    config=b.config,
                    device=b.device,
                )
            timings[label].append(t["wall"])
    # a run measures forgetting twice: before training (adapter off) and after
    out["forgetting (one pass)"] = summary(timings["as given"])
    out["forgetting sorted by length (one pass)"] = summary(timings["sorted by length"])
    out["forgetting loss difference when sorted"] = abs(losses["as given"] - losses["sorted by length"])
    out["forgetting texts"] = len(texts)
    parts = {
        "git state": lambda: provenance.git_state(b.experiment.task_dir),
        "package info": provenance.package_info,
        "system info": lambda: provenance.system_info(b.device),
        "pytorch info": provenance.pytorch_info,
        "model fingerprint": lambda: weights_fingerprint(b.model_path),
        "checkpoint save": lambda: _checkpoint_size(b.model, b.peft_config, save_dir=None),
    }
    for name, fn in parts.items():
        samples = []
        for _ in range(sizes.fixed_reps):
            with timed() as t:
                fn()
            samples.append(t["wall"])
        out[name] = summary(samples)
    return out


@contextmanager
def scratch_task(b: Bench, *, quick_params: dict[str, Any] | None = None) -> Iterator[Path]:
    """A throw-away copy of the task folder holding only this experiment (everything else linked), so
    that subprocess runs write their result files there and not into the real benchmark; optionally
    with its own quick variant."""
    from peftbench.experiment import QUICK_PARAMS, RESULT_DIRS

    with tempfile.TemporaryDirectory(prefix="perf-task-") as root:
        task = Path(root) / "benchmarks" / b.experiment.task_dir.name
        task.mkdir(parents=True)
        for entry in b.experiment.task_dir.iterdir():
            if entry.name not in ("experiments", *RESULT_DIRS):
                (task / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        shutil.copytree(b.experiment.path, task / "experiments" / b.experiment.method / b.experiment.name)
        if quick_params is not None:
            (task / QUICK_PARAMS).unlink(missing_ok=True)
            (task / QUICK_PARAMS).write_text(json.dumps(quick_params))
        yield task


def measure_quick_run(b: Bench, threads: int) -> dict[str, Any]:
    """One `peftbench run --quick` as a subprocess (the denominator of the fixed-cost fraction), with
    an empty tokenization cache; one run of the real quick variant is minutes on two cores."""
    with scratch_task(b) as task, private_cache():
        exp = task / "experiments" / b.experiment.method / b.experiment.name
        cmd = [sys.executable, "-m", "peftbench", "run", str(exp), "--quick"]
        cmd += ["--threads", str(threads)]
        done = timed_subprocess(cmd)
    return {
        "command": "peftbench " + " ".join(cmd[3:]),
        "wall": done["wall"],
        "cpu": done["cpu"],
        "summary": json.loads(done["stdout"]),
    }


# ---------------------------------------------------------------- growth


def measure_growth(b: Bench, sizes: Sizes) -> dict[str, Any]:
    """Whole train() calls (validation once at the end) against max_steps and against validation size."""
    x_steps, y_steps = [], []
    x_valid, y_valid = [], []
    # sizes interleaved (small, large, middle) so that a drift in load does not pass for a slope
    for i in (0, 2, 1):
        x_steps.append(sizes.step_sizes[i])
        y_steps.append(harness_train(b, steps=sizes.step_sizes[i])["whole_wall"])
        n = sizes.valid_batches[i] * b.config.batch_size_eval
        x_valid.append(n)
        y_valid.append(harness_train(b, steps=1, valid=n)["whole_wall"])
    return {
        "max_steps": {"x": x_steps, "seconds": y_steps, **fit_line(x_steps, y_steps)},
        "validation_size": {"x": x_valid, "seconds": y_valid, **fit_line(x_valid, y_valid)},
    }


def measure_sweep(b: Bench, sizes: Sizes) -> dict[str, Any]:
    """`peftbench sweep --quick` of one experiment over several seeds, for each --jobs. Its quick
    variant is cut to 2 steps: what parallel jobs have to share is each run's fixed work (start-up,
    test generation, forgetting), and the real quick variant would make this section take an hour."""
    try:
        import peftbench.commands.sweep_cmd  # noqa: F401
    except ImportError:
        return {"skipped": "no `peftbench sweep` command in this checkout"}
    seeds = ",".join(str(100 + i) for i in range(sizes.sweep_runs))
    micro = {"max_steps": 2, "eval_steps": 2}
    out: dict[str, Any] = {"runs": sizes.sweep_runs, "cores": available_cores(), "quick_params": micro}
    with scratch_task(b, quick_params=micro) as task:
        for jobs in sizes.sweep_jobs:
            cmd = [sys.executable, "-m", "peftbench", "sweep", str(task), "--quick", "--force"]
            cmd += ["--filter", b.experiment.experiment_name, "--seeds", seeds, "--jobs", str(jobs)]
            done = timed_subprocess(cmd)
            out[f"jobs={jobs}"] = {"wall": done["wall"], "cpu": done["cpu"]}
    walls = [out[f"jobs={j}"]["wall"] for j in sizes.sweep_jobs]
    out["speedup"] = {f"jobs={j}": walls[0] / w for j, w in zip(sizes.sweep_jobs, walls, strict=True)}
    return out


# ---------------------------------------------------------------- machine, report, main


def model_identity(b: Bench) -> dict[str, Any]:
    """Which base model the numbers are for: its fingerprint and size."""
    from peftbench.modeling import count_parameters, weights_fingerprint

    trainable, total = count_parameters(b.model)
    return {
        "path": b.model_path,
        "fingerprint": weights_fingerprint(b.model_path),
        "num_total_params": total,
        "num_trainable_params": trainable,
    }


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int, device: str) -> dict[str, Any]:
    import psutil
    import torch

    return {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": list(os.getloadavg()),
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows: each measure, its target and whether it is met."""
    tr, ev, fx, gr = (record[k] for k in ("training", "evaluation", "fixed_costs", "growth"))
    at_least, below = f">= {TARGET_RATIO}", f"< {TARGET_FIXED_FRACTION}"
    rows = [
        row("training steps/s: harness / bare", tr["ratio"], at_least, tr["ratio"] >= TARGET_RATIO),
        row("  harness steps/s", tr["harness_steps_per_s"]),
        row("  bare steps/s", tr["bare_steps_per_s"]),
        row("eval tokens/s: harness / bare sorted", ev["ratio"], at_least, ev["ratio"] >= TARGET_RATIO),
        row("  harness tokens/s", ev["tokens_per_s"]["harness"]),
        row("  sorting gain: unsorted / sorted time", ev["sorting_gain"]),
    ]
    for label, value in fx.get("fraction", {}).items():
        rows.append(row(f"fixed costs / quick run ({label})", value, below, value < TARGET_FIXED_FRACTION))
    if "wall" in fx["quick_run"]:
        rows.append(row("  quick run s (cold cache)", fx["quick_run"]["wall"]))
    imports = fx["imports"].get("run imports", fx["imports"]["import peftbench.run"])
    rows += [
        row("  fixed costs s (cold / cached tokenization)", fx["total_cold"], f"{fx['total_cached']:.2f}"),
        row("  imports s", imports["median"]),
        row("  forgetting s (2 passes)", 2 * fx["forgetting (one pass)"]["median"]),
        row(
            "  forgetting gain of sorting texts by length",
            fx["forgetting (one pass)"]["median"] / fx["forgetting sorted by length (one pass)"]["median"],
        ),
    ]
    for name in ("max_steps", "validation_size"):
        fit = gr[name]
        rows.append(row(f"growth vs {name}: slope s/unit", fit["slope"], "linear", fit["r2"] >= 0.9))
        rows.append(row(f"  R^2 (intercept {fit['intercept']:.2f} s)", fit["r2"]))
    for label, speedup in gr["sweep"].get("speedup", {}).items():
        rows.append(row(f"sweep speedup {label} ({gr['sweep']['runs']} runs)", speedup))
    return rows


def row(measure: str, value: float, target: str = "", met: bool | None = None) -> dict[str, Any]:
    return {"measure": measure, "value": round(float(value), 4), "target": target, "met": met}


def print_table(rows: list[dict[str, Any]], record: dict[str, Any]) -> None:
    import pandas as pd

    m = record["machine"]
    print(
        f"\nmachine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, "
        f"device {m['device']}, load {m['load_average_at_start'][0]:.1f} at start"
    )
    frame = pd.DataFrame(rows).fillna("")
    print(frame.to_string(index=False, justify="left"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        help="experiment folder to measure (default: the first lora experiment of benchmarks/tinymath)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): a smoke test")
    parser.add_argument(
        "--quick-run",
        choices=("auto", "yes", "no"),
        default="auto",
        help="time one whole `peftbench run --quick` in a subprocess, the denominator of the fixed-cost "
        "fraction (auto: yes, but not with --quick)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also time `peftbench sweep --quick --jobs N` (subprocesses; minutes even with 2-step runs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads, here and in the timed subprocess run (default 1: on a shared machine and a "
        "small model, more threads mostly measure other users' load)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: results/perf-<time>.json)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads {args.threads}: must be at least 1")
    if args.experiment is not None and not args.experiment.is_dir():
        parser.error(f"--experiment {args.experiment}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    sizes = QUICK if args.quick else FULL
    threads = args.threads
    torch.set_num_threads(threads)
    quick_run = args.quick_run == "yes" or (args.quick_run == "auto" and not args.quick)
    experiment = args.experiment or find_experiment(DEFAULT_TASK)

    with private_cache():
        return measure_all(args, sizes=sizes, threads=threads, quick_run=quick_run, experiment=experiment)


def measure_all(
    args: argparse.Namespace, *, sizes: Sizes, threads: int, quick_run: bool, experiment: Path
) -> int:
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    tic = time.perf_counter()
    fixed: dict[str, Any] = {}
    b = set_up(experiment, fixed, sizes)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": created.isoformat(),
        "quick": args.quick,
        "experiment": b.experiment.experiment_name,
        "task": b.experiment.task_name,
        "machine": machine(threads, b.device),
        "model": model_identity(b),
        "sizes": dataclasses.asdict(sizes),
    }
    print(f"run_perf: {record['experiment']} on {b.device}, {threads} thread(s)", file=sys.stderr)
    print("run_perf: training, harness vs bare loop", file=sys.stderr)
    record["training"] = measure_training(b, sizes)
    progress("training", record["training"], "ratio", "harness_steps_per_s", "bare_steps_per_s")
    print("run_perf: evaluation, harness vs bare generate", file=sys.stderr)
    record["evaluation"] = measure_evaluation(b, sizes)
    progress("evaluation", record["evaluation"], "ratio", "sorting_gain", "tokens_per_s")
    print("run_perf: fixed costs", file=sys.stderr)
    fixed["imports"] = measure_imports(sizes, quick=args.quick)
    fixed["tokenization"] = measure_tokenization(b, sizes)
    fixed.update(measure_in_process_fixed(b, sizes))
    record["fixed_costs"] = fixed
    progress(
        "fixed costs", fixed, "imports", "forgetting (one pass)", "forgetting sorted by length (one pass)"
    )
    print("run_perf: growth", file=sys.stderr)
    record["growth"] = measure_growth(b, sizes)
    progress("growth", record["growth"], "max_steps", "validation_size")
    if quick_run:
        print("run_perf: one quick-variant run (subprocess)", file=sys.stderr)
        fixed["quick_run"] = measure_quick_run(b, threads)
    else:
        fixed["quick_run"] = {"skipped": "--quick-run no (the default with --quick)"}
    if args.sweep:
        print("run_perf: sweeps against --jobs (subprocess)", file=sys.stderr)
        record["growth"]["sweep"] = measure_sweep(b, sizes)
    else:
        record["growth"]["sweep"] = {"skipped": "not asked for (--sweep)"}
    add_fixed_totals(fixed)
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    record["script_seconds"] = time.perf_counter() - tic
    record["table"] = table(record)

    from peftbench.results import atomic_write_json

    stamp = created.strftime("%Y%m%dT%H%M%S")
    out = args.out or RESULTS / f"perf-{stamp}{'-quick' if args.quick else ''}.json"
    atomic_write_json(out, record)
    print_table(record["table"], record)
    print(f"\nwritten: {out}")
    return 0


def progress(section: str, data: dict[str, Any], *keys: str) -> None:
    """A section's headline numbers on stderr as soon as it is done (the JSON comes at the end)."""
    print(f"run_perf: {section}: {json.dumps({k: data[k] for k in keys}, default=str)}", file=sys.stderr)


def add_fixed_totals(fixed: dict[str, Any]) -> None:
    """Sum of a run's fixed costs (medians), with cold and cached tokenization, and their fraction of a
    quick-variant run where one was timed."""
    imports = fixed["imports"].get("run imports", fixed["imports"]["import peftbench.run"])
    common = (
        imports["median"]
        + fixed["model load"]["median"]
        + fixed["data generation"]["median"]
        + 2 * fixed["forgetting (one pass)"]["median"]
        + sum(
            fixed[k]["median"]
            for k in (
                "git state",
                "package info",
                "system info",
                "pytorch info",
                "model fingerprint",
                "checkpoint save",
            )
        )
    )
    tok = fixed["tokenization"]
    cached = tok["cache hit"]["median"]
    fixed["total_cold"] = common + tok["cold"]["median"]
    fixed["total_cached"] = common + cached
    quick = fixed.get("quick_run", {})
    if "wall" in quick:
        # the timed run started with an empty cache; a warm one is shorter by the tokenization saved
        saved = fixed["total_cold"] - fixed["total_cached"]
        fixed["fraction"] = {
            "cold cache": fixed["total_cold"] / quick["wall"],
            "warm cache": fixed["total_cached"] / (quick["wall"] - saved),
        }


if __name__ == "__main__":
    sys.exit(main())
