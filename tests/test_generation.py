"""Generation sees what training sees: for every experiment folder, the logits behind the runner's
batched greedy generation equal a plain forward pass over the unpadded prompt plus the generated
tokens, with no cache.

A broken KV cache, a prompt that generation drops, or padding that moves positions shows up here as
a logit difference of 0.05 to 20; float rounding stays below 1e-4. This caught transformers 5.24
(its rename of `past_key_values` to `cache` made prefix tuning, cartridges, prompt tuning and
p-tuning generate without their prompts under peft 0.21.2) and peft dropping the position ids of
prompt tuning and p-tuning behind left padding (`peftbench.evaluation.ignores_position_ids`).
The trainable parameters are perturbed first, so that adapters which start as the identity matter.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from test_experiments import EXPERIMENTS

from peftbench.evaluation import generate, ignores_position_ids, prompt_batches
from peftbench.experiment import load_peft_config, load_train_config

PROMPTS = [
    "Question: Tom has 5 apples. He eats 2 of them. How many are left? Think step by step.\nAnswer:",
    "Question: Ana has 12 cards. Think step by step.\nAnswer:",
    "Question: Leo has 3 bags of 4 marbles. Think step by step.\nAnswer:",
]
TOLERANCE = 1e-3

# Methods whose output for a token depends on other tokens by design, so that cached generation
# cannot equal a forward pass over the whole sequence.
NOT_CAUSAL = {
    # peft's Lily layer averages its router's probabilities over every token of the batch
    # (`router_probability.reshape(-1, num_B).mean(dim=0)` in peft/tuners/lily/layer.py)
    "lily": "the Lily router averages over all tokens of the batch",
}


def _cases():
    for exp in EXPERIMENTS:
        reason = NOT_CAUSAL.get(exp.method)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        yield pytest.param(exp, marks=marks, id=f"{exp.task_name}/{exp.experiment_name}")


@pytest.mark.parametrize("exp", _cases())
def test_generation_logits_equal_an_uncached_forward_pass(exp):
    from peftbench.run import prepare_model

    config = load_train_config(exp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_model(exp, config, load_peft_config(exp), data=None, final_test=False)
        model, tokenizer, device = prepared.model, prepared.tokenizer, prepared.device
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.02)
        model.eval()

        calls = []
        original = model.generate

        def spy(**kwargs):
            out = original(**kwargs, output_logits=True, return_dict_in_generate=True)
            calls.append((kwargs["input_ids"], kwargs["attention_mask"], out))
            return out.sequences

        model.generate = spy
        prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
        generation = {"max_length": 256, "max_new_tokens": 5}
        generate(model, tokenizer, prompts=prompts, batch_size=8, generation_kwargs=generation, device=device)
        del model.generate

        assert sum(len(ids) for ids, _, _ in calls) == len(PROMPTS)
        worst = 0.0
        with torch.inference_mode():
            for ids, mask, out in calls:
                width = ids.shape[1]
                for row in range(ids.shape[0]):
                    prompt = ids[row][mask[row].bool()].tolist()
                    new = out.sequences[row, width:].tolist()
                    if tokenizer.eos_token_id in new:  # rows that ended early are padded after EOS
                        new = new[: new.index(tokenizer.eos_token_id) + 1]
                    sequence = torch.tensor([prompt + new], device=device)
                    reference = model(input_ids=sequence).logits[0, -len(new) - 1 : -1]
                    got = torch.stack([step[row] for step in out.logits[: len(new)]])
                    worst = max(worst, float((reference - got).abs().max()))
    assert worst < TOLERANCE, f"generation differs from an uncached forward pass by {worst:.3g} in the logits"


def test_prompt_batches_pad_only_models_that_keep_position_ids():
    prompts = [[1] * 5, [1] * 3, [1] * 5, [1] * 4, [1] * 3]
    assert prompt_batches(prompts, batch_size=2, equal_length=False) == [[0, 2], [3, 1], [4]]
    assert prompt_batches(prompts, batch_size=8, equal_length=True) == [[0, 2], [3], [1, 4]]
    assert prompt_batches(prompts, batch_size=1, equal_length=True) == [[0], [2], [3], [1], [4]]


def test_only_prompt_learning_methods_that_prepend_tokens_ignore_position_ids():
    from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    def tiny_llama():
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=64,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
            )
        )

    kinds = {
        "prompt tuning": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2),
        "p-tuning": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=2, encoder_hidden_size=8),
        "prefix tuning": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2),
        "lora": LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"]),
    }
    ignoring = {
        name for name, cfg in kinds.items() if ignores_position_ids(get_peft_model(tiny_llama(), cfg))
    }
    assert ignoring == {"prompt tuning", "p-tuning"}
    assert not ignores_position_ids(tiny_llama())  # full fine-tuning
