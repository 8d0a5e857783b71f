"""The MetaMathQA task's loader, on files written here in the hub formats and pointed at by env variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from peftbench.analysis.overhead import TABLE_OVERHEAD_METRICS
from peftbench.errors import BadInput
from peftbench.tasks import get_task
from peftbench.tasks import metamathqa as mm
from peftbench.tasks.base import Example

N_GSM8K_TRAIN = 80
N_GSM8K_TEST = 23
N_TEXTS = 120


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def metamath_rows() -> list[dict]:
    """Rows as on the hub (query, response, type, original_question), with lengths around the limit."""
    rows = []
    for i in range(30):
        rows.append(
            {
                "query": f"What is {i} + {i}?",
                "response": f"We add {i} and {i} to get {2 * i}.\nThe answer is: {2 * i}",
                "type": ["GSM_Rephrased", "MATH_AnsAug", "GSM_SV", "MATH_FOBAR"][i % 4],
                "original_question": f"What is {i} plus {i}?",
            }
        )
    # f"{query} {response}" of exactly 1300 characters is kept, 1301 is dropped
    query = "Q" * 100
    for length, tag in ((1300, "kept"), (1301, "dropped"), (5000, "dropped")):
        tail = f" The answer is: {tag}"
        rows.append(
            {
                "query": query,
                "response": "x" * (length - len(query) - 1 - len(tail)) + tail,
                "type": "MATH_Rephrased",
                "original_question": query,
            }
        )
    return rows


def gsm8k_rows(split: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        value = f"{1000 + i:,}" if i % 10 == 3 else str(-i if i % 7 == 5 else i)
        rows.append(
            {
                "question": f"[{split} {i}] Natalia sold {i} clips. How many?",
                "answer": f"She sold <<{i}={i}>>{i} clips.\n#### {value}",
            }
        )
    return rows


def text_rows(n: int) -> list[dict]:
    # finewiki's columns (text plus metadata); only text is used
    return [
        {"text": f"Article {i}. Some encyclopaedic text about topic {i}.", "id": str(i), "title": f"T{i}"}
        for i in range(n)
    ]


@pytest.fixture
def local_data(tmp_path, monkeypatch):
    """Fixture files in the hub formats, and the environment variables that point the task at them."""
    import datasets

    # datasets' Arrow cache of these files goes to the test's folder, not the user's cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    metamath = write_jsonl(tmp_path / "metamath" / "MetaMathQA-395K.jsonl", metamath_rows())
    gsm8k = tmp_path / "gsm8k"
    write_jsonl(gsm8k / "train.jsonl", gsm8k_rows("train", N_GSM8K_TRAIN))
    write_jsonl(gsm8k / "test.jsonl", gsm8k_rows("test", N_GSM8K_TEST))
    texts = write_jsonl(tmp_path / "wiki" / "texts.jsonl", text_rows(N_TEXTS))
    monkeypatch.setenv("PEFTBENCH_METAMATHQA", str(metamath))
    monkeypatch.setenv("PEFTBENCH_GSM8K", str(gsm8k))
    monkeypatch.setenv("PEFTBENCH_FORGETTING_TEXTS", str(texts))
    return tmp_path


def test_registered_with_the_reference_names():
    task = get_task("MetaMathQA")
    assert isinstance(task, mm.MetaMathQA)
    assert task.base_model_short == "llama-3.2-3B"
    assert task.forgetting_loss_band == (1.0, 2.0)
    assert task.metric("test_accuracy").higher_is_better
    assert task.metric("test_accuracy_math_verify").higher_is_better
    assert not task.metric("forgetting").higher_is_better


def test_default_sources_are_the_hub_ids(monkeypatch):
    for env in mm.ENV_VARS.values():
        monkeypatch.delenv(env, raising=False)
    assert mm.source_spec("metamath") == {"path": "meta-math/MetaMathQA", "split": "train"}
    assert mm.source_spec("gsm8k") == {"path": "openai/gsm8k", "name": "main"}
    assert mm.source_spec("forgetting") == {
        "path": "HuggingFaceFW/finewiki",
        "split": "train",
        "streaming": True,
    }


def test_splits_and_filters(local_data, tmp_path):
    data = mm.MetaMathQA().load_data(task_dir=tmp_path)
    rows = metamath_rows()

    # train: hub order kept, rows over 1300 characters dropped, the 1300-character one kept
    assert [e.query for e in data.train] == [
        r["query"] for r in rows if len(f"{r['query']} {r['response']}") <= 1300
    ]
    assert len(data.train) == 31
    assert data.train[-1].answer == "kept"
    assert all(e.answer != "dropped" for e in data.train)
    assert data.train[3] == Example(query=rows[3]["query"], response=rows[3]["response"], answer="6")
    assert data.info["train_filter"] == {"char_limit": 1300, "kept": 31, "total": 33}

    # valid: the reference's draw, np.random.seed(0) then np.random.shuffle, first 50
    state = np.random.get_state()
    try:
        np.random.seed(0)
        indices = np.arange(N_GSM8K_TRAIN)
        np.random.shuffle(indices)
    finally:
        np.random.set_state(state)
    train_rows = gsm8k_rows("train", N_GSM8K_TRAIN)
    assert len(data.valid) == 50
    assert [e.query for e in data.valid] == [train_rows[i]["question"] for i in indices[:50]]
    assert len({e.query for e in data.valid}) == 50

    # test: the whole test split in order, gold answers from "#### N" (commas and signs handled)
    test_rows = gsm8k_rows("test", N_GSM8K_TEST)
    assert [e.query for e in data.test] == [r["question"] for r in test_rows]
    assert [e.response for e in data.test] == [r["answer"] for r in test_rows]
    assert data.test[3].answer == "1003"
    assert data.test[5].answer == "-5"
    assert data.test[4].answer == "4"

    # forgetting: the first 100 texts
    assert data.forgetting_texts == [r["text"] for r in text_rows(100)]
    assert data.info["metamath"]["sha"] is None  # local files have no hub commit


def test_validation_does_not_depend_on_the_run_seed(local_data, tmp_path):
    task = mm.MetaMathQA()
    a = task.load_data(task_dir=tmp_path, seed=0)
    b = task.load_data(task_dir=tmp_path, seed=1)
    assert a.fingerprint == b.fingerprint
    assert a.test_items_hash == b.test_items_hash


def test_json_specs_and_streaming(local_data, tmp_path, monkeypatch):
    gsm8k = tmp_path / "gsm8k"
    monkeypatch.setenv(
        "PEFTBENCH_GSM8K",
        json.dumps(
            {
                "path": "json",
                "data_files": {"train": str(gsm8k / "train.jsonl"), "test": str(gsm8k / "test.jsonl")},
            }
        ),
    )
    monkeypatch.setenv(
        "PEFTBENCH_FORGETTING_TEXTS",
        json.dumps(
            {
                "path": "json",
                "data_files": str(tmp_path / "wiki" / "texts.jsonl"),
                "split": "train",
                "streaming": True,
            }
        ),
    )
    data = mm.MetaMathQA().load_data(task_dir=tmp_path)
    assert len(data.valid) == 50
    assert len(data.test) == N_GSM8K_TEST
    assert data.forgetting_texts == [r["text"] for r in text_rows(100)]
    assert data.info["gsm8k"]["source"]["path"] == "json"


def test_test_accuracy_is_the_reference_rule_on_prompt_and_completion(monkeypatch):
    task = mm.MetaMathQA()
    example = Example(query="q", response="... #### 1003", answer="1003")
    assert task.scoring_version == "reference"
    assert task.is_correct(" 1000 + 3 = 1003.\nThe answer is: 1003", example)
    # the reference's rule: no thousands separator, and the prompt is read too
    assert not task.is_correct(" 1000 + 3 = 1003.\nThe answer is: 1,003", example)
    prompt = "Question: A note says The answer is 5\nIs it? Think step by step.\nAnswer:"
    assert not task.is_correct(" 1000 + 3 = 1003", example, prompt=prompt)
    assert task.is_correct(" 1000 + 3 = 1003", Example("q", "#### 5", "5"), prompt=prompt)

    monkeypatch.setattr(mm.answers, "math_verify_available", lambda: False)
    # our rule stays as a named extra metric
    got = task.extra_metrics(["The answer is 1,003", "#### 7"], [example, example])
    assert got == {mm.PEFTBENCH_RULE_KEY: 0.5}


def test_math_verify_metric_when_installed():
    pytest.importorskip("math_verify")
    task = mm.MetaMathQA()
    examples = [Example("q", "#### 4", "4"), Example("q", "#### 0.5", "0.5")]
    got = task.extra_metrics(["The answer is: 4", "The answer is: \\frac{1}{3}"], examples)
    assert got[mm.MATH_VERIFY_KEY] == 0.5


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("PEFTBENCH_GSM8K", "{not json", "PEFTBENCH_GSM8K: malformed JSON"),
        ("PEFTBENCH_GSM8K", '{"data_files": "x"}', 'object with a "path"'),
        ("PEFTBENCH_GSM8K", "/data/gsm8k/test.jsonl", "needs a train and a test split"),
        ("PEFTBENCH_METAMATHQA", "{tmp}/does-not-exist", "cannot load the metamath data"),
    ],
)
def test_bad_sources_give_one_clear_line(local_data, tmp_path, monkeypatch, env, value, message):
    monkeypatch.setenv(env, value.replace("{tmp}", str(tmp_path)))
    with pytest.raises(BadInput, match=message) as info:
        mm.MetaMathQA().load_data(task_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_missing_column_is_named(local_data, tmp_path, monkeypatch):
    rows = [{"question": r["query"], "response": r["response"]} for r in metamath_rows()]
    monkeypatch.setenv("PEFTBENCH_METAMATHQA", str(write_jsonl(tmp_path / "bad" / "mm.jsonl", rows)))
    with pytest.raises(BadInput, match=r"lacks the column\(s\) query; it has: question, response"):
        mm.MetaMathQA().load_data(task_dir=tmp_path)


def test_gsm8k_answer_without_marker_is_named(local_data, tmp_path, monkeypatch):
    bad = tmp_path / "gsm8k_bad"
    write_jsonl(bad / "train.jsonl", gsm8k_rows("train", N_GSM8K_TRAIN))
    test_rows = gsm8k_rows("test", 5)
    test_rows[2]["answer"] = "She sold 2 clips."
    write_jsonl(bad / "test.jsonl", test_rows)
    monkeypatch.setenv("PEFTBENCH_GSM8K", str(bad))
    with pytest.raises(BadInput, match="gsm8k test row 2: the GSM8K answer does not end with"):
        mm.MetaMathQA().load_data(task_dir=tmp_path)


def test_too_small_gsm8k_train_is_reported(local_data, tmp_path, monkeypatch):
    small = tmp_path / "gsm8k_small"
    write_jsonl(small / "train.jsonl", gsm8k_rows("train", 10))
    write_jsonl(small / "test.jsonl", gsm8k_rows("test", 5))
    monkeypatch.setenv("PEFTBENCH_GSM8K", str(small))
    with pytest.raises(BadInput, match="has 10 rows; the validation set needs 50"):
        mm.MetaMathQA().load_data(task_dir=tmp_path)


def test_a_run_through_the_real_loader_with_a_tiny_model(local_data, tmp_path):
    """`peftbench run` on a MetaMathQA task folder whose data and model are local: the task plugs into the
    runner, the splits reach the result file, and per-item test correctness covers the GSM8K test split."""
    from toyworld import DEFAULTS, LORA, build_tiny_model

    from peftbench.cli import main
    from peftbench.results import load_result

    task_dir = tmp_path / "benchmarks" / "MetaMathQA"
    experiment = task_dir / "experiments" / "lora" / "llama-3.2-3B-tiny"
    experiment.mkdir(parents=True)
    build_tiny_model(task_dir / "base_model")
    defaults = {**DEFAULTS, "max_steps": 2, "eval_steps": 2, "batch_size_eval": 64}
    defaults["query_template"] = "Question: {query} Think step by step.\nAnswer:"
    (task_dir / "default_training_params.json").write_text(json.dumps(defaults))
    (experiment / "adapter_config.json").write_text(json.dumps(LORA))

    assert main(["run", str(experiment)]) == 0
    [path] = sorted((task_dir / "temporary_results").glob("*.json"))
    record = load_result(path)
    assert record["run_info"]["task_name"] == "MetaMathQA"
    assert record["train_info"]["status"] == "success"
    final = record["train_info"]["metrics"][-1]
    assert 0.0 <= final["test accuracy"] <= 1.0
    assert len(record["train_info"]["test_correct"]) == N_GSM8K_TEST
    dataset_info = record["meta_info"]["dataset_info"]
    assert {"metamath", "gsm8k", "forgetting"} <= set(dataset_info)
    assert dataset_info["train_filter"]["kept"] == 31


def test_reference_results_load_as_task_metamathqa(reference_dir):
    """The reference's 63 published results load as MetaMathQA runs, with our task's metrics."""
    from peftbench.analysis.aggregate import available_metrics, load_results, task_metrics

    loaded = load_results([reference_dir / "MetaMathQA"])
    assert not loaded.warnings
    assert len(loaded.table) == 63
    assert set(loaded.table["task"]) == {"MetaMathQA"}
    metrics, note = task_metrics("MetaMathQA")
    assert note == ""
    # the plug-in's metrics, then the overhead columns of inference records (as for every task)
    assert metrics == (*mm.MetaMathQA.metrics, *TABLE_OVERHEAD_METRICS)
    shown = {m.name for m in available_metrics(loaded.table, metrics)}
    assert {"test_accuracy", "forgetting", "memory_max", "train_time", "num_trainable_params"} <= shown
    # the reference has no Math-Verify column; ours appears under the name the task declares
    assert "test_accuracy_math_verify" not in shown
    lora = loaded.table.set_index("experiment_name").loc["lora/llama-3.2-3B-rank32"]
    assert lora["test_accuracy"] == pytest.approx(0.478, abs=1e-3)


def test_math_verify_key_becomes_the_declared_column():
    from result_records import make_record

    from peftbench.analysis.aggregate import record_to_row

    record = make_record("lora/x", task="MetaMathQA")
    record["train_info"]["metrics"][-1][mm.MATH_VERIFY_KEY] = 0.75
    row = record_to_row(record, file=Path("x.json"), task="MetaMathQA")
    assert row[mm.MATH_VERIFY.name] == row["test_accuracy_math_verify"] == 0.75
    assert mm.MetaMathQA().metric(mm.MATH_VERIFY.name).higher_is_better


# --- without a network: one clear line within seconds, never minutes of retries --------------------------

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens on the discard port: the connection is refused


@pytest.fixture
def hub_out_of_reach(monkeypatch):
    """The hub's endpoint is a closed local port, and any download the probe failed to stop fails the test."""
    from huggingface_hub import constants

    from peftbench import hub

    monkeypatch.setattr(constants, "ENDPOINT", CLOSED_PORT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for env in mm.ENV_VARS.values():
        monkeypatch.delenv(env, raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(mm, "_load", no_download)
    hub._unreachable_reason.cache_clear()
    yield
    hub._unreachable_reason.cache_clear()


def test_unreachable_hub_fails_fast_naming_the_data_and_the_variables(hub_out_of_reach, tmp_path):
    tic = time.perf_counter()
    with pytest.raises(BadInput) as caught:
        mm.MetaMathQA().load_data(task_dir=tmp_path)
    assert time.perf_counter() - tic < 5
    message = str(caught.value)
    assert "\n" not in message
    assert f"{CLOSED_PORT} does not answer" in message
    for needed in ("meta-math/MetaMathQA", "openai/gsm8k", "HuggingFaceFW/finewiki", *mm.ENV_VARS.values()):
        assert needed in message
    assert "HF_ENDPOINT" in message and "HF_HUB_OFFLINE=1" in message


def test_only_the_sources_still_on_the_hub_are_named(hub_out_of_reach, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_GSM8K", str(tmp_path))  # a local folder needs no hub
    with pytest.raises(BadInput) as caught:
        mm.MetaMathQA().load_data(task_dir=tmp_path)
    assert "openai/gsm8k" not in str(caught.value) and "PEFTBENCH_GSM8K" not in str(caught.value)
    assert "meta-math/MetaMathQA" in str(caught.value)


def test_unreachable_hub_model_fails_fast(hub_out_of_reach, monkeypatch):
    import transformers

    from peftbench import modeling

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", mm._load)  # must not be reached
    with pytest.raises(
        BadInput, match=r'model_id "meta-llama/Llama-3.2-3B" needs the Hugging Face hub.*--set'
    ):
        modeling.load_tokenizer("meta-llama/Llama-3.2-3B", max_seq_length=8)


def test_offline_mode_without_a_cache_fails_fast_with_one_clear_line(tmp_path):
    """HF_HUB_OFFLINE=1 with an empty cache, in a fresh process (the libraries read it at import)."""
    env = {k: v for k, v in os.environ.items() if k not in mm.ENV_VARS.values()}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=CLOSED_PORT)
    script = (
        "import time; from pathlib import Path; from peftbench.errors import BadInput;"
        "from peftbench.tasks.metamathqa import MetaMathQA\n"
        "tic = time.perf_counter()\n"
        "try: MetaMathQA().load_data(task_dir=Path('.'))\n"
        "except BadInput as exc: print(exc); print(time.perf_counter() - tic)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    message, seconds = done.stdout.strip().splitlines()
    assert float(seconds) < 10
    assert "meta-math/MetaMathQA" in message and "PEFTBENCH_METAMATHQA" in message
