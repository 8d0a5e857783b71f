"""Adapter configs fitted to the base model's config before any heavy work (issue 17, item 4).

The cases are the reference's MetaMathQA configs (written for a 28-layer, 3072-wide Llama with a
128k vocabulary) on the embedded tinymath model (4 layers, width 192, vocab 692).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import (
    AdaptionPromptConfig,
    LoraConfig,
    OSFConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    TrainableTokensConfig,
)

from peftbench.adapter_fit import check_adapter_fit
from peftbench.errors import BadInput

TINYMATH_MODEL = Path(__file__).resolve().parent.parent / "benchmarks" / "tinymath" / "base_model"
CONFIG_FILE = Path("experiments/method/name/adapter_config.json")
PROMPT = {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4}
REFERENCE_SIZES = {"num_layers": 28, "token_dim": 3072, "num_attention_heads": 24}


def fit(peft_config) -> list[str]:
    return check_adapter_fit(peft_config, model_path=str(TINYMATH_MODEL), config_file=CONFIG_FILE)


def refused(peft_config) -> str:
    with pytest.raises(BadInput) as info:
        fit(peft_config)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{CONFIG_FILE}:")
    return message


def test_trainable_tokens_beyond_the_vocabulary_name_the_index_and_the_vocab_size():
    message = refused(TrainableTokensConfig(token_indices=[128000, 128001], task_type="CAUSAL_LM"))
    assert '"token_indices"' in message and "128000, 128001" in message and "vocab_size 692" in message


def test_lora_trainable_token_indices_are_checked_too():
    config = LoraConfig(target_modules=["q_proj"], trainable_token_indices={"embed_tokens": [5, 700]})
    assert "700" in refused(config) and "vocab_size 692" in refused(config)


@pytest.mark.parametrize("extra", [{}, {"init_weights": "zero"}])
def test_prefix_tuning_with_more_layers_than_the_model_is_refused(extra):
    message = refused(PrefixTuningConfig(**PROMPT, **REFERENCE_SIZES, **extra))
    assert '"num_layers" is 28' in message and "num_hidden_layers 4" in message


@pytest.mark.parametrize("config_class", [PromptTuningConfig, PromptEncoderConfig])
def test_prompt_and_p_tuning_with_another_token_dim_are_refused(config_class):
    message = refused(config_class(**PROMPT, **REFERENCE_SIZES))
    assert '"token_dim" is 3072' in message and "hidden_size 192" in message


def test_keys_that_peft_ignores_or_recomputes_only_warn(capsys):
    # prefix tuning on a model with key/value heads: peft recomputes token_dim and the heads
    warnings = fit(PrefixTuningConfig(**PROMPT, num_layers=4, token_dim=3072, num_attention_heads=24))
    assert len(warnings) == 2 and all("recomputes" in w for w in warnings)
    # prompt tuning does not use num_layers or the heads
    warnings = fit(PromptTuningConfig(**PROMPT, num_layers=28, token_dim=192, num_attention_heads=24))
    assert [w.split('"')[1] for w in warnings] == ["num_layers", "num_attention_heads"]
    assert capsys.readouterr().err.count("warning: ") == 4


def test_osf_rank_pattern_beyond_the_layer_width_is_refused():
    config = OSFConfig(target_modules=["q_proj", "k_proj"], rank_pattern={"q_proj": 2944, "k_proj": 896})
    message = refused(config)
    assert '"rank_pattern"' in message and "2944" in message and "min(in, out) = 192" in message


def test_a_config_that_would_train_nothing_is_refused_on_the_meta_model():
    # effective_rank 1.0 is "all of the width" as a fraction: passes the rank rule, trains nothing
    message = refused(OSFConfig(target_modules=["q_proj"], effective_rank=1.0))
    assert "0 trainable parameters" in message


def test_adaption_prompt_layers_at_most_the_models():
    config = AdaptionPromptConfig(adapter_layers=28, adapter_len=4, task_type="CAUSAL_LM")
    assert '"adapter_layers" is 28' in refused(config) and "at most 4" in refused(config)


def test_target_modules_that_do_not_exist():
    message = refused(LoraConfig(target_modules=["c_attn", "c_proj"]))
    assert "c_attn, c_proj" in message and "q_proj" in message  # what the model has instead
    warnings = fit(LoraConfig(target_modules=["q_proj", "c_attn"]))
    assert len(warnings) == 1 and "c_attn" in warnings[0]


def test_peft_errors_on_the_meta_model_come_before_any_load():
    message = refused(LoraConfig(target_modules=["q_proj"], layers_to_transform=[7]))
    assert "does not fit the model" in message


def test_a_fitting_config_passes_silently(capsys):
    assert fit(LoraConfig(r=4, target_modules=["q_proj", "v_proj"])) == []
    assert fit(PrefixTuningConfig(**PROMPT)) == []
    assert capsys.readouterr().err == ""


def test_the_real_wrap_refuses_zero_trainable_parameters(tiny_model_dir):
    from peftbench import modeling

    model = modeling.load_base_model(
        str(tiny_model_dir), dtype="float32", device="cpu", attn_implementation=None, use_gc=False
    )
    with pytest.raises(BadInput, match="0 trainable parameters"):
        modeling.wrap_with_peft(
            model, OSFConfig(target_modules=["q_proj"], effective_rank=1.0), autocast_adapter_dtype=True
        )


def test_the_check_runs_before_data_loading(task_dir, monkeypatch, capsys):
    """The issue's prefix-tuning case (text initialisation, num_layers 28) on the toy 2-layer model:
    one line, exit 2, and neither the data nor the model was loaded."""
    from peftbench import cli, run
    from peftbench.tasks import get_task

    experiment = task_dir / "experiments" / "prefixtuning" / "reference-sizes"
    experiment.mkdir(parents=True)
    config = {"peft_type": "PREFIX_TUNING", **PROMPT, **REFERENCE_SIZES}
    (experiment / "adapter_config.json").write_text(json.dumps(config))
    (experiment / "training_params.json").write_text(json.dumps({"init_kv_cache_prefix": "Solve it."}))

    def must_not_run(*args, **kwargs):
        raise AssertionError("loaded before the adapter config was checked")

    monkeypatch.setattr(type(get_task("toytask")), "load_data", must_not_run)
    monkeypatch.setattr(run, "_load_base_model", must_not_run)
    assert cli.main(["run", str(experiment)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{experiment / 'adapter_config.json'}: " in err and '"num_layers" is 28' in err
    assert "num_hidden_layers 2" in err


def _load_script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "run_reference_configs.py"
    spec = importlib.util.spec_from_file_location("run_reference_configs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_script_reports_a_clean_error_and_a_timeout(tmp_path, capsys):
    script = _load_script()
    folder = tmp_path / "experiments"
    bad = folder / "prompt_tuning" / "llama-3.2-3B-default"
    bad.mkdir(parents=True)
    (bad / "adapter_config.json").write_text(
        json.dumps({"peft_type": "PROMPT_TUNING", **PROMPT, **REFERENCE_SIZES})
    )
    (folder / "full-finetuning" / "no-adapter").mkdir(parents=True)  # not an adapter config: skipped
    assert script.main([str(folder), "--save", str(tmp_path / "table.csv")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[-1])["clean error"] == 1
    import pandas as pd

    row = pd.read_csv(tmp_path / "table.csv").iloc[0]
    assert row["outcome"] == "clean error" and row["exit"] == 2 and row["first error s"] > 0
    assert '"token_dim" is 3072' in row["error"] and "adapter_config.json" in row["error"]

    row = script.run_one(
        bad,
        task_copy=script.make_task_copy(script.REPO / "benchmarks" / "tinymath", tmp_path / "t"),
        timeout=0.2,
    )
    assert row["outcome"] == "timeout"
