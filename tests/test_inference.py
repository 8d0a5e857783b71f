"""peftbench inference: capability checks with known answers, the measurement harness on tiny sizes,
the record schema, bad input, and the views over the records."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from peftbench import capabilities as caps
from peftbench import inference
from peftbench.analysis.overhead import (
    capability_matrix,
    filter_matrix,
    markdown_table,
    overhead_table,
    read_records,
    record_files,
    record_problem,
    with_accuracy,
)
from peftbench.cli import main as cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = inference.make_batches(tokenizer, ["Q: 1 + 2 ?\nA:", "the cat"], eval_batch=2, device="cpu")
    return base, batch["eval_batch"]


def subject_for(tiny, peft_config) -> caps.Subject:
    from peft import get_peft_model

    base, batch = tiny
    adapted = get_peft_model(copy.deepcopy(base), peft_config)
    inference.perturb(adapted, seed=0)
    return caps.Subject(base=base, adapted=adapted.eval(), peft_config=peft_config, batch=batch, device="cpu")


def test_lora_merges_and_does_everything_on_a_cpu(tiny):
    from peft import LoraConfig

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    cells = caps.capability_cells(subject_for(tiny, config))
    assert set(cells) == set(caps.CAPABILITIES)
    expected_yes = set(caps.CAPABILITIES) - {"quantized_base"}
    assert {name for name, c in cells.items() if c["status"] == "yes"} == expected_yes, cells
    assert cells["quantized_base"] == {
        "status": "not tested",
        "reason": "bitsandbytes needs a CUDA GPU; this machine has cpu",
        "detail": None,
    }
    assert cells["merge"]["detail"].startswith("max |logit difference|")


def test_prompt_tuning_cannot_merge_and_targets_no_layers(tiny):
    from peft import PromptTuningConfig

    cells = caps.capability_cells(
        subject_for(tiny, PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"))
    )
    assert cells["merge"]["status"] == "no"
    assert "merge_and_unload" in cells["merge"]["reason"] and "\n" not in cells["merge"]["reason"]
    assert cells["target_Linear"] == {
        "status": "not tested",
        "reason": "PROMPT_TUNING does not target layers",
        "detail": None,
    }
    assert cells["save_load"]["status"] == "yes"


def test_a_crashing_check_is_a_no_and_the_others_still_run():
    def crash() -> str:
        raise RuntimeError("boom\nsecond line")

    cells = caps.run_checks({"a": lambda: "fine", "b": crash, "c": lambda: "also fine"})
    assert cells["b"] == {"status": "no", "reason": "RuntimeError: boom", "detail": None}
    assert cells["a"]["status"] == cells["c"]["status"] == "yes"


def test_compare_refuses_different_logits():
    a = torch.zeros(2, 3)
    assert caps.compare(a, a + 1e-5, what="x") == "max |logit difference| 1e-05"
    with pytest.raises(caps.CheckFailed, match=r"x: logits differ by up to 0\.5"):
        caps.compare(a, a + 0.5, what="x")


class Recorder:
    """A stand-in model whose generate logs who was called: the harness's order, without timing noise."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def generate(self, **kwargs) -> None:
        self.log.append(self.name)
        for _ in range(kwargs["max_new_tokens"]):
            kwargs["stopping_criteria"][0](torch.zeros(1, 1), None)

    def parameters(self):
        return iter([torch.zeros(3)])

    def buffers(self):
        return iter([])


def test_repetitions_alternate_their_order():
    log: list[str] = []
    models = {n: Recorder(n, log) for n in ("base", "unmerged", "merged")}
    batches = {"batch1": {"input_ids": torch.zeros(1, 3)}, "eval_batch": {"input_ids": torch.zeros(4, 3)}}
    sizes = inference.Sizes(repetitions=3, new_tokens=2, eval_batch=4)
    measured = inference.measure_variants(models, batches=batches, sizes=sizes, device="cpu")
    # two generate calls per measurement; one warm-up each, then forward, backward, forward
    order = log[::2]
    assert order == ["base", "unmerged", "merged"] * 2 + ["merged", "unmerged", "base"] + [
        "base",
        "unmerged",
        "merged",
    ]
    assert all(len(m["samples"]["prefill_s"]) == 3 for m in measured.values())
    assert set(inference.ratios(measured)) == {"unmerged", "merged"}


