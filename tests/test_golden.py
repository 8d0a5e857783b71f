"""Golden file: a committed experiment of the embedded benchmark, re-run with the quick settings on a CPU,
must reproduce the metrics committed with it, so that a change that shifts results is seen in CI.

Regenerate after an intended change (and say why in the commit message):
    python tests/test_golden.py --update      or      PEFTBENCH_UPDATE_GOLDEN=1 pytest tests/test_golden.py
Tolerances are documented in docs/lint.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "benchmarks" / "tinymath" / "experiments" / "lora" / "tiny-llama-rank8-attention"
GOLDEN = REPO / "tests" / "golden" / "tinymath-lora-quick.json"
UPDATE_ENV = "PEFTBENCH_UPDATE_GOLDEN"

# Wall-clock and memory readings vary from run to run; everything else must not.
TIMING_KEYS = {
    "train time",
    "eval time",
    "tokens / sec",
    "elapsed time",
    "mem allocated avg",
    "mem reserved avg",
}
# Losses (and everything computed from them) may differ in the last bits across CPUs, since BLAS kernels
# may sum in another order: compared to 1e-6, relative or absolute (forgetting is a difference of two
# losses, so close to 0 a relative bound alone would be stricter than the losses it comes from).
# Accuracies are counts divided by counts: exact.
EXACT_FLOAT_KEYS = {"valid accuracy", "test accuracy"}
TOLERANCE = 1e-6


def run_quick() -> dict[str, Any]:
    """The experiment's quick run on the CPU, reduced to what must be reproducible."""
    import torch

    from peftbench import modeling
    from peftbench.experiment import resolve_experiment
    from peftbench.run import execute

    choose_device = modeling.choose_device
    modeling.choose_device = lambda: "cpu"  # the golden values are CPU values, even on a GPU machine
    try:
        outcome = execute(resolve_experiment(EXPERIMENT), quick=True, write=False)
    finally:
        modeling.choose_device = choose_device
    assert outcome.status == "success", outcome.record["run_info"]["error_msg"]
    info = outcome.record["train_info"]
    return {
        "experiment": outcome.record["run_info"]["experiment_name"],
        "settings": "quick",
        "written_with": {
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
        },
        "num_trainable_params": info["num_trainable_params"],
        "num_total_params": info["num_total_params"],
        "test_correct": info["test_correct"],
        "metrics": [{k: v for k, v in entry.items() if k not in TIMING_KEYS} for entry in info["metrics"]],
    }


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Every place where `actual` departs from `expected` beyond the tolerances, as readable lines."""
    key = where.rsplit(".", 1)[-1]
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = [f"{where}.{k}: missing" for k in expected if k not in actual]
        found += [f"{where}.{k}: not in the golden file" for k in actual if k not in expected]
        for k in expected.keys() & actual.keys():
            found += differences(expected[k], actual[k], f"{where}.{k}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} entries, golden {len(expected)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{where}[{i}]")
        ]
    floats = isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool)
    if floats and key not in EXACT_FLOAT_KEYS:
        if math.isclose(expected, actual, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
            return []
    elif expected == actual:
        return []
    return [f"{where}: {actual!r}, golden {expected!r}"]


def write_golden() -> dict[str, Any]:
    golden = run_quick()
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n", encoding="utf-8")
    return golden


@pytest.mark.slow  # about 6 CPU-minutes on the 2-core development machine (docs/lint.md)
@pytest.mark.skipif(
    not EXPERIMENT.is_dir(), reason="the embedded benchmark's lora/tiny-llama-rank8-attention is absent"
)
def test_quick_run_reproduces_the_golden_metrics() -> None:
    if os.environ.get(UPDATE_ENV):
        write_golden()
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    actual = run_quick()
    skip = {"written_with"}  # provenance of the file, not a result
    found = differences(
        {k: v for k, v in golden.items() if k not in skip}, {k: v for k, v in actual.items() if k not in skip}
    )
    assert not found, (
        "the quick run no longer reproduces tests/golden/tinymath-lora-quick.json (written with "
        f"{golden['written_with']}):\n  "
        + "\n  ".join(found)
        + "\nIf the change is intended, regenerate it: "
        "python tests/test_golden.py --update"
    )


@pytest.mark.parametrize(
    ("expected", "actual", "problems"),
    [
        ({"train loss": 1.0}, {"train loss": 1.0 + 5e-7}, 0),
        ({"train loss": 1.0}, {"train loss": 1.0 + 5e-6}, 1),
        ({"forgetting": 1e-3}, {"forgetting": 1e-3 + 5e-7}, 0),
        ({"test accuracy": 0.5}, {"test accuracy": 0.5 + 1e-12}, 1),
        ({"test_correct": "0110"}, {"test_correct": "0111"}, 1),
        ({"metrics": [{"step": 5}]}, {"metrics": [{"step": 5}, {"step": 10}]}, 1),
        ({"num_trainable_params": 10}, {"num_trainable_params": 10, "new key": 1}, 1),
    ],
)
def test_tolerances(expected: dict[str, Any], actual: dict[str, Any], problems: int) -> None:
    assert len(differences(expected, actual)) == problems


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: python {sys.argv[0]} --update   (re-run the experiment and rewrite {GOLDEN.name})")
    if not EXPERIMENT.is_dir():
        sys.exit(f"{EXPERIMENT}: no such experiment folder")
    print(json.dumps(write_golden(), indent=2))
