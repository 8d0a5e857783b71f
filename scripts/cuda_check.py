"""Run the embedded benchmark a few steps on CUDA in bf16; print the memory figures that its result recorded.

Usage (on a machine with a CUDA GPU, from the repository root):

    python scripts/cuda_check.py                       # the first LoRA experiment of benchmarks/tinymath
    python scripts/cuda_check.py --experiment benchmarks/tinymath/experiments/lora/<name> --steps 20

It calls the real command line (`peftbench run <experiment> --quick --set dtype=bfloat16 ...`), so it
checks what a user runs: device choice, bf16 loading, accelerator memory accounting and the result
file. The run is a quick, overridden run, so its result goes to temporary_results/, never results/.
Exit code: 0 when the run succeeded on CUDA and recorded accelerator memory, 1 otherwise, 2 when
there is no CUDA GPU or no such experiment.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEMORY_KEYS = (
    "accelerator_memory_max",
    "accelerator_memory_reserved_avg",
    "accelerator_memory_reserved_99th",
)


def default_experiment() -> Path | None:
    candidates = sorted((REPO / "benchmarks" / "tinymath" / "experiments" / "lora").glob("*"))
    return next((p for p in candidates if p.is_dir()), None)


def mib(value: float | int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", type=Path, help="experiment folder (default: first tinymath LoRA one)"
    )
    parser.add_argument("--steps", type=int, default=10, help="training steps (default: %(default)s)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    experiment = args.experiment or default_experiment()
    if experiment is None or not experiment.is_dir():
        print(
            f"error: no experiment folder {experiment or 'benchmarks/tinymath/experiments/lora/*'}",
            file=sys.stderr,
        )
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")

    # eval_steps must not exceed max_steps: evaluate once, at the last step
    command = [
        sys.executable, "-m", "peftbench", "run", str(experiment), "--quick",
        "--set", "dtype=bfloat16", "--set", f"max_steps={args.steps}", "--set", f"eval_steps={args.steps}",
    ]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr[-4000:])
    summary_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not summary_lines:
        print(f"error: the run printed no summary (exit code {proc.returncode})", file=sys.stderr)
        return 1
    summary = json.loads(summary_lines[-1])
    result_path = Path(summary["result"])
    record = json.loads(result_path.read_text(encoding="utf-8"))
    train_info = record["train_info"]
    print(f"result file: {result_path}")
    config = record["run_info"]["train_config"]
    print(f"status: {train_info['status']}, device: {train_info.get('device')}")
    print(f"memory kind: {train_info.get('memory_kind')}")
    print(f"dtype: {config['dtype']}, steps: {config['max_steps']}")
    for key in MEMORY_KEYS:
        print(f"{key}: {mib(train_info.get(key))} ({train_info.get(key)})")
    print(f"train_time: {train_info['train_time']:.2f} s, test accuracy: {summary.get('test accuracy')}")
    ok = (
        proc.returncode == 0
        and train_info["status"] == "success"
        and train_info.get("device") == "cuda"
        and train_info.get("memory_kind") == "accelerator"
        and all(train_info.get(k) for k in MEMORY_KEYS)
    )
    print("OK" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
