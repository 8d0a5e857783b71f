"""A toy task plug-in and a tiny random Llama in a throw-away task folder, for fast runner tests.

It is independent of the embedded benchmark on purpose: the runner's tests must not depend on one
task, and a task registered from outside `peftbench.tasks` shows that tasks really are plug-ins.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from peftbench import tasks
from peftbench.tasks.answers import is_correct
from peftbench.tasks.base import Example, Task, TaskData

TOY = "toytask"
DEFAULTS = {
    "model_id": "base_model",
    "dtype": "float32",
    "max_seq_length": 64,
    "batch_size": 4,
    "batch_size_eval": 16,
    "max_steps": 4,
    "eval_steps": 2,
    "compile": False,
    "use_gc": False,
    "seed": 0,
    "grad_norm_clip": 1.0,
    "optimizer_type": "AdamW",
    "optimizer_kwargs": {"lr": 1e-2, "weight_decay": 0.0},
    "lr_scheduler": "cosine",
    "use_amp": False,
    "autocast_adapter_dtype": True,
    "attn_implementation": None,
    "generation_kwargs": {"max_length": 80, "max_new_tokens": 8},
    "query_template": "Q: {query}\nA:",
    "init_kv_cache_prefix": None,
}
LORA = {
    "peft_type": "LORA",
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj"],
    "task_type": "CAUSAL_LM",
}


def _example(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return Example(
        query=f"{a} + {b} ?", response=f" {a} + {b} = {a + b}. The answer is: {a + b}", answer=str(a + b)
    )


class ToyTask(Task):
    name = TOY
    version = "1"
    base_model_short = "toy"
    forgetting_loss_band = (0.0, 100.0)

    def load_data(self, *, task_dir: Path, seed: int = 0) -> TaskData:
        rng = random.Random(seed)
        examples = [_example(rng) for _ in range(64)]
        return TaskData(
            train=examples[:40],
            valid=examples[40:48],
            test=examples[48:],
            forgetting_texts=["the cat sat on the mat.", "one plus two is three."],
            info={"toy": {"seed": seed}},
        )

    def is_correct(self, prediction: str, example: Example, *, prompt: str = "") -> bool:
        return is_correct(prediction, example.answer)


def register_toy_task(monkeypatch) -> None:
    monkeypatch.setitem(tasks.BUILTIN, TOY, "toyworld:ToyTask")
    tasks.get_task.cache_clear()


def build_tiny_model(folder: Path) -> None:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the toy alphabet, saved like a hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(
        ["Q: 1 + 2 ?\nA: 1 + 2 = 3. The answer is: 3", "the cat sat on the mat."], trainer
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.eos_token_id,
        bos_token_id=None,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)


def make_task_dir(root: Path, *, model_dir: Path) -> Path:
    """benchmarks/toytask with defaults, a LoRA experiment and a full fine-tuning experiment."""
    task_dir = root / "benchmarks" / TOY
    (task_dir / "experiments" / "lora" / "toy-rank4").mkdir(parents=True)
    (task_dir / "experiments" / "full-finetuning" / "toy-default").mkdir(parents=True)
    (task_dir / "default_training_params.json").write_text(json.dumps(DEFAULTS, indent=2))
    (task_dir / "quick_training_params.json").write_text(json.dumps({"max_steps": 2, "eval_steps": 2}))
    (task_dir / "experiments" / "lora" / "toy-rank4" / "adapter_config.json").write_text(json.dumps(LORA))
    (task_dir / "base_model").symlink_to(model_dir, target_is_directory=True)
    return task_dir
