"""The experiment catalogue: every generated config loads with peft and builds on a tiny Llama."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftConfig, get_peft_model
from peft.utils import PeftType
from transformers import LlamaConfig, LlamaForCausalLM

from peftbench.cli import main as cli_main
from peftbench.config import build_config, read_json_object
from peftbench.maintainer import catalogue as cat

REPO = Path(__file__).resolve().parent.parent
METAMATHQA = REPO / "benchmarks" / "MetaMathQA"
TINYMATH = REPO / "benchmarks" / "tinymath"
# how benchmarks/tinymath/experiments was generated (its README says the same)
TINYMATH_ARGS = [
    str(TINYMATH),
    "--model-config",
    str(TINYMATH / "base_model" / "config.json"),
    "--full-finetuning-lr",
    "2e-3",
]

# hidden 64, 2 layers: small enough for every method in a few hundred milliseconds
TINY = LlamaConfig(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
TINY_SCALE = cat.Scale.from_model_config(TINY, prefix="tiny")
TINY_ENTRIES = cat.catalogue(TINY_SCALE, max_steps=20)


def run_catalogue(argv: list[str], *, print_fn=print) -> int:
    """`peftbench catalogue ARGV`; each line it prints goes to `print_fn`."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli_main(["catalogue", *argv])
    for line in out.getvalue().splitlines():
        print_fn(line)
    return code


@pytest.fixture(scope="module")
def tiny_catalogue(tmp_path_factory) -> Path:
    experiments = tmp_path_factory.mktemp("tiny") / "experiments"
    cat.write_catalogue(TINY_ENTRIES, TINY_SCALE, experiments_dir=experiments)
    return experiments


def test_every_peft_method_is_in_the_catalogue_or_excluded_with_a_reason():
    covered = {e.peft_type for e in TINY_ENTRIES if e.peft_type}
    all_types = {t.value for t in PeftType}
    assert covered.isdisjoint(cat.EXCLUDED)
    assert covered | set(cat.EXCLUDED) == all_types, "a peft method is neither in the catalogue nor excluded"
    assert all(len(reason) > 20 for reason in cat.EXCLUDED.values())


def test_catalogue_has_full_finetuning_and_the_lora_variants():
    names = {f"{e.method}/{e.name(TINY_SCALE)}" for e in TINY_ENTRIES}
    assert "full-finetuning/tiny-lr_0.00001" in names
    lora = {e.variant: e for e in TINY_ENTRIES if e.method == "lora"}
    assert lora["rank4-dora"].config["use_dora"] is True
    assert lora["rank8-rslora"].config["use_rslora"] is True
    assert lora["rank4-pissa"].config["init_lora_weights"].startswith("pissa")
    assert lora["rank4-olora"].config["init_lora_weights"] == "olora"
    assert lora["rank4-loraplus"].training_params["optimizer_type"] == "lora+"
    assert lora["rank4-lorafa"].training_params["optimizer_type"] == "lora-fa"
    assert len(names) == len(TINY_ENTRIES), "two entries share a name"


