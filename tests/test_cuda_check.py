"""scripts/cuda_check.py on a machine without CUDA: one clear line and exit code 2, nothing run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "cuda_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: run the script itself")
def test_without_cuda_it_says_so_and_exits_2():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    assert proc.stdout == ""