def test_perturb_changes_only_trainable_weights_and_is_seeded():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    torch.nn.init.zeros_(model[1].weight)
    model[0].requires_grad_(False)
    frozen = model[0].weight.clone()
    twin = copy.deepcopy(model)
    assert inference.perturb(model, seed=0) == 2 == inference.perturb(twin, seed=0)
    assert torch.equal(model[0].weight, frozen)
    assert model[1].weight.abs().min() > 0  # zero-initialised weights become non-zero
    assert torch.equal(model[1].weight, twin[1].weight)


# ---------------------------------------------------------------- the command on the toy task


def run_command(task_dir, *extra: str) -> int:
    args = [
        "inference",
        str(task_dir),
        "--repetitions",
        "2",
        "--new-tokens",
        "2",
        "--batch-size",
        "2",
        *extra,
    ]
    return cli(args)


def test_command_writes_a_record_per_experiment(task_dir, capsys):
    assert run_command(task_dir) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["experiment"] for line in lines] == ["full-finetuning/toy-default", "lora/toy-rank4"]
    records, warnings = read_records(record_files([task_dir]))
    assert warnings == [] and len(records) == 2
    lora = next(r for r in records if r["experiment_name"] == "lora/toy-rank4")
    assert record_problem(lora) == ""
    assert lora["adapter"]["source"] == "perturbed" and lora["adapter"]["file_size"] > 0
    assert lora["settings"] == {
        "repetitions": 2,
        "new_tokens": 2,
        "eval_batch": 2,
        "prompt_tokens": lora["settings"]["prompt_tokens"],
    }
    assert set(lora["variants"]) == {"base", "unmerged", "merged"}
    for variant in lora["variants"].values():
        assert all(len(v) == 2 for v in variant["samples"].values())
        assert all(v > 0 for v in variant["median"].values())
    assert lora["ratios"]["merged"]["decode_s_per_token"] > 0
    assert lora["capabilities"]["merge"]["status"] == "yes"
    full = next(r for r in records if r["experiment_name"] == "full-finetuning/toy-default")
    assert full["variants"]["merged"] == {
        "available": False,
        "reason": "full fine-tuning: no adapter to merge",
    }
    assert {c["status"] for c in full["capabilities"].values()} == {"not tested"}
    import peft

    assert lora["versions"]["peft"] == peft.__version__


def test_a_method_that_crashes_still_leaves_the_others_their_rows(task_dir, monkeypatch, capsys):
    real = inference.benchmark

    def flaky(experiment, *, sizes):
        if experiment.method == "lora":
            raise RuntimeError("adapter exploded")
        return real(experiment, sizes=sizes)

    monkeypatch.setattr(inference, "benchmark", flaky)
    assert run_command(task_dir) == 0
    records, _ = read_records(record_files([task_dir]))
    matrix = capability_matrix(records).set_index("experiment_name")
    assert set(matrix.loc["lora/toy-rank4"].drop("task")) == {"no"}
    lora = next(r for r in records if r["experiment_name"] == "lora/toy-rank4")
    assert lora["error"] == "RuntimeError: adapter exploded"
    assert lora["capabilities"]["merge"]["reason"] == "RuntimeError: adapter exploded"
    assert matrix.loc["full-finetuning/toy-default", "merge"] == "not tested"
    assert "| lora/toy-rank4" in markdown_table(overhead_table(records), capability_matrix(records))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["lora/toy-rank5"], 'no experiment "lora/toy-rank5" (did you mean "lora/toy-rank4"?)'),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--repetitions", "0"], "--repetitions 0: must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(task_dir, capsys, extra, message):
    assert cli(["inference", str(task_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (task_dir / "inference_results").exists()


def test_records_of_another_kind_or_version_are_skipped(tmp_path):
    folder = tmp_path / "inference_results"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"kind": "peftbench-inference", "schema_version": 99}))
    (folder / "b.json").write_text("{not json")
    (folder / "c.json").write_text(json.dumps({"run_info": {}}))
    records, warnings = read_records(record_files([tmp_path]))
    assert records == [] and len(warnings) == 3
    assert "unknown schema_version 99" in warnings[0] and "not an inference record" in warnings[2]