@pytest.mark.parametrize("entry", TINY_ENTRIES, ids=lambda e: f"{e.method}/{e.variant}")
def test_generated_config_loads_and_trains_on_a_tiny_llama(entry, tiny_catalogue):
    folder = tiny_catalogue / entry.method / entry.name(TINY_SCALE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(TINY)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if entry.peft_type is None:
        assert not (folder / cat.ADAPTER_CONFIG).exists()  # full fine-tuning: no adapter config
    else:
        config = PeftConfig.from_pretrained(str(folder))
        assert config.peft_type.value == entry.peft_type
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "nothing to train"
    ids = torch.randint(3, TINY.vocab_size, (2, 10))
    ids[:, 0], ids[:, -1] = (
        TINY.bos_token_id,
        TINY.eos_token_id,
    )  # as in real data (trainable_tokens trains these)
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    if entry.peft_type is not None:
        n_trainable = sum(p.numel() for p in trainable)
        assert n_trainable < sum(base_before[n].numel() for n in base_before)
    if (folder / cat.TRAINING_PARAMS).exists():
        assert json.loads((folder / cat.TRAINING_PARAMS).read_text()) == entry.training_params


def test_metamathqa_catalogue_is_up_to_date():
    lines = []
    assert run_catalogue([str(METAMATHQA), "--check"], print_fn=lines.append) == 0, lines


def test_tinymath_catalogue_is_up_to_date():
    lines = []
    assert run_catalogue([*TINYMATH_ARGS, "--check"], print_fn=lines.append) == 0, lines


def test_learning_rates_keep_their_ratio_to_the_task_default():
    s = dataclasses.replace(TINY_SCALE, lr_factor=100.0)  # task default 1e-2, reference default 1e-4
    assert s.lr(1e-4) == pytest.approx(1e-2)  # the reference default becomes the task default
    assert s.lr(5e-5) == pytest.approx(5e-3)  # OSF: half the default, here too
    assert s.lr(1e-3) == cat.LR_CAP  # 10x methods (IA3, VeRA) stop at the cap
    assert s.lr(0.3) == 0.3  # methods tuned above the cap (C3A) keep their own
    assert s.lr_name("0.001", 1e-3) == "0.05"
    assert (TINY_SCALE.lr(1e-3), TINY_SCALE.lr_name("0.001", 1e-3)) == (1e-3, "0.001")  # the reference's own


def test_a_scaled_catalogue_names_its_experiments_by_the_scaled_lr(tmp_path):
    task = tmp_path / "tinymath"
    task.mkdir()
    (task / cat.DEFAULT_PARAMS).write_text(json.dumps({"max_steps": 50, "optimizer_kwargs": {"lr": 1e-2}}))
    (tmp_path / "config.json").write_text(TINY.to_json_string())
    argv = [str(task), "--model-config", str(tmp_path / "config.json"), "--full-finetuning-lr", "2e-3"]
    assert run_catalogue(argv, print_fn=lambda *a: None) == 0
    ia3 = task / "experiments" / "ia3" / "tiny-llama-lr_0.05"
    assert json.loads((ia3 / cat.TRAINING_PARAMS).read_text()) == {"optimizer_kwargs": {"lr": 0.05}}
    full = task / "experiments" / "full-finetuning" / "tiny-llama-lr_0.002"
    assert json.loads((full / cat.TRAINING_PARAMS).read_text()) == {"optimizer_kwargs": {"lr": 0.002}}
    # methods without an lr of their own in the reference use the task default: no training_params
    assert not (task / "experiments" / "lora" / "tiny-llama-rank4" / cat.TRAINING_PARAMS).exists()


def committed_experiments() -> list[Path]:
    return sorted(p for p in (METAMATHQA / "experiments").glob("*/*") if p.is_dir())


@pytest.mark.parametrize("folder", committed_experiments(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_experiment_loads_and_has_a_valid_training_config(folder):
    effective_config(folder)  # raises BadInput on an unknown key or bad value
    assert folder.name.startswith("llama-3.2-3B-")
    if folder.parent.name == "full-finetuning":
        assert not (folder / cat.ADAPTER_CONFIG).exists()
    else:
        config = PeftConfig.from_pretrained(str(folder))
        assert config.task_type == "CAUSAL_LM"


def test_metamathqa_defaults_are_the_reference_defaults(reference_dir):
    ours = json.loads((METAMATHQA / cat.DEFAULT_PARAMS).read_text())
    theirs = json.loads((reference_dir / "MetaMathQA" / cat.DEFAULT_PARAMS).read_text())
    assert ours == theirs


# fields where our catalogue deliberately differs from a reference experiment of the same name
ALLOWED_DIFFERENCES = {"peft_version", "revision", "task_type", "base_model_name_or_path", "auto_mapping"}
# prompt-learning fields that peft fills in from the model's config when they are null
FILLED_BY_PEFT = {
    "token_dim",
    "num_layers",
    "num_attention_heads",
    "encoder_hidden_size",
    "num_transformer_submodules",
}
# (method, key): why the values differ but mean the same
EQUIVALENT = {("c3a", "init_weights"): "peft documents False as 'xavier_uniform', the default we keep"}


def effective_config(folder: Path) -> dict:
    defaults = METAMATHQA / cat.DEFAULT_PARAMS
    layers = [(str(defaults), read_json_object(defaults))]
    if (folder / cat.TRAINING_PARAMS).exists():
        layers.append((str(folder / cat.TRAINING_PARAMS), read_json_object(folder / cat.TRAINING_PARAMS)))
    return build_config(layers).to_dict()


def test_shared_experiments_match_the_reference_hyperparameters(reference_dir):
    """Where the catalogue has an experiment of the reference's name, the hyperparameters agree."""
    ref_root = reference_dir / "MetaMathQA" / "experiments"
    compared = 0
    for folder in committed_experiments():
        ref = ref_root / folder.parent.name / folder.name
        if not ref.is_dir():
            continue
        compared += 1
        # the resolved training configs agree (the reference restates some defaults, we do not)
        assert effective_config(folder) == effective_config(ref), folder
        if not (ref / cat.ADAPTER_CONFIG).exists():
            continue
        ref_config = json.loads((ref / cat.ADAPTER_CONFIG).read_text())
        our_config = json.loads((folder / cat.ADAPTER_CONFIG).read_text())
        for key, value in ref_config.items():
            if key in ALLOWED_DIFFERENCES or key not in our_config or (folder.parent.name, key) in EQUIVALENT:
                continue
            ours_value, theirs_value = our_config[key], value
            if isinstance(ours_value, list) and isinstance(theirs_value, list):
                ours_value, theirs_value = sorted(map(str, ours_value)), sorted(map(str, theirs_value))
            if isinstance(ours_value, dict) and isinstance(theirs_value, dict):
                # a sub-config (use_bdlora, kasa_config): a newer peft also writes out the fields that
                # the reference's peft did not have yet (BdLoraConfig.match_strict); compare the shared ones
                ours_value = {k: ours_value.get(k) for k in theirs_value}
            if ours_value is None and key in FILLED_BY_PEFT:
                continue
            if theirs_value is None and key == "target_modules":
                continue  # null = peft's per-architecture default, which is what we spell out or keep
            assert ours_value == theirs_value, f"{folder.parent.name}/{folder.name}: {key}"
    assert compared >= 20


def test_check_reports_a_changed_file(tmp_path):
    task = tmp_path / "MetaMathQA"
    task.mkdir()
    (task / cat.DEFAULT_PARAMS).write_text((METAMATHQA / cat.DEFAULT_PARAMS).read_text())
    assert run_catalogue([str(task)], print_fn=lambda *a: None) == 0
    target = task / "experiments" / "lora" / "llama-3.2-3B-rank32" / cat.ADAPTER_CONFIG
    assert json.loads(target.read_text())["r"] == 32
    target.write_text(target.read_text().replace('"r": 32', '"r": 16'))
    lines: list[str] = []
    assert run_catalogue([str(task), "--check"], print_fn=lines.append) == 1
    assert lines == [f"out of date: {target}"]
    untouched = task / "experiments" / "lora" / "llama-3.2-3B-rank64" / cat.ADAPTER_CONFIG
    os.utime(untouched, ns=(0, 0))
    assert run_catalogue([str(task)], print_fn=lambda *a: None) == 0  # regenerating repairs it
    assert run_catalogue([str(task), "--check"], print_fn=lambda *a: None) == 0
    # and leaves the files that were right alone: a sweep would take a newer config as a change
    assert untouched.stat().st_mtime_ns == 0


def test_model_config_sizes_the_catalogue(tmp_path):
    task = tmp_path / "MetaMathQA"
    task.mkdir()
    (task / cat.DEFAULT_PARAMS).write_text(json.dumps({"max_steps": 50}))
    model_config = tmp_path / "config.json"
    model_config.write_text(TINY.to_json_string())
    assert (
        run_catalogue(
            [str(task), "--model-config", str(model_config), "--prefix", "tiny"], print_fn=lambda *a: None
        )
        == 0
    )
    lora = json.loads((task / "experiments" / "lora" / "tiny-rank4" / cat.ADAPTER_CONFIG).read_text())
    assert (lora["r"], lora["lora_alpha"]) == (4, 8)
    adalora = json.loads((task / "experiments" / "adalora" / "tiny-rank4" / cat.ADAPTER_CONFIG).read_text())
    assert (adalora["total_step"], adalora["tinit"], adalora["tfinal"]) == (50, 2, 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nowhere"], "not a task folder"),
        (
            ["{task}", "--scale", "llama-3.2-3b"],
            'unknown scale "llama-3.2-3b" (did you mean "llama-3.2-3B"?)',
        ),
        (["{task}", "--model-config", "{tmp}/missing.json"], "cannot read a model config"),
        (["{task}", "--model-config", "{config}", "--full-finetuning-lr", "-1"], "must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    task = tmp_path / "MetaMathQA"
    task.mkdir()
    (task / cat.DEFAULT_PARAMS).write_text(json.dumps({"max_steps": 50}))
    (tmp_path / "config.json").write_text(TINY.to_json_string())
    argv = [
        a.replace("{tmp}", str(tmp_path))
        .replace("{task}", str(task))
        .replace("{config}", str(tmp_path / "config.json"))
        for a in args
    ]
    assert run_catalogue(argv, print_fn=lambda *a: None) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert err.count("\n") == 1
    assert not (task / "experiments").exists()


def test_scale_reads_a_llama_config_with_an_explicit_head_dim():
    config = LlamaConfig(
        hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, bos_token_id=None, eos_token_id=[5, 6],
    )  # fmt: skip
    scale = cat.Scale.from_model_config(config, prefix="tiny")
    assert scale.kv_dim == 64  # 2 heads of 32, not 2 of 256 // 4
    assert (scale.rank, scale.virtual_tokens, scale.num_layers) == (8, 20, 4)
    assert (scale.bos_token_id, scale.eos_token_id) == (0, 5)
    assert cat.Scale.from_model_config(config.to_dict(), prefix="tiny") == scale
