"""The embedded benchmark: problem generator, corpus, tokenizer, base model and task folder."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from peftbench.tasks import get_task
from peftbench.tasks.base import Example
from peftbench.tasks.tinymath.corpus import documents, forgetting_texts

REPO = Path(__file__).resolve().parent.parent
TASK_DIR = REPO / "benchmarks" / "tinymath"
BASE_MODEL = TASK_DIR / "base_model"
EQUATION = re.compile(r"(\d+) ([-+x/]) (\d+) = (\d+)\.")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b, "/": lambda a, b: a / b}


@pytest.fixture(scope="module")
def data():
    return get_task("tinymath").load_data(task_dir=TASK_DIR, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(BASE_MODEL)


@pytest.fixture(scope="module")
def corpus_sample() -> list[str]:
    return list(itertools.islice(documents(7), 3000))


# --- generator ---------------------------------------------------------------------------------


def test_same_seed_same_data_other_seed_other_data(data):
    task = get_task("tinymath")
    again = task.load_data(task_dir=TASK_DIR, seed=0)
    assert again.fingerprint == data.fingerprint
    assert again.train[:3] == data.train[:3]
    other = task.load_data(task_dir=TASK_DIR, seed=1)
    assert other.fingerprint != data.fingerprint


def test_split_sizes_and_no_test_or_valid_query_in_train(data):
    assert (len(data.train), len(data.valid), len(data.test)) == (20_000, 50, 500)
    train = {e.query for e in data.train}
    test, valid = {e.query for e in data.test}, {e.query for e in data.valid}
    assert len(train) == len(data.train) and len(test) == len(data.test)
    assert not train & test and not train & valid and not test & valid
    assert data.info["sizes"] == {"train": 20_000, "valid": 50, "test": 500}


def test_working_is_right_and_chained(data):
    """Every equation is correct, starts from the previous result, stays in 1..99, and the response ends
    with the final result as "The answer is: N"."""
    steps = []
    for ex in data.test + data.valid + data.train[:2000]:
        assert ex.response.startswith(" ")
        assert ex.response.endswith(f"The answer is: {ex.answer}")
        equations = EQUATION.findall(ex.response)
        assert 1 <= len(equations) <= 3, ex
        steps.append(len(equations))
        previous = None
        for a, op, b, result in equations:
            a, b, result = int(a), int(b), int(result)
            assert OPS[op](a, b) == result, ex
            assert 1 <= result <= 99, ex
            if previous is not None:
                assert a == previous, ex
            previous = result
        assert str(previous) == ex.answer
    assert set(steps) == {1, 2, 3}  # one to three computations, all present


# --- metric ------------------------------------------------------------------------------------

CASES = [
    (" Tom starts with 5 apples. 5 + 3 = 8. The answer is: 8", "8", True),
    (" 5 + 3 = 8. The answer is: 8\nQuestion: more text", "8", True),
    (" The answer is: 7. Wait. The answer is: 8", "8", True),  # the last statement counts
    (" The answer is: 8. Wait. The answer is: 7", "8", False),
    (" 5 + 3 = 8.", "8", False),  # no stated answer
    (" The answer is: 18", "8", False),
    ("", "8", False),
    (" The answer is: 08", "8", True),  # compared as numbers
]


@pytest.mark.parametrize(("prediction", "answer", "expected"), CASES)
def test_is_correct(prediction, answer, expected):
    example = Example(query="q", response=" r", answer=answer)
    assert get_task("tinymath").is_correct(prediction, example) is expected


# --- corpus ------------------------------------------------------------------------------------


def test_corpus_never_has_the_task_format(corpus_sample):
    text = "\n".join(corpus_sample)
    # the template's words occur ("Question 3 on the list", "Answer the letter"), its format never
    for pattern in ("Question:", "Answer:", "answer is"):
        assert pattern.lower() not in text.lower(), pattern
    assert "Question" in text and "\nAnswer" in text and "Think step by step" in text


def test_every_word_of_the_task_occurs_in_the_corpus(data, corpus_sample):
    words = lambda texts: set(re.findall(r"[A-Za-z]+", " ".join(texts)))  # noqa: E731
    template = "Question: {query} Think step by step.\nAnswer:"
    examples = data.test + data.train[:3000]
    task_words = words([template.format(query=""), *(e.query + e.response for e in examples)])
    missing = task_words - words(corpus_sample)
    assert not missing


def test_forgetting_texts_are_held_out_of_pretraining(data):
    assert data.forgetting_texts == forgetting_texts()
    assert len(set(data.forgetting_texts)) == len(data.forgetting_texts) == 200
    from peftbench.tasks.tinymath.pretrain import PRETRAIN_DATA_SEED

    pretraining = set(itertools.islice(documents(PRETRAIN_DATA_SEED), 2000))
    assert not pretraining & set(data.forgetting_texts)


# --- tokenizer and base model --------------------------------------------------------------------

ROUND_TRIP = [
    "Question: Tom has 35 apples. Think step by step.\nAnswer: 35 + 28 = 63. The answer is: 63",
    " leading space",
    "double  space and trailing space ",
    "new\nlines\n\n and a tab\t",
    "1234567890 x 0 = 0",
    "unicode: café 你好 ∑",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tokenizer_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tokenizer_splits_digits_and_has_eos(tokenizer):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("He has 1234 pens", add_special_tokens=False))
    assert all(sum(c.isdigit() for c in t) <= 1 for t in tokens)
    assert sum(c.isdigit() for t in tokens for c in t) == 4
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_rebuilt_tokenizer_matches_the_committed_one(tokenizer):
    from peftbench.tasks.tinymath.tokenizer import build_tokenizer

    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_base_model_loads_offline_and_is_small(tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    size = sum(f.stat().st_size for f in BASE_MODEL.iterdir())
    assert size < 25e6
    model = AutoModelForCausalLM.from_pretrained(BASE_MODEL)
    assert isinstance(model, LlamaForCausalLM)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 5e6
    assert model.config.eos_token_id == tokenizer.eos_token_id
    ids = torch.tensor([tokenizer.encode("12 + 5 =", add_special_tokens=False)])
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 3


def test_base_model_loss_on_forgetting_texts_is_in_the_band(tokenizer, data):
    from transformers import AutoModelForCausalLM

    from peftbench.evaluation import mean_per_token_loss

    model = AutoModelForCausalLM.from_pretrained(BASE_MODEL)

    def loss(max_length: int) -> float:
        return mean_per_token_loss(
            model, tokenizer, texts=data.forgetting_texts, batch_size=50, max_length=max_length, device="cpu"
        )

    # as the runner measures it (the defaults' max_seq_length truncates a few long documents)
    lo, hi = get_task("tinymath").forgetting_loss_band
    assert lo < loss(256) < hi
    # whole documents, as pretrain_log.json records it
    log = json.loads((BASE_MODEL / "pretrain_log.json").read_text())
    assert loss(512) == pytest.approx(log["forgetting_texts_loss"], abs=2e-3)


def test_first_pretraining_steps_match_the_log(tokenizer):
    """The cheap determinism check: the recipe, repeated from scratch for a few steps, gives the
    logged losses, so the committed model is what `peftbench make-base-model` builds."""
    import torch

    from peftbench.tasks.tinymath.pretrain import PretrainSettings, train_steps

    log = json.loads((BASE_MODEL / "pretrain_log.json").read_text())
    settings = PretrainSettings(**log["settings"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(log["num_threads"])
        _, losses, first_batch_sha = train_steps(
            settings=settings, tokenizer=tokenizer, num_steps=len(log["first_losses"])
        )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert first_batch_sha == log["first_batch_sha256"]
    # exact on the machine that built it; other CPUs may sum in another order (last bits only)
    assert losses == pytest.approx(log["first_losses"], rel=1e-5, abs=1e-5)


# --- task folder -----------------------------------------------------------------------------------


def test_task_folder_layout_and_configs():
    from peftbench.experiment import discover, load_peft_config, load_train_config

    for kind in ("results", "temporary_results", "cancelled_results"):
        assert (TASK_DIR / kind).is_dir()
    experiments = {e.experiment_name: e for e in discover(TASK_DIR)}
    for name in (
        "full-finetuning/tiny-llama-lr_0.002",
        "lora/tiny-llama-rank8-attention",
        "ia3/tiny-llama-default",
        "prompt_tuning/tiny-llama-default",
    ):
        exp = experiments[name]
        config = load_train_config(exp)
        quick = load_train_config(exp, quick=True)
        assert config.model_id == "base_model"
        assert quick.max_steps < config.max_steps
        assert (load_peft_config(exp) is None) == (exp.method == "full-finetuning")


def test_a_short_lora_run_lowers_the_validation_loss(tokenizer, data):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftbench.train import collate, tokenize_train

    torch.manual_seed(0)
    template = "Question: {query} Think step by step.\nAnswer:"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(BASE_MODEL),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    train = tokenize_train(tokenizer, data.train[:64], template=template, max_len=256)
    valid_seqs = tokenize_train(tokenizer, data.valid[:20], template=template, max_len=256)
    valid = collate(valid_seqs, pad_id=tokenizer.pad_token_id)

    def valid_loss() -> float:
        with torch.no_grad():
            return model(**valid).loss.item()

    before = valid_loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for start in range(0, len(train), 8):
        loss = model(**collate(train[start : start + 8], pad_id=tokenizer.pad_token_id)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert valid_loss() < before - 0.1


# --- command --------------------------------------------------------------------------------------


def test_make_base_model_refuses_to_overwrite_and_bad_numbers(tmp_path, capsys):
    from peftbench.cli import main

    assert main(["make-base-model", "--output", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["make-base-model", "--output", str(tmp_path / "new"), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