def test_table_command_and_views(task_dir, capsys):
    assert run_command(task_dir) == 0
    capsys.readouterr()
    assert cli(["inference", str(task_dir), "--table"]) == 0
    table = capsys.readouterr().out
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[:3] == ["experiment", "weights", "merged decode"] and "merge" in header
    assert "| lora/toy-rank4" in table
    records, _ = read_records(record_files([task_dir]))
    matrix = capability_matrix(records)
    assert filter_matrix(matrix, required=["merge"])["experiment_name"].tolist() == ["lora/toy-rank4"]
    assert filter_matrix(matrix, name="FULL")["experiment_name"].tolist() == ["full-finetuning/toy-default"]
    import pandas as pd

    accuracy = pd.DataFrame(
        {
            "task": ["toytask"],
            "experiment_name": ["lora/toy-rank4"],
            "family": ["LoRA"],
            "test_accuracy": [0.5],
            "variant": [""],
        }
    )
    joined = with_accuracy(overhead_table(records), accuracy).set_index("experiment_name")
    assert joined.loc["lora/toy-rank4", "test_accuracy"] == 0.5
    assert joined.loc["lora/toy-rank4", "merged_prefill_overhead"] > 0
    assert pd.isna(joined.loc["full-finetuning/toy-default", "merged_decode_overhead"])


# ---------------------------------------------------------------- the app's view, in a browser


def inference_record(experiment: str, *, task: str, unmerged: float, merged: float | None) -> dict:
    """A record with the structure `peftbench inference` writes (ratios chosen for the test)."""
    cells = {name: {"status": "yes", "reason": None, "detail": "test"} for name in caps.CAPABILITIES}
    if merged is None:
        cells["merge"] = {"status": "no", "reason": "AttributeError: cannot merge", "detail": None}
    ratios = {"unmerged": {"decode_s_per_token": unmerged, "prefill_s": unmerged}}
    if merged is not None:
        ratios["merged"] = {"decode_s_per_token": merged, "prefill_s": merged}
    return {
        "schema_version": 1,
        "kind": "peftbench-inference",
        "experiment_name": experiment,
        "task_name": task,
        "versions": {"peft": "0.0"},
        "adapter": {"source": "perturbed", "file_size": 100, "load_time_s": 0.01},
        "variants": {"merged": {"available": merged is not None}},
        "ratios": ratios,
        "capabilities": cells,
        "error": None,
    }


