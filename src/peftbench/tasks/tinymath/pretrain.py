"""Builds the tinymath base model: a few-million-parameter Llama pretrained on the synthetic corpus.

Deterministic: the same settings give the same tokenizer, data stream, initial weights and
losses (seeded RNGs, `torch.use_deterministic_algorithms`). `pretrain_log.json` records the
settings and the losses of the first steps, so that a test can repeat those steps from scratch
and check that this recipe still produces the committed model, without a full rebuild.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from peftbench.tasks.tinymath.corpus import CORPUS_VERSION, documents, forgetting_texts
from peftbench.tasks.tinymath.tokenizer import build_tokenizer

PRETRAIN_DATA_SEED = 3000
LOG_NAME = "pretrain_log.json"


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines the base model. Sized from the prototype of issue 3: 8M training
    tokens (8000 x 8 x 128), about 21 minutes with two threads on a quiet 2-core machine."""

    seed: int = 0  # weight initialisation
    steps: int = 8000
    batch_size: int = 8
    block_size: int = 128  # tokens per training sequence (documents are packed, EOS between them)
    peak_lr: float = 3e-3  # one-cycle schedule: warm-up to this, then cosine decay
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4


def model_config(settings: PretrainSettings, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    eos = tokenizer.eos_token_id
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )


def batches(tokenizer: PreTrainedTokenizerFast, settings: PretrainSettings) -> Iterator[torch.Tensor]:
    """An endless stream of [batch_size, block_size] token blocks, packed from corpus documents."""
    held_out = set(forgetting_texts())
    docs = (d for d in documents(PRETRAIN_DATA_SEED) if d not in held_out)
    eos = tokenizer.eos_token_id
    need = settings.batch_size * settings.block_size
    buffer: list[int] = []
    while True:
        while len(buffer) < need:
            chunk = list(itertools.islice(docs, 256))
            for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
                buffer.extend(ids)
                buffer.append(eos)
        block, buffer = buffer[:need], buffer[need:]
        yield torch.tensor(block, dtype=torch.long).view(settings.batch_size, settings.block_size)


def _setup(settings: PretrainSettings, tokenizer: PreTrainedTokenizerFast):
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    torch.use_deterministic_algorithms(True)
    model = LlamaForCausalLM(model_config(settings, tokenizer))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.peak_lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.peak_lr,
        total_steps=settings.steps,
        pct_start=settings.warmup_fraction,
        anneal_strategy="cos",
    )
    return model, optimizer, scheduler


def train_steps(
    *,
    settings: PretrainSettings,
    tokenizer: PreTrainedTokenizerFast,
    num_steps: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[LlamaForCausalLM, list[float], str]:
    """Run the first `num_steps` (default: all) pretraining steps from scratch.

    Returns the model, the loss of every step, and the sha256 of the first batch's token ids.
    """
    model, optimizer, scheduler = _setup(settings, tokenizer)
    model.train()
    losses: list[float] = []
    first_batch_sha = ""
    for step, batch in enumerate(batches(tokenizer, settings)):
        if step >= (settings.steps if num_steps is None else num_steps):
            break
        if step == 0:
            first_batch_sha = hashlib.sha256(batch.numpy().tobytes()).hexdigest()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return model, losses, first_batch_sha


@torch.no_grad()
def mean_token_loss(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> float:
    """Mean per-token cross-entropy over `texts` (how the forgetting metric measures the base model)."""
    model.eval()
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        n = ids.shape[1] - 1
        total += model(input_ids=ids, labels=ids).loss.item() * n
        count += n
    return total / count


@torch.no_grad()
def arithmetic_accuracy(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, *, op: str, n: int = 200, seed: int = 4000
) -> float:
    """Share of `a op b =` prompts (two-digit addition / subtraction) that the model completes correctly."""
    model.eval()
    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(n):
        a = rng.randint(10, 89)
        b = rng.randint(10, 99 - a) if op == "+" else rng.randint(1, a)
        # after another fact, as in the corpus: a document's very first number (no space before
        # it) is tokenized differently and rare in pretraining
        prompts.append(f"7 x 3 = 21. {a} {op} {b} =")
        answers.append(str(a + b if op == "+" else a - b))
    correct = 0
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1] :])
        correct += text.strip().split(".")[0].strip() == answer
    return correct / n


def make_base_model(*, output_dir: Path, settings: PretrainSettings, log_every: int = 100) -> dict:
    """Build tokenizer and model from scratch and save them (with pretrain_log.json) to `output_dir`."""
    started = time.time()
    tokenizer = build_tokenizer()
    log_losses: list[dict] = []

    def on_step(step: int, loss: float) -> None:
        if step % log_every == 0 or step == settings.steps - 1:
            log_losses.append({"step": step, "loss": round(loss, 4)})
            print(f"step {step:5d}  loss {loss:.4f}  {time.time() - started:6.0f} s", flush=True)

    model, losses, first_batch_sha = train_steps(settings=settings, tokenizer=tokenizer, on_step=on_step)
    train_time = time.time() - started
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    save_tokenizer(tokenizer, output_dir)
    log = {
        "settings": asdict(settings),
        "corpus_version": CORPUS_VERSION,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "train_time_s": round(train_time, 1),
        "first_batch_sha256": first_batch_sha,
        # full precision: the determinism test repeats these steps and compares
        "first_losses": losses[:5],
        "losses": log_losses,
        "forgetting_texts_loss": round(mean_token_loss(model, tokenizer, forgetting_texts()), 4),
        "addition_accuracy": arithmetic_accuracy(model, tokenizer, op="+"),
        "subtraction_accuracy": arithmetic_accuracy(model, tokenizer, op="-"),
    }
    (output_dir / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    return log


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, output_dir: Path) -> None:
    tokenizer.save_pretrained(output_dir)
    # transformers 5 writes its own class name, which transformers 4 cannot load; the generic
    # fast-tokenizer class loads in both
    config_path = output_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def steps_per_second_estimate(settings: PretrainSettings, n: int = 10) -> float:
    """Time `n` steps (to size a run before starting it)."""
    tokenizer = build_tokenizer()
    start = time.time()
    train_steps(settings=settings, tokenizer=tokenizer, num_steps=n)
    return n / (time.time() - start)
