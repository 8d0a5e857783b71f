"""Writing result files and reports: atomic, and with the mode a plain open() would give."""

from __future__ import annotations

import json
import os
import stat

import pytest

from peftbench.analysis.aggregate import load_results
from peftbench.dashboard.report import write_report
from peftbench.results import atomic_write_json


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_result_files_get_0666_less_the_umask(tmp_path, umask):
    path = tmp_path / "results" / "lora--a.json"
    atomic_write_json(path, {"a": float("nan")})
    assert _mode(path) == 0o666 & ~umask  # 0644 under the usual 022, 0600 under 077
    assert json.loads(path.read_text()) == {"a": None}
    assert [p.name for p in path.parent.iterdir()] == ["lora--a.json"]  # no temporary file left
    assert os.umask(umask) == umask  # the writer put the umask back


def test_reports_get_0666_less_the_umask(tmp_path, umask):
    (tmp_path / "results").mkdir()
    path = write_report(load_results([tmp_path / "results"]), tmp_path / "out" / "report.html")
    assert _mode(path) == 0o666 & ~umask
    assert path.read_text().startswith("<!DOCTYPE html>")


def test_a_replaced_file_gets_the_new_mode(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{}")
    path.chmod(0o600)
    old = os.umask(0o022)
    try:
        atomic_write_json(path, {"b": 1})
    finally:
        os.umask(old)
    assert _mode(path) == 0o644 and json.loads(path.read_text()) == {"b": 1}