def wait_rows(page, selector: str, expected: int, timeout: float = 20) -> None:
    """Wait until the gr.Dataframe at `selector` has `expected` rows (aria-rowcount counts the header)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        count = page.locator(f"{selector} [role=grid]").get_attribute("aria-rowcount")
        if count is not None and int(count) - 1 == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} has {count} rows with the header, expected {expected}")
        page.wait_for_timeout(200)


@pytest.mark.browser
def test_app_shows_capabilities_and_overhead(tmp_path):

    from test_dashboard import CHROMIUM, CHROMIUM_ARGS, make_task, running_app

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    task_dir = make_task(tmp_path)
    for name, unmerged, merged in [
        ("lora/r8", 1.2, 1.0),
        ("ia3/small", 1.1, 1.0),
        ("prompt_tuning/p20", 1.3, None),
    ]:
        path = task_dir / "inference_results" / f"{name.replace('/', '--')}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(inference_record(name, task="tinymath", unmerged=unmerged, merged=merged)))
    with running_app(str(task_dir)) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        # accuracy vs unmerged overhead: the three experiments with records and results
        page.wait_for_selector("#overhead-plot .js-plotly-plot .scatterlayer .point", timeout=60_000)
        assert page.locator("#overhead-plot .scatterlayer .point").count() == 3
        assert "unmerged decode time / base" in page.locator("#overhead-plot .xtitle").text_content()
        wait_rows(page, "#capability-matrix", 3)
        assert page.locator("#capability-matrix").get_by_text("prompt_tuning/p20").count() >= 1
        # only methods that merge: prompt tuning leaves the matrix
        page.locator("#inf-required input").click()
        page.get_by_role("option", name="merge", exact=True).click()
        page.keyboard.press("Escape")
        wait_rows(page, "#capability-matrix", 2)
        assert page.locator("#capability-matrix").get_by_text("prompt_tuning/p20").count() == 0
        assert page.locator("#overhead-table").get_by_text("merged_decode_overhead").count() >= 1
        browser.close()


def test_report_section_shows_the_matrix_and_the_overhead_plot(tmp_path):
    from test_dashboard import make_task

    from peftbench.analysis.aggregate import load_results
    from peftbench.dashboard.overhead_view import inference_section

    task_dir = make_task(tmp_path)
    loaded = load_results([task_dir])
    assert inference_section(loaded, "tinymath") == ""  # no records: nothing
    path = task_dir / "inference_results" / "lora--r8.json"
    path.parent.mkdir()
    path.write_text(json.dumps(inference_record("lora/r8", task="tinymath", unmerged=1.25, merged=1.0)))
    html = inference_section(loaded, "tinymath")
    assert 'id="overhead-tinymath"' in html and "capabilities" in html
    assert "1.250" in html and "merged_decode_overhead" in html


def test_the_results_table_carries_the_decode_overhead_of_full_runs_only(tmp_path):
    from result_records import make_record, write_record
    from test_dashboard import make_task

    from peftbench.analysis.aggregate import load_results, task_metrics
    from peftbench.analysis.views import panel

    task_dir = make_task(tmp_path)
    assert "merged_decode_overhead" not in load_results([task_dir]).table.columns  # no records: no columns
    folder = task_dir / "inference_results"
    folder.mkdir()
    (folder / "lora--r8.json").write_text(
        json.dumps(inference_record("lora/r8", task="tinymath", unmerged=1.25, merged=1.01))
    )
    (folder / "ia3--small.json").write_text(
        json.dumps(inference_record("ia3/small", task="tinymath", unmerged=1.5, merged=None))
    )
    quick = make_record("lora/r8", task="tinymath", seed=0, accuracy=0.4, memory=3_000)
    quick["run_info"]["quick"] = True
    write_record(task_dir / "temporary_results", quick)
    table = load_results([task_dir], include_temporary=True).table
    lora = table[table["experiment_name"] == "lora/r8"]
    full = lora[lora["variant"].fillna("") == ""]
    assert len(full) == 3 and (full["merged_decode_overhead"] == 1.01).all()
    assert (full["unmerged_decode_overhead"] == 1.25).all()
    assert lora[lora["variant"].fillna("") != ""]["merged_decode_overhead"].isna().all()
    ia3 = table[table["experiment_name"] == "ia3/small"].iloc[0]
    import pandas as pd

    assert pd.isna(ia3["merged_decode_overhead"]) and ia3["unmerged_decode_overhead"] == 1.5
    assert pd.isna(table[table["experiment_name"] == "oft/b32"]["unmerged_decode_overhead"]).all()
    # a Pareto axis like any metric: accuracy vs unmerged overhead, lower is better
    metrics = {m.name: m for m in task_metrics("tinymath")[0]}
    x, y = metrics["unmerged_decode_overhead"], metrics["test_accuracy"]
    shown = panel(table[table["variant"].fillna("") == ""], list(metrics.values()), axes=(x, y))
    assert shown.frontier == ["lora/r8"]
