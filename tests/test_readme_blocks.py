"""The generated blocks of the READMEs match what the project's commands print from the committed results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_blocks", REPO / "scripts" / "readme_blocks.py")
readme_blocks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_blocks)

DOCS = sorted(
    p
    for p in [REPO / "README.md", *REPO.glob("benchmarks/*/README.md")]
    if "<!-- generated:" in p.read_text()
)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_generated_blocks_are_up_to_date(path):
    assert readme_blocks.main(["--check", str(path)]) == 0, (
        f"run: python scripts/readme_blocks.py {path.relative_to(REPO)}"
    )


def test_a_stale_block_is_found_and_rewritten(tmp_path, capsys):
    doc = tmp_path / "README.md"
    doc.write_text(
        "intro\n<!-- generated: peftbench --version -->\nold text\n<!-- end generated -->\nafter\n"
    )
    assert readme_blocks.main(["--check", str(doc)]) == 1
    assert "old text" in doc.read_text()  # --check writes nothing
    assert readme_blocks.main([str(doc)]) == 0
    text = doc.read_text()
    assert (
        "old text" not in text and "peftbench " in text and text.endswith("<!-- end generated -->\nafter\n")
    )
    assert readme_blocks.main(["--check", str(doc)]) == 0


def test_only_peftbench_commands_may_generate(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- generated: rm -rf / -->\n<!-- end generated -->\n")
    with pytest.raises(ValueError, match="only peftbench commands"):
        readme_blocks.main([str(doc)])


def test_tinymath_tuning_table_is_up_to_date():
    """The tuning table of benchmarks/tinymath/README.md is what scripts/task_readme_tables.py makes
    from the committed results and studies (the two rankings beside it are bootstraps: the script
    regenerates them, this test does not)."""
    spec = importlib.util.spec_from_file_location("tables", REPO / "scripts" / "task_readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    task_dir = REPO / "benchmarks" / "tinymath"
    text = (task_dir / "README.md").read_text()
    assert tables.replace_section(text, "tuning-table", tables.markdown(task_dir), where=task_dir) == text, (
        "run: python scripts/task_readme_tables.py benchmarks/tinymath --write"
    )
